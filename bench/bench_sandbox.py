"""Throughput of the sandbox for generated programs: trivial programs per second, serial and parallel.

python bench/bench_sandbox.py [--programs 200]
"""

from __future__ import annotations

import argparse
import os
import time

from trainables.scoring.sandbox import run_programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=200)
    args = parser.parse_args()
    sources = [f"a = {i} / 2; b = a + 48; print(round(b))" for i in range(args.programs)]
    for workers in (1, os.cpu_count() or 1):
        start = time.perf_counter()
        results = run_programs(sources, max_workers=workers)
        seconds = time.perf_counter() - start
        assert all(r.ok for r in results), next(r.error for r in results if not r.ok)
        print(
            f"{workers} worker(s): {args.programs / seconds:.1f} programs/s ({args.programs} programs, {seconds:.2f} s)"
        )


if __name__ == "__main__":
    main()
