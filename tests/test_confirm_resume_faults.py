"""`study.confirm --resume` over damaged records (issue 19), as `study.run --resume`: Ray's experiment state cut
in half or deleted, a garbage grid state or tuner, a damaged manifest. Each stops with one line naming the file
and exit 2, before Ray starts or anything is written (Ray itself would run the grid again beside the finished
runs). The folders are built by hand, in the files' own formats."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from ray.tune.search import BasicVariantGenerator
from test_confirm import _study

from study.confirm import main

EXPERIMENT = "lora-main_trial_a"
MANIFEST = {
    "seeds": [1, 2],
    "groups": {"method/main/lora": {"trial": "lora-main/trial_a", "experiment": EXPERIMENT}},
    "experiments": {
        EXPERIMENT: {"trial": "lora-main/trial_a", "method": "lora", "params": {"method": "lora"}}
    },
}


class RunsWouldStart(Exception):
    """Raised where the confirmation would prepare its data and start Ray: the checks let it through."""


@pytest.fixture
def confirmation(tmp_path, monkeypatch) -> Path:
    """A study whose confirmation ran once and was interrupted after Ray's first snapshot."""
    study = _study(tmp_path)
    monkeypatch.setattr("study.confirm.plan", lambda confirm, config: json.loads(json.dumps(MANIFEST)))

    def runs_would_start(config):
        raise RunsWouldStart

    monkeypatch.setattr("study.confirm_runs.prepare_confirm_inputs", runs_would_start)
    root = study / "confirm"
    experiment = root / EXPERIMENT
    experiment.mkdir(parents=True)
    (root / "confirm.json").write_text(json.dumps(MANIFEST))
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"_tune_config": None}))
    state = {"trial_data": [], "runner_data": {}, "stats": {}}
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    BasicVariantGenerator().save_to_dir(str(experiment), "2026-01-01_00-00-00")
    (experiment / "trial_b").mkdir()  # a finished run
    (experiment / "trial_b" / "result.json").write_text('{"test/accuracy": 0.5}\n')
    return study


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cut_state(experiment: Path) -> str:
    state = next(experiment.glob("experiment_state-*.json"))
    state.write_text(state.read_text()[:20])
    return f"Ray's experiment state {state} is damaged"


def delete_state(experiment: Path) -> str:
    next(experiment.glob("experiment_state-*.json")).unlink()
    return f"Ray's experiment state (experiment_state-*.json) is missing from {experiment}"


def garble_grid(experiment: Path) -> str:
    grid = next(experiment.glob("basic-variant-state-*.json"))
    grid.write_bytes(b"\x80\x04not a pickle at all" * 40)
    return f"Ray's grid state {grid} is damaged"


def delete_grid(experiment: Path) -> str:
    next(experiment.glob("basic-variant-state-*.json")).unlink()
    return f"Ray's grid state (basic-variant-state-*.json) is missing from {experiment}"


def cut_tuner(experiment: Path) -> str:
    tuner = experiment / "tuner.pkl"
    tuner.write_bytes(tuner.read_bytes()[:10])
    return f"Ray's tuner state {tuner} is damaged"


def delete_tuner(experiment: Path) -> str:
    (experiment / "tuner.pkl").unlink()
    return f"Ray's tuner state (tuner.pkl) is missing from {experiment}"


def cut_manifest(experiment: Path) -> str:
    manifest = experiment.parent / "confirm.json"
    manifest.write_text(manifest.read_text()[:30])
    return f"the confirmation's manifest {manifest} is damaged"


def manifest_without_seeds(experiment: Path) -> str:
    manifest = experiment.parent / "confirm.json"
    manifest.write_text(json.dumps({**MANIFEST, "seeds": None}))
    return f"the confirmation's manifest {manifest} is damaged (no seeds)"


@pytest.mark.parametrize(
    "damage",
    [
        cut_state,
        delete_state,
        garble_grid,
        delete_grid,
        cut_tuner,
        delete_tuner,
        cut_manifest,
        manifest_without_seeds,
    ],
)
def test_resume_over_a_damaged_record_is_one_line_naming_it_and_exit_2(confirmation, damage, capsys):
    named = damage(confirmation / "confirm" / EXPERIMENT)
    before = _files(confirmation)
    with pytest.raises(SystemExit) as exit_info:
        main([str(confirmation), "--resume", "--no-dashboard"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("error: cannot resume: ") and named in err and len(err.strip().splitlines()) == 1, (
        err
    )
    assert _files(confirmation) == before  # nothing written, nothing created in the lost file's place


def test_resume_over_whole_records_goes_on_to_the_runs(confirmation):
    with pytest.raises(RunsWouldStart):
        main([str(confirmation), "--resume", "--no-dashboard"])
