"""The search: one Ray Tune experiment per (method, GSM8K config), each a seeded Optuna TPE study with ASHA.

`run_study(config, experiments)` goes top to bottom, after `study.run` has planned the experiments
(`study.plan.plan_experiments`: a bad setting fails there, before Ray or torch is imported):
1. check a resumed study against the one it continues;
2. check where the Optuna studies (`study.tracking`: SQLite `<study>/optuna.db` or --optuna-storage) and
   MLflow runs go, then prepare the data and base models once in the driver (a bad URL, a missing model or
   dataset stops here, before Ray);
3. start a local Ray cluster or join `--address`, and fit each trial's resources to it;
4. run the experiments in turn - new ones, or restored ones with `--resume` - writing `best_config.json`
   after each, and print the best trial of every experiment.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from search_spaces import conditional_keys, define_by_run, space_keys
from study.config import StudyConfig
from study.dashboard import access_lines, check_reachable, connect, forget_cluster, note_study
from study.optuna_store import StoredOptunaSearch, settle, storage_failure_in
from study.plan import Experiment, concurrency, prepare_inputs, trial_resources
from study.prepare import DEFAULT_CACHE
from study.results import ExperimentSummary, print_summary, read_text, summarize, write_json
from study.results_storage import is_local, restore_tuner, whole_file_system
from study.storage_watch import StorageWatch
from study.stored_experiment import check_saved_state, has_saved_state
from study.study_file import study_record, write_study_file
from study.tracking import (
    OptunaLocation,
    check_tracking,
    mlflow_callback,
    optuna_location,
    prepare_studies,
    upload,
)
from study.worker_deaths import tolerate_worker_deaths

RESUME_CHECKED = ("preset", "model", "data_dir", "train_size", "dev_size", "test_size", "code_dataset")
RESUME_CHECKED += ("trials", "seed", "metric", "mode", "scheduler", "grace_period", "reduction_factor")
RESUME_CHECKED += ("overrides", "optuna_storage", "mlflow")
"""Settings a resumed study must share with the one it continues (Ray restores the searcher as it was)."""
PROGRESS_PARAMS = (
    "train/lr",
    "train/epochs",
    "strategy/r",
    "strategy/r2",
    "train/prompt_style",
    "strategy/f",
)


def study_trainable(
    config: dict, *, splits, code_records, cache_dir: str, plugins: Sequence[str] = ()
) -> None:
    """The trial: record where it runs (`placement.json`), then `trainables.trial.math_trainable`."""
    import ray

    from trainables.training.reporting import ray_trial_dir
    from trainables.trial import math_trainable

    placement = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
    }
    (ray_trial_dir() / "placement.json").write_text(json.dumps(placement))
    math_trainable(config, splits=splits, code_records=code_records, cache_dir=cache_dir, plugins=plugins)


def trial_name(trial: Any) -> str:
    """`<method>_<id>` in the progress table."""
    return f"{trial.config.get('method', 'trial')}_{trial.trial_id}"


def trial_dirname(trial: Any) -> str:
    """`trial_<id>`: the config is in the folder's params.json, not in a 200-character folder name."""
    return f"trial_{trial.trial_id}"


def asha_scheduler(config: StudyConfig, experiment: Experiment) -> tune.schedulers.ASHAScheduler | None:
    """ASHA with the study's grace period and reduction factor on the trial's evaluations; None without."""
    if config.scheduler.name != "asha":
        return None
    return tune.schedulers.ASHAScheduler(
        time_attr="training_iteration",
        max_t=experiment.max_iterations,
        grace_period=min(config.scheduler.grace_period, experiment.max_iterations),
        reduction_factor=config.scheduler.reduction_factor,
    )


