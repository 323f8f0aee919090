"""A fresh machine installs what the tests last passed with: requirements/cpu.lock pins every dependency, and
the README's commands and CI install through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "cpu.lock"


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"cpu.lock: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_dependency_of_the_project_and_its_test_extras():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/cpu.lock: run `bash .ci/lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"cpu.lock pins {name}=={pins[name]}, outside pyproject's {requirement.specifier}: run `bash .ci/lock`"
        )


def test_ci_and_both_readme_commands_install_through_the_lock():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.M)
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    for command in [*commands, *re.findall(r"^python -m pip install .* -e .*$", ci, flags=re.M)]:
        assert "-c requirements/cpu.lock" in command, command
