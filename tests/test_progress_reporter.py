"""The progress table survives a best trial that lacks a conditional parameter (a study once died of it)."""

from __future__ import annotations

import time

import pytest
from ray import tune
from ray.tune.experiment import Trial

from study.tuner import _ProgressReporter

COLUMNS = {"strategy/r2": "r2", "strategy/f": "f"}


@pytest.fixture
def trials(monkeypatch, tmp_path) -> list[Trial]:
    # stub trials have no storage; the table prints the experiment folder
    for name in ("local_experiment_path", "local_path", "path"):
        monkeypatch.setattr(Trial, name, property(lambda self: str(tmp_path)))
    made = []
    configs = [
        {"strategy/f": "relu", "strategy/r2": 8},
        {"strategy/r2": 4, "strategy/baseline": "single_lora"},
    ]
    for index, (config, accuracy) in enumerate(zip(configs, (0.1, 0.5), strict=True)):
        trial = Trial("math_trainable", config=config, trial_id=f"t{index}", stub=True)
        trial.run_metadata.last_result = {"dev/accuracy": accuracy, "training_iteration": 1, "config": config}
        made.append(trial)
    return made


def test_rays_own_reporter_raises_when_the_best_trial_lacks_a_column(trials):
    reporter = tune.CLIReporter(parameter_columns=COLUMNS, metric="dev/accuracy", mode="max")
    with pytest.raises(KeyError):
        reporter.report(trials, False)


def test_ours_prints_the_table_and_the_best_trial(trials, capsys):
    reporter = _ProgressReporter(parameter_columns=COLUMNS, conditional=frozenset({"strategy/f"}))
    reporter.setup(
        start_time=time.time(), total_samples=2, metric="dev/accuracy", mode="max"
    )  # as Ray does, from the TuneConfig
    assert reporter.should_report(trials, done=True)
    reporter.report(trials, False)
    text = capsys.readouterr().out
    assert text.count("Current best trial:") == 1  # printed once, by the reporter that could
    assert "Current best trial: t1 with dev/accuracy=0.5" in text
    assert "r2" in text  # the columns every trial has are still there


def test_ours_keeps_the_conditional_column_while_the_best_trial_has_it(trials, capsys):
    trials[0].run_metadata.last_result["dev/accuracy"] = 0.9
    reporter = _ProgressReporter(parameter_columns=COLUMNS, conditional=frozenset({"strategy/f"}))
    reporter.setup(start_time=time.time(), total_samples=2, metric="dev/accuracy", mode="max")
    reporter.report(trials, False)
    assert (
        "Current best trial: t0 with dev/accuracy=0.9 and parameters={'strategy/r2': 8, 'strategy/f': 'relu'}"
        in (capsys.readouterr().out)
    )


def test_the_table_shows_every_key_the_study_searches_and_not_the_ones_it_fixes():
    from search_spaces.overrides import parse_override
    from study.plan import Experiment
    from study.tuner import progress_columns

    overrides = tuple(
        parse_override(text, methods=["lora"])
        for text in ("strategy/variant=[lora,dora]", "strategy/dropout=0.0..0.2", "strategy/alpha=16")
    )
    experiment = Experiment(
        "lora", "main", base={}, overrides=overrides, points=[], trials=2, max_iterations=1
    )
    columns = progress_columns(experiment)
    assert columns["strategy/variant"] == "variant" and columns["strategy/dropout"] == "dropout"
    assert "strategy/alpha" not in columns  # fixed: the same in every row
    assert columns["train/lr"] == "lr"  # the usual columns stay
