"""Run the hyperparameter study: one Ray Tune + Optuna experiment per (method, GSM8K config).

    python -m study.run --method all --preset tiny --trials 2        # ~5 minutes on a 2-core CPU
    python -m study.run --method stacked --trials 50                 # the real setting: T5-small, GSM8K
    python -m study.run --method lora --address head-node:6379 --storage s3://bucket/studies
    python -m study.run --study-file results/slm-tiny/study.yaml --name again   # rerun a saved study

Results go to `<storage>/<name>/<method>-<config>/` (Ray Tune's files plus `best_config.json`), the study's
resolved config tree to `<storage>/<name>/study.yaml`, and the best trial of each experiment is printed at
the end. See docs/running.md and docs/configuration.md.
"""

from __future__ import annotations

import argparse
import signal

from study.cli import parse_settings, study_parser
from study.config import StudyConfig
from study.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    """The flags, generated from the config tree (`study.cli`)."""
    return study_parser(
        "python -m study.run",
        "Search the hyperparameters of T5 fine-tuning methods on GSM8K with Ray Tune and Optuna.",
        "Exit status 2 means bad input (a flag, a missing model or data, an unreachable cluster).",
    )


def parse_config(argv: list[str] | None = None) -> StudyConfig:
    """Command-line arguments -> a validated `StudyConfig` (raises ValueError for bad input)."""
    return parse_study_args(argv)[0]


def parse_study_args(
    argv: list[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> tuple[StudyConfig, argparse.Namespace]:
    """`parse_config` with another command's parser (`build_parser()` plus its own flags, as
    `study.preflight` adds them); returns the namespace too, for those flags."""
    return parse_settings(argv, parser or build_parser())


def _run(argv: list[str] | None) -> None:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background by a shell (`study.run ... &`): Ray Tune answers SIGINT during the
        # trials all the same, so the whole study does, the memory check and the data's loading included.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config, args = parse_study_args(argv)
    if args.print_config:
        from study.study_file import print_study

        print_study(config)
        return
    from study.plan import plan_experiments

    experiments = plan_experiments(config)  # every trial setting checked, without torch or Ray
    from study.tuner import run_study  # Ray, torch and the trainables are imported only now

    run_study(config, experiments)


def main(argv: list[str] | None = None) -> None:
    """The `python -m study.run` / `slm-study` entry point: bad input exits 2 with one line."""
    run_cli(lambda: _run(argv))


if __name__ == "__main__":
    main()
