"""GSM8K's arithmetic, in one place: calculator annotations, written numbers, one safe evaluator, and how
GSM8K writes a value.

A GSM8K solution marks every calculation with an annotation, `48/2 = <<48/2=24>>24`: `<<`, an expression of
numbers, `+ - * / //` and parentheses, `=`, the value, `>>`. The prompt styles remove annotations, the
program converter reads them, the metrics read an answer past them and the calculator fills them in while
a model decodes; all of them use the syntax, the number grammar and the evaluator defined here.

- Annotations: `ANNOTATION`, `ANNOTATION_VALUE`; `annotations`, `split_annotation`, `remove_annotations`,
  `write_annotation`, `unclosed_annotation_start`.
- Numbers: `MAX_NUMBER_CHARS` (the longest text read as a number), `clean_number` (strip what people write
  around one), `exact_number` / `parse_number` (a written number as an exact value), `normalise_number` (a
  final answer in canonical form).
- Evaluation: `evaluate` walks the tree of an expression in exact (Fraction) or Python (int / float)
  arithmetic; `safe_eval` evaluates untrusted text exactly within bounds, never with `eval`.
- Writing values: `format_number` (as GSM8K's annotations do: `24`, `2.5`, `3.33`) and `format_answer`
  (exactly: `0.75`, `1/3`), both on `terminating_places`.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from fractions import Fraction

Exact = int | Fraction
"""An exact value: an int, or a Fraction once a division or a decimal is involved."""

# --- annotations ------------------------------------------------------------------------------------------

ANNOTATION = re.compile(r"<<([^<>]*)>>")
"""One annotation; group 1 is its body, `expr=value`."""
ANNOTATION_VALUE = re.compile(r"<<(?:[^<>]*=)?(?P<value>[^<>=]*)>>")
"""One annotation; group `value` is what follows its last `=` (the whole body if it has none)."""


def annotations(text: str) -> list[str]:
    """The bodies (`48/2=24`) of the annotations in `text`, in order."""
    return ANNOTATION.findall(text)


def split_annotation(body: str) -> tuple[str, str]:
    """`'48/2=24'` -> `('48/2', '24')`.

    Raises:
        ValueError: if the body does not hold exactly one `=`.
    """
    if body.count("=") != 1:
        raise ValueError(f"annotation <<{body}>> does not read expr=value")
    expr, value = body.split("=")
    return expr, value


def remove_annotations(text: str) -> str:
    """`'48/2 = <<48/2=24>>24'` -> `'48/2 = 24'` (the value GSM8K writes after each annotation stays)."""
    return ANNOTATION.sub("", text)


def write_annotation(expr: str, value: object) -> str:
    """`('48/2', 24)` -> `'<<48/2=24>>'`."""
    return f"<<{expr}={value}>>"


def unclosed_annotation_start(text: str) -> int | None:
    """Where an annotation that a generation began and never closed starts (the first `<<` after the last
    `>`), or None. Two scans of the text: the regex `<<[^>]*\\Z` that said the same took time quadratic in
    the length of model output such as `<<a<<a...>`."""
    start = text.find("<<", text.rfind(">") + 1)
    return None if start < 0 else start


# --- written numbers --------------------------------------------------------------------------------------

MAX_NUMBER_CHARS = 100
"""The longest text (digits, separators, sign, exponent) read as one number. Longer is not a number here:
Python refuses to write an int of over 4,300 digits, and `9...9e999` in a model's output would otherwise
stop the whole evaluation when its answer is written back. GSM8K's longest answer has 7 characters."""
WRITTEN_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)(/\d+)?")
"""A number as GSM8K writes it, thousands commas removed: `72`, `-2`, `0.5`, `.4`, `5.`, `3/4`."""
CANONICAL_NUMBER = re.compile(r"-?\d+(\.\d+)?(/\d+)?")
"""A normalised final answer: digits on both sides of any decimal point."""


def clean_number(text: str) -> str:
    """Strip what people write around a number: spaces at the ends, thousands commas, `$`, a final period."""
    return text.strip().replace(",", "").replace("$", "").rstrip(".")


