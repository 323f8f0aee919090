"""GSM8K's arithmetic in one module: annotations, written numbers, the one evaluator, writing values."""

from __future__ import annotations

import ast
import json
from fractions import Fraction
from pathlib import Path

import pytest

from trainables.data.arithmetic import (
    NotArithmetic,
    annotations,
    evaluate,
    exact_number,
    format_answer,
    format_number,
    normalise_number,
    parse_number,
    remove_annotations,
    safe_eval,
    split_annotation,
    terminating_places,
    write_annotation,
)

NATALIA = "Natalia sold 48/2 = <<48/2=24>>24 clips in May. She sold 48+24 = <<48+24=72>>72 clips in all."


@pytest.mark.parametrize(
    ("text", "bodies", "removed"),
    [
        (
            NATALIA,
            ["48/2=24", "48+24=72"],
            "Natalia sold 48/2 = 24 clips in May. She sold 48+24 = 72 clips in all.",
        ),
        ("She pays $5 * 3 = $<<5*3=15>>15.", ["5*3=15"], "She pays $5 * 3 = $15."),
        ("No calculation here.", [], "No calculation here."),
        ("x <<a<b>> y", [], "x <<a<b>> y"),  # `<` inside: not an annotation
        ("<<>>", [""], ""),
    ],
)
def test_annotations_are_found_and_removed(text, bodies, removed):
    assert annotations(text) == bodies
    assert remove_annotations(text) == removed


@pytest.mark.parametrize(
    ("body", "parts"),
    [("48/2=24", ("48/2", "24")), ("560//10=56", ("560//10", "56")), ("=5", ("", "5"))],
)
def test_split_annotation(body, parts):
    assert split_annotation(body) == parts
    assert write_annotation(*parts) == f"<<{body}>>"


@pytest.mark.parametrize("body", ["48/2", "a=b=c", ""])
def test_split_annotation_needs_one_equals_sign(body):
    with pytest.raises(ValueError, match="does not read expr=value"):
        split_annotation(body)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("72", 72),
        (" 7 ", 7),
        ("1,000", 1000),
        ("-2", -2),
        ("0.5", Fraction(1, 2)),
        (".4", Fraction(2, 5)),  # GSM8K's stray style
        ("5.", 5),
        ("144.00", 144),
        ("3/4", Fraction(3, 4)),
        ("5/0", None),
        ("1e3", None),
        ("+5", None),
        ("$5", None),  # exact_number reads the number alone; parse_number strips what is around it
        ("²", None),
        ("twelve", None),
        ("", None),
    ],
)
def test_exact_number(text, value):
    assert exact_number(text) == value
    if value is not None and text.strip().replace(",", "").isdigit():
        assert type(exact_number(text)) is int  # plain digits skip the (slow) Fraction parser


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$1,000", 1000),
        ("18.0", 18),
        ("0.5", Fraction(1, 2)),
        ("3/4", Fraction(3, 4)),
        ("-3", -3),
        ("72.", 72),
    ],
)
def test_parse_number_reads_references(text, value):
    assert parse_number(text) == value and type(parse_number(text)) is Fraction


@pytest.mark.parametrize("text", ["twelve", "5/0", "", "1 2"])
def test_parse_number_refuses_what_is_not_one_number(text):
    with pytest.raises(ValueError, match=f"reference answer {text!r} is not a number"):
        parse_number(text)


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("72", "72"),
        ("1,080", "1080"),
        ("$1,000.", "1000"),
        ("1 000", "1000"),
        ("-3", "-3"),
        ("3/4", "3/4"),
        ("2.5", "2.5"),
    ],
)
def test_normalise_number(raw, normalised):
    assert normalise_number(raw) == normalised


@pytest.mark.parametrize("raw", [".5", "twelve", "1e3", ""])
def test_normalise_number_refuses_non_canonical_answers(raw):
    with pytest.raises(ValueError, match="is not a number"):
        normalise_number(raw)


