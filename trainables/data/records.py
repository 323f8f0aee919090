"""The records every data source produces: a math problem and a coding task.

A GSM8K `answer` field is a list of steps with calculator annotations (`48/2 = <<48/2=24>>24`) and a last
line `#### N`. The Socratic config prefixes each step with a sub-question and `**`. `parse_gsm8k_answer`
splits that text into its parts once, so prompt styles and metrics never parse it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainables.data.arithmetic import normalise_number

FINAL_ANSWER = re.compile(r"####\s*(.+)")
"""The last line of an answer, stripped: `fullmatch` it (`(.+?)\\s*$` took quadratic time on inner spaces)."""
# The Socratic separator; two official test lines end in a bare `**` (a sub-question with an empty step).
SOCRATIC_SEPARATOR = re.compile(r"\s\*\*(?:\s|$)")


class DataError(ValueError):
    """Bad input data; the message names the file and line where known."""


@dataclass(frozen=True)
class MathRecord:
    """One grade-school math problem with its worked solution."""

    question: str
    """The word problem."""
    answer_text: str
    """The GSM8K `answer` field as given: solution steps, then `#### N`."""
    steps: tuple[str, ...]
    """Solution lines before `####`, calculator annotations kept, Socratic sub-questions removed."""
    subquestions: tuple[str, ...]
    """Socratic config: the sub-question leading each step; empty for the main config."""
    answer: str
    """The final answer normalised: commas, `$` and spaces removed (`'1,000'` -> `'1000'`)."""
    program: str | None = None
    """A one-line Python program (statements joined by `; `) whose run prints the answer."""
    source: str = "gsm8k/main"
    """Where the record came from: `gsm8k/main`, `gsm8k/socratic`, `embedded`, ..."""

    @property
    def solution(self) -> str:
        """The step-by-step solution ending in `#### N` (sub-questions removed)."""
        return "\n".join(self.steps + (f"#### {self.answer}",))


@dataclass(frozen=True)
class CodeRecord:
    """One programming task for stacked LoRA's first stage (MBPP, or a program derived from GSM8K)."""

    text: str
    """The task in natural language."""
    code: str
    """A reference solution."""
    test_list: tuple[str, ...] = ()
    """`assert` statements that check the solution (MBPP); empty for derived programs."""
    source: str = "mbpp"
    """`mbpp`, `gsm8k-programs` or `solution-programs`."""


def parse_gsm8k_answer(question: str, answer_text: str, *, source: str = "gsm8k/main") -> MathRecord:
    """Split a GSM8K `answer` field into steps, Socratic sub-questions and the final answer.

    Raises:
        ValueError: if there is no `#### N` line or N is not a number.
    """
    lines = [line.strip() for line in answer_text.strip().splitlines() if line.strip()]
    if not lines or not (match := FINAL_ANSWER.fullmatch(lines[-1])):
        raise ValueError("no '#### N' final answer line")
    answer = normalise_number(match.group(1))
    steps, subquestions = [], []
    for line in lines[:-1]:
        # Socratic lines read 'How many eggs does Janet sell? ** Janet sells 16 - 3 - 4 = ...'
        if SOCRATIC_SEPARATOR.search(line):
            sub, step = SOCRATIC_SEPARATOR.split(line, maxsplit=1)
            if step.strip():
                subquestions.append(sub.strip())
                steps.append(step.strip())
        else:
            steps.append(line)
    return MathRecord(
        question=question.strip(),
        answer_text=answer_text,
        steps=tuple(steps),
        subquestions=tuple(subquestions),
        answer=answer,
        source=source,
    )
