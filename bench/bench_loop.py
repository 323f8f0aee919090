"""The study's training loop against a plain PyTorch + PEFT loop, and batched against one-by-one generation.

    python bench/bench_loop.py [--steps 6] [--batch 8] [--tokens 128] [--threads 2]

On the T5-small architecture (random weights: no hub needed), for each strategy, one run measures examples/s
of training steps through `trainables.training.loop.fit` and through the plainest loop doing the same work (same
model, batches, optimiser, schedule and clipping), and prints the ratio (target: >= 0.95x). It then measures
evaluation generation through `trainables.scoring.evaluation.generate` (length-sorted batches of 16) against calling
`model.generate` one example at a time (target: >= 5x on CPU).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration, get_linear_schedule_with_warmup

from trainables.data.batching import collate, encode_pairs
from trainables.data.records import CodeRecord
from trainables.methods import StrategyContext, get_strategy
from trainables.scoring.evaluation import EvalSettings, generate
from trainables.training.loop import TrainConfig, fit
from trainables.training.models import load_model
from trainables.training.tokenizer import train_tokenizer
from trainables.trial import stage_fitter

T5_SMALL = {"d_model": 512, "d_ff": 2048, "num_layers": 6, "num_heads": 8, "d_kv": 64, "vocab_size": 32128}
WORDS = "apples pencils farmer sold bought each week dollars twice half more than total how many left".split()


def texts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) + f" {rng.randint(1, 999)}" for _ in range(words)) for _ in range(n)]


def save_t5_small(directory: Path, tokenizer) -> Path:
    config = T5Config(**T5_SMALL, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def prepared(method: str, path: Path, tokenizer, train: TrainConfig):
    strategy = get_strategy(method)
    config = strategy.make_config({})
    model = load_model(path, device="cpu", **strategy.load_kwargs(config))
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


def plain_loop(model, batches, train: TrainConfig) -> None:
    """What a user would write by hand: forward, backward, clip, step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    model.train()
    for batch in batches:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def time_training(method: str, path: Path, tokenizer, pairs, train: TrainConfig) -> tuple[float, float]:
    examples = encode_pairs(
        tokenizer, pairs, max_input_tokens=train.max_input_tokens, max_target_tokens=train.max_target_tokens
    )
    batches = [
        collate(examples[i : i + train.batch_size], tokenizer.pad_token_id, torch.device("cpu"))
        for i in range(0, len(examples), train.batch_size)
    ]
    # warm up both paths once (allocator, bitsandbytes kernels), then time them in turn
    plain_loop(prepared(method, path, tokenizer, train), batches[:1], train)
    model = prepared(method, path, tokenizer, train)
    start = time.perf_counter()
    plain_loop(model, batches, train)
    plain = len(pairs) / (time.perf_counter() - start)
    model = prepared(method, path, tokenizer, train)
    start = time.perf_counter()
    fit(model, tokenizer, pairs, train)
    ours = len(pairs) / (time.perf_counter() - start)
    return ours, plain


def time_generation(path: Path, tokenizer, inputs: list[str], max_new_tokens: int) -> tuple[float, float]:
    model = load_model(path, device="cpu").eval()
    settings = EvalSettings(batch_size=16, max_new_tokens=max_new_tokens)
    generate(model, tokenizer, inputs[:2], settings)  # warm-up: first-call allocations, not generation
    start = time.perf_counter()
    generate(model, tokenizer, inputs, settings)
    batched = len(inputs) / (time.perf_counter() - start)
    start = time.perf_counter()
    with torch.no_grad():
        for text in inputs:
            encoded = tokenizer(text, return_tensors="pt")
            model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
    single = len(inputs) / (time.perf_counter() - start)
    return batched, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimiser steps per loop")
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
    train = TrainConfig(
        lr=1e-4,
        epochs=1,
        batch_size=args.batch,
        warmup_ratio=0,
        max_input_tokens=args.tokens,
        max_target_tokens=args.tokens,
        prompt_style="breakdown",
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = save_t5_small(Path(tmp) / "t5-small-random", tokenizer)
        print(
            f"T5-small architecture, random weights; batch {args.batch} x {args.tokens} tokens, "
            f"{args.steps} steps, {args.threads} threads"
        )
        print(f"{'method':<10}{'study loop ex/s':>17}{'plain loop ex/s':>17}{'ratio':>8}")
        for method in args.methods.split(","):
            ours, plain = time_training(method, path, tokenizer, pairs, train)
            print(f"{method:<10}{ours:>17.2f}{plain:>17.2f}{ours / plain:>7.2f}x")
        inputs = texts(args.generate, words=12, seed=2)
        batched, single = time_generation(path, tokenizer, inputs, max_new_tokens=32)
        print(
            f"generation, 32 new tokens: batched (16) {batched:.2f} ex/s, one at a time {single:.2f} ex/s, "
            f"speed-up {batched / single:.1f}x"
        )


if __name__ == "__main__":
    main()
