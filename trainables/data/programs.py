"""A GSM8K solution's calculator annotations -> a one-line Python program that prints the answer.

GSM8K marks every calculation in a solution with a calculator annotation `<<expr=value>>`:

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.
    Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.

Each annotation becomes one assignment, and a number in a later expression that equals an earlier step's
value is replaced by that step's variable (dataflow), so the program above is

    a = 48 / 2; b = 48 + a; print(round(b))

The program is one line, statements joined by `"; "`, because T5's SentencePiece tokenizer turns newlines
into spaces. Rules, chosen to be conservative:

- Expressions may hold only numbers (`48`, `0.5`, `.5`), `+ - * / //` and parentheses: that is everything
  the real train set uses inside `<<...>>` (`//` twice; `x` for multiply, `%` and `^` occur only in the
  prose). Anything else rejects the solution.
- A number is replaced by a variable only when the whole number token equals, exactly (as a fraction),
  the value of an earlier step whose written result agrees with its expression; the most recent such
  step wins. Rounded or wrong written results (`<<10/3=3.33>>`) are never substituted, so the later
  steps keep the literal the author used.
- The program prints the latest step whose exact value equals the final answer; steps after it are
  dropped. Printing rule: `print(v)` when `v` is a Python int (no division, no decimal literal on its
  way), `print(round(v))` when it is a float and the answer is an integer (so `72.0` and float noise like
  `71.99999999999999` print as `72`), `print(round(v, d))` for an answer with `d` decimals.
- The program is checked twice without `exec`/`eval`: its exact value (fractions) must equal the answer,
  and interpreting its text under Python's int/float semantics (`evaluate_program`) must print the answer.

`solution_to_program` returns None when a solution has no annotations or fails a rule above;
`convert_solution` raises `ProgramError` saying why (used to measure and explain the conversion rate).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from fractions import Fraction
from string import ascii_lowercase

from trainables.data.arithmetic import NotArithmetic, annotations, evaluate, exact_number, split_annotation

TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+)|(//|[-+*/()]))")


class ProgramError(ValueError):
    """A solution cannot become a program, or a program is outside the arithmetic subset."""


def solution_to_program(steps: Sequence[str], answer: str) -> str | None:
    """Turn a solution's calculator annotations into a one-line program, or None if that is not possible.

    Args:
        steps: solution lines with `<<expr=value>>` annotations (`MathRecord.steps`).
        answer: the normalised final answer (`MathRecord.answer`), e.g. `'72'`.

    Returns:
        The program, e.g. `'a = 48 / 2; b = 48 + a; print(round(b))'`, or None (see `convert_solution`).
    """
    try:
        return convert_solution(steps, answer)
    except ProgramError:
        return None


def convert_solution(steps: Sequence[str], answer: str) -> str:
    """Like `solution_to_program`, but raises `ProgramError` with the reason instead of returning None."""
    target = exact_number(answer)
    if target is None:
        raise ProgramError(f"final answer {answer!r} is not a number")
    statements: list[str] = []
    names: list[str] = []  # the variable of each annotation, in order
    exact: dict[str, int | Fraction] = {}  # variable -> its exact value
    python: dict[str, int | float] = {}  # variable -> its value as Python computes it
    bound: dict[int | Fraction, str] = {}  # value -> the latest variable a later number may be replaced by
    for annotation in (a for step in steps for a in annotations(step)):
        try:
            expr, written = split_annotation(annotation)
        except ValueError as err:
            raise ProgramError(str(err)) from None
        code = _substitute(_tokens(expr), bound)
        if code in exact:  # `<<24=24>>` after `a = ...`: an alias, not a new step
            name = code
        else:
            tree = _parse(code)
            name = _variable_name(len(exact))
            statements.append(f"{name} = {code}")
            exact[name] = _evaluate(tree, exact, exact=True, source=code)
            python[name] = _evaluate(tree, python, exact=False)
        names.append(name)
        if exact_number(written) == exact[name]:
            bound[exact[name]] = name
    if not statements:
        raise ProgramError("no calculator annotations")
    final = next((n for n in reversed(names) if exact[n] == target), None)
    if final is None:
        raise ProgramError(f"no step evaluates to the final answer {answer}")
    statements = statements[: list(exact).index(final) + 1]
    program = "; ".join(statements + [_print_statement(final, python[final], answer)])
    printed = evaluate_program(program)
    if exact_number(printed) != target:
        raise ProgramError(f"program prints {printed}, not the final answer {answer}")
    return program


def evaluate_program(program: str) -> str:
    """Interpret a program of the arithmetic subset and return what it prints (no `exec`, no `eval`).

    The subset: `name = expression` statements over numbers, earlier names, `+ - * / //`, unary minus and
    parentheses, ending in one `print(x)`, `print(round(x))` or `print(round(x, d))`. Values follow Python's
    int/float semantics, so the result is what running the program would print.

    Raises:
        ProgramError: for anything outside the subset, an unknown name, or a division by zero.
    """
    try:
        body = ast.parse(program).body
    except SyntaxError as err:
        raise ProgramError(f"not valid Python: {err.msg}") from None
    if not body or not _is_print(body[-1]):
        raise ProgramError("a program must end with one print(...)")
    env: dict[str, int | float] = {}
    for statement in body[:-1]:
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            raise ProgramError(f"only 'name = expression' statements allowed, got {ast.unparse(statement)!r}")
        env[statement.targets[0].id] = _evaluate(statement.value, env, exact=False)
    return str(_evaluate_printed(body[-1].value.args[0], env))


def _is_print(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Call)
        and isinstance(statement.value.func, ast.Name)
        and statement.value.func.id == "print"
        and len(statement.value.args) == 1
        and not statement.value.keywords
    )


def _evaluate_printed(node: ast.expr, env: dict) -> int | float:
    """The argument of print: an expression, or round(expression[, integer])."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "round":
        args = node.args
        ndigits = args[1].value if len(args) == 2 and isinstance(args[1], ast.Constant) else None
        if node.keywords or len(args) not in (1, 2) or (len(args) == 2 and type(ndigits) is not int):
            raise ProgramError(f"unsupported call {ast.unparse(node)!r}")
        value = _evaluate(args[0], env, exact=False)
        return round(value) if ndigits is None else round(value, ndigits)
    return _evaluate(node, env, exact=False)


