"""Ray Tune's overhead on a tiny study: wall time against the time the trials themselves report.

    python bench/bench_tune_overhead.py [--trials 8] [--concurrent 2] [--reuse both|on|off]

Runs one tiny LoRA experiment (tiny preset model, 48 training records, one epoch, short generations) through
the study's own planning, data, searcher, scheduler and Tuner, on a local Ray cluster of `--concurrent`
CPUs. For each `reuse_actors` setting it prints:

- wall: seconds of `Tuner.fit()`; trials: the sum of the trials' `time_total_s` (their own work, from the
  first line of the trainable to the last report, model loading included);
- ideal: trials / concurrent, the wall time with zero overhead; overhead/trial: (wall * concurrent -
  trials) / n, the seconds each trial costs beyond its own work (actor start, scheduling, checkpoints,
  experiment-state snapshots); slot/trial: wall * concurrent / n, what a trial costs all in (a fresh
  actor also re-imports torch and transformers inside the trial, which counts as the trial's own time);
- cpu: CPU seconds of this process and every Ray process under it, over wall * concurrent (the machine
  share the study used; other users of the machine do not count).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_spaces.overrides import spec_to_override  # noqa: E402
from study.config import DataSettings, ResourceSettings, SearchSettings, StorageSettings, StudyConfig  # noqa: E402

TINY = {
    "train/epochs": 1,
    "train/batch_size": 16,
    "train/eval/metrics": "accuracy,perplexity",
    "train/eval/max_new_tokens": 16,
    "train/eval/calculator": False,
}


class TreeCpu:
    """CPU seconds of a process and all its descendants, sampled so that exited workers still count."""

    def __init__(self, root: int, period: float = 0.25) -> None:
        self.root, self.period = psutil.Process(root), period
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for process in [self.root, *self.root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                self.seen[process.pid] = times.user + times.system
            except psutil.Error:
                pass  # exited between listing and reading

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.period)

    def __enter__(self) -> TreeCpu:
        self._sample()
        self.start = dict(self.seen)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(total - self.start.get(pid, 0.0) for pid, total in self.seen.items())


def run_once(*, trials: int, concurrent: int, reuse: bool, storage: str) -> dict:
    import ray
    from ray import tune

    from study.dashboard import connect
    from study.plan import plan_experiments, prepare_inputs, trial_resources
    from study.prepare import DEFAULT_CACHE
    from study.tuner import build_tuner, study_trainable

    config = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora",), trials=trials),
        data=DataSettings(train_size=48, dev_size=8, test_size=8),
        resources=ResourceSettings(num_cpus=concurrent, dashboard=False),
        storage=StorageSettings(root=storage, name=f"bench-reuse-{reuse}"),
        overrides=tuple(spec_to_override(k, v) for k, v in TINY.items()),
    )
    (experiment,) = plan_experiments(config)
    prepared = prepare_inputs(config)
    experiment.base["model"] = prepared.models["lora"]
    cluster = connect(address=None, num_cpus=concurrent, dashboard=False)
    try:
        trainable = tune.with_parameters(
            study_trainable,
            splits=prepared.splits,
            code_records=prepared.code_records,
            cache_dir=str(DEFAULT_CACHE / "stage1"),
        )
        resources = trial_resources(config, "lora", cluster)
        tuner = build_tuner(
            config,
            experiment,
            tune.with_resources(trainable, resources),
            max_concurrent=concurrent,
            restore=False,
            reuse_actors=reuse,
        )
        with TreeCpu(os.getpid()) as cpu:
            start = time.perf_counter()
            grid = tuner.fit()
            wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    work = sum(r.metrics["time_total_s"] for r in grid)
    return {
        "reuse_actors": reuse,
        "trials": len(grid),
        "concurrent": concurrent,
        "wall_s": round(wall, 2),
        "trial_s": round(work, 2),
        "ideal_s": round(work / concurrent, 2),
        "overhead_per_trial_s": round((wall * concurrent - work) / len(grid), 2),
        "slot_s_per_trial": round(wall * concurrent / len(grid), 2),
        "cpu_util": round(cpu.seconds / (wall * concurrent), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument(
        "--concurrent", type=int, default=2, help="CPUs of the local cluster = trials at once"
    )
    parser.add_argument("--reuse", choices=("both", "on", "off"), default="both")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = {"both": (True, False), "on": (True,), "off": (False,)}[args.reuse]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as storage:
        for reuse in settings:
            rows.append(
                run_once(trials=args.trials, concurrent=args.concurrent, reuse=reuse, storage=storage)
            )
    header = (
        "reuse_actors",
        "trials",
        "wall_s",
        "trial_s",
        "ideal_s",
        "overhead_per_trial_s",
        "slot_s_per_trial",
    )
    header += ("cpu_util",)
    print("  ".join(f"{h:>{len(h)}}" for h in header))
    for row in rows:
        print("  ".join(f"{row[h]!s:>{len(h)}}" for h in header))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