def build_tuner(
    config: StudyConfig,
    experiment: Experiment,
    trainable: Any,
    *,
    max_concurrent: int,
    restore: bool,
    reuse_actors: bool = True,
    location: OptunaLocation | None = None,
) -> tune.Tuner:
    """A new Tuner for `experiment`, or the interrupted one restored from storage.

    `reuse_actors` keeps a trial's worker process (torch and transformers imported) for the next trial;
    `run_trial` seeds everything and frees the model, so trials stay independent (bench_tune_overhead.py
    measures what it saves). The Optuna study goes to `location` (default: `optuna_location(config)`).
    """
    path = f"{config.study_path}/{experiment.name}"
    if restore:
        return restore_tuner(path, trainable)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # `group` is experimental
        sampler = optuna.samplers.TPESampler(
            seed=config.search.seed, multivariate=True, group=True, constant_liar=True
        )
    searcher = StoredOptunaSearch(
        storage_url=(location or optuna_location(config)).url,
        study_name=experiment.name,
        experiment_path=path,
        space=define_by_run(experiment.method, experiment.base, experiment.overrides),
        metric=config.search.metric,
        mode=config.search.mode,
        sampler=sampler,
        points_to_evaluate=experiment.points or None,
    )
    scheduler = asha_scheduler(config, experiment)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=config.search.metric,
            mode=config.search.mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=scheduler,
            num_samples=experiment.trials,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=config.study_path,
            storage_filesystem=whole_file_system(config.study_path),  # a full disk cuts no file
            failure_config=tune.FailureConfig(max_failures=config.resources.max_failures),
            # One kept checkpoint per trial (Ray also keeps the latest, for resuming); with num_to_keep=1
            # every reported checkpoint also forces an experiment snapshot, which is what --resume reads.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=config.search.metric,
                checkpoint_score_order=config.search.mode,
            ),
            sync_config=tune.SyncConfig(sync_artifacts=True),  # generations_test.jsonl, placement.json
            progress_reporter=_progress_reporter(config, experiment),
            callbacks=_callbacks(config, path, experiment),
            log_to_file=True,  # each trial's output goes to its folder, not to this terminal
            verbose=1,
        ),
    )


def _callbacks(config: StudyConfig, path: str, experiment: Experiment) -> list[tune.Callback]:
    """MLflow's, with --mlflow; a watch on a local storage that stops the study once it refuses writes."""
    callbacks = [StorageWatch(path)] if is_local(path) else []
    if config.storage.mlflow:
        callbacks.append(
            mlflow_callback(config.storage.mlflow, study=config.storage.name, experiment=experiment.name)
        )
    return callbacks


class _ProgressReporter(tune.ProgressReporter):
    """Ray's table, tolerant of conditional parameters.

    The table's rows skip a parameter a trial lacks (stacked LoRA's `f` exists only on the `stacked`
    branch), but Ray's "current best trial" line looks every column up without a default and raises
    KeyError when the best trial took another branch, which would end the whole study. So two of Ray's
    `CLIReporter`s are kept: one with every column, and one with the columns every trial has, which
    prints the report when the first cannot (it raises before printing anything).
    """

    def __init__(
        self, *, conditional: frozenset[str] = frozenset(), parameter_columns: dict[str, str], **kwargs
    ):
        self._every = tune.CLIReporter(parameter_columns=parameter_columns, **kwargs)
        common = {k: v for k, v in parameter_columns.items() if k not in conditional}
        self._common = tune.CLIReporter(parameter_columns=common, **kwargs)

    def setup(self, *args, **kwargs) -> None:
        self._every.setup(*args, **kwargs)
        self._common.setup(*args, **kwargs)

    def should_report(self, trials, done: bool = False) -> bool:
        return self._every.should_report(trials, done)

    def report(self, trials, done: bool, *sys_info: str) -> None:
        try:
            self._every.report(trials, done, *sys_info)
        except KeyError:
            self._common.report(trials, done, *sys_info)


