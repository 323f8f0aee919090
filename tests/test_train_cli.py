"""`python -m study.train`: settings land where they belong, bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from study.prepare import base_trial, parse_overrides, parse_value, with_overrides
from study.presets import get_preset
from trainables.trial import TrialConfig


def _trial(method: str, **overrides):
    base = base_trial(get_preset("tiny"), method=method, model="m", data_config="main", seed=0)
    return TrialConfig.from_dict(with_overrides(base, overrides))


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3e-3", 0.003),
        ("8", 8),
        ("true", True),
        ("off", "off"),
        ("q,v", "q,v"),
        ("none", None),
        ("relu", "relu"),
    ],
)
def test_values_read_as_their_type(raw, value):
    assert parse_value(raw) == value


def test_bare_and_grouped_keys_reach_their_dataclass():
    trial = _trial(
        "stacked", f="gelu", lr=0.01, **{"strategy/r2": 4, "max_new_tokens": 16, "calculator": "off"}
    )
    assert (trial.strategy.f, trial.strategy.r2, trial.train.lr) == ("gelu", 4, 0.01)
    assert trial.train.eval.max_new_tokens == 16 and trial.train.eval.calculator is False


def test_stacked_defaults_come_from_the_preset():
    assert _trial("stacked").strategy.stage1_epochs == get_preset("tiny").stacked["stage1_epochs"]


@pytest.mark.parametrize(
    ("method", "overrides", "message"),
    [
        ("lora", {"f": "relu"}, "--set f is not a setting of method 'lora'"),
        ("stacked", {"f": "swish"}, "unknown stacked LoRA f 'swish'"),
        ("lora", {"lr": "fast"}, "train/lr must be a number, got 'fast'"),
        ("lora", {"r": "x"}, "strategy/r must be a whole number, got 'x'"),
        ("lora", {"prompt_style": "poem"}, "unknown prompt_style 'poem'"),
        ("lora", {"calculator": "maybe"}, "calculator must be on or off, got 'maybe'"),
    ],
)
def test_bad_settings_are_named(method, overrides, message):
    with pytest.raises(ValueError) as error:
        _trial(method, **overrides)
    assert message in str(error.value)


def test_set_needs_key_equals_value():
    with pytest.raises(ValueError, match="--set expects key=value, got 'lr'"):
        parse_overrides(["lr"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lora", "--set", "f=relu"], "error: --set f is not a setting of method 'lora'"),
        (["--method", "lora", "--set", "lr=abc"], "error: train/lr must be a number, got 'abc'"),
        (["--method", "lora", "--resume"], "error: --resume needs --out"),
        (
            ["--method", "qlora", "--set", "variant=pissa"],
            "error: LoRA variant 'pissa' would change the 8-bit W0",
        ),
        (["--method", "lora", "--out", "/dev/null"], "error: --out /dev/null is a character device"),
        (["--method", "lora", "--model", "/no/such/model", "--data-dir", "/no/such/dir"], "error: "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "study.train", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_one_configuration_runs_and_prints_its_metrics(micro_t5_dir, tmp_path):
    args = ["--method", "stacked", "--preset", "tiny", "--model", str(micro_t5_dir), "--out", str(tmp_path)]
    args += ["--set", "f=relu", "--set", "epochs=1", "--set", "max_new_tokens=8", "--set", "metrics=accuracy"]
    args += ["--train-size", "48", "--dev-size", "8", "--test-size", "8"]
    result = subprocess.run(
        [sys.executable, "-m", "study.train", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    final = json.loads(result.stdout)
    assert final["test/n"] == 8 and 0 <= final["test/accuracy"] <= 1
    assert "stacked LoRA stage 1" in result.stderr
    assert (tmp_path / "generations_test.jsonl").read_text().count("\n") == 8
    assert "chance on the same 8 test problems: always " in result.stderr
