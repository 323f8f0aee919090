"""How long the commands take to decide from the config alone: `--print-config` and an unknown key's exit.

    python bench/bench_cli_start.py                          # this checkout, 5 runs of each command
    python bench/bench_cli_start.py --repo /tmp/before       # another checkout (e.g. `git archive` of main)

Each command runs `--runs` times as `python -m ...` in a fresh interpreter from the checkout's folder (what a
user and the CLI tests pay); prints the median and the range of the wall times, in seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "study.run --print-config": ["study.run", "--method", "all", "--preset", "tiny", "--print-config"],
    "study.run --set train/bogus=1": ["study.run", "--method", "lora", "--preset", "tiny", "--set", "train/bogus=1"],
    "study.train --print-config": ["study.train", "--method", "stacked", "--print-config"],
    "study.train --set train/bogus=1": ["study.train", "--method", "lora", "--set", "train/bogus=1"],
}  # fmt: skip


def wall_times(repo: Path, argv: list[str], runs: int) -> list[float]:
    """Seconds of `runs` fresh `python -m argv` processes run from `repo`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", *argv], cwd=repo, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.repo}, {args.runs} runs each: median (min-max) seconds")
    for name, argv in COMMANDS.items():
        times = wall_times(args.repo, argv, args.runs)
        print(f"{name:<34} {statistics.median(times):6.2f} ({min(times):.2f}-{max(times):.2f})")


if __name__ == "__main__":
    main()