def progress_columns(experiment: Experiment) -> dict[str, str]:
    """The table's parameter columns: the usual ones `experiment`'s space has, then every key the study's
    own settings search (`--set strategy/variant=[lora,dora]`), so what the user varies is on screen."""
    keys = space_keys(experiment.method, experiment.base)
    shown = [k for k in PROGRESS_PARAMS if k in keys]
    shown += [o.key for o in experiment.overrides if o.kind != "fixed" and o.key not in shown]
    return {k: k.split("/")[-1] for k in shown}


def _progress_reporter(config: StudyConfig, experiment: Experiment) -> _ProgressReporter:
    columns = progress_columns(experiment)
    return _ProgressReporter(
        # a searched key of the user's may live on one branch only; the fallback table must not need it
        conditional=conditional_keys(experiment.method) | (columns.keys() - set(PROGRESS_PARAMS)),
        metric_columns={
            "training_iteration": "iter",
            config.search.metric: config.search.metric,
            "dev/distinct_answers": "dev answers",  # 1-5 distinct answers: a collapsed model, visible live
            "test/accuracy": "test acc",
        },
        parameter_columns=columns,
        sort_by_metric=True,
        max_report_frequency=30,
        max_progress_rows=12,
    )


def _check_resume(config: StudyConfig, experiments: Sequence[Experiment]) -> set[str]:
    """Names of the experiments Ray can restore from storage; refuses a clash with or without --resume, and
    a damaged snapshot (`study.stored_experiment`). One started but never snapshotted starts over."""
    started = {e.name for e in experiments if tune.Tuner.can_restore(f"{config.study_path}/{e.name}")}
    if started and not config.storage.resume:
        raise ValueError(
            f"{config.study_path} already holds {', '.join(sorted(started))}: pass --resume to continue, "
            "or --name for a new study"
        )
    for name in sorted(started):
        check_saved_state(f"{config.study_path}/{name}")
    existing = {name for name in started if has_saved_state(f"{config.study_path}/{name}")}
    saved = read_text(f"{config.study_path}/study.json")
    if config.storage.resume and saved is None:
        raise ValueError(f"nothing to resume: no study at {config.study_path}")
    if saved is not None:
        before, now = json.loads(saved), study_record(config)
        changed = [k for k in RESUME_CHECKED if before.get(k) != now[k]]
        if changed:
            diff = ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed)
            raise ValueError(f"--resume with settings that differ from the study's: {diff}")
    return existing


