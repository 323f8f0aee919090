"""Where one tiny trial's wall time goes: base-model setup, training, generation and each metric.

    OMP_NUM_THREADS=1 python bench/bench_trial_time.py [--method lora_cot] [--set prompt_style=code] ...

Runs one real trial (`trainables.trial.run_trial`, the code a study's Ray worker runs, with a
local reporter) on the tiny preset and times, by wrapping the functions the evaluation calls:
generation (`generate`), the sandbox (`run_programs`, code style), perplexity, ROUGE-1 and the MiniLM
similarity (the first call loads the model: that load is part of what a trial pays). Training is the
rest of the trial's time. The base's build and pretraining are timed apart (`--cache` empty: a fresh
build; the default cache: usually a hit). Run it on `main` and on a branch with the same arguments to see
what a change moved; it works on any checkout whose `study.prepare` / `trainables` it imports.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from study.cli import Layers
from study.prepare import DEFAULT_CACHE, prepare
from study.train import one_trial

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(name: str, function):
    """`function`, adding its wall time to TIMES[name] on every call."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start
            CALLS[name] += 1

    return wrapper


def instrument() -> None:
    """Wrap what a trial's evaluation calls, where each caller looks the name up."""
    from trainables.scoring import evaluation, metric_registry, sandbox
    from trainables.training import loop

    for module, name, label in (
        (evaluation, "generate", "generation"),
        (evaluation, "_perplexity", "perplexity"),
        # the metric records call these through their module's globals
        (metric_registry, "rouge1", "rouge1"),
        (metric_registry, "semantic_similarity", "similarity"),
    ):
        setattr(module, name, timed(label, getattr(module, name)))
    sandbox.run_programs = timed("sandbox", sandbox.run_programs)
    # the loop imported evaluate_split by name: wrap it where the loop looks it up
    loop.evaluate_split = timed("evaluation (all)", loop.evaluate_split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lora_cot")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="base-model cache (empty: build)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a Ray trial has one core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from trainables.training.reporting import LocalReporter
    from trainables.trial import run_trial
    from trainables.trial_config import TrialConfig

    layers = Layers(bare_names=True)
    for text in args.overrides:
        key, _, spec = text.partition("=")
        layers.add(key, spec, origin="flag")
    config = layers.config(plugins=(), defaults={"search/methods": (args.method,), "preset": args.preset})
    trial_dict = one_trial(config)
    start = time.perf_counter()
    prepared = prepare(config, cache_dir=args.cache)
    setup = time.perf_counter() - start
    trial_dict["model"] = prepared.models[args.method]
    trial = TrialConfig.from_dict(trial_dict)
    instrument()
    with tempfile.TemporaryDirectory() as out:
        reporter = LocalReporter(Path(out), echo=None)
        start = time.perf_counter()
        final = run_trial(
            trial,
            splits=prepared.splits,
            reporter=reporter,
            code_records=prepared.code_records,
            cache_dir=args.cache / "stage1",
            log=lambda message: None,
        )
        total = time.perf_counter() - start
    evaluation = TIMES.pop("evaluation (all)", 0.0)
    evaluations = CALLS.pop("evaluation (all)", 0)
    splits = prepared.splits["main"]
    print(
        f"{args.preset} preset, {args.method}, {trial.train.prompt_style} style, {trial.train.epochs} epochs, "
        f"train {len(splits.train)} / dev {len(splits.dev)} / test {len(splits.test)}, "
        f"{args.threads} thread(s); test accuracy {final.get('test/accuracy', float('nan')):.3f}"
    )
    print(f"{'part':<28}{'seconds':>9}{'share':>8}{'calls':>7}")
    rows = [("base build + pretraining", setup, 0), ("trial total", total, 1)]
    rows.append(("  training (the rest)", total - evaluation, 0))
    rows.append((f"  evaluation ({evaluations} splits)", evaluation, evaluations))
    rows += [(f"    {name}", seconds, CALLS[name]) for name, seconds in TIMES.items()]
    other = evaluation - sum(TIMES.values())
    rows.append(("    other (extraction, rows)", other, 0))
    for name, seconds, calls in rows:
        share = f"{seconds / total:.0%}" if not name.startswith("base") else ""
        print(f"{name:<28}{seconds:>9.1f}{share:>8}{calls or '':>7}")
    print(f"settings: {dataclasses.asdict(trial.train)['eval']}", file=sys.stderr)


if __name__ == "__main__":
    main()
