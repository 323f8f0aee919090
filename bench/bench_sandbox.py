"""Throughput of the sandbox for generated programs: trivial programs per second, serial and parallel, and
the CPU time each program costs (the scorer's and its children's), which a busy machine hardly changes;
then the CPU time the straight-line path (`straight_line.py`, no process) takes for the same programs.

python bench/bench_sandbox.py [--programs 200] [--rounds 1]

The first program of a process also pays for the sandbox's one-time probe; a warm-up run comes first.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from trainables.scoring.sandbox import run_programs
from trainables.scoring.straight_line import straight_line_output


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1, help="repeat each measurement, keep the best")
    args = parser.parse_args()
    sources = [f"a = {i} / 2; b = a + 48; print(round(b))" for i in range(args.programs)]
    run_programs(sources[:4], max_workers=2)  # warm-up: the probe, the page cache
    for workers in (1, os.cpu_count() or 1):
        best_rate, best_cpu = 0.0, float("inf")
        for _ in range(args.rounds):
            start, cpu = time.perf_counter(), _cpu_seconds()
            results = run_programs(sources, max_workers=workers)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            assert all(r.ok for r in results), next(r.error for r in results if not r.ok)
            best_rate, best_cpu = max(best_rate, args.programs / seconds), min(best_cpu, cpu / args.programs)
        print(
            f"{workers} worker(s): {best_rate:.1f} programs/s, {best_cpu * 1000:.1f} ms CPU per program "
            f"({args.programs} programs, best of {args.rounds})"
        )
    best = float("inf")
    for _ in range(max(args.rounds, 5)):
        start = time.process_time()
        assert all(straight_line_output(source) is not None for source in sources)
        best = min(best, (time.process_time() - start) / args.programs)
    print(
        f"straight-line path: {best * 1e6:.0f} us CPU per program (no sandbox; best of {max(args.rounds, 5)})"
    )


if __name__ == "__main__":
    main()
