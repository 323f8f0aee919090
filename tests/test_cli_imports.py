"""The commands decide everything the config alone decides without the training stack: `--help`,
`--print-config` and every bad-input exit of `study.run`, `study.train`, `study.preflight` and
`study.confirm` import none of torch, transformers, PEFT, bitsandbytes, sentence-transformers or Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "sentence_transformers", "ray")
# Runs one command in this interpreter as `python -m MODULE ARGS` would, then reports its exit status and
# which heavy modules it imported (the last stderr line).
DRIVER = """
import json, runpy, sys
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module, *argv]
code = 0
try:
    runpy.run_module(module, run_name="__main__")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}), file=sys.stderr)
""".replace("HEAVY", repr(HEAVY))

CASES = {
    "run --help": ("study.run", ["--help"], 0, "--print-config"),
    "run --print-config": ("study.run", ["--method", "all", "--preset", "tiny", "--print-config"], 0, "train/lr"),
    "run unknown trial key": ("study.run", ["--method", "lora", "--set", "train/bogus=1"], 2, "bogus"),
    "run bad value": ("study.run", ["--method", "qlora", "--set", "strategy/r=abc"], 2, "strategy/r must be"),
    "run bad choice": ("study.run", ["--method", "stacked", "--set", "strategy/f=nope"], 2, "'nope'"),
    "run bad range": ("study.run", ["--method", "lora", "--set", "train/lr=2..1"], 2, "low < high"),
    "run unknown method": ("study.run", ["--method", "nope"], 2, "unknown method 'nope'"),
    "run bad preset": ("study.run", ["--method", "lora", "--preset", "nope"], 2, "unknown preset 'nope'"),
    "run bad study file": ("study.run", ["--study-file", "{bad_study_file}"], 2, "search/bogus"),
    "train --print-config": ("study.train", ["--method", "stacked", "--print-config"], 0, "strategy/"),
    "train unknown key": ("study.train", ["--method", "lora", "--set", "train/bogus=1"], 2, "bogus"),
    "train bad value": ("study.train", ["--method", "lora", "--set", "lr=abc"], 2, "train/lr must be"),
    "preflight --print-config": ("study.preflight", ["--method", "lora", "--print-config"], 0, "search/"),
    "preflight unknown key": ("study.preflight", ["--method", "lora", "--set", "train/bogus=1"], 2, "bogus"),
    "confirm --print-config": ("study.confirm", ["{study}", "--print-config"], 0, "confirm/seeds"),
    "confirm bad family": ("study.confirm", ["{study}", "--family", "nope"], 2, "--family must be"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_config_decisions_import_no_training_stack(case, tmp_path):
    module, argv, code, shown = CASES[case]
    (tmp_path / "bad.yaml").write_text("search/bogus: {value: 1, from: flag}\n")
    (tmp_path / "slm-x").mkdir()
    (tmp_path / "slm-x" / "study.json").write_text(json.dumps({"methods": ["lora"], "preset": "tiny"}))
    paths = {"bad_study_file": str(tmp_path / "bad.yaml"), "study": str(tmp_path / "slm-x")}
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, module, *(arg.format(**paths) for arg in argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    report = json.loads(out.stderr.splitlines()[-1])
    assert report["code"] == code, out.stderr
    assert shown in out.stdout + out.stderr
    assert report["heavy"] == [], f"{case} imported {report['heavy']}"
