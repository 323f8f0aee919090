"""Collapse: a model that gives (nearly) the same answer to every question, whatever its accuracy.

A split's answers are summarised by two numbers, reported as `dev/...` and `test/...` metrics:
`distinct_answers` (how many different answers were extracted; no answer at all is not an answer) and
`top_answer_share` (the fraction of all examples that got the most common one).

A split's predictions are **collapsed** when either

- one answer is given to more than half of the examples (`top_answer_share > 0.5`): GSM8K's most common
  test answer covers 3% of its problems (40 of 1,319 answer 5) and the embedded generator's about 10%, so a
  model answering one number to most questions is not reading them, even when that number is often right; or
- fewer distinct answers than `min(10, ceil(n / 4))` were given: a model that reads the questions gives about
  as many different answers as there are different references (353 on GSM8K's test split, dozens on a
  generated one), while the collapsed tiny trials of issue 10 gave 1-5 on 96 problems. The cap of n / 4 keeps
  a split of 8 examples (a smoke test's) from being called collapsed for giving 7 answers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

MAX_TOP_SHARE = 0.5
"""More than this share of the examples on one answer is collapse."""
MIN_DISTINCT = 10
"""Fewer distinct answers than this (or than a quarter of the examples, if smaller) is collapse."""


def answer_spread(answers: Sequence[Hashable | None]) -> dict[str, float]:
    """`distinct_answers` and `top_answer_share` of a split's extracted answers (None: no answer found).

    Answers are compared as given: pass exact values (`Fraction`s) or their canonical text
    (`metrics.format_answer`), not a mix.

    Raises:
        ValueError: if there are no answers.
    """
    if not answers:
        raise ValueError("answer_spread needs at least one example")
    counts = Counter(a for a in answers if a is not None)
    top = max(counts.values(), default=0)
    return {"distinct_answers": len(counts), "top_answer_share": top / len(answers)}


def min_distinct(n: int) -> int:
    """The fewest distinct answers a split of `n` examples must take not to count as collapsed."""
    return min(MIN_DISTINCT, math.ceil(n / 4))


def is_collapsed(*, distinct_answers: float, top_answer_share: float, n: int) -> bool:
    """Whether predictions with this spread on `n` examples are collapsed (see the module docstring)."""
    return top_answer_share > MAX_TOP_SHARE or distinct_answers < min_distinct(n)


def describe_collapse(*, distinct_answers: float, top_answer_share: float) -> str:
    """The collapse in words, for tables and warnings: `'5 distinct answers, 62% on one'`."""
    distinct = int(distinct_answers)
    if distinct == 0:
        return "no answer in any generation"
    noun = "answer" if distinct == 1 else "answers"
    return f"{distinct} distinct {noun}, {100 * top_answer_share:.0f}% on one"
