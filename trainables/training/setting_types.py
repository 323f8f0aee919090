"""A word where a number belongs, named by its key before any `__post_init__` compares it with a number.

Without this, `--space train/lr=abc` or `study.train --set lr=abc` failed inside a dataclass's validation
with "'>' not supported between 'str' and 'int'", naming neither the key nor what it should be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

_NUMBER_KINDS = {
    "int": (int,),
    "int | None": (int,),
    "float": (int, float),
    "float | None": (int, float),
}
"""Field annotations (as strings: the config modules use `from __future__ import annotations`) -> types."""


def check_number_fields(prefix: str, cls: type, values: Mapping[str, Any]) -> None:
    """Check that each value given for an `int` or `float` field of dataclass `cls` is such a number.

    Args:
        prefix: the group the keys belong to, for the message: `train`, `strategy`, `train/eval`.
        cls: the settings dataclass.
        values: the settings about to be passed to it (unknown keys are left to the dataclass).

    Raises:
        ValueError: `train/lr must be a number, got 'abc'`, or `... must be a whole number, got 2.5`.
    """
    for field in dataclasses.fields(cls):
        kinds = _NUMBER_KINDS.get(str(field.type))
        if kinds is None or field.name not in values:
            continue
        value = values[field.name]
        if value is None and str(field.type).endswith("None"):
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            expected = "a whole number" if kinds == (int,) else "a number"
            raise ValueError(f"{prefix}/{field.name} must be {expected}, got {value!r}")
