"""Settings' values: a word where a number belongs, named by its key before any `__post_init__` compares it
with a number; what counts as a number.

Without the check, `--space train/lr=abc` or `study.train --set lr=abc` failed inside a dataclass's
validation with "'>' not supported between 'str' and 'int'", naming neither the key nor what it should be.
The helpers are the one home of what the study, the search spaces and the analysis each wrote again.
"""

from __future__ import annotations

import dataclasses
import math
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


def is_number(value: Any) -> bool:
    """True for a finite int or float that is not a bool (a metric or setting that can be compared)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
