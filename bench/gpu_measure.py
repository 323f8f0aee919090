"""The measurements of `bench/gpu_check.py` on one device, each filling a plain dict for the JSON report.

Models are random T5s of the real shapes (T5-small for the loop and generation, T5-base for QLoRA), saved
like hub models; the texts are GSM8K's own (with a data folder) or the embedded generator's, in the
breakdown prompt style, tokenised by the project's offline BPE tokenizer. The training comparisons reuse
`bench/bench_loop.py`: the study loop `fit` against a plain PyTorch + PEFT loop on the same batches.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.bench_loop import (
    T5_SMALL,
    bench_train_config,
    epoch_batches,
    plain_loop,
    prepared,
    save_t5_small,
    synchronize,
    time_generation,
    time_training,
)
from study.config import preset_values
from trainables.data.load import DataConfig, load_math_splits
from trainables.data.prompts import format_example
from trainables.training.loop import fit
from trainables.training.models import count_parameters
from trainables.training.tokenizer import train_tokenizer
from trainables.training.train_config import TrainConfig

T5_BASE = {"d_model": 768, "d_ff": 3072, "num_layers": 12, "num_heads": 12, "d_kv": 64, "vocab_size": 32128}
# Quick CPU shapes; widths are multiples of 64 so bitsandbytes' 4-bit CPU kernels take every layer.
QUICK_SMALL = {"d_model": 64, "d_ff": 128, "num_layers": 2, "num_heads": 4, "d_kv": 16, "vocab_size": 1024}
QUICK_BASE = {"d_model": 128, "d_ff": 256, "num_layers": 2, "num_heads": 4, "d_kv": 32, "vocab_size": 1024}
LOOP_METHODS = ("lora", "full", "stacked")
QUANTIZED = (
    ("lora", {}, "LoRA, float base"),
    ("qlora", {"bits": 8}, "QLoRA 8-bit"),
    ("qlora", {"bits": 4}, "QLoRA 4-bit NF4"),
)


@dataclass(frozen=True)
class Plan:
    """How big each measurement is: paper-preset shapes on a GPU, or tiny ones for the quick CPU mode."""

    small: dict
    """T5 shape of the loop comparison and of generation."""
    base: dict
    """T5 shape of the QLoRA comparison."""
    batch_size: int
    """Examples per optimiser step (the paper preset's 16)."""
    max_tokens: int
    """Input and target truncation (the paper preset's 256)."""
    train_pairs: int
    """Examples per timed epoch of the loop comparison."""
    base_pairs: int
    """Examples per timed epoch on the T5-base shape."""
    repeats: int
    """Study-loop / plain-loop pairs per method; the report takes the median ratio."""
    flop_batches: int
    """Batches run under torch's FLOP counter to learn the FLOPs per padded token."""
    matmul_size: int
    """n of the n x n x n matmul that measures the device's peak rate."""
    generate_inputs: int
    """Examples generated in length-sorted batches."""
    generate_batch: int
    """Batch size of batched generation (the paper preset's evaluation batch, 64)."""
    new_tokens: int
    """Tokens generated per example (exactly: EOS is held back)."""
    singles: int
    """Examples generated one at a time."""
    vocab_size: int
    """Most tokens the BPE tokenizer learns from the texts."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, dict) and value < 1:
                raise ValueError(f"plan {name} must be >= 1, got {value}")


_PAPER = preset_values("paper")
_BATCH = 16  # the middle of the searched batch sizes (search_spaces.BATCH_SIZES), TrainConfig's default
# The paper preset's batch, token limits, evaluation batch and generation length, 60 steps per timed epoch
GPU_PLAN = Plan(
    small=T5_SMALL,
    base=T5_BASE,
    batch_size=_BATCH,
    max_tokens=_PAPER["train/max_input_tokens"],
    train_pairs=60 * _BATCH,
    base_pairs=20 * _BATCH,
    repeats=2,
    flop_batches=4,
    matmul_size=8192,
    generate_inputs=2 * _PAPER["train/eval/batch_size"],
    generate_batch=_PAPER["train/eval/batch_size"],
    new_tokens=_PAPER["train/eval/max_new_tokens"],
    singles=8,
    vocab_size=32000,
)
QUICK_PLAN = Plan(QUICK_SMALL, QUICK_BASE, 4, 48, 12, 8, 1, 1, 256, 8, 4, 6, 2, 600)


@dataclass
class Bench:
    """What every measurement shares: device, models on disk, tokenizer, texts and the loop's settings."""

    plan: Plan
    device: torch.device
    bf16: bool
    tokenizer: object
    small_dir: Path
    base_dir: Path
    """Where the T5-base shape is saved (by `quantized`, when first needed)."""
    pairs: list[tuple[str, str]]
    train: TrainConfig
    data: str


def math_texts(data_dir: str | None, n: int) -> tuple[list[tuple[str, str]], str]:
    """`n` breakdown-style (input, target) pairs: GSM8K train from `data_dir`, else generated problems."""
    if data_dir:
        config = DataConfig(source="local", data_dir=data_dir, train_size=n, dev_size=1, test_size=1)
    else:  # 2-6 steps: the length range of GSM8K solutions
        config = DataConfig(
            source="embedded", train_size=n, dev_size=1, test_size=1, min_steps=2, max_steps=6
        )
    splits = load_math_splits(config)
    return [format_example(r, "breakdown") for r in splits.train], splits.description


def setup(workdir: Path, *, plan: Plan, device: torch.device, bf16: bool, data_dir: str | None) -> Bench:
    """Texts, a tokenizer trained on them, and random T5-small / T5-base shapes saved under `workdir`."""
    pairs, description = math_texts(data_dir, max(plan.train_pairs, plan.generate_inputs))
    tokenizer = train_tokenizer([t for pair in pairs for t in pair], vocab_size=plan.vocab_size)
    train = bench_train_config(batch_size=plan.batch_size, tokens=plan.max_tokens)
    small = save_t5_small(workdir / "t5-small-shape", tokenizer, plan.small)
    # T5-base's shape is saved by the first measurement that needs it: 900 MB, not worth writing otherwise
    return Bench(plan, device, bf16, tokenizer, small, workdir / "t5-base-shape", pairs, train, description)


def matmul_rate(result: dict, *, device: torch.device, n: int, bf16: bool) -> None:
    """The device's measured dense matmul rate (TFLOP/s): bf16 on a GPU, fp32 on the CPU."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    synchronize(device)
    iterations, start = 0, time.perf_counter()
    while iterations < 5 or time.perf_counter() - start < 2.0:
        a @ b
        iterations += 1
        if iterations % 5 == 0:
            synchronize(device)
    synchronize(device)
    seconds = time.perf_counter() - start
    result.update(dtype=str(dtype).removeprefix("torch."), n=n, tflops=2 * n**3 * iterations / seconds / 1e12)


def _tokens(batches: list[dict]) -> tuple[int, int]:
    """(real, padded) input + target tokens of `batches`."""
    real = sum(int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum()) for b in batches)
    padded = sum(b["input_ids"].numel() + b["labels"].numel() for b in batches)
    return real, padded


def _flops_per_padded_token(bench: Bench, method: str, batches: list[dict]) -> float:
    """Forward + backward matmul FLOPs per padded token, counted by torch over the first few batches."""
    from torch.utils.flop_counter import FlopCounterMode

    model = prepared(method, bench.small_dir, bench.tokenizer, bench.train, device=bench.device)
    sample = batches[: bench.plan.flop_batches]
    with FlopCounterMode(display=False) as counter:
        plain_loop(model, sample, bench.train, bf16=bench.bf16)
    return counter.get_total_flops() / _tokens(sample)[1]


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def compare_loops(result: dict, bench: Bench, *, matmul_tflops: float | None) -> None:
    """Study loop vs plain loop per method: ex/s, ratio, tokens/s, share of the matmul rate, peak memory."""
    pairs = bench.pairs[: bench.plan.train_pairs]
    batches = epoch_batches(bench.tokenizer, pairs, bench.train, bench.device)
    real, padded = _tokens(batches)
    result.update(
        shape=bench.plan.small,
        examples=len(pairs),
        real_tokens=real,
        padded_tokens=padded,
        bf16_autocast=bench.bf16,
    )
    result["methods"] = {}
    for method in LOOP_METHODS:
        runs, peak = [], 0.0
        for _ in range(bench.plan.repeats):
            _reset_peak(bench.device)
            runs.append(
                time_training(
                    method,
                    bench.small_dir,
                    bench.tokenizer,
                    pairs,
                    bench.train,
                    device=bench.device,
                    bf16=bench.bf16,
                )
            )
            peak = max(peak, _peak_mb(bench.device) or 0.0)
        ours, plain = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        flops = _flops_per_padded_token(bench, method, batches) * padded
        achieved = flops * ours / len(pairs) / 1e12  # TFLOP/s of the study loop
        result["methods"][method] = {
            "study_examples_per_s": ours,
            "plain_examples_per_s": plain,
            "ratio": statistics.median(r[0] / r[1] for r in runs),
            "ratios": [r[0] / r[1] for r in runs],
            "study_tokens_per_s": real * ours / len(pairs),
            # what the study loop adds to each optimiser step, beyond the plain loop's time
            "overhead_ms_per_step": 1e3 * len(pairs) * (1 / ours - 1 / plain) / len(batches),
            "tflops": achieved,
            "matmul_share": achieved / matmul_tflops if matmul_tflops else None,
            "peak_memory_mb": peak if bench.device.type == "cuda" else None,
        }


def quantized(result: dict, bench: Bench) -> None:
    """LoRA on a float T5-base shape against QLoRA on it in 8-bit and 4-bit NF4: ex/s and peak memory."""
    pairs = bench.pairs[: bench.plan.base_pairs]
    result.update(examples=len(pairs), shape=bench.plan.base)
    if not bench.base_dir.is_dir():
        save_t5_small(bench.base_dir, bench.tokenizer, bench.plan.base)
    result["runs"] = {}
    for method, settings, label in QUANTIZED:
        _reset_peak(bench.device)
        model = prepared(
            method, bench.base_dir, bench.tokenizer, bench.train, device=bench.device, settings=settings
        )
        trainable, total = count_parameters(model)
        fit(
            model, bench.tokenizer, pairs[: bench.plan.batch_size], bench.train
        )  # warm-up (kernels, allocator)
        synchronize(bench.device)
        start = time.perf_counter()
        fit(model, bench.tokenizer, pairs, bench.train)
        synchronize(bench.device)
        result["runs"][label] = {
            "method": method,
            "settings": settings,
            "examples_per_s": len(pairs) / (time.perf_counter() - start),
            "peak_memory_mb": _peak_mb(bench.device),
            "trainable_parameters": trainable,
            "parameters": total,
        }
        del model


def generation(result: dict, bench: Bench) -> None:
    """Batched (the study's length-sorted `generate`) against one-at-a-time generation on T5-small's shape."""
    plan = bench.plan
    inputs = [p[0] for p in bench.pairs[: plan.generate_inputs]]
    batched, single = time_generation(
        bench.small_dir,
        bench.tokenizer,
        inputs,
        plan.new_tokens,
        device=bench.device,
        batch_size=plan.generate_batch,
        singles=plan.singles,
        exact_length=True,
    )
    result.update(
        examples=len(inputs),
        batch_size=plan.generate_batch,
        new_tokens=plan.new_tokens,
        singles=plan.singles,
        batched_examples_per_s=batched,
        single_examples_per_s=single,
        speedup=batched / single,
    )
    if bench.bf16:  # what evaluation, the larger part of a paper-preset trial, would gain in bf16
        result["batched_bf16_examples_per_s"] = time_generation(
            bench.small_dir,
            bench.tokenizer,
            inputs,
            plan.new_tokens,
            device=bench.device,
            batch_size=plan.generate_batch,
            singles=0,
            exact_length=True,
            bf16=True,
        )[0]
