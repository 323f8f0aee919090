"""A math record -> (input text, target text) for T5, one function per prompt style.

Worked example: GSM8K's first training problem, "Natalia sold clips to 48 of her friends in April, and
then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
(written `{q}` below), whose solution is `Natalia sold 48/2 = <<48/2=24>>24 clips in May.` /
`Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.` / `#### 72`.

- `answer_only`: the number alone.
    input:  "Answer the math question. Question: {q}"
    target: "72"
- `breakdown` (question with breakdown): the step-by-step solution as in `answer_text`, calculator
  annotations kept (the calculator can fill them while decoding), ending in `#### N` (N normalised:
  `#### 1,080` -> `#### 1080`).
    input:  "Solve the math question step by step. Question: {q}"
    target: "Natalia sold 48/2 = <<48/2=24>>24 clips in May. Natalia sold 48+24 = <<48+24=72>>72 clips
             altogether in April and May. #### 72"
  For a Socratic record (non-empty `subquestions`) each step follows its sub-question, as in GSM8K's
  socratic answers: "How many clips did Natalia sell in May? ** Natalia sold 48/2 = <<48/2=24>>24 clips in
  May. How many clips did Natalia sell altogether in April and May? ** Natalia sold ... #### 72"
- `no_breakdown` (question without breakdown): the reasoning as one paragraph, with no imposed steps,
  no sub-questions and no annotations (`48/2 = <<48/2=24>>24` -> `48/2 = 24`; a step without final
  punctuation gets a period), ending `The answer is N.`
    input:  "Explain your reasoning, then give the answer. Question: {q}"
    target: "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May.
             The answer is 72."
- `code`: the record's one-line program (`trainables.data.programs`), which prints the answer.
    input:  "Write a Python program that prints the answer. Question: {q}"
    target: "a = 48 / 2; b = 48 + a; print(round(b))"
  Records whose solution could not become a program (`program is None`, about 6% of GSM8K train) cannot
  be used with this style: filter with `usable(record, style)`; `format_example` raises ValueError on one.

Texts are single lines: steps are joined by one space, and runs of whitespace in questions (GSM8K has
double spaces) become one space. T5's SentencePiece tokenizer turns a newline into a space anyway, so a
target with newlines would be one the model can never write back exactly. The instructions use no
character T5's vocabulary lacks (it has no `{`, `}` and rarely sees `<`); the `<<...>>` annotations in
`breakdown` targets are GSM8K's own and are kept on purpose.
"""

from __future__ import annotations

from collections.abc import Callable

from trainables.data.arithmetic import remove_annotations
from trainables.data.records import CodeRecord, MathRecord

PROMPT_STYLES = ("answer_only", "breakdown", "no_breakdown", "code")
COT_STYLES = PROMPT_STYLES[1:]
"""The chain-of-thought styles (all but `answer_only`): the `lora_cot` space searches them, tables report each."""
INSTRUCTIONS = {
    "answer_only": "Answer the math question.",
    "breakdown": "Solve the math question step by step.",
    "no_breakdown": "Explain your reasoning, then give the answer.",
    "code": "Write a Python program that prints the answer.",
}
SENTENCE_END = (".", "!", "?")


SOLUTION_TO_PROGRAM = "Write the solution as a Python program. Solution:"
"""A coding task that is not the study's mapping: a worked solution (not the question) -> its program."""


def solution_program_task(record: MathRecord) -> tuple[str, str]:
    """The no-breakdown solution -> the record's program (the tiny base's pretraining).

    Raises:
        ValueError: for a record without a program.
    """
    if record.program is None:
        raise ValueError("this record has no program")
    return f"{SOLUTION_TO_PROGRAM} {no_breakdown(record)[1]}", record.program


def answer_only(record: MathRecord) -> tuple[str, str]:
    """The question -> the final answer alone."""
    return _input("answer_only", record), record.answer


def breakdown(record: MathRecord) -> tuple[str, str]:
    """The question -> the solution as GSM8K wrote it (Socratic: `sub-question ** step`), then `#### N`.

    The lines come from `answer_text` itself rather than being rebuilt from `steps` and `subquestions`,
    so a Socratic line GSM8K left without a step (`How much did he lose on average that day? **`, twice
    in test_socratic) stays as written instead of misaligning the pairs.
    """
    lines = [line.strip() for line in record.answer_text.strip().splitlines() if line.strip()][:-1]
    return _input("breakdown", record), " ".join(lines + [f"#### {record.answer}"])


def no_breakdown(record: MathRecord) -> tuple[str, str]:
    """The question -> one paragraph of reasoning without annotations, ending `The answer is N.`"""
    sentences = [_sentence(remove_annotations(step)) for step in record.steps]
    return _input("no_breakdown", record), " ".join(sentences + [f"The answer is {record.answer}."])


def code(record: MathRecord) -> tuple[str, str]:
    """The question -> the one-line program that prints the answer.

    Raises:
        ValueError: if the record has no program (filter with `usable`).
    """
    if record.program is None:
        raise ValueError(
            f"record has no program, so it cannot be used with prompt style 'code' (filter with usable()): "
            f"{record.question[:60]!r}"
        )
    return _input("code", record), record.program


STYLE_FUNCTIONS: dict[str, Callable[[MathRecord], tuple[str, str]]] = {
    "answer_only": answer_only,
    "breakdown": breakdown,
    "no_breakdown": no_breakdown,
    "code": code,
}


def format_example(record: MathRecord, style: str) -> tuple[str, str]:
    """(input text, target text) of `record` in prompt style `style` (see the module docstring).

    Raises:
        ValueError: for an unknown style, or a record the style cannot use (see `usable`).
    """
    return STYLE_FUNCTIONS[_check_style(style)](record)


def usable(record: MathRecord, style: str) -> bool:
    """Whether `format_example(record, style)` works: every record, except those without a program for `code`.

    Raises:
        ValueError: for an unknown style.
    """
    return _check_style(style) != "code" or record.program is not None


def _check_style(style: str) -> str:
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; valid styles: {', '.join(PROMPT_STYLES)}")
    return style


def _input(style: str, record: MathRecord) -> str:
    return f"{INSTRUCTIONS[style]} Question: {' '.join(record.question.split())}"


def _sentence(text: str) -> str:
    """Collapse whitespace (an annotation removed may leave two spaces) and end with a period if needed."""
    text = " ".join(text.split())
    return text if text.endswith(SENTENCE_END) else f"{text}."


def code_task_example(record: CodeRecord) -> tuple[str, str]:
    """(input, target) of a coding task, for stacked LoRA's first stage.

    A GSM8K-derived program is asked for exactly as the `code` style asks for it; an MBPP task shows its
    first test, which fixes the function's name and signature. The code keeps its newlines (MBPP's `\\r\\n`
    become `\\n`): indentation is Python's syntax.
    """
    if record.source == "gsm8k-programs":
        return f"{INSTRUCTIONS['code']} Question: {' '.join(record.text.split())}", record.code
    if record.source == "solution-programs":
        return f"{SOLUTION_TO_PROGRAM} {record.text}", record.code
    task = " ".join(record.text.split())
    test = f" It must pass: {record.test_list[0]}" if record.test_list else ""
    return f"Write a Python function. Task: {task}{test}", record.code.replace("\r\n", "\n").strip()
