"""Straight-line arithmetic programs are scored from their syntax tree, with the sandbox's exact result."""

import json
import random
import subprocess
import sys

import pytest

from trainables.data.generator import generate_problems
from trainables.scoring.eval_settings import EvalSettings
from trainables.scoring.evaluation import extract_all
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
    "__debug__ = 1\nprint(72)",  # only the compiler refuses it
    "# coding: latin-1\né = 72\nprint(é)",  # the file's UTF-8 bytes read as latin-1: `Ã©`, not a name
    "# coding: ascii\n# café\na = 1\nprint(a)",  # a non-ASCII byte in an ASCII file
    "# coding: no-such-codec\na = 1\nprint(a)",
    "a = 1  # \ud800\nprint(a)",  # a lone surrogate has no UTF-8 bytes: the sandbox refuses it too
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


HEADERS = [
    "",
    "\ufeff",  # a byte-order mark
    "# coding: latin-1\n",
    "# -*- coding: cp1252 -*-\n",
    "#!/usr/bin/env python3\n# coding: utf-8\n",
    "# coding=ascii\n",
    "\n\n# coding: latin-1\n",  # a third line is no cookie
    "# vim: set fileencoding=iso-8859-15 :\n",
    "# coding: utf-16\n",
    "# coding: no-such-codec\n",
    "# coding: 1252\n",
]
NAMES = ["a", "b", "total", "x1", "_", "é", "ñame", "π", "Ωmega", "ﬁve", "ｘ", "µ", "Ä", "__debug__", "print"]
SEPARATORS = ["\n", "\r\n", "; ", "\n\n", "\n# note é\n", "  # trailing\n", "\n\x0c\n", "\n\t\n", "\n "]


def _expression(rng: random.Random, names: list[str], depth: int = 0) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.35:
        return rng.choice([str(rng.randint(0, 99)), f"{rng.randint(0, 9)}.{rng.randint(0, 9)}"])
    if roll < 0.6:
        return rng.choice(names) if names and rng.random() < 0.9 else rng.choice(NAMES)  # maybe unassigned
    left, right = _expression(rng, names, depth + 1), _expression(rng, names, depth + 1)
    form = rng.choice(["{} + {}", "{} - {}", "{} * {}", "{} / {}", "{} // {}", "({} + {})", "-{} * {}"])
    return form.format(left, right)


def _program(rng: random.Random) -> str:
    names, statements = [], []
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(NAMES[:-2] if rng.random() < 0.95 else NAMES)
        statements.append(f"{name} = {_expression(rng, names)}")
        names.append(name)
    value = _expression(rng, names)
    statements.append(rng.choice([f"print({value})", f"print(round({value}))", f"print(round({value}, 2))"]))
    body = statements[0]
    for statement in statements[1:]:
        body += rng.choice(SEPARATORS[:-1] if rng.random() < 0.95 else SEPARATORS) + statement
    return rng.choice(HEADERS) + body + rng.choice(["", "\n", "\n# done\n", "\r\n"])


RUN_FILES = """
import contextlib, io, json, sys
printed = []
for data in json.load(sys.stdin):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(bytes.fromhex(data), "<program>", "exec"), {"__name__": "__main__"})
        printed.append(out.getvalue())
    except BaseException:
        printed.append(None)
print(json.dumps(printed))
"""


def _python_prints(programs: list[str]) -> list[str | None]:
    """What each program prints when its UTF-8 file runs under this Python (None: it fails), as `python
    FILE` runs it: the bytes compiled whole, coding cookie and all. One interpreter runs them all."""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", RUN_FILES],
        input=json.dumps([p.encode("utf-8").hex() for p in programs]),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def test_the_tree_walk_prints_what_python_prints_for_the_file_or_declines():
    rng = random.Random(19)
    programs = [_program(rng) for _ in range(400)] + STRAIGHT + NOT_STRAIGHT[:-1]
    walked = [straight_line_output(p) for p in programs]
    expected = _python_prints(programs)
    disagree = [
        (p, w, e) for p, w, e in zip(programs, walked, expected, strict=True) if w is not None and w != e
    ]
    assert disagree == []
    taken = [p for p, w in zip(programs, walked, strict=True) if w is not None]
    # The generator reaches both sides, and the hard cases among those taken: not a vacuous pass.
    assert 60 < len(taken) < len(programs) - 100
    assert any(not p.isascii() for p in taken) and any("coding" in p for p in taken)
    # The sandbox, which scores what the tree walk declines, prints the same for those it takes.
    tricky = [p for p in taken if not p.isascii() or "coding" in p][:40]
    results = run_programs(tricky)
    assert [(r.error, r.stdout) for r in results] == [(None, straight_line_output(p)) for p in tricky]
