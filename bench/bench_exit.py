"""How long a command holding the training stack takes to exit after its last line, with and without the frozen
heap that `study.errors.run_cli` leaves to the interpreter's shutdown.

    python bench/bench_exit.py --repeats 3

Each run is a fresh process that imports what a study's driver holds at its end (torch, transformers, PEFT,
Ray Tune, Optuna, the trial's modules), runs an empty command through `run_cli`, prints a time stamp and
exits; the figure is the time from that stamp to the process's end. `--no-freeze` drops `run_cli`'s exit
handler, as before it had one. The two alternate, so that a change in the machine's load falls on both.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = """
import atexit, gc, sys, time
import optuna, peft, ray.tune, torch, transformers
import trainables.trial
from study.errors import run_cli
run_cli(lambda: None)
if {no_freeze}:
    atexit.unregister(gc.freeze)
print(time.time(), flush=True)
"""


def exit_seconds(*, freeze: bool) -> float:
    """Seconds from the command's last line to its process's end."""
    done = subprocess.run(
        [sys.executable, "-c", COMMAND.format(no_freeze=not freeze)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    ended = time.time()
    return ended - float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"frozen": [], "not frozen": []}
    for _ in range(args.repeats):
        for name, freeze in (("frozen", True), ("not frozen", False)):
            runs[name].append(exit_seconds(freeze=freeze))
            print(f"{name}: {runs[name][-1]:.2f} s", flush=True)
    for name, seconds in runs.items():
        print(f"median {name}: {statistics.median(seconds):.2f} s over {len(seconds)} runs")


if __name__ == "__main__":
    main()
