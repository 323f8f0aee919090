"""Straight-line arithmetic programs, scored without running them.

Nearly every program a model writes in the code style is a line of assignments of arithmetic to names
and a print, `a = 3 + 4; b = a * 2; print(round(b))`, the shape of `trainables.data.programs`' targets.
Starting a sandboxed interpreter for each costs about 20 ms of CPU, a fifth of a tiny trial. Such a
program's output is fixed by Python's arithmetic alone, so `straight_line_output` computes it by walking
the syntax tree with Python's own operators (`trainables.data.arithmetic.evaluate`), never `exec`.

The tree is the one the sandbox's interpreter compiles: parsed from the program's UTF-8 bytes (so a
coding cookie or a byte-order mark counts as it does in a file) and then compiled, so that what only the
compiler refuses (`__debug__ = 1`) is refused here too; `tests/test_straight_line.py` compares both with
running the file under Python on generated and hostile programs.

Nothing is run, so nothing can escape: the tree must be exactly that shape or the function returns None
and the program goes to the sandbox (`trainables.scoring.sandbox`), which then decides what it prints or
how it fails. Also None: any error Python would raise (a division by zero, an overflow), a name used
before it is assigned, `print` or `round` reassigned, and any value of 10**30 or more (a chain of `b = a *
a` doubles its digits per statement; the sandbox's limits deal with that), so the result is always the
one the sandbox would give for the same program.
"""

from __future__ import annotations

import ast

from trainables.data.arithmetic import evaluate

MAX_CHARS = 2000
"""Longer programs go to the sandbox (parsing is then bounded in time and depth)."""
MAX_MAGNITUDE = 10**30
"""A value this large or larger sends the program to the sandbox."""
MAX_OUTPUT_CHARS = 4096
"""More output goes to the sandbox, which truncates at its own limit (64 KiB by default)."""


def straight_line_output(source: str) -> str | None:
    """What `source` prints when it is straight-line arithmetic; None when it is anything else.

    Straight-line arithmetic: statements `name = expression` and `print(expression)` or
    `print(round(expression[, digits]))`, where an expression holds int and float literals, names assigned
    earlier, `+ - * / //`, unary `+ -` and parentheses.
    """
    if not isinstance(source, str) or len(source) > MAX_CHARS:
        return None
    try:
        tree = ast.parse(source.encode("utf-8"), mode="exec")
        compile(tree, "<program>", "exec", dont_inherit=True)
        names: dict[str, int | float] = {}
        lines = []
        for statement in tree.body:
            if _is_assignment(statement):
                names[statement.targets[0].id] = _value(statement.value, names)
            elif _is_print(statement):
                lines.append(f"{_printed(statement.value.args[0], names)}\n")
            else:
                return None
        output = "".join(lines)
        return output if len(output) <= MAX_OUTPUT_CHARS else None
    except (SyntaxError, ValueError, ArithmeticError, TypeError, RecursionError, MemoryError):
        # NotArithmetic and UnicodeError are ValueErrors; ZeroDivision and Overflow are ArithmeticErrors
        return None


def _is_assignment(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
        and statement.targets[0].id not in ("print", "round")
    )


def _is_print(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and _is_call(statement.value, "print")
        and len(statement.value.args) == 1
        and not statement.value.keywords
    )


def _is_call(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _printed(node: ast.expr, names: dict[str, int | float]) -> str:
    """str() of the printed value, as `print` writes it."""
    if not _is_call(node, "round"):
        return str(_value(node, names))
    if node.keywords or not 1 <= len(node.args) <= 2:
        raise ValueError("not round(x) or round(x, digits)")
    value = _value(node.args[0], names)
    if len(node.args) == 1:
        return str(round(value))
    digits = node.args[1]
    if not (isinstance(digits, ast.Constant) and type(digits.value) is int and abs(digits.value) <= 30):
        raise ValueError("round's digits must be a small int literal")
    return str(round(value, digits.value))


def _value(node: ast.expr, names: dict[str, int | float]) -> int | float:
    value = evaluate(node, exact=False, names=names)
    if not abs(value) < MAX_MAGNITUDE:  # also catches inf and nan
        raise ValueError("too large to compute here")
    return value
