"""Generation throughput with and without the calculator (`CalculatorLogitsProcessor`) at batch 16.

A random tiny T5 (d_model 64, 2 encoder + 2 decoder layers) decodes greedily with the KV cache while a
scripting processor makes each row write a GSM8K-style solution, so the outputs hold `<<expr=` triggers at
GSM8K's rate; each scripted result is wrong by one digit, as a weak model's would be, and the calculator
overwrites it. The scripting costs the same in both runs. Target: the calculator is at most 1.3x slower.

    PYTHONPATH=. python bench/bench_calculator.py [--gsm8k /work/shared/data/gsm8k/train.jsonl] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList, T5Config, T5ForConditionalGeneration

from trainables.scoring.calculator import format_number, make_calculator_processor, safe_eval
from trainables.training.tokenizer import train_tokenizer

BATCH_SIZE = 16
MAX_NEW_TOKENS = 64


class Script(LogitsProcessor):
    """Makes row r emit scripts[r, t] at step t: one vectorised scatter per step."""

    def __init__(self, scripts: torch.Tensor) -> None:
        self.scripts = scripts  # (batch, max_new_tokens)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = min(input_ids.shape[1] - 1, self.scripts.shape[1] - 1)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, self.scripts[:, step : step + 1], 0.0)


def synthetic_solutions(n: int, *, seed: int) -> list[str]:
    """GSM8K-like solutions: steps `a op b = <<a op b=c>>c units.` and a final `#### c`."""
    rng = random.Random(seed)
    solutions = []
    for _ in range(n):
        value, steps = rng.randint(2, 90), []
        for _ in range(4):
            op, operand = rng.choice("+-*/"), rng.randint(2, 12)
            expr = f"{value}{op}{operand}"
            value = safe_eval(expr)
            steps.append(f"She has {expr} = <<{expr}={format_number(value)}>>{format_number(value)} apples.")
        solutions.append("\n".join(steps) + f"\n#### {format_number(value)}")
    return solutions


def gsm8k_solutions(path: str, n: int) -> list[str]:
    with open(path) as file:
        return [json.loads(line)["answer"] for line, _ in zip(file, range(n), strict=False)]


def wrong_by_one_digit(text: str) -> str:
    """Change the last digit of every annotation's result (`<<48/2=24>>` -> `<<48/2=25>>`)."""
    out, start = [], 0
    while (end := text.find(">>", start)) >= 0:
        digit = max(i for i in range(start, end) if text[i].isdigit() or i == start)
        if text[digit].isdigit():
            out.append(text[start:digit] + str((int(text[digit]) + 1) % 10))
            start = digit + 1
        out.append(text[start : end + 2])
        start = end + 2
    return "".join(out) + text[start:]


class Timed(LogitsProcessor):
    """Wraps a processor and adds up the time spent in it."""

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        start = time.perf_counter()
        scores = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        return scores


def seconds_per_batch(model, inputs, processors: list) -> float:
    """Wall time of one greedy generation of MAX_NEW_TOKENS tokens for the whole batch."""
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(
            **inputs,
            max_new_tokens=MAX_NEW_TOKENS,
            min_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            logits_processor=LogitsProcessorList(processors),
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gsm8k", help="a GSM8K jsonl file whose solutions the rows write (default: synthetic)"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the bench box is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    solutions = (
        gsm8k_solutions(args.gsm8k, BATCH_SIZE) if args.gsm8k else synthetic_solutions(BATCH_SIZE, seed=0)
    )
    tokenizer = train_tokenizer(solutions + [wrong_by_one_digit(s) for s in solutions], vocab_size=600)
    rows = [
        tokenizer.encode(wrong_by_one_digit(s), add_special_tokens=False)[:MAX_NEW_TOKENS] for s in solutions
    ]
    rows = [row + [tokenizer.eos_token_id] * (MAX_NEW_TOKENS - len(row)) for row in rows]
    scripts = torch.tensor(rows)
    triggers = sum(tokenizer.decode(row).count("<<") for row in rows)

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_ff=256,
        d_kv=16,
        num_heads=4,
        num_layers=2,
        num_decoder_layers=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = T5ForConditionalGeneration(config).eval()
    inputs = tokenizer(["How many apples does she have?"] * BATCH_SIZE, return_tensors="pt")
    calculator = make_calculator_processor(tokenizer)

    seconds_per_batch(model, inputs, [Script(scripts)])  # warm-up
    # interleaved, best of each: the box is shared, and the best run is the least disturbed one
    without, with_calculator, in_calculator = [], [], []
    for _ in range(args.repeats):
        without.append(seconds_per_batch(model, inputs, [Script(scripts)]))
        timed = Timed(calculator)
        with_calculator.append(seconds_per_batch(model, inputs, [Script(scripts), timed]))
        in_calculator.append(timed.seconds)
    base, calc, own = min(without), min(with_calculator), min(in_calculator)
    print(
        f"batch {BATCH_SIZE}, {MAX_NEW_TOKENS} new tokens, {triggers / BATCH_SIZE:.1f} `<<expr=` triggers per row"
    )
    print(f"without calculator: {BATCH_SIZE / base:8.1f} sequences/s")
    print(f"with calculator:    {BATCH_SIZE / calc:8.1f} sequences/s")
    print(f"slowdown, end to end: {calc / base:.3f}x (target <= 1.3x)")
    # less noisy on a shared box: the time spent in the calculator added to the least disturbed plain run
    print(f"inside the calculator: {own / MAX_NEW_TOKENS * 1e6:.0f} us per step, {own / base:.1%} of a batch")
    print(f"slowdown, plain run + time inside the calculator: {(base + own) / base:.3f}x")


if __name__ == "__main__":
    main()