@pytest.mark.parametrize(
    ("expr", "exact", "python"),
    [
        ("48 / 2", Fraction(24), 24.0),
        ("0.1 + 0.2", Fraction(3, 10), 0.30000000000000004),
        ("7 // 2", 3, 3),
        ("1 / 3", Fraction(1, 3), 1 / 3),
        ("-(2 - 5) * 4", 12, 12),
        ("a + b", Fraction(7, 2), 3.5),
        ("+a", 3, 3),
    ],
)
def test_evaluate_exactly_and_as_python_does(expr, exact, python):
    tree = ast.parse(expr, mode="eval").body
    names = {"a": 3, "b": Fraction(1, 2)}
    assert evaluate(tree, exact=True, names=names, source=expr) == exact
    assert evaluate(tree, exact=False, names={"a": 3, "b": 0.5}) == python
    assert type(evaluate(tree, exact=False, names={"a": 3, "b": 0.5})) is type(python)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("2 ** 3", "not plain arithmetic: '2 \\*\\* 3'"),
        ("f(1)", "not plain arithmetic"),
        ("'x'", "not plain arithmetic"),
        ("True + 1", "not plain arithmetic"),
        ("c * 2", "name 'c' used before assignment"),
        ("1 / (2 - 2)", "division by zero in '1 / \\(2 - 2\\)'"),
        ("5 // 0", "division by zero"),
        ("10 ** 3 + 1", "not plain arithmetic"),
    ],
)
def test_evaluate_refuses_anything_else(expr, message):
    with pytest.raises(NotArithmetic, match=message):
        evaluate(ast.parse(expr, mode="eval").body, exact=True, source=expr)


def test_evaluate_bounds_exact_values():
    expr = "1000 * 1000"
    tree = ast.parse(expr, mode="eval").body
    assert evaluate(tree, exact=True, source=expr, limit=10**7) == 10**6
    with pytest.raises(NotArithmetic, match="too large"):
        evaluate(tree, exact=True, source=expr, limit=10**6)


def test_exact_literals_read_the_source_text():
    expr = "0.1000000000000000055511151231257827"  # the float 0.1 exactly; the text means something else
    tree = ast.parse(expr, mode="eval").body
    assert evaluate(tree, exact=True, source=expr) == Fraction(expr)
    assert evaluate(tree, exact=True) == Fraction(1, 10)  # without the text: the float's repr


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("48/2", Fraction(24)),
        (".5+1.25", Fraction(7, 4)),
        ("560//10", Fraction(56)),
        ("2**3", None),
        ("a+1", None),
    ],
)
def test_safe_eval_is_evaluate_on_checked_text(expr, value):
    assert safe_eval(expr) == value


@pytest.mark.parametrize(
    ("denominator", "places"),
    [(1, 0), (2, 1), (4, 2), (5, 1), (8, 3), (40, 3), (3, None), (6, None), (128, 7)],
)
def test_terminating_places(denominator, places):
    assert terminating_places(denominator) == places


@pytest.mark.parametrize(
    ("value", "gsm8k", "exact"),
    [
        (Fraction(24), "24", "24"),
        (Fraction(5, 2), "2.5", "2.5"),
        (Fraction(-7, 2), "-3.5", "-3.5"),
        (Fraction(1, 250), "0.004", "0.004"),
        (Fraction(1, 3), "0.33", "1/3"),
        (Fraction(-2, 3), "-0.67", "-2/3"),
        (Fraction(1, 300), "0.003", "1/300"),
        (Fraction(1, 128), "0.01", "0.0078125"),  # seven places: more than an annotation writes exactly
        (Fraction(2060, 15), "137.33", "412/3"),
        (Fraction(0), "0", "0"),
    ],
)
def test_format_number_rounds_as_gsm8k_and_format_answer_stays_exact(value, gsm8k, exact):
    assert format_number(value) == gsm8k
    assert format_answer(value) == exact
    if "/" not in exact:
        assert parse_number(exact) == value


def test_real_gsm8k_annotations_and_answers(data_dir):
    """Every train annotation that reads expr=value evaluates; most to the value written, and every final
    answer normalises, parses and reads back the same."""
    path = Path(data_dir, "gsm8k", "train.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    pairs = [split_annotation(b) for row in rows for b in annotations(row["answer"]) if b.count("=") == 1]
    agree = sum(safe_eval(expr) == exact_number(value) for expr, value in pairs)
    assert len(pairs) > 23_000 and agree / len(pairs) > 0.99
    for row in rows:
        answer = normalise_number(row["answer"].rsplit("#### ", 1)[1])
        assert format_answer(parse_number(answer)) == format_answer(Fraction(exact_number(answer)))
