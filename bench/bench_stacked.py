"""Time stacked LoRA against PEFT LoRA and the bare base on the T5-small architecture (random weights).

One run prints, over `--steps` timed repetitions after `--warmup` untimed ones, wall and CPU times of:

1. a training step (forward + backward + AdamW) of stacked LoRA stage 2 (weight-space relu, r1 = r2 = 8)
   and of PEFT LoRA r = 8 on the same targets; target ratio <= 1.25x; also their matmul FLOPs as torch
   counts them, a figure no other process can disturb;
2. an inference forward (no grad) of the merged stacked model and of the bare base; target ratio ~1.0x;
3. one (512, 512) layer's forward + backward with the weight-space delta folded into the weight,
   `F.linear(x, W0 + delta)`, against a second matmul, `F.linear(x, W0) + F.linear(x, delta)`.

The two sides of each comparison run alternately, so load from other processes on a shared machine hits
both alike; ratios come from paired and fastest wall times and from process CPU time. Run it from the
repository root with the package importable (`pip install -e .`, or `PYTHONPATH=.`):
`python bench/bench_stacked.py [--batch 8] [--seq 128] [--steps 4] [--warmup 1]`. CPU, fp32, no hub.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch.utils.flop_counter import FlopCounterMode
from transformers import T5Config, T5ForConditionalGeneration

from trainables.methods.stacked_lora import (
    StackedLoraConfig,
    apply_stacked_lora,
    merge_stacked_lora,
    start_stage2,
)

# t5-small's config.json, without its weights
T5_SMALL = {
    "vocab_size": 32128, "d_model": 512, "d_ff": 2048, "d_kv": 64, "num_layers": 6, "num_decoder_layers": 6,
    "num_heads": 8, "relative_attention_num_buckets": 32, "dropout_rate": 0.1, "feed_forward_proj": "relu",
    "tie_word_embeddings": True, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
}  # fmt: skip
TARGETS = ("q", "v")


@dataclass
class Timing:
    """Wall and process CPU seconds of repeated calls."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        wall, cpu = statistics.median(self.wall), statistics.median(self.cpu)
        fastest = min(self.wall)
        return f"wall median {wall * 1e3:7.1f} ms, fastest {fastest * 1e3:7.1f} ms; cpu {cpu * 1e3:7.1f} ms"


def paired(fn_a: Callable[[], object], fn_b: Callable[[], object], *, warmup: int, steps: int) -> tuple:
    """Timings of `fn_a()` and `fn_b()`, run alternately so that a change of load hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    timings = Timing(), Timing()
    for _ in range(steps):
        for fn, timing in zip((fn_a, fn_b), timings, strict=True):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            timing.wall.append(time.perf_counter() - wall)
            timing.cpu.append(time.process_time() - cpu)
    return timings


def report(name: str, a: Timing, b: Timing, flops: tuple[float, float] | None, target: str) -> None:
    """Print the ratio b / a from several figures.

    Paired and fastest wall times (other processes only ever add time), process CPU time (which leaves out
    time spent waiting for a core) and, if given, matmul FLOPs.
    """
    pairs = statistics.median(tb / ta for ta, tb in zip(a.wall, b.wall, strict=True))
    fastest = min(b.wall) / min(a.wall)
    cpu = statistics.median(b.cpu) / statistics.median(a.cpu)
    print(f"  ratio {name}: wall {pairs:.3f} (median of pairs), {fastest:.3f} (fastest); cpu {cpu:.3f}")
    if flops is not None:
        print(f"  matmul GFLOP {flops[0] / 1e9:.1f} vs {flops[1] / 1e9:.1f}: ratio {flops[1] / flops[0]:.3f}")
    print(f"  ({target})\n")


def matmul_flops(fn: Callable[[], object]) -> float:
    """Matmul FLOPs of one `fn()` call, as torch counts them: exact and immune to a busy machine."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def base_model() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config.from_dict(T5_SMALL))


