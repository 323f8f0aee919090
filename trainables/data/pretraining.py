"""The tiny base's pretraining tasks: what a stand-in for T5's pretraining may teach, and what it must not.

A pretrained T5 arrives knowing how text reads, how to copy a span from its input, some arithmetic and
some code. A tiny T5 built from random weights knows none of it, so LoRA, QLoRA and stacked LoRA, which
freeze the base, had nothing to adapt (issue 10: an r-4 adapter on all six projections of a prefix-LM-only
base scored 4%, below always answering the most common answer). These tasks give the tiny base those
skills on problems generated from a seed of their own:

- `numbers`: a question -> the numbers in it, in order (`Ava has 3 boxes with 4 apples ...` -> `3 4`):
  copying from the input, without a word on what to do with them;
- `solution_program_task` (`trainables.data.prompts`): a worked solution -> the program that computes it:
  how a written calculation reads as code (the solution already holds every operation);
- `arithmetic`: `Compute: 37 - 8` -> `29`, on random operands.

Alongside them, prefix LM (T5's own objective, `trainables.training.pretrain`) on the questions alone: the
language of the problems. None of it maps a question to its solution, its answer or its program: that
mapping is what fine-tuning adds, by every method alike, and what the study compares. Measured in
BENCHMARKS.md ("A tiny preset that learns").
"""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Sequence

from trainables.data.prompts import solution_program_task
from trainables.data.records import MathRecord

NUMBERS = "List the numbers. Text:"
ARITHMETIC = "Compute:"
_NUMBER = re.compile(r"\d+")


def numbers(record: MathRecord) -> tuple[str, str]:
    """The question -> the numbers it contains, in order, separated by spaces."""
    return f"{NUMBERS} {record.question}", " ".join(_NUMBER.findall(record.question))


def arithmetic(rng: random.Random, *, max_left: int = 99, max_right: int = 20) -> tuple[str, str]:
    """One drill `Compute: x op y` -> its value; non-negative, divisions exact."""
    op = rng.choice("+-*/")
    x, y = rng.randint(0, max_left), rng.randint(1, max_right)
    if op == "-" and x < y:
        x, y = y, x
    if op == "/":
        x -= x % y
    value = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}[op](x, y)
    return f"{ARITHMETIC} {x} {op} {y}", str(value)


def pretraining_pairs(records: Sequence[MathRecord], *, seed: int) -> list[tuple[str, str]]:
    """The (input, target) tasks for `records`: numbers and solution -> program for each, and as many
    arithmetic drills."""
    rng = random.Random(seed)
    pairs = [numbers(r) for r in records]
    pairs += [solution_program_task(r) for r in records if r.program]
    pairs += [arithmetic(rng) for _ in records]
    return pairs