def exact_number(text: str) -> Exact | None:
    """A written number (`'72'`, `'.4'`, `'3/4'`, `'-2'`, `'1,000'`) as an exact value, else None.

    An int where the text is one (ints skip the slow Fraction parser and compare equal all the same).
    """
    text = text.strip().replace(",", "")
    if len(text) > MAX_NUMBER_CHARS or not WRITTEN_NUMBER.fullmatch(text):
        return None
    if text.isdigit():
        return int(text)
    try:
        return Fraction(text)
    except ZeroDivisionError:  # `5/0`
        return None


def parse_number(text: str) -> Fraction:
    """A reference answer such as `'72'`, `'-3'`, `'0.5'`, `'3/4'` or `'$1,000'`, exactly.

    Raises:
        ValueError: if `text` is not one number.
    """
    value = exact_number(clean_number(text))
    if value is None:
        raise ValueError(f"reference answer {text!r} is not a number")
    return Fraction(value)


def normalise_number(raw: str) -> str:
    """A final answer in canonical form: `'$1,000.'` -> `'1000'` (spaces inside are removed too).

    Raises:
        ValueError: if what is left is not a number, or longer than `MAX_NUMBER_CHARS`.
    """
    text = raw.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(
            f"final answer {raw[:20]!r}... has {len(text)} characters, over the {MAX_NUMBER_CHARS} read as a number"
        )
    if not CANONICAL_NUMBER.fullmatch(text):
        raise ValueError(f"final answer {raw!r} is not a number")
    if re.search(r"/0+\Z", text):  # '5/0' matches CANONICAL_NUMBER but is no number: refuse it up front
        raise ValueError(f"final answer {raw!r} divides by zero")
    return text


# --- evaluation -------------------------------------------------------------------------------------------

OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,  # twice in GSM8K's train split: `560//10`
}
EXPRESSION_CHARS = frozenset("0123456789.+-*/() ")
"""Every character GSM8K's expressions use (no `x`, `**`, `%` or thousands commas)."""
MAX_CHARS, MAX_DEPTH, MAX_DIGITS = 64, 10, 30
"""`safe_eval`'s default bounds (GSM8K's longest expression has 30 characters and nests 2 deep)."""


class NotArithmetic(ValueError):
    """Outside the arithmetic subset: another node, a name without a value, a division by zero, too large."""


def evaluate(
    node: ast.expr,
    *,
    exact: bool,
    names: Mapping[str, int | float | Fraction] | None = None,
    source: str | None = None,
    limit: int | None = None,
) -> int | float | Fraction:
    """Evaluate an expression tree of numbers, names, `+ - * / //`, unary `+ -` and parentheses.

    Args:
        node: the tree (`ast.parse(text, mode="eval").body`).
        exact: True: exact values (ints and Fractions; a decimal literal is the decimal it reads as, not
            the float Python would make of it); False: Python's own int / float semantics.
        names: the values of the names the expression may use.
        source: the text `node` was parsed from; with `exact`, literals are read from it (else from repr).
        limit: with `exact`, every literal and intermediate value must have numerator and denominator
            below it.

    Raises:
        NotArithmetic: for any other node, an unknown name, a division by zero or a value past `limit`.
    """
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = node.value
        if exact and type(value) is float:
            text = ast.get_source_segment(source, node) if source is not None else None
            value = Fraction(text or str(value))
    elif isinstance(node, ast.Name):
        if names is None or node.id not in names:
            raise NotArithmetic(f"name {node.id!r} used before assignment")
        value = names[node.id]
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = evaluate(node.operand, exact=exact, names=names, source=source, limit=limit)
        value = -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:  # the operator is checked first
        left = evaluate(node.left, exact=exact, names=names, source=source, limit=limit)
        right = evaluate(node.right, exact=exact, names=names, source=source, limit=limit)
        if isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0:
            raise NotArithmetic(f"division by zero in {ast.unparse(node)!r}")
        if exact and isinstance(node.op, ast.Div):
            left = Fraction(left)  # int / int would give a float
        value = OPERATORS[type(node.op)](left, right)
    else:
        raise NotArithmetic(f"not plain arithmetic: {ast.unparse(node)!r}")
    if exact and limit is not None and not (abs(value.numerator) < limit and value.denominator < limit):
        raise NotArithmetic(f"{ast.unparse(node)!r} is too large to evaluate (limit {limit})")
    return value


