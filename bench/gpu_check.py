"""The study's CUDA paths, checked and measured in one command that fits in 8 minutes on one GPU.

    python bench/gpu_check.py --out DIR [--data-dir DATA] [--wheels WHEELS] [--budget-s 450]
    python bench/gpu_check.py --out DIR --device cpu --quick     # the same code paths on a CPU, ~1-2 min

It writes DIR/gpu_check.json and DIR/gpu_check.md, rewritten whole after every section, so a run cut short
still leaves what it measured. Sections, each under its own time cap and in its own try/except (a failure
or a missing package is recorded in the report and the next section runs):

  environment  torch, CUDA, the device, and which optional packages import
  matmul       the device's measured dense bf16 matmul rate (fp32 on a CPU), the yardstick of the others
  loop         the study loop (`fit`) against a plain PyTorch + PEFT loop, bf16 autocast, for lora, full and
               stacked stage 2 on the T5-small shape (random weights): ratio (target >= 0.95x), tokens/s,
               share of the matmul rate, peak GPU memory
  generation   the study's batched generation against one example at a time (target >= 10x)
  gpu_tests    the `gpu`-marked tests (pytest -m gpu), which passed
  qlora        QLoRA 8-bit and 4-bit NF4 against LoRA on a float base, T5-base shape: ex/s, peak memory
               (needs bitsandbytes: skipped, saying so, without it)
  sharing      four tiny-preset trials in four processes on one GPU (as --gpus-per-trial 0.25) against one
  projection   the paper preset's cost per method: seconds per epoch of GSM8K train, GPU-hours of 50 trials

Texts are GSM8K train with `--data-dir` (a folder holding gsm8k/train.jsonl), else the embedded generator.

On the project's borrowed GPU machine (torch, transformers, peft, sentence-transformers, pandas, scipy and
pytest; no ray, optuna, bitsandbytes, datasets or evaluate; no network), bitsandbytes travels as its wheel:
`bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl` is 43,139,553 bytes (41.1 MiB, every CUDA
version's kernels in one file), inside the 64 MiB a carried tree may hold. Here, then on the device tool:

    pip download --no-deps bitsandbytes==0.50.2 -d wheels      # wheels/ is git-ignored
    run(carry=["wheels"], timeout_s=600,
        command="timeout 560 python bench/gpu_check.py --out $OUT --wheels wheels")

(add `--data-dir shared/data` where the checkout has the data under shared/). `--wheels DIR` unpacks each
wheel of DIR into a temporary folder put first on sys.path and PYTHONPATH (so the trial processes see it
too), before torch, transformers or peft are imported: they probe for bitsandbytes at import.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/gpu_check.py` from a bare checkout: trainables, study, bench

from study.errors import run_cli  # noqa: E402  (stdlib only: torch is imported after --wheels)
from study.outputs import check_output_folder  # noqa: E402

REPORT_NAME = "gpu_check"
DEFAULT_BUDGET_S = 450.0
# Each section's cap in seconds under the default budget; another --budget-s scales them all alike (a
# loaded CPU running the quick mode may need more, and a slower GPU too).
CAPS = {
    "environment": 30,
    "matmul": 30,
    "loop": 150,
    "generation": 60,
    "gpu_tests": 90,
    "qlora": 90,
    "sharing": 120,
    "projection": 10,
}
RESERVE_S = 10
"""Seconds kept back for each section still to come, so a slow one cannot starve all the rest."""
MIN_CAP_S = 3
"""A section left less than this is skipped as out of time."""


@dataclass(frozen=True)
class CheckConfig:
    """The command line, validated before anything heavy is imported."""

    out: Path
    """Folder for gpu_check.json and gpu_check.md (created)."""
    device: str = "auto"
    """auto (the GPU when there is one), cuda or cpu."""
    quick: bool = False
    """Tiny shapes and few steps: the same code paths in about a minute on a CPU."""
    data_dir: Path | None = None
    """A folder with gsm8k/train.jsonl (else the embedded generator's texts)."""
    wheels: Path | None = None
    """A folder of .whl files to make importable first (bitsandbytes)."""
    budget_s: float = DEFAULT_BUDGET_S
    """Wall-clock budget of the whole run, start-up included; the sections' caps scale with it."""

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"--device must be auto, cuda or cpu, got {self.device!r}")
        check_output_folder("--out", self.out)
        if self.data_dir is not None and not (self.data_dir / "gsm8k" / "train.jsonl").is_file():
            raise ValueError(f"--data-dir {self.data_dir} holds no gsm8k/train.jsonl")
        if self.wheels is not None and not sorted(self.wheels.glob("*.whl")):
            raise ValueError(f"--wheels {self.wheels} holds no .whl file")
        if not 30 <= self.budget_s <= 3600:
            raise ValueError(f"--budget-s must be between 30 and 3600, got {self.budget_s}")


