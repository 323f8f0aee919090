"""The study's training loop against a plain PyTorch + PEFT loop, and batched against one-by-one generation.

    python bench/bench_loop.py [--steps 24] [--repeats 3] [--batch 8] [--tokens 128] [--threads 2]

On the T5-small architecture (random weights: no hub needed), for each strategy, one run measures examples/s
of training steps through `trainables.training.loop.fit` and through the plainest loop doing the same work (same
model, batches, optimiser, schedule and clipping), and prints the ratio (target: >= 0.95x). It then measures
evaluation generation through `trainables.scoring.evaluation.generate` (length-sorted batches of 16) against calling
`model.generate` one example at a time (target: >= 5x on CPU).

One measurement of a few steps is noise (a full fine-tuning step takes seconds, and one stall of either of
two threads on two cores stalls the step), so `--repeats` rounds are run and the median ratio is printed
with every round's.
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration, get_linear_schedule_with_warmup

from trainables.data.batching import collate, encode_pairs
from trainables.data.records import CodeRecord
from trainables.methods import StrategyContext, get_strategy
from trainables.scoring.eval_settings import EvalSettings
from trainables.scoring.evaluation import generate
from trainables.training.loop import batch_order, fit
from trainables.training.models import load_model
from trainables.training.tokenizer import train_tokenizer
from trainables.training.train_config import TrainConfig
from trainables.trial import stage_fitter

T5_SMALL = {"d_model": 512, "d_ff": 2048, "num_layers": 6, "num_heads": 8, "d_kv": 64, "vocab_size": 32128}
WORDS = "apples pencils farmer sold bought each week dollars twice half more than total how many left".split()


def texts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) + f" {rng.randint(1, 999)}" for _ in range(words)) for _ in range(n)]


def save_t5_small(directory: Path, tokenizer, shape: dict = T5_SMALL) -> Path:
    """A randomly initialised (seed 0) T5 of `shape` (default T5-small's) and `tokenizer`, saved like a hub model."""
    config = T5Config(**shape, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def bench_train_config(*, batch_size: int, tokens: int) -> TrainConfig:
    """The one epoch both loops time: constant learning rate, no warmup, `tokens` in and out."""
    return TrainConfig(
        lr=1e-4,
        epochs=1,
        batch_size=batch_size,
        warmup_ratio=0,
        max_input_tokens=tokens,
        max_target_tokens=tokens,
        prompt_style="breakdown",
    )


def prepared(method: str, path: Path, tokenizer, train: TrainConfig, *, device="cpu", settings=None):
    """The model `method` trains, on `device`; `settings` override the strategy's defaults (`{"bits": 4}`)."""
    strategy = get_strategy(method)
    config = strategy.make_config(dict(settings or {}))
    model = load_model(path, device=device, **strategy.load_kwargs(config))
    # stacked LoRA's stage 1 trains here, before any timing, on a few coding tasks
    code = [CodeRecord(text=text, code=text, source="gsm8k-programs") for text in texts(8, words=8, seed=3)]
    context = StrategyContext(
        tokenizer=tokenizer,
        model_name=str(path),
        train=train,
        fit=stage_fitter(tokenizer, log=lambda message: None),
        code_records=code,
    )
    return strategy.apply(model, config, context)


def synchronize(device) -> None:
    """Wait for the GPU's queued kernels, so a clock read after this has timed them."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(model, batches, train: TrainConfig, *, bf16: bool = False) -> None:
    """What a user would write by hand: forward (in bf16 autocast on a GPU), backward, clip, step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)  # as fit's
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    model.train()
    for batch in batches:
        with torch.autocast(params[0].device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def epoch_batches(tokenizer, pairs, train: TrainConfig, device="cpu") -> list[dict]:
    """The padded batches, on `device`, that `fit` draws in its first epoch over `pairs`."""
    examples = encode_pairs(
        tokenizer, pairs, max_input_tokens=train.max_input_tokens, max_target_tokens=train.max_target_tokens
    )
    order = batch_order(len(examples), train.batch_size, seed=train.seed, epoch=0)
    return [
        collate([examples[i] for i in ids], tokenizer.pad_token_id, torch.device(device)) for ids in order
    ]


def time_training(
    method: str, path: Path, tokenizer, pairs, train: TrainConfig, *, device="cpu", bf16=False, settings=None
) -> tuple[float, float]:
    """(study loop, plain loop) examples/s of one epoch over `pairs`; bf16 autocast in the plain loop where
    `fit` uses it (`bf16`), and the batches `fit` draws in its first epoch, so both do the same work."""
    batches = epoch_batches(tokenizer, pairs, train, device)
    model_of = functools.partial(prepared, method, path, tokenizer, train, device=device, settings=settings)
    # warm up both paths once (allocator, bitsandbytes kernels), then time them in turn
    plain_loop(model_of(), batches[:1], train, bf16=bf16)
    model = model_of()
    synchronize(device)
    start = time.perf_counter()
    plain_loop(model, batches, train, bf16=bf16)
    synchronize(device)
    plain = len(pairs) / (time.perf_counter() - start)
    del model  # before the next one is built: two models' optimiser states would inflate peak GPU memory
    model = model_of()
    synchronize(device)
    start = time.perf_counter()
    fit(model, tokenizer, pairs, train)
    synchronize(device)
    ours = len(pairs) / (time.perf_counter() - start)
    return ours, plain


def time_generation(
    path: Path,
    tokenizer,
    inputs: list[str],
    max_new_tokens: int,
    *,
    device="cpu",
    batch_size: int = 16,
    singles: int | None = None,
    exact_length: bool = False,
    bf16: bool = False,
) -> tuple[float, float]:
    """(batched, one at a time) examples/s of greedy generation; the second over the first `singles` inputs.

    `exact_length` makes every sequence run to `max_new_tokens` (EOS is held back), so both modes decode
    the same number of tokens whatever a random model happens to emit. `bf16` generates under bf16
    autocast (the study's evaluation runs in fp32).
    """
    model = load_model(path, device=device).eval()
    if exact_length:
        model.generation_config.min_new_tokens = max_new_tokens
    settings = EvalSettings(batch_size=batch_size, max_new_tokens=max_new_tokens)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    with autocast:
        generate(model, tokenizer, inputs[:2], settings)  # warm-up: first-call allocations, not generation
    synchronize(device)
    start = time.perf_counter()
    with autocast:
        generate(model, tokenizer, inputs, settings)
    synchronize(device)
    batched = len(inputs) / (time.perf_counter() - start)
    alone = inputs[:singles]
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        for text in alone:
            encoded = tokenizer(text, return_tensors="pt").to(device)
            model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
    synchronize(device)
    single = len(alone) / (time.perf_counter() - start)
    return batched, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="timed optimiser steps per loop and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both loops; the median is printed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128, help="input and target length")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default="lora,full,qlora,stacked")
    parser.add_argument("--generate", type=int, default=32, help="examples generated in each mode")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = texts(args.steps * args.batch, words=args.tokens // 3, seed=0)
    tokenizer = train_tokenizer(corpus, vocab_size=2000)
    pairs = list(zip(corpus, texts(len(corpus), words=args.tokens // 3, seed=1), strict=True))
    train = bench_train_config(batch_size=args.batch, tokens=args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_t5_small(Path(tmp) / "t5-small-random", tokenizer)
        print(
            f"T5-small architecture, random weights; batch {args.batch} x {args.tokens} tokens, "
            f"{args.steps} steps, {args.repeats} rounds, {args.threads} threads"
        )
        print(f"{'method':<10}{'study loop ex/s':>17}{'plain loop ex/s':>17}{'ratio':>8}  rounds' ratios")
        for method in args.methods.split(","):
            rounds = [time_training(method, path, tokenizer, pairs, train) for _ in range(args.repeats)]
            ratios = [ours / plain for ours, plain in rounds]
            ours, plain = (statistics.median(column) for column in zip(*rounds, strict=True))
            each = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"{method:<10}{ours:>17.2f}{plain:>17.2f}{statistics.median(ratios):>7.2f}x  {each}")
        inputs = texts(args.generate, words=12, seed=2)
        batched, single = time_generation(path, tokenizer, inputs, max_new_tokens=32)
        print(
            f"generation, 32 new tokens: batched (16) {batched:.2f} ex/s, one at a time {single:.2f} ex/s, "
            f"speed-up {batched / single:.1f}x"
        )


if __name__ == "__main__":
    main()
