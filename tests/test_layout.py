"""The layout's dependency rules, read from the source with `ast` (every import, also those in functions):
`trainables` subpackages import one way, nothing in `trainables` imports `study` or `search_spaces`, and no
module outside a method's own files names a method."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from trainables.methods import STRATEGIES

REPO = Path(__file__).resolve().parents[1]
ORDER = ("data", "scoring", "training", "methods")
"""`trainables`' subpackages, each importing only those before it (docs/ARCHITECTURE.md says why);
`trainables/trial.py`, the trial entry point, sits above all four."""


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.append(base)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_trainables_subpackages_import_one_way():
    bad = []
    for path in _modules("trainables"):
        parts = path.relative_to(REPO / "trainables").parts
        if len(parts) == 1:
            continue  # trainables/__init__.py and trial.py: the top may import any subpackage
        layer = ORDER.index(parts[0])
        for name in _imports(path):
            target = name.split(".")
            if target[0] != "trainables":
                continue
            if len(target) == 1 or target[1] not in ORDER:
                bad.append(f"{path.relative_to(REPO)} imports {name} (above the subpackages)")
            elif ORDER.index(target[1]) > layer:
                bad.append(f"{path.relative_to(REPO)} imports {name} ({parts[0]} comes before {target[1]})")
    assert not bad, "\n".join(bad)


def test_trainables_imports_neither_study_nor_search_spaces():
    bad = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _modules("trainables")
        for name in _imports(path)
        if name.split(".")[0] in ("study", "search_spaces", "analysis")
    ]
    assert not bad, "\n".join(bad)


def _method_files(name: str) -> set[Path]:
    """A method's own files: its module or package under trainables/methods, and its search space."""
    own = {REPO / "trainables" / "methods" / f"{name}.py", REPO / "search_spaces" / f"{name}.py"}
    return own | set((REPO / "trainables" / "methods" / name).rglob("*.py"))


def _named_in_branches(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each method name compared against (`==`, `in`), used as a key or as an index, or
    written in a list of two or more of them."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            listed = [e for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
            found += [(e.lineno, e.value) for e in listed] if len(listed) > 1 else []
            continue
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript):
            operands = [node.slice]
        elif isinstance(node, ast.Dict):
            operands = [k for k in node.keys if k is not None]
        else:
            continue
        for operand in operands:
            items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            found += [
                (item.lineno, item.value)
                for item in items
                if isinstance(item, ast.Constant) and item.value in names
            ]
    return found


@pytest.mark.parametrize("folder", ["study", "search_spaces", "trainables", "analysis"])
def test_no_module_branches_on_a_method_name(folder):
    """A method's facts live in its record: outside its own files (and the published tables, which are
    about particular methods) no code compares with, keys by, indexes by or lists a method's name."""
    methods = set(STRATEGIES)
    owner = {path: name for name in methods for path in _method_files(name)}
    bad = [
        f"{path.relative_to(REPO)}:{line} names {name!r}"
        for path in _modules(folder)
        if path != REPO / "analysis" / "published.py"
        for line, name in _named_in_branches(ast.parse(path.read_text()), methods)
        if owner.get(path) != name
    ]
    assert not bad, "\n".join(bad)


def test_the_layout_table_names_only_files_that_exist():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    paths = re.findall(r"`((?:study|search_spaces|trainables|analysis|bench|tests)/[\w/.]*)`", text)
    missing = [p for p in paths if not (REPO / p).exists()]
    assert paths and not missing, missing


def test_records_and_search_spaces_load_without_torch():
    """The CLI reads every record and may sample every space before it imports torch (seconds)."""
    import subprocess
    import sys

    code = (
        "import sys; from trainables.methods import STRATEGIES; from search_spaces import space_module; "
        "[space_module(m) for m in STRATEGIES]; "
        "print(len(STRATEGIES), [m for m in ('torch', 'peft', 'transformers', 'ray') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [str(len(STRATEGIES)), "[]"], out.stderr
