"""Which trial a table reports: the best finished trial of each group by a dev metric, never by a test one.

A trial's dev metric is the one of its last report, the same model its test metrics come from. Only
finished trials (those with test metrics) can be chosen; a tie goes to the trial listed first by name, so
the choice does not depend on the order folders were read in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

MODES = ("max", "min")


def check_metric(trials: pd.DataFrame, metric: str, mode: str) -> None:
    """Raise ValueError when `metric` / `mode` cannot choose trials in `trials`."""
    if metric.startswith("test/"):
        raise ValueError(
            f"choosing trials by {metric} would report numbers picked on the test split; use dev/*"
        )
    if mode not in MODES:
        raise ValueError(f"mode must be max or min, got {mode!r}")
    if metric not in trials.columns:
        reported = sorted(c for c in trials.columns if c.startswith(("dev/", "train/")))
        raise ValueError(f"no trial reported {metric!r}; reported: {', '.join(reported) or 'nothing'}")


def _key(value: Any) -> Hashable:
    """A group key part: missing values (None, NaN) all become None."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass
class Choice:
    """The chosen trial and the trial counts of every group of one grouping."""

    by: tuple[str, ...]
    """The grouping columns."""
    best: dict[tuple, dict[str, Any]]
    """Group key (values of `by`, None for a missing value) -> the chosen trial's row."""
    counts: dict[tuple, tuple[int, int]]
    """Group key -> (trials of any status, finished trials)."""

    def row(self, *key: Any) -> dict[str, Any] | None:
        """The chosen trial of group `key`, or None when the group has no finished trial."""
        return self.best.get(tuple(_key(k) for k in key))

    def count(self, *key: Any) -> tuple[int, int]:
        """(trials, finished trials) of group `key`; (0, 0) for a group nobody ran."""
        return self.counts.get(tuple(_key(k) for k in key), (0, 0))


def choose(
    trials: pd.DataFrame, by: Sequence[str], *, metric: str = "dev/accuracy", mode: str = "max"
) -> Choice:
    """The best finished trial of each group of `by` columns, by the last value of `metric`.

    Raises:
        ValueError: for a test metric, an unknown mode, or a metric no trial reported.
    """
    check_metric(trials, metric, mode)
    by = tuple(by)
    # Plain records of the few columns needed: masking the wide frame once per group would cost far more.
    narrow = trials[list(dict.fromkeys([*by, metric, "trial", "status"]))].to_dict("records")
    counts: dict[tuple, list[int]] = {}
    winners: dict[tuple, dict] = {}
    sign = 1 if mode == "max" else -1
    for record in narrow:
        key = tuple(_key(record[c]) for c in by)
        finished = record["status"] == "finished" and _key(record[metric]) is not None
        count = counts.setdefault(key, [0, 0])
        count[0], count[1] = count[0] + 1, count[1] + finished
        if not finished:
            continue
        current = winners.get(key)
        value = sign * float(record[metric])
        if current is None or value > sign * float(current[metric]):
            winners[key] = record
        elif value == sign * float(current[metric]) and record["trial"] < current["trial"]:
            winners[key] = record  # a tie goes to the first name
    rows = trials.set_index("trial", drop=False)
    best = {key: rows.loc[record["trial"]].to_dict() for key, record in winners.items()}
    return Choice(by=by, best=best, counts={k: (v[0], v[1]) for k, v in counts.items()})