def parse_args(argv: list[str] | None = None) -> CheckConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--wheels", type=Path)
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S)
    args = parser.parse_args(argv)
    return CheckConfig(args.out, args.device, args.quick, args.data_dir, args.wheels, args.budget_s)


def add_wheels(folder: Path) -> list[str]:
    """Unpack every wheel of `folder` into one temporary folder first on sys.path and PYTHONPATH.

    A wheel is a zip of what `pip install --target` would write (bitsandbytes has no `.data` folder), so
    this needs no pip, no network and no write to the machine's site-packages.
    """
    target = Path(tempfile.mkdtemp(prefix="gpu-check-wheels-"))
    names = []
    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        names.append(wheel.name)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    return names


class SectionTimeout(BaseException):
    """A section ran past its cap. A BaseException, so no `except Exception` inside a library swallows it."""


def _on_alarm(signum, frame) -> None:
    raise SectionTimeout


def run_sections(config: CheckConfig, report: dict, sections: dict, deadline: float, write) -> None:
    """Run each section under min(its cap, what the budget leaves); record status, time and any error."""
    signal.signal(signal.SIGALRM, _on_alarm)
    names = list(sections)
    for index, name in enumerate(names):
        entry = report["sections"][name] = {"status": "running", "seconds": 0.0}
        scaled = CAPS[name] * config.budget_s / DEFAULT_BUDGET_S
        cap = min(scaled, deadline - time.monotonic() - RESERVE_S * (len(names) - index - 1))
        if cap < MIN_CAP_S:
            entry.update(
                status="skipped", error="out of time: the run's budget was spent by earlier sections"
            )
            continue
        start = time.monotonic()
        result = report["results"].setdefault(name, {})
        signal.setitimer(signal.ITIMER_REAL, cap)
        try:
            skipped = sections[name](result, cap)
            entry["status"] = "skipped" if skipped else "ok"
            if skipped:
                entry["error"] = skipped
        except SectionTimeout:
            entry.update(status="timeout", error=f"stopped at its {cap:.0f} s cap; partial results kept")
        except Exception as error:  # one section's failure must not cost the others
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            entry.update(status="error", error=f"{type(error).__name__}: {first}"[:500])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            entry["seconds"] = round(time.monotonic() - start, 2)
            _release_memory()
        write()


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_report(out: Path, report: dict) -> None:
    """gpu_check.json and gpu_check.md, each written to a temporary name and renamed: never half a file."""
    from bench.gpu_report import render_markdown

    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in (
        ("json", json.dumps(report, indent=2, default=str)),
        ("md", render_markdown(report)),
    ):
        staging = out / f".{REPORT_NAME}.{suffix}.tmp"
        staging.write_text(text + "\n")
        staging.replace(out / f"{REPORT_NAME}.{suffix}")


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    config = parse_args(argv)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")  # the GPU machine has no network: fail at once, never wait on one
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    wheels = add_wheels(config.wheels) if config.wheels else []
    from transformers.utils import logging as transformers_logging

    from bench.gpu_sections import build_sections, pick

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar per model load buries the log

    device, bf16 = pick(config.device)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "mode": "quick" if config.quick else "full",
        "device": str(device),
        "bf16": bf16,
        "budget_s": config.budget_s,
        "wheels": wheels,
        "sections": {},
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
        sections = build_sections(config, device=device, bf16=bf16, workdir=Path(workdir), report=report)
        run_sections(
            config, report, sections, started + config.budget_s, lambda: write_report(config.out, report)
        )
    report["total_s"] = round(time.monotonic() - started, 1)
    write_report(config.out, report)
    failed = [n for n, s in report["sections"].items() if s["status"] in ("error", "timeout")]
    print(f"gpu_check: {report['total_s']} s; report in {config.out}/{REPORT_NAME}.md", end="")
    print(f"; not ok: {', '.join(failed)}" if failed else "; every section ok or skipped")


if __name__ == "__main__":
    run_cli(main)
