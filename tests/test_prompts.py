"""Prompt styles: the exact (input, target) texts a user reads in the README."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from trainables.data.generator import generate_problems
from trainables.data.load import load_gsm8k_file
from trainables.data.programs import solution_to_program
from trainables.data.prompts import PROMPT_STYLES, format_example, usable
from trainables.data.records import parse_gsm8k_answer

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.  "
    "How many clips did Natalia sell altogether in April and May?"
)
Q = " ".join(QUESTION.split())  # the double space GSM8K has becomes one
MAIN = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
SOCRATIC = (
    "How many clips did Natalia sell in May? ** Natalia sold 48/2 = <<48/2=24>>24 clips in May\n"
    "How many clips did Natalia sell altogether? ** Natalia sold 48+24 = <<48+24=72>>72 clips altogether\n#### 72"
)


def record(answer_text: str, **kwargs):
    parsed = parse_gsm8k_answer(QUESTION, answer_text, **kwargs)
    return dataclasses.replace(parsed, program=solution_to_program(parsed.steps, parsed.answer))


@pytest.mark.parametrize(
    ("answer_text", "style", "expected"),
    [
        (MAIN, "answer_only", (f"Answer the math question. Question: {Q}", "72")),
        (MAIN, "breakdown", (f"Solve the math question step by step. Question: {Q}",
                             "Natalia sold 48/2 = <<48/2=24>>24 clips in May. "
                             "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May. #### 72")),
        (MAIN, "no_breakdown", (f"Explain your reasoning, then give the answer. Question: {Q}",
                                "Natalia sold 48/2 = 24 clips in May. "
                                "Natalia sold 48+24 = 72 clips altogether in April and May. The answer is 72.")),
        (MAIN, "code", (f"Write a Python program that prints the answer. Question: {Q}",
                        "a = 48 / 2; b = 48 + a; print(round(b))")),
        (SOCRATIC, "breakdown", (f"Solve the math question step by step. Question: {Q}",
                                 "How many clips did Natalia sell in May? ** Natalia sold 48/2 = <<48/2=24>>24 clips "
                                 "in May How many clips did Natalia sell altogether? ** Natalia sold 48+24 = "
                                 "<<48+24=72>>72 clips altogether #### 72")),
        (SOCRATIC, "no_breakdown", (f"Explain your reasoning, then give the answer. Question: {Q}",
                                    "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether. "
                                    "The answer is 72.")),
    ],
)  # fmt: skip
def test_worked_example(answer_text, style, expected):
    assert format_example(record(answer_text), style) == expected


def test_code_style_needs_a_program():
    no_program = record("She thinks hard.\n#### 7")
    assert no_program.program is None
    assert [usable(no_program, s) for s in PROMPT_STYLES] == [True, True, True, False]
    with pytest.raises(ValueError, match="record has no program.*filter with usable"):
        format_example(no_program, "code")


@pytest.mark.parametrize("call", [format_example, usable])
def test_unknown_style_lists_the_valid_ones(call):
    with pytest.raises(
        ValueError, match="unknown prompt style 'cot'; valid styles: answer_only, breakdown, no_b"
    ):
        call(record(MAIN), "cot")


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_generated_texts_are_single_lines_without_braces(style):
    for problem in generate_problems(40, seed=0, max_steps=3, socratic=style == "breakdown"):
        source, target = format_example(problem, style)
        for text in (source, target):
            assert "\n" not in text and "{" not in text and "}" not in text and "  " not in text
        assert source.endswith(problem.question)


@pytest.mark.parametrize("name", ["test.jsonl", "test_socratic.jsonl"])
def test_real_records_format_in_every_style(data_dir, name):
    records = load_gsm8k_file(Path(data_dir, "gsm8k", name)).records
    for style in PROMPT_STYLES:
        pairs = [format_example(r, style) for r in records if usable(r, style)]
        assert len(pairs) >= (1200 if style == "code" else 1319)
        assert all("\n" not in source + target for source, target in pairs)
    targets = [format_example(r, "no_breakdown")[1] for r in records]
    assert all(
        "<<" not in t and t.endswith(f"The answer is {r.answer}.")
        for t, r in zip(targets, records, strict=True)
    )