def _evaluate(node: ast.expr, env: dict, *, exact: bool, source: str | None = None) -> int | float | Fraction:
    """Evaluate an arithmetic expression tree (`arithmetic.evaluate`); with exact=True literals are exact."""
    try:
        return evaluate(node, exact=exact, names=env, source=source)
    except NotArithmetic as err:
        raise ProgramError(str(err)) from None


def _parse(code: str) -> ast.expr:
    try:
        return ast.parse(code, mode="eval").body
    except SyntaxError:
        raise ProgramError(f"expression {code!r} is not valid arithmetic") from None


def _tokens(expr: str) -> list[str]:
    """Split an annotation's expression into canonical tokens; reject any other character."""
    tokens, pos, expr = [], 0, expr.rstrip()
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if not match:
            raise ProgramError(f"expression {expr!r} is not plain arithmetic (at {expr[pos:]!r})")
        number, op = match.groups()
        tokens.append(_canonical_number(number) if number else op)
        pos = match.end()
    if not tokens:
        raise ProgramError("empty expression")
    return tokens


def _canonical_number(text: str) -> str:
    """'.5' -> '0.5', '05' -> '5', '5.' -> '5.0': literals Python accepts and a reader expects."""
    whole, dot, fraction = text.partition(".")
    whole = whole.lstrip("0") or "0"
    return f"{whole}.{fraction or '0'}" if dot else whole


def _substitute(tokens: list[str], bound: dict[int | Fraction, str]) -> str:
    """Replace numbers equal to an earlier step's value by its variable; join with readable spacing."""
    out: list[str] = []
    for token in tokens:
        if token[0].isdigit():
            token = bound.get(exact_number(token), token)
        unary = token in ("+", "-") and (not out or out[-1].strip() in ("+", "-", "*", "/", "//", "("))
        if token in ("+", "-", "*", "/", "//") and not unary:
            out.append(f" {token} ")
        else:
            out.append(token)
    return "".join(out).replace("  ", " ").strip()


def _print_statement(final: str, value: int | float, answer: str) -> str:
    """print(v) for an int, print(round(v)) for a float with an integer answer, else round to its decimals."""
    if "/" in answer:
        raise ProgramError(f"final answer {answer} is a fraction, which a program cannot print as written")
    if isinstance(value, int):
        return f"print({final})"
    decimals = len(answer.partition(".")[2])
    return f"print(round({final}))" if decimals == 0 else f"print(round({final}, {decimals}))"


def _variable_name(index: int) -> str:
    """a, b, ..., z, then v26, v27, ..."""
    return ascii_lowercase[index] if index < len(ascii_lowercase) else f"v{index}"
