"""`python -m study.train`: settings land where they belong, bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from search_spaces.overrides import spec_to_override
from study.cli import Layers
from study.train import one_trial
from trainables.trial_config import TrialConfig


def _trial(method: str, preset: str = "tiny", **settings):
    layers = Layers(bare_names=True)
    for key, value in settings.items():
        layers.add(key, value, origin="flag")
    config = layers.config(plugins=(), defaults={"search/methods": (method,), "preset": preset})
    return TrialConfig.from_dict({**one_trial(config), "model": "m"})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3e-3", 0.003),
        ("8", 8),
        ("true", True),
        ("off", False),  # YAML's boolean; `calculator` takes it as on / off
        ("q,v", "q,v"),
        ("null", None),
        ("relu", "relu"),
    ],
)
def test_values_read_as_their_type(raw, value):
    assert spec_to_override("train/x", raw).value == value


def test_bare_and_grouped_keys_reach_their_dataclass():
    trial = _trial(
        "stacked", f="gelu", lr="0.01", **{"strategy/r2": "4", "max_new_tokens": "16", "calculator": "off"}
    )
    assert (trial.strategy.f, trial.strategy.r2, trial.train.lr) == ("gelu", 4, 0.01)
    assert trial.train.eval.max_new_tokens == 16 and trial.train.eval.calculator is False


def test_fixed_settings_come_from_the_preset_and_searched_ones_keep_their_default():
    tiny = _trial("stacked")
    assert (tiny.strategy.stage1_epochs, tiny.train.epochs, tiny.train.prompt_style) == (1, 4, "code")
    assert tiny.train.lr == 3e-4  # the tiny preset searches train/lr: one configuration keeps TrainConfig's
    assert _trial("stacked", preset="paper").strategy.stage1_epochs == 3


def test_a_searched_value_is_refused_for_one_configuration():
    with pytest.raises(ValueError, match="study.train runs one configuration; give train/lr one value"):
        _trial("lora", **{"train/lr": "1e-4..1e-3"})


@pytest.mark.parametrize(
    ("method", "overrides", "message"),
    [
        ("lora", {"f": "relu"}, "unknown setting(s) f for method 'lora'"),
        ("stacked", {"f": "swish"}, "unknown stacked LoRA f 'swish'"),
        ("lora", {"lr": "fast"}, "train/lr must be a number, got 'fast'"),
        ("lora", {"r": "x"}, "strategy/r must be a whole number, got 'x'"),
        ("lora", {"prompt_style": "poem"}, "unknown prompt_style 'poem'"),
        ("lora", {"calculator": "maybe"}, "calculator must be on or off, got 'maybe'"),
        ("lora", {"rank": "4"}, "--set rank is not a setting"),
        ("lora", {"seed": "4"}, "--set seed is ambiguous (search/seed, train/seed)"),
    ],
)
def test_bad_settings_are_named(method, overrides, message):
    with pytest.raises(ValueError) as error:
        _trial(method, **overrides)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lora", "--set", "f=relu"], "error: unknown setting(s) f for method 'lora'"),
        (["--method", "lora", "--set", "lr"], "error: --set expects [method:]key=spec, got 'lr'"),
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
def test_one_configuration_runs_and_prints_its_metrics(micro_t5_dir, tmp_path, capfd):
    """In this process (`main`, as `python -m study.train` calls it): a subprocess would import torch,
    transformers and PEFT again (~10 s of CPU) for the same trial; the exit codes are tested above."""
    from study.train import main

    args = ["--method", "stacked", "--preset", "tiny", "--model", str(micro_t5_dir), "--out", str(tmp_path)]
    args += ["--set", "f=relu", "--set", "epochs=1", "--set", "max_new_tokens=8", "--set", "metrics=accuracy"]
    args += ["--train-size", "48", "--dev-size", "8", "--test-size", "8"]
    returned = main(args)
    out, err = capfd.readouterr()  # the file descriptors: all the command printed, not only sys.stdout
    final = json.loads(out)  # stdout is the metrics alone
    assert final == returned and final["test/n"] == 8 and 0 <= final["test/accuracy"] <= 1
    assert "stacked LoRA stage 1" in err
    assert (tmp_path / "generations_test.jsonl").read_text().count("\n") == 8
    assert "chance on the same 8 test problems: always " in err
