"""Run the hyperparameter study: one Ray Tune + Optuna experiment per (method, GSM8K config).

    python -m study.run --method all --preset tiny --trials 2        # ~5 minutes on a 2-core CPU
    python -m study.run --method stacked --trials 50                 # the real setting: T5-small, GSM8K
    python -m study.run --method lora --address head-node:6379 --storage s3://bucket/studies

Results go to `<storage>/<name>/<method>-<config>/` (Ray Tune's files plus `best_config.json`), and the
best trial of each experiment is printed at the end. See docs/running.md.
"""

from __future__ import annotations

import argparse
import math

from study.config import CODE_DATASETS, DEFAULT_STORAGE, SCHEDULERS, SEARCH_METRICS, StudyConfig
from study.errors import OneLineParser, run_cli
from study.plugins import add_plugin_argument, preload_plugins
from study.presets import PRESET_NAMES
from trainables.methods import method_names


def _number(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise argparse.ArgumentTypeError(f"expected a number {'>=' if zero_ok else '>'} 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, zero_ok=False)


def _non_negative_float(text: str) -> float:
    return _number(text, zero_ok=True)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m study.run",
        description="Search the hyperparameters of T5 fine-tuning methods on GSM8K with Ray Tune and Optuna.",
        epilog="Exit status 2 means bad input (a flag, a missing model or data, an unreachable cluster).",
    )
    what = parser.add_argument_group("what to study")
    what.add_argument(
        "--method", required=True, choices=(*method_names(), "all"), help="a method, or all of them"
    )
    add_plugin_argument(what)
    what.add_argument("--config", default="main", choices=("main", "socratic", "both"), help="GSM8K config")
    what.add_argument(
        "--trials", type=int, default=50, help="trials per (method, config) experiment (default 50)"
    )
    what.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="tiny: generated problems and a small T5 built locally (minutes on a CPU); "
        "small: T5-small on a GSM8K subset; paper: T5-small (T5-base for qlora) on full GSM8K. "
        "Default: paper, checked before Ray starts",
    )
    what.add_argument(
        "--model", help="base model for every method: hub name or local path (default: the preset's)"
    )
    what.add_argument("--data-dir", help="folder with gsm8k/*.jsonl (and mbpp/mbpp.jsonl) instead of the hub")
    what.add_argument("--train-size", type=int, help="training records (default: the preset's)")
    what.add_argument(
        "--dev-size", type=int, help="dev records trials are compared on (default: the preset's)"
    )
    what.add_argument(
        "--test-size", type=int, help="test records scored at the end of a trial (default: the preset's)"
    )
    what.add_argument(
        "--code-dataset", choices=CODE_DATASETS, help="stacked LoRA's stage-1 data (default: the preset's)"
    )

    search = parser.add_argument_group("search and scheduling")
    search.add_argument(
        "--metric", default="dev/accuracy", choices=tuple(SEARCH_METRICS), help="what TPE and ASHA optimise"
    )
    search.add_argument(
        "--mode", choices=("max", "min"), help="whether --metric is maximised (default: its own)"
    )
    search.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help="ASHA early stopping, or none (default: the preset's; tiny runs every trial to its end)",
    )
    search.add_argument(
        "--grace-period",
        type=int,
        default=1,
        help="ASHA: evaluations before a trial can be stopped (default 1)",
    )
    search.add_argument(
        "--reduction-factor",
        type=float,
        default=2.0,
        help="ASHA: 1/F of the trials at a rung go on to the next (default 2)",
    )
    search.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="[METHOD:]KEY=SPEC",
        help="narrow or override a search parameter: train/lr=1e-4..1e-3, strategy/f=[relu,gelu], "
        "train/epochs=2, stacked:strategy/r2=[8,16] (repeatable)",
    )
    search.add_argument(
        "--space-file", help="YAML file of the same overrides (key: spec, or method: {key: spec})"
    )
    search.add_argument("--seed", type=int, default=0, help="seeds the data split, TPE and every trial")

    where = parser.add_argument_group("resources and cluster")
    where.add_argument(
        "--max-concurrent", type=int, help="trials at once per experiment (default: what fits)"
    )
    where.add_argument("--cpus-per-trial", type=_positive_float, help="CPUs per trial (default 1)")
    where.add_argument(
        "--gpus-per-trial",
        type=_non_negative_float,
        help="GPU share per trial, fractions allowed: 0.25 runs four trials per GPU (default: by method)",
    )
    where.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial (default 2)")
    where.add_argument(
        "--address", help="join a running Ray cluster (host:port or auto) instead of starting one"
    )
    where.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    where.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")

    store = parser.add_argument_group("results")
    store.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="local folder or URI, e.g. s3://bucket/path"
    )
    store.add_argument("--name", help="the study's folder under --storage (default: slm-<preset>)")
    store.add_argument("--resume", action="store_true", help="continue the interrupted study --name")
    store.add_argument(
        "--optuna-storage",
        metavar="URL",
        help="Optuna storage for the studies: sqlite:///f.db, postgresql://..., a journal file f.log "
        "(default: <storage>/<name>/optuna.db)",
    )
    store.add_argument(
        "--mlflow",
        metavar="URI",
        help="log every trial to MLflow: file:./mlruns, sqlite:///mlflow.db, http://...",
    )
    return parser


def parse_config(argv: list[str] | None = None) -> StudyConfig:
    """Command-line arguments -> a validated `StudyConfig` (raises ValueError for bad input)."""
    from search_spaces.overrides import load_space_file, parse_override

    plugins = preload_plugins(argv)  # first: their methods are valid values of --method and --space
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = method_names()
    overrides = [parse_override(text, methods=methods) for text in args.space]
    if args.space_file:
        overrides = load_space_file(args.space_file, methods=methods) + overrides
    return StudyConfig(
        methods=(args.method,),
        configs=(args.config,),
        trials=args.trials,
        preset=args.preset,
        model=args.model,
        data_dir=args.data_dir,
        train_size=args.train_size,
        dev_size=args.dev_size,
        test_size=args.test_size,
        code_dataset=args.code_dataset,
        scheduler=args.scheduler,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        max_failures=args.max_failures,
        address=args.address,
        num_cpus=args.num_cpus,
        dashboard=not args.no_dashboard,
        storage=args.storage,
        name=args.name,
        resume=args.resume,
        optuna_storage=args.optuna_storage,
        mlflow=args.mlflow,
        seed=args.seed,
        metric=args.metric,
        mode=args.mode,
        overrides=tuple(overrides),
        plugins=plugins,
    )


def _run(argv: list[str] | None) -> None:
    config = parse_config(argv)
    from study.tuner import run_study  # Ray, torch and the trainables are imported only now

    run_study(config)


def main(argv: list[str] | None = None) -> None:
    """The `python -m study.run` / `slm-study` entry point: bad input exits 2 with one line."""
    run_cli(lambda: _run(argv))


if __name__ == "__main__":
    main()
