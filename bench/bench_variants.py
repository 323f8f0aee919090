"""Does each LoRA variant, and stacked LoRA with f = sin, learn on the tiny base? One trial each, no search.

    OMP_NUM_THREADS=1 nice python bench/bench_variants.py --out /tmp/bench_variants

Runs `python -m study.train --preset tiny` once per LoRA variant (lora, rslora, dora, pissa, olora, loraplus)
and once for stacked LoRA with f = sin (and f = identity beside it), with the tiny preset's adapter settings
(rank 4, alpha 16 on all six projections, no dropout, 4 epochs, batch 32, lr `--lr`), one after another,
and prints a Markdown table: test accuracy with its 95% interval against the majority answer of the same 300
test problems, distinct answers, the learned update's numerical and effective rank (median over layers)
and each run's wall time. A run that learned nothing shows as an interval that does not clear the majority.
A run whose folder already holds its final report is read instead of repeated, so a second call collects.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from analysis.load import read_jsonl
from trainables.scoring.baselines import MAJORITY, baselines_of_generations

ADAPTER = ["r=4", "alpha=16", "target_modules=q,k,v,o,wi,wo", "dropout=0"]
STACKED = [
    "r1=4",
    "alpha1=16",
    "r2=4",
    "alpha2=16",
    "stage1_lr=1e-2",
    "target_modules=q,k,v,o,wi,wo",
    "dropout=0",
]
RUNS = {
    "lora": ("lora", [*ADAPTER, "variant=lora"]),
    "stacked f = sin (omega 30)": ("stacked", [*STACKED, "f=sin", "omega=30"]),
    "rslora": ("lora", [*ADAPTER, "variant=rslora"]),
    "dora": ("lora", [*ADAPTER, "variant=dora"]),
    "loraplus (ratio 4)": ("lora", [*ADAPTER, "variant=loraplus", "loraplus_lr_ratio=4"]),
    "pissa": ("lora", [*ADAPTER, "variant=pissa"]),
    "olora": ("lora", [*ADAPTER, "variant=olora"]),
    "stacked f = identity": ("stacked", [*STACKED, "f=identity"]),
}


def _finished(folder: Path) -> dict | None:
    """The final report of a run done before (its last progress line carries the test metrics), else None."""
    progress = folder / "progress.jsonl"
    lines = progress.read_text().splitlines() if progress.is_file() else []
    final = json.loads(lines[-1]) if lines else {}
    return final if "test/accuracy" in final else None


def slug(name: str) -> str:
    """A run's folder and `--only` name: `stacked f = sin (omega 30)` -> `stacked_f_sin`."""
    return name.split(" (")[0].replace(" = ", "_").replace(" ", "_")


def run(name: str, method: str, settings: list[str], *, out: Path, lr: str) -> dict:
    folder = out / slug(name)
    done = _finished(folder)
    if done is not None:  # a run finished before is read, not repeated (rerun the script to collect)
        majority = baselines_of_generations(read_jsonl(str(folder / "generations_test.jsonl")))[MAJORITY]
        return {
            "name": name,
            "final": done,
            "majority": majority.accuracy,
            "seconds": None,
        }
    args = [sys.executable, "-m", "study.train", "--method", method, "--preset", "tiny", "--out", str(folder)]
    for setting in [*settings, f"lr={lr}", "train/epochs=4", "train/batch_size=32"]:
        args += ["--set", setting]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        return {"name": name, "error": result.stderr.strip().splitlines()[-1], "seconds": seconds}
    final = json.loads(result.stdout)
    majority = baselines_of_generations(read_jsonl(str(folder / "generations_test.jsonl")))[MAJORITY]
    return {"name": name, "final": final, "majority": majority.accuracy, "seconds": seconds}


def _seconds(entry: dict) -> str:
    return "earlier call" if entry["seconds"] is None else f"{entry['seconds']:.0f} s"


def row(entry: dict) -> str:
    if "error" in entry:
        return f"| {entry['name']} | failed: {entry['error']} | | | | | {_seconds(entry)} |"
    f = entry["final"]
    rank = f.get("update/numerical_rank", float("nan")), f.get("update/effective_rank", float("nan"))
    above = "yes" if f["test/accuracy_low"] > entry["majority"] else "**no**"
    return (
        f"| {entry['name']} | {100 * f['test/accuracy']:.1f}% [{100 * f['test/accuracy_low']:.1f}, "
        f"{100 * f['test/accuracy_high']:.1f}] | {100 * entry['majority']:.1f}% | {above} | "
        f"{f['test/distinct_answers']:.0f} | {rank[0]:.1f} / {rank[1]:.2f} | {_seconds(entry)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for each run's files")
    parser.add_argument("--lr", default="6e-3", help="learning rate of every run (the tiny adapters' best)")
    parser.add_argument(
        "--only", default="", help="comma-separated runs, e.g. lora,stacked_f_sin (default: all)"
    )
    args = parser.parse_args()
    names = [n for n in RUNS if not args.only or slug(n) in args.only.split(",")]
    print("| run | test accuracy [95% CI] | majority answer | above it | distinct answers | "
          "update rank (numerical / effective) | wall |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in names:
        method, settings = RUNS[name]
        print(row(run(name, method, settings, out=args.out, lr=args.lr)), flush=True)


if __name__ == "__main__":
    main()
