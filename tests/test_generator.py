"""The embedded generator: GSM8K's format exactly, seeded, varied, with the difficulty it is asked for."""

from __future__ import annotations

import dataclasses
import re

import pytest

from trainables.data import generator
from trainables.data.generator import generate_problems
from trainables.data.programs import evaluate_program
from trainables.data.records import parse_gsm8k_answer

ANNOTATION = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>(\d+)")


@pytest.fixture(scope="module")
def problems():
    return generate_problems(300, seed=7, min_steps=1, max_steps=4, max_operand=20)


def test_same_seed_same_problems_and_other_seeds_differ():
    first = generate_problems(50, seed=3)
    assert generate_problems(50, seed=3) == first
    other = generate_problems(50, seed=4)
    assert len({r.question for r in first} & {r.question for r in other}) < 5


@pytest.mark.parametrize("socratic", [True, False])
def test_records_parse_back_to_the_same_fields(socratic):
    for record in generate_problems(100, seed=1, max_steps=4, socratic=socratic):
        parsed = parse_gsm8k_answer(record.question, record.answer_text, source="embedded")
        assert parsed == dataclasses.replace(record, program=None)
        assert record.answer_text.endswith(f"\n#### {record.answer}")
        assert (" ** " in record.answer_text) == socratic
        assert len(record.subquestions) == (len(record.steps) if socratic else 0)


def test_steps_are_correct_annotated_arithmetic(problems):
    for record in problems:
        previous = None
        for step in record.steps:
            (a, op, b, value, written), *more = ANNOTATION.findall(step)
            assert not more and value == written
            left, right, result = int(a), int(b), int(value)
            assert result == {"+": left + right, "-": left - right, "*": left * right, "/": left / right}[op]
            assert f"{a} {op} {b} = " in step  # the prose repeats the calculation, as GSM8K does
            assert previous is None or previous in (left, right)  # each step builds on the one before
            previous = result
        assert int(record.answer) == previous >= 0
        assert record.source == "embedded"


def test_programs_print_the_answer(problems):
    for record in problems:
        assert record.program is not None
        assert float(evaluate_program(record.program)) == float(record.answer)
        statements = record.program.split("; ")[:-1]
        assert len(statements) == len(record.steps)
        for before, after in zip(
            statements[:-1], statements[1:], strict=True
        ):  # dataflow: each uses the last
            assert before.split(" = ")[0] in after.split(" = ")[1].split()


def test_difficulty_settings(problems):
    assert {len(r.steps) for r in problems} == {1, 2, 3, 4}
    easy = generate_problems(200, seed=2, min_steps=1, max_steps=1, max_operand=5)
    assert {len(r.steps) for r in easy} == {1}
    for record in easy:  # every number a problem states is a fresh operand, so within max_operand
        assert max(int(n) for n in re.findall(r"\d+", record.question)) <= 5


def test_template_variety(problems):
    shapes = {re.sub(r"\d+", "N", re.sub(r"[A-Z][a-z]+", "X", step)) for r in problems for step in r.steps}
    assert len(shapes) >= 15
    for record in problems:
        assert "{" not in record.question + record.answer_text and "\n" not in record.question


def test_distinct_questions_and_exclude():
    first = generate_problems(200, seed=5)
    assert len({r.question for r in first}) == 200
    avoided = {r.question for r in first[:100]}
    again = generate_problems(200, seed=5, exclude=avoided)
    assert not avoided & {r.question for r in again}


def test_too_small_a_problem_space_is_an_error(monkeypatch):
    for name, value in [("NAMES", ("Ava", "Ben")), ("NOUNS", ("apples",)), ("ITEMS", ("pens",)),
                        ("THINGS", ("a hat",)), ("RATES", (("bakes", "bake", "cookies"),))]:  # fmt: skip
        monkeypatch.setattr(generator, name, value)
    with pytest.raises(ValueError, match=r"found only \d+ of 100 distinct problems"):
        generate_problems(100, seed=0, max_steps=1, max_operand=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be >= 0, got -1"),
        ({"min_steps": 0}, "min_steps=0"),
        ({"min_steps": 3, "max_steps": 2}, "min_steps=3, max_steps=2"),
        ({"max_steps": 11}, "max_steps=11"),
        ({"max_operand": 1}, "max_operand must be >= 2, got 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_problems(**{"n": 3, "seed": 0, **kwargs})


def test_zero_problems():
    assert generate_problems(0, seed=0) == []
