"""Ray's experiment state as `analysis.load` reads it: plain JSON, never Ray's own reader (issue 22).

Ray's public reader runs code from the file (its trials' pickled fields), so the loader parses the two
fields it needs itself; the first test pins that format to what Ray 2.60 writes, the second shows why.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from ray.tune.utils.serialization import TuneFunctionEncoder
from test_analysis import test_metrics, trial_params, write_trial

from analysis.load import load_results


def write_experiment_state(experiment: Path, trials: list[Trial]) -> None:
    """What Ray 2.60's `TuneController.save_to_dir` writes: every trial's `get_json_state()` pair."""
    state = {"trial_data": [t.get_json_state() for t in trials], "runner_data": {}, "stats": {}}
    name = "experiment_state-2026-12-05_13-00-00.json"
    (experiment / name).write_text(json.dumps(state, cls=TuneFunctionEncoder))


def rays_trial(folder: Path, status: str) -> Trial:
    trial = Trial("study_trainable", config={"method": "lora"}, trial_id=folder.name, stub=True)
    trial.relative_logdir = folder.name  # what `Trial.init_local_path` sets from the trial's folder name
    trial.set_status(status)
    return trial


def test_the_loader_reads_the_status_and_order_ray_writes(tmp_path):
    experiment = tmp_path / "lora-main"
    first = write_trial(experiment, trial_params("lora"), dev=[0.1, 0.1], test=test_metrics(0.1))
    running = write_trial(experiment, trial_params("lora"), dev=[0.4])
    write_experiment_state(
        experiment, [rays_trial(running, Trial.RUNNING), rays_trial(first, Trial.TERMINATED)]
    )
    trials = load_results([tmp_path]).trials.set_index("trial_dir")
    assert trials.loc[str(running), "status"] == "incomplete"  # one report of two, and Ray says RUNNING
    assert trials.loc[str(running), "search_order"] == 0 and trials.loc[str(first), "search_order"] == 1


class Planted:
    """A pickled value that leaves a file behind when it is unpickled: the author's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_rays_own_reader_runs_code_from_the_state_and_the_loader_does_not(tmp_path):
    from ray import tune

    experiment = tmp_path / "lora-main"
    folder = write_trial(experiment, trial_params("lora"), dev=[0.1, 0.1], test=test_metrics(0.1))
    trial = rays_trial(folder, Trial.TERMINATED)
    trial_json, metadata = trial.get_json_state()
    entry = json.loads(trial_json)
    marker = tmp_path / "ran"
    entry["results"] = pickle.dumps(Planted(marker)).hex()  # a `_nonjson_fields` value, as hex
    state = {"trial_data": [[json.dumps(entry), metadata]], "runner_data": {}, "stats": {}}
    (experiment / "experiment_state-2026-12-05_13-00-00.json").write_text(json.dumps(state))
    trials = load_results([tmp_path]).trials
    assert not marker.exists() and trials["status"].tolist() == ["finished"]
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever Ray makes of the rest, the code has run
        tune.ExperimentAnalysis(str(experiment))
    assert marker.exists()
