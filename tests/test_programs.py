"""GSM8K calculator annotations -> one-line programs, and the safe interpreter that checks them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainables.data.programs import ProgramError, convert_solution, evaluate_program, solution_to_program
from trainables.data.records import parse_gsm8k_answer

CONVERSIONS = [
    pytest.param(  # GSM8K train #1: dataflow, a float from '/', printed as an integer
        ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.",
         "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May."],
        "72", "a = 48 / 2; b = 48 + a; print(round(b))", id="natalia",
    ),
    pytest.param(  # GSM8K train #2: 'x' in the prose, '*' in the annotation, a decimal step value
        ["Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.",
         "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10."],
        "10", "a = 12 / 60; b = a * 50; print(round(b))", id="weng",
    ),
    pytest.param(  # GSM8K train #3: two earlier values in one expression
        ["In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.",
         "Betty's grandparents gave her 15 * 2 = $<<15*2=30>>30.",
         "This means, Betty needs 100 - 50 - 30 - 15 = $<<100-50-30-15=5>>5 more."],
        "5", "a = 100 / 2; b = 15 * 2; c = 100 - a - b - 15; print(round(c))", id="betty",
    ),
    pytest.param(["4 + 6 = <<4+6=10>>10 carrots", "15 - 10 = <<15-10=5>>5 carrots"], "5",
                 "a = 4 + 6; b = 15 - a; print(b)", id="ints-print-plainly"),
    pytest.param(["<<-14+-8+1=-21>>-21"], "-21", "a = -14 + -8 + 1; print(a)", id="unary-minus"),
    pytest.param(["<<(-17)+43=26>>26"], "26", "a = (-17) + 43; print(a)", id="parentheses"),
    pytest.param(["18 * .5 = <<18*.5=9>>9"], "9", "a = 18 * 0.5; print(round(a))", id="leading-dot"),
    pytest.param(["<<560//10=56>>56"], "56", "a = 560 // 10; print(a)", id="floor-division"),
    pytest.param(  # a rounded written value is not substituted; a decimal answer keeps its decimals
        ["<<10/3=3.33>>3.33 each", "<<3.33*3=9.99>>9.99 in all"], "9.99",
        "a = 10 / 3; b = 3.33 * 3; print(round(b, 2))", id="rounded-value-not-substituted",
    ),
    pytest.param(  # a wrong written value (15, not 16) is not substituted either
        ["<<5*3=16>>16", "<<16+1=17>>17"], "17", "a = 5 * 3; b = 16 + 1; print(b)", id="wrong-value",
    ),
    pytest.param(["<<48/2=24>>24", "so <<24=24>>24"], "24", "a = 48 / 2; print(round(a))", id="alias"),
    pytest.param(["<<2*3=6>>6", "<<6+1=7>>7"], "6", "a = 2 * 3; print(a)", id="later-steps-dropped"),
    pytest.param(["<<2*3=6>>6 and <<6*2=12>>12 in one line"], "12", "a = 2 * 3; b = a * 2; print(b)",
                 id="two-annotations-one-step"),
    pytest.param(["<<1200/1000=1.2>>1.2 L", "<<4.8/1.2=4>>4 hours"], "4",
                 "a = 1200 / 1000; b = 4.8 / a; print(round(b))", id="decimal-substituted"),
]  # fmt: skip


@pytest.mark.parametrize(("steps", "answer", "program"), CONVERSIONS)
def test_solution_to_program(steps, answer, program):
    assert solution_to_program(steps, answer) == program
    assert float(evaluate_program(program)) == float(answer)


FAILURES = [
    pytest.param(["Let X be the price; .75X = $19.50"], "26", "no calculator annotations", id="no-annotation"),
    pytest.param(["<<3x4=12>>12"], "12", "not plain arithmetic", id="x-for-times"),
    pytest.param(["<<25%*8=2>>2"], "2", "not plain arithmetic", id="percent"),
    pytest.param(["<<2^3=8>>8"], "8", "not plain arithmetic", id="caret"),
    pytest.param(["<<2(3+4)=14>>14"], "14", "not plain arithmetic", id="implicit-multiplication"),
    pytest.param(["<<2+3=5>>5"], "6", "no step evaluates to the final answer 6", id="answer-mismatch"),
    pytest.param(["<<7.5*2=15>>15 minus <<15-0.5=14.5>>14.5"], "14", "no step evaluates", id="rounded-answer"),
    pytest.param(["<<a=2=2>>2"], "2", "does not read expr=value", id="two-equals"),
    pytest.param(["<<4/0=0>>0"], "0", "division by zero", id="division-by-zero"),
    pytest.param(["<<2+3=5>>5"], "five", "is not a number", id="answer-not-number"),
    pytest.param(["<<3/4=3/4>>3/4"], "3/4", "is a fraction", id="fraction-answer"),
]  # fmt: skip


@pytest.mark.parametrize(("steps", "answer", "reason"), FAILURES)
def test_unconvertible_solutions_say_why(steps, answer, reason):
    assert solution_to_program(steps, answer) is None
    with pytest.raises(ProgramError, match=reason):
        convert_solution(steps, answer)


@pytest.mark.parametrize(
    ("program", "printed"),
    [
        ("a = 48 / 2; b = 48 + a; print(b)", "72.0"),  # Python's own output: why the rule adds round()
        ("a = 48 / 2; b = 48 + a; print(round(b))", "72"),
        ("a = 0.1 + 0.2; print(round(a, 1))", "0.3"),
        ("a = 7 // 2; b = -a; print(b)", "-3"),
        ("print(5)", "5"),
    ],
)
def test_evaluate_program_follows_python(program, printed):
    assert evaluate_program(program) == printed


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ("import os; print(1)", "only 'name = expression'"),
        ("a = __import__('os'); print(a)", "not plain arithmetic"),
        ("print(open('x'))", "not plain arithmetic"),
        ("a = 2 ** 3; print(a)", "not plain arithmetic"),
        ("a = 'x'; print(a)", "not plain arithmetic"),
        ("a = 1", "must end with one print"),
        ("print(b)", "used before assignment"),
        ("a = 1 / 0; print(a)", "division by zero"),
        ("print(round(1.5, 'x'))", "unsupported call"),
        ("a = (1", "not valid Python"),
    ],
)
def test_evaluate_program_rejects_anything_else(program, message):
    with pytest.raises(ProgramError, match=message):
        evaluate_program(program)


@pytest.mark.slow  # converts all 7473 training solutions (about a second)
def test_real_train_conversion_rate(data_dir):
    path = Path(data_dir, "gsm8k", "train.jsonl")
    records = [parse_gsm8k_answer(row["question"], row["answer"]) for row in map(json.loads, path.open())]
    programs = [solution_to_program(r.steps, r.answer) for r in records]
    converted = [(r, p) for r, p in zip(records, programs, strict=True) if p is not None]
    assert len(converted) / len(records) >= 0.93  # measured: 7014 / 7473 = 93.9%
    for record, program in converted:
        assert "\n" not in program
        assert float(evaluate_program(program)) == float(record.answer)
