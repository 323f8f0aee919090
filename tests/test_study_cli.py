"""The study command: flags -> StudyConfig, fast help and fast one-line errors with exit code 2, and the
checks that stop a study before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.config import SearchSettings, StorageSettings, StudyConfig
from study.run import build_parser, parse_config
from trainables.methods import method_names

METHODS = method_names()

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})},
    )


def test_help_explains_every_flag_of_the_issue():
    text = build_parser().format_help()
    for flag in (
        "--method", "--trials", "--config", "--preset", "--model", "--data-dir", "--scheduler",
        "--max-concurrent", "--cpus-per-trial", "--gpus-per-trial", "--address", "--storage", "--name",
        "--resume", "--seed", "--metric", "--mode", "--space", "--space-file",
    ):  # fmt: skip
        assert flag in text
    assert "fractions allowed" in text and "tiny" in text and "paper" in text


def test_flags_become_a_study_config(tmp_path):
    config = parse_config(
        [
            "--method", "all", "--config", "both", "--trials", "8", "--preset", "tiny", "--scheduler", "none",
            "--gpus-per-trial", "0.25", "--cpus-per-trial", "2", "--max-concurrent", "3", "--storage",
            str(tmp_path), "--name", "run1", "--seed", "7", "--metric", "dev/perplexity",
            "--space", "stacked:strategy/f=[relu]", "--train-size", "64",
        ]
    )  # fmt: skip
    assert config.search.methods == METHODS and config.data.configs == ("main", "socratic")
    assert (config.search.trials, config.preset, config.scheduler.name, config.search.seed) == (
        8,
        "tiny",
        "none",
        7,
    )
    assert (
        config.resources.gpus_per_trial,
        config.resources.cpus_per_trial,
        config.resources.max_concurrent,
    ) == (0.25, 2.0, 3)
    assert config.search.mode == "min"  # perplexity: lower is better
    assert config.study_path == f"{tmp_path}/run1"
    assert config.overrides[0].method == "stacked" and config.data.data_config()["train_size"] == 64
    assert (config.origins["data/train_size"], config.origins["data/dev_size"]) == ("flag", "preset tiny")
    assert len(config.experiments()) == 2 * len(METHODS)


def test_asha_flags_become_a_study_config():
    config = parse_config(["--method", "lora", "--grace-period", "2", "--reduction-factor", "3"])
    assert (config.scheduler.grace_period, config.scheduler.reduction_factor) == (2, 3.0)
    assert "--grace-period" in build_parser().format_help()
    default = parse_config(["--method", "lora"])
    assert (default.scheduler.grace_period, default.scheduler.reduction_factor) == (1, 2.0)


def test_defaults_are_the_papers_setting():
    config = StudyConfig(search=SearchSettings(methods=("lora",)))
    assert (config.preset_name, config.storage.name, config.search.metric, config.search.mode) == (
        "paper",
        "slm-paper",
        "dev/accuracy",
        "max",
    )
    assert Path(config.storage.root).is_absolute()
    assert (
        StudyConfig(
            search=SearchSettings(methods=("lora",)), storage=StorageSettings(root="s3://bucket/x")
        ).study_path
        == "s3://bucket/x/slm-paper"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"search/methods": ("sft",)}, "unknown method 'sft'"),
        ({"search/trials": 0}, "--trials must be a whole number >= 1"),
        ({"resources/gpus_per_trial": 1.5}, "whole number of GPUs"),
        ({"resources/gpus_per_trial": -1.0}, "--gpus-per-trial must be >= 0"),
        ({"search/metric": "test/accuracy"}, "leaks it"),
        ({"search/metric": "dev/bleu"}, "--metric must be one of"),
        ({"resources/address": "not an address"}, "--address must be"),
        ({"storage/name": "a/b"}, "--name must be"),
        ({"storage/name": "abc\n"}, "--name must be"),
        ({"resources/address": "auto\n"}, "--address must be"),
        ({"preset": "huge"}, "unknown preset"),
        ({"scheduler/reduction_factor": 1.0}, "reduction_factor must be > 1"),
    ],
)
def test_bad_settings_raise_one_clear_error(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        StudyConfig.from_keys({"search/methods": ("lora",), **changes})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "sft"], "unknown method 'sft'; choose from"),
        (["--method", "lora", "--trials", "0"], "--trials must be a whole number >= 1"),
        (["--method", "lora", "--gpus-per-trial", "lots"], "expected a number"),
        (["--method", "lora", "--cpus-per-trial", "-2"], "expected a number > 0, got '-2'"),
        (["--method", "lora", "--cpus-per-trial", "0"], "expected a number > 0, got '0'"),
        (["--method", "lora", "--gpus-per-trial", "-0.5"], "expected a number >= 0, got '-0.5'"),
        (["--method", "lora", "--gpus-per-trial", "nan"], "expected a number >= 0, got 'nan'"),
        (["--method", "lora", "--grace-period", "0"], "--grace-period must be a whole number >= 1"),
        (["--method", "lora", "--reduction-factor", "1"], "reduction_factor must be > 1"),
        (["--method", "lora", "--space", "lr=1e-3"], "train/<name>, train/eval/<name> or strategy/<name>"),
        (["--method", "lora", "--address", "no port"], "--address must be"),
        (["--method", "lora", "--space", "train/lr=!!python/name:os.system"], "YAML tag !!python/name"),
    ],
)
def test_wrong_flags_exit_2_with_one_line(args, message):
    result = run_cli(*args, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and result.stderr.startswith("error:")


def test_an_alias_bomb_space_file_exits_2_with_one_short_line(tmp_path):
    from test_search_spaces import alias_bomb

    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    result = run_cli("--method", "lora", "--space-file", str(tmp_path / "bomb.yaml"), timeout=30)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[:500]
    assert "once its aliases are expanded" in result.stderr and len(result.stderr) < 300


def test_study_package_entry_point_matches_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    assert 'slm-study = "study.run:main"' in text


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("strategy/f=[nope]", "error: method stacked: unknown stacked LoRA f 'nope'"),
        ("train/lr=abc", "error: method stacked: train/lr must be a number, got 'abc'"),
    ],
)
def test_a_bad_space_value_on_any_branch_stops_the_study_before_ray_starts(tmp_path, space, message):
    result = run_cli(
        "--method", "stacked", "--preset", "tiny", "--space", space, "--storage", str(tmp_path), timeout=300
    )
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and "Ray dashboard" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no study folder was started


# A CPU with AVX512-BF16 makes bitsandbytes try to fetch a faster kernel through `kernels` at import, which
# (offline) logs two lines. This sitecustomize makes any CPU look like one, as CI's did on 2026-12-05.
AVX512_BF16_CPU = """
import importlib.abc, sys

class _Bf16Cpu(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.has_avx512bf16 = lambda: True

        spec.loader.exec_module = exec_module
        return spec

import importlib.util
sys.meta_path.insert(0, _Bf16Cpu())
"""


def test_third_party_chatter_never_comes_before_the_one_error_line(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(AVX512_BF16_CPU)
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    result = run_cli(
        "--method", "qlora", "--preset", "tiny", "--space", "train/lr=abc", "--storage", str(tmp_path / "s"),
        env={"PYTHONPATH": pythonpath}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == "error: method qlora: train/lr must be a number, got 'abc'\n", result.stderr