def run_study(config: StudyConfig, experiments: list[Experiment]) -> list[ExperimentSummary]:
    """Run the planned `experiments` of `config` (`study.plan.plan_experiments`); returns their summaries
    (also printed and stored as JSON)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table, with the columns chosen above
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A reused worker must end its last trial (final artifact sync included) within this many seconds, or
    # Ray fails the next trial ("Trainable runner reuse requires reset_config()"); Ray's 2 s is too short
    # on a busy machine. Workers of a local cluster inherit it from this process.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    if config.resources.address:
        check_reachable(
            config.resources.address
        )  # before loading anything: a typo in --address is a 1-second error
    existing = _check_resume(config, experiments)
    location = optuna_location(config)
    check_tracking(config, location)  # a bad --optuna-storage or --mlflow stops here, before Ray
    prepared = prepare_inputs(config)
    for note in prepared.notes:
        print(note, file=sys.stderr)
    for experiment in experiments:
        experiment.base["model"] = prepared.models[experiment.method]
    # The memory check comes before anything is written: a refused study leaves no trace.
    _memory_check(config, prepared, experiments)
    prepare_studies(location, [e.name for e in experiments], restored=existing, study_path=config.study_path)
    cluster = connect(
        address=config.resources.address,
        num_cpus=config.resources.num_cpus,
        dashboard=config.resources.dashboard,
    )
    tolerate_worker_deaths()  # a worker killed for memory fails its trial, not the study
    note_study(optuna_url=location.url)
    try:
        print("\n".join(access_lines(cluster)), file=sys.stderr)
        resources = {m: trial_resources(config, m, cluster) for m in config.search.methods}
        if not existing:
            write_json(f"{config.study_path}/study.json", study_record(config))
            write_study_file(config)  # the resolved config tree: the file that reruns this study
        trainable = tune.with_parameters(
            study_trainable,
            splits=prepared.splits,
            code_records=prepared.code_records,
            cache_dir=str(DEFAULT_CACHE / "stage1"),
            plugins=config.plugins,  # imported again in each worker, before it reads a trial's method
        )
        summaries = [
            _run_experiment(config, e, trainable, resources, cluster, existing, location) for e in experiments
        ]
    finally:
        import ray

        ray.shutdown()  # ends a cluster started here; only disconnects from a joined one
        forget_cluster()
    write_json(f"{config.study_path}/best_configs.json", [s.best for s in summaries if s.best])
    objective = f"by {config.search.metric}, {config.search.mode}"
    heading = f"\nbest trial of each experiment ({objective}), results in {config.study_path}:"
    print_summary(summaries, metric=config.search.metric, heading=heading)  # warns of a best trial at chance
    return summaries


def _memory_check(config: StudyConfig, prepared, experiments: Sequence[Experiment]) -> None:
    """Each method's trial measured for one step before any starts (or, with --resume, the first run's
    measurements reused): one whose largest batch would not fit trains in smaller micro-batches (the same
    experiment); one that cannot fit at all stops the study."""
    if not config.resources.preflight:
        return
    if (
        config.resources.address
    ):  # trials run on the cluster's nodes, whose devices this machine cannot measure
        print(
            "memory check skipped with --address: run python -m study.preflight on a worker node",
            file=sys.stderr,
        )
        return
    from study.preflight import check_memory
    from study.saved_check import record_path

    caps = check_memory(config, prepared, experiments, saved=record_path(config.study_path))
    for experiment in experiments:
        if experiment.method in caps:
            experiment.base["train/max_micro_batch"] = caps[experiment.method]


def _run_experiment(
    config, experiment, trainable, resources, cluster, existing, location
) -> ExperimentSummary:
    method_resources = resources[experiment.method]
    max_concurrent = concurrency(config, method_resources, cluster)
    share = f"{method_resources['cpu']:g} CPU + {method_resources['gpu']:g} GPU"
    print(
        f"\n== {experiment.name}: {experiment.trials} trials, {max_concurrent} at once, {share} each",
        file=sys.stderr,
    )
    if experiment.points:
        groups = sorted({key.split("/")[-1] for point in experiment.points for key in point})
        raised = (
            f" (--trials {config.search.trials} raised to cover them)"
            if experiment.trials > config.search.trials
            else ""
        )
        print(
            f"   the first {len(experiment.points)} cover every {' and '.join(groups)}{raised}",
            file=sys.stderr,
        )
    tuner = build_tuner(
        config,
        experiment,
        tune.with_resources(trainable, method_resources),
        max_concurrent=max_concurrent,
        restore=experiment.name in existing,
        location=location,
    )
    try:
        grid = tuner.fit()
        settle(location.url, experiment.name, grid, metric=config.search.metric)
    except Exception as error:
        failure = storage_failure_in(error)  # a full or read-only Optuna storage: one line, exit 2
        if failure is None:
            raise
        raise failure from None
    finally:
        upload(location)  # an object-store study's Optuna file goes with its results, interrupted or not
    if grid.num_terminated + grid.num_errors < experiment.trials:
        print(
            f"{experiment.name} was interrupted; continue it with --resume --name {config.storage.name}",
            file=sys.stderr,
        )
        raise KeyboardInterrupt
    summary = summarize(
        grid, method=experiment.method, data_config=experiment.data_config, **_objective(config)
    )
    if summary.best is not None:
        write_json(f"{config.study_path}/{experiment.name}/best_config.json", summary.best)
    return summary


def _objective(config: StudyConfig) -> dict[str, str]:
    return {"metric": config.search.metric, "mode": config.search.mode}
