"""The Ray side of `study.confirm`: one Tuner per best trial, a grid over the training seeds, the study's machinery.

Data, base models, the cluster, trial resources, the trainable and the trial folders' names all come from
`study.plan` and `study.tuner`, so a confirmation run is the study's trial with another `train/seed`.
"""

from __future__ import annotations

import copy
import math
import os
import sys
from typing import Any

from ray import tune

from study.config import StudyConfig
from study.confirm import MANIFEST, ConfirmConfig
from study.dashboard import access_lines, connect, forget_cluster
from study.optuna_store import storage_failure_in
from study.plan import concurrency, prepare_inputs, trial_resources
from study.prepare import DEFAULT_CACHE, Prepared
from study.results import COMPLETION_KEY, write_json
from study.results_storage import is_local, restore_tuner, whole_file_system
from study.storage_watch import StorageWatch
from study.stored_experiment import GRID, check_saved_state, has_saved_state, newest
from study.tuner import study_trainable, trial_dirname, trial_name


def prepare_confirm_inputs(config: StudyConfig) -> tuple[Prepared, list[str]]:
    """The study's data with the whole test split where that leaves train and dev as they were.

    For GSM8K files or the hub the test subset is a prefix of its own shuffle, so asking for all of it
    changes nothing else; the check below makes sure. The embedded generator makes its test problems first
    and keeps the others apart from them, so there the study's own test split is kept.
    """
    embedded = config.data.data_config().get("source") == "embedded"
    study = prepare_inputs(config)
    if embedded:
        return study, [
            f"{c}: the study's generated test split, {len(s.test)} problems" for c, s in study.splits.items()
        ]
    full = prepare_inputs(config, data={"test_size": None})
    notes = []
    for name, splits in full.splits.items():
        before = study.splits[name]
        same = [r.question for r in splits.train] == [r.question for r in before.train]
        if same and [r.question for r in splits.dev] == [r.question for r in before.dev]:
            notes.append(f"{name}: the whole test split, {len(splits.test)} records")
        else:
            full.splits[name] = before
            notes.append(
                f"{name}: the study's test split ({len(before.test)}), since the whole one moves train"
            )
    return full, notes


def build_confirm_tuner(
    config: StudyConfig, root: str, name: str, space: dict[str, Any], trainable: Any, *, max_concurrent: int
) -> tune.Tuner:
    """A grid over `space`'s `train/seed` values: every seed runs all its epochs (no searcher, no scheduler)."""
    path = f"{root}/{name}"
    if tune.Tuner.can_restore(path):
        return restore_tuner(path, trainable)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            num_samples=1,  # once over the grid
            max_concurrent_trials=max_concurrent,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=root,
            storage_filesystem=whole_file_system(root),  # a full disk cuts no file
            callbacks=[StorageWatch(path)] if is_local(path) else None,  # a refused write: one line, exit 2
            failure_config=tune.FailureConfig(max_failures=config.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the latest, for resuming
            sync_config=tune.SyncConfig(sync_artifacts=True),  # generations_test.jsonl, placement.json
            progress_reporter=tune.CLIReporter(
                metric_columns={"training_iteration": "iter", "test/accuracy": "test acc"},
                parameter_columns={"train/seed": "seed"},
                max_report_frequency=30,
            ),
            log_to_file=True,
            verbose=1,
        ),
    )


def check_resumable(path: str) -> None:
    """An experiment Ray has started at `path` (its tuner or a snapshot is there) is whole enough to resume
    (`study.stored_experiment`); Ray itself would run its grid again beside the finished runs."""
    if tune.Tuner.can_restore(path) or has_saved_state(path) or any(newest(path, p) for p in GRID):
        check_saved_state(path, saved_with_state=GRID)


def run_experiments(confirm: ConfirmConfig, config: StudyConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    """Prepare once, start or join the cluster, run every experiment in turn; print and return the manifest.

    Raises:
        ValueError: one line naming a damaged snapshot of an experiment to resume, before anything is written.
    """
    for name in manifest["experiments"]:
        check_resumable(f"{confirm.root}/{name}")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic progress table, as in the study
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    prepared, notes = prepare_confirm_inputs(config)
    for note in prepared.notes + notes:
        print(note, file=sys.stderr)
    manifest["test_splits"] = notes
    cluster = connect(
        address=config.resources.address,
        num_cpus=config.resources.num_cpus,
        dashboard=config.resources.dashboard,
    )
    try:
        print("\n".join(access_lines(cluster)), file=sys.stderr)
        resources = {m: trial_resources(config, m, cluster) for m in config.search.methods}
        write_json(f"{confirm.root}/{MANIFEST}", manifest)
        trainable = tune.with_parameters(
            study_trainable,
            splits=prepared.splits,
            code_records=prepared.code_records,
            cache_dir=str(DEFAULT_CACHE / "stage1"),
            plugins=config.plugins,  # the study's --plugin modules, imported again in each worker
        )
        outcomes = {}
        for name, experiment in manifest["experiments"].items():
            method = experiment["method"]
            space = copy.deepcopy(experiment["params"])
            if space["model"] != prepared.models[method]:
                print(
                    f"{name}: base model {space['model']} is now {prepared.models[method]}", file=sys.stderr
                )
            space["model"] = prepared.models[method]
            space["train/seed"] = tune.grid_search(manifest["seeds"])
            max_concurrent = min(concurrency(config, resources[method], cluster), len(manifest["seeds"]))
            print(f"\n== confirm {experiment['trial']}: {len(manifest['seeds'])} seeds", file=sys.stderr)
            tuner = build_confirm_tuner(
                config,
                confirm.root,
                name,
                space,
                tune.with_resources(trainable, resources[method]),
                max_concurrent=max_concurrent,
            )
            try:
                grid = tuner.fit()
            except Exception as error:
                failure = storage_failure_in(error)  # a full or read-only storage: one line, exit 2
                if failure is None:
                    raise
                raise failure from None
            if grid.num_terminated + grid.num_errors < len(manifest["seeds"]):
                print(f"{name} was interrupted; continue with --resume", file=sys.stderr)
                raise KeyboardInterrupt
            outcomes[name] = [r.metrics.get(COMPLETION_KEY) for r in grid if r.error is None]
    finally:
        import ray

        ray.shutdown()
        forget_cluster()
    print(f"\nconfirmation runs in {confirm.root} (test accuracy over seeds; the search's best beside):")
    print(format_outcomes(manifest, outcomes))
    return manifest


def format_outcomes(manifest: dict[str, Any], outcomes: dict[str, list[Any]]) -> str:
    """One line per group: seeds finished, mean and standard deviation of test accuracy, the search's."""
    rows = [("group", "trial", "seeds", "test acc mean", "std", "search's best")]
    for group_id, group in manifest["groups"].items():
        values = [float(v) for v in outcomes.get(group["experiment"], []) if isinstance(v, (int, float))]
        mean = sum(values) / len(values) if values else math.nan
        std = (
            math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else math.nan
        )
        search = group["search"].get(COMPLETION_KEY, math.nan)
        rows.append(
            (group_id, group["trial"], str(len(values)), f"{mean:.3f}", f"{std:.3f}", f"{search:.3f}")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
