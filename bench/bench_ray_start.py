"""What a local Ray cluster's start costs with and without its dashboard (`--no-dashboard`).

    python bench/bench_ray_start.py --repeats 3

Each start runs in a fresh process, as a study's driver does: `ray.init(address="local", num_cpus=2)`
with `include_dashboard` on, then off, alternating so that a change in the machine's load falls on both.
Prints each start's seconds to `ray.init`'s return and to the end of `ray.shutdown()`, and the medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

START = """
import os, time
os.environ["RAY_AUTH_MODE"] = "disabled"
import ray
start = time.perf_counter()
ray.init(address="local", num_cpus=2, include_dashboard={dashboard}, log_to_driver=False)
up = time.perf_counter() - start
start = time.perf_counter()
ray.shutdown()
print(up, time.perf_counter() - start)
"""


def one_start(dashboard: bool) -> tuple[float, float] | None:
    """(seconds to start, seconds to shut down) in a fresh process; None when the start failed."""
    done = subprocess.run(
        [sys.executable, "-c", START.format(dashboard=dashboard)], capture_output=True, text=True
    )
    if done.returncode != 0:
        print(f"  dashboard={dashboard}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    up, down = map(float, done.stdout.split())
    return up, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for dashboard in (True, False):
            started = time.perf_counter()
            result = one_start(dashboard)
            if result is not None:
                seconds[dashboard].append(result[0])
                print(
                    f"  {repeat}: dashboard={dashboard!s:5} ray.init {result[0]:5.1f} s, shutdown {result[1]:4.1f} s,"
                    f" process {time.perf_counter() - started:5.1f} s",
                    flush=True,
                )
    for dashboard, values in seconds.items():
        if values:
            print(
                f"dashboard={dashboard}: median ray.init {statistics.median(values):.1f} s over {len(values)}"
            )


if __name__ == "__main__":
    main()