def safe_eval(
    expr: str, *, max_chars: int = MAX_CHARS, max_depth: int = MAX_DEPTH, max_digits: int = MAX_DIGITS
) -> Fraction | None:
    """Evaluate an untrusted calculator expression exactly, or return None when it is not one.

    Only numbers (`3`, `2.5`, `.5`), `+ - * / //`, unary minus and parentheses are accepted; `**`, names,
    calls and everything else give None, as do division by zero and any literal or intermediate result
    whose numerator or denominator reaches 10**max_digits. Length and nesting are checked before `ast.parse`,
    so no input can hit the recursion limit, hang or take much memory.

    Raises:
        TypeError: if `expr` is not a string.
    """
    if not isinstance(expr, str):
        raise TypeError(f"safe_eval expects a str, got {type(expr).__name__}")
    if not expr.strip() or len(expr) > max_chars or not EXPRESSION_CHARS.issuperset(expr):
        return None
    depth = 0
    for char in expr:
        depth += (char == "(") - (char == ")")
        if depth < 0 or depth > max_depth:
            return None
    try:
        tree = ast.parse(expr, mode="eval")
        return Fraction(evaluate(tree.body, exact=True, source=expr, limit=10**max_digits))
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # NotArithmetic is a ValueError
        return None


# --- writing values ---------------------------------------------------------------------------------------


def terminating_places(denominator: int) -> int | None:
    """Decimal places of 1/denominator when it terminates (denominator = 2**a * 5**b), else None."""
    twos = fives = 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    return max(twos, fives) if denominator == 1 else None


def _decimal(value: Fraction, places: int) -> str:
    """`value` rounded half away from zero to `places` decimals, trailing zeros dropped: `-2.5`, `3.33`."""
    digits = str(int(abs(value) * 10**places + Fraction(1, 2))).rjust(places + 1, "0")
    whole, fraction = digits[: len(digits) - places], digits[len(digits) - places :].rstrip("0")
    return ("-" if value < 0 else "") + whole + (f".{fraction}" if fraction else "")


DECIMALS, MAX_EXACT_PLACES = 2, 6
"""`format_number`'s defaults: GSM8K's free text rounds to 2 places; its annotations write up to 6 exactly."""


def format_number(
    value: Fraction | int, *, decimals: int = DECIMALS, max_exact_places: int = MAX_EXACT_PLACES
) -> str:
    """Write a value as GSM8K's annotations do: `24`, `2.5`, `0.004`, `-7`.

    Integers have no `.0`; terminating decimals of at most `max_exact_places` places are exact; any other
    value is rounded half away from zero to `decimals` places (more if that would show a nonzero value
    as 0) with trailing zeros stripped: 10/3 -> `3.33`, 2/3 -> `0.67`, 1/300 -> `0.003`. GSM8K's
    annotations hold no such value; its free text rounds to 2 places (`$2060/$15 per hour = 137.33`).

    Raises:
        TypeError: if `value` is not a Fraction or int (a float is already inexact).
        ValueError: if `decimals` or `max_exact_places` is negative.
    """
    if isinstance(value, bool) or not isinstance(value, (int, Fraction)):
        raise TypeError(f"format_number expects a Fraction or int, got {type(value).__name__}")
    if decimals < 0 or max_exact_places < 0:
        raise ValueError(f"decimals={decimals} and max_exact_places={max_exact_places} must be at least 0")
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    places = terminating_places(value.denominator)
    if places is None or places > max_exact_places:
        places = decimals
        while int(abs(value) * 10**places + Fraction(1, 2)) == 0:
            places += 1
    return _decimal(value, places)


def format_answer(value: Fraction | None) -> str | None:
    """Write an answer back exactly: 72 -> `'72'`, 1/2 -> `'0.5'`, 3/4 -> `'0.75'`, 1/3 -> `'1/3'`."""
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    places = terminating_places(value.denominator)
    if places is None:
        return f"{value.numerator}/{value.denominator}"  # no finite decimal
    return _decimal(value, places)  # exact: 10**places is a multiple of the denominator
