"""Straight-line arithmetic programs are scored from their syntax tree, with the sandbox's exact result."""

import pytest

from trainables.data.generator import generate_problems
from trainables.scoring.evaluation import EvalSettings, extract_all
from trainables.scoring.sandbox import run_programs
from trainables.scoring.straight_line import straight_line_output

STRAIGHT = [
    "a = 3 + 4; b = a * 2; print(b)",
    "a = 48 / 2; b = 48 + a; print(round(b))",
    "a = 7 / 2; print(a)",  # 3.5
    "a = 10 / 4; print(round(a))",  # banker's rounding: 2
    "a = 1 / 3; print(round(a, 2))",
    "a = 0.1 + 0.2; print(a)",  # 0.30000000000000004, as Python prints it
    "a = 7 // 2; b = -a; print(b - 1.5)",
    "a = 6 / 3; print(a)",  # 2.0, not 2
    "a = (2 + 3) * (4 - 9); print(a)\nprint(a + 1)",  # two lines
    "x1 = 5; x2 = x1 * x1; print(x2 // 3)",
]
NOT_STRAIGHT = [
    "import os; print(1)",
    "a = 1; print(a, a)",
    "a = 1; print(a, end='')",
    "print = 3; print(2)",  # print reassigned: Python raises, the tree walk must not guess
    "round = abs; print(round(-2))",
    "print(b)",  # b never assigned
    "a = 5 / 0; print(a)",
    "a = 5 % 3; print(a)",
    "a = 2 ** 3; print(a)",
    "a, b = 1, 2; print(a)",
    "a = 1; a += 1; print(a)",
    "a = True + 1; print(a)",
    "a = '1'; print(a)",
    "print(len([1]))",
    "for i in range(3): print(i)",
    "a = 10**3; print(a)",
    "a = 999999999999999; b = a * a; c = b * b; print(c)",  # past 10**30
    "a = 1e308 * 10; print(a)",  # inf
    "print(round(2.5, 1.0))",
    "a = (" * 300 + "1" + ")" * 300 + "; print(a)",
    "a = " + "+".join(["1"] * 1500) + "; print(a)",  # deeper than the recursion limit allows, or too long
    "a = 1; print(a",
]


@pytest.mark.parametrize("program", STRAIGHT)
def test_a_straight_line_program_prints_what_the_sandbox_prints(program):
    (result,) = run_programs([program])
    assert result.ok and straight_line_output(program) == result.stdout


@pytest.mark.parametrize("program", NOT_STRAIGHT)
def test_anything_else_goes_to_the_sandbox(program):
    assert straight_line_output(program) is None


def test_every_generated_target_program_is_straight_line_and_agrees_with_the_sandbox():
    programs = [r.program for r in generate_problems(60, seed=4, min_steps=1, max_steps=4) if r.program]
    results = run_programs(programs)
    assert [straight_line_output(p) for p in programs] == [r.stdout for r in results]
    assert all(r.ok for r in results)


def test_scoring_mixes_both_paths_in_order_and_says_why_a_program_failed():
    programs = ["a = 2 * 3; print(a)", "a = [7]; print(a[0])", "a = 1 / 0; print(a)", "print(round(7 / 2))"]
    assert [straight_line_output(p) is None for p in programs] == [False, True, True, False]
    extracted, outputs = extract_all(programs, style="code", settings=EvalSettings())
    assert [None if x is None else str(x) for x in extracted] == ["6", "7", None, "4"]
    assert outputs[:2] == ["6\n", "7\n"] and outputs[3] == "4\n"
    assert outputs[2].startswith("error: ") and "ZeroDivisionError" in outputs[2]
