"""Chance baselines of a test split: what a model scores without reading what the question asks.

Two baselines, computed on exactly the examples a trial was tested on (its `generations_test.jsonl`):

- **majority answer**: always answer the split's most common reference answer. It peeks at the test split's
  answer distribution, so it is the best any constant answer can do: a trial that does not beat it has
  not shown that it reads the question at all.
- **last number in the question**: answer the last number the question mentions, the cheapest heuristic a
  collapsed seq2seq model falls into (copying from its input).

Both get the same percentile bootstrap interval as a trial's accuracy (`metrics.bootstrap_ci`, same seed),
so a row and a baseline are read the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from trainables.data.arithmetic import format_answer, parse_number
from trainables.scoring.metrics import bootstrap_ci, find_numbers

MAJORITY = "majority answer"
LAST_NUMBER = "last number in the question"
BASELINES = (MAJORITY, LAST_NUMBER)
_QUESTION = "Question: "
"""Every prompt style writes `<instruction> Question: <question>` (`trainables.data.prompts`)."""


@dataclass(frozen=True)
class Baseline:
    """One baseline's accuracy on one set of test examples."""

    name: str
    """`majority answer` or `last number in the question`."""
    accuracy: float
    """Fraction of the examples it answers correctly."""
    low: float
    """Bootstrap 95% interval, lower end."""
    high: float
    """Bootstrap 95% interval, upper end."""
    n: int
    """Test examples it was scored on."""
    answer: str | None = None
    """The constant answer, for the majority baseline."""


def question_of(prompt: str) -> str:
    """The question of a model input: the text after `Question: ` (the whole input when there is none)."""
    _, marker, question = prompt.partition(_QUESTION)
    return question if marker else prompt


def last_number(question: str) -> Fraction | None:
    """The last well-formed number of `question` (the answer-extraction parser's), or None."""
    numbers = find_numbers(question)
    return numbers[-1] if numbers else None


def majority_answer(references: Sequence[Fraction]) -> Fraction:
    """The most common reference; a tie goes to the smallest value, so the choice never depends on order.

    Raises:
        ValueError: if there are no references.
    """
    if not references:
        raise ValueError("the majority answer needs at least one reference")
    counts = Counter(references)
    top = max(counts.values())
    return min(value for value, count in counts.items() if count == top)


def _baseline(name: str, correct: Sequence[bool], answer: Fraction | None = None) -> Baseline:
    low, high = bootstrap_ci(correct)
    return Baseline(name, sum(correct) / len(correct), low, high, len(correct), format_answer(answer))


def chance_baselines(questions: Sequence[str], references: Sequence[str]) -> dict[str, Baseline]:
    """Both baselines on the same examples, by name.

    Args:
        questions: each example's question (or its whole model input: see `question_of`).
        references: each example's reference answer as text (`'72'`, `'0.5'`).

    Raises:
        ValueError: on different lengths, no examples, or a reference that is not a number.
    """
    if len(questions) != len(references):
        raise ValueError(f"{len(questions)} questions but {len(references)} references")
    expected = [parse_number(str(r)) for r in references]
    majority = majority_answer(expected)
    guesses = [last_number(question_of(q)) for q in questions]
    return {
        MAJORITY: _baseline(MAJORITY, [value == majority for value in expected], majority),
        LAST_NUMBER: _baseline(
            LAST_NUMBER, [g is not None and g == e for g, e in zip(guesses, expected, strict=True)]
        ),
    }


def baselines_of_generations(rows: Sequence[Mapping]) -> dict[str, Baseline]:
    """Both baselines on the examples of a `generations_test.jsonl` (its `input` and `reference` columns).

    Raises:
        ValueError: when the file has no rows, or a row lacks `input` or `reference`.
    """
    missing = [i for i, row in enumerate(rows) if "input" not in row or "reference" not in row]
    if missing:
        raise ValueError(f"generations row {missing[0]} has no 'input' or 'reference'")
    return chance_baselines([row["input"] for row in rows], [row["reference"] for row in rows])