def train_step_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One AdamW step on the model's trainable parameters."""
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> None:
        loss = model(**inputs).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    return step


def forward_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], None]:
    model.eval()

    def forward() -> None:
        with torch.no_grad():
            model(**inputs)

    return forward


def stacked_stage2() -> T5ForConditionalGeneration:
    """Stacked LoRA after stage 1: B1 non-zero, stage 2 (weight-space relu) trainable."""
    model = apply_stacked_lora(base_model(), StackedLoraConfig(r1=8, r2=8, f="relu", target_modules=TARGETS))
    for name, p in model.named_parameters():
        if name.endswith("lora_B1"):
            torch.nn.init.normal_(p, std=0.01)
    return start_stage2(model)


def layer_fold_vs_split(tokens: int, *, warmup: int, steps: int) -> tuple:
    """Forward + backward of one (512, 512) layer, delta = relu(s2 B2 A2): folded, then a second matmul."""
    torch.manual_seed(0)
    x = torch.randn(tokens, 512, requires_grad=True)  # inside a network the input needs its gradient too
    w0 = torch.randn(512, 512) / 512**0.5
    b2 = (torch.randn(512, 8) * 1e-3).requires_grad_()
    a2 = (torch.randn(8, 512) / 512**0.5).requires_grad_()

    def folded() -> None:
        delta = F.relu(torch.mm(b2 * 2.0, a2))
        F.linear(x, w0 + delta).sum().backward()

    def split() -> None:
        delta = F.relu(torch.mm(b2 * 2.0, a2))
        (F.linear(x, w0) + F.linear(x, delta)).sum().backward()

    return paired(folded, split, warmup=warmup, steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="timed repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    args = parser.parse_args()
    reps = {"warmup": args.warmup, "steps": args.steps}
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.seq)
    inputs = {
        "input_ids": torch.randint(2, 32128, shape, generator=g),
        "labels": torch.randint(2, 32128, shape, generator=g),
    }
    print(
        f"T5-small architecture, batch {args.batch} x {args.seq} tokens, fp32, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"targets {TARGETS}, medians of {args.steps} alternating pairs after {args.warmup} warmup\n")

    lora = get_peft_model(base_model(), LoraConfig(r=8, lora_alpha=16, target_modules=list(TARGETS)))
    stacked = stacked_stage2()
    step_lora, step_stacked = train_step_fn(lora, inputs), train_step_fn(stacked, inputs)
    t_lora, t_stacked = paired(step_lora, step_stacked, **reps)
    flops = matmul_flops(step_lora), matmul_flops(step_stacked)
    del lora, step_lora
    print(f"train step  PEFT LoRA r=8                       {t_lora}")
    print(f"train step  stacked LoRA stage 2 (weight relu)  {t_stacked}")
    report("stacked / LoRA", t_lora, t_stacked, flops, "target <= 1.25")

    merged = merge_stacked_lora(stacked)
    forward_base, forward_merged = forward_fn(base_model(), inputs), forward_fn(merged, inputs)
    t_base, t_merged = paired(forward_base, forward_merged, **reps)
    flops = matmul_flops(forward_base), matmul_flops(forward_merged)
    del merged, stacked, forward_base, forward_merged
    print(f"inference   bare base model                     {t_base}")
    print(f"inference   merged stacked LoRA                 {t_merged}")
    report("merged / base", t_base, t_merged, flops, "target ~1.0")

    t_fold, t_split = layer_fold_vs_split(args.batch * args.seq, warmup=args.warmup, steps=5 * args.steps)
    print(f"one (512, 512) layer, forward + backward, {args.batch * args.seq} tokens:")
    print(f"  F.linear(x, W0 + delta)                       {t_fold}")
    print(f"  F.linear(x, W0) + F.linear(x, delta)          {t_split}")
    report("split / folded", t_fold, t_split, None, "folding saves a matmul")


if __name__ == "__main__":
    main()
