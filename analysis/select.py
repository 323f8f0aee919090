"""Which trial a table reports: the best finished trial of each group by a dev metric, never by a test one.

A trial's dev metric is the one of its last report, the same model its test metrics come from. Only
finished trials (those with test metrics) can be chosen; a tie goes to the trial listed first by name, so
the choice does not depend on the order folders were read in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def best_trials(
    trials: pd.DataFrame,
    by: Sequence[str],
    *,
    metric: str = "dev/accuracy",
    mode: str = "max",
) -> pd.DataFrame:
    """The best finished trial of each group of `by` columns, with the group's trial counts.

    Args:
        trials: `Results.trials`, or a subset of it.
        by: The grouping columns, e.g. `("method", "config")` or `("method", "config", "prompt_style")`.
        metric: The dev metric that ranks trials (their last report's value).
        mode: `max` when a larger `metric` is better, `min` otherwise.

    Returns:
        One row per group that has a finished trial: the chosen trial's columns plus `n_trials` (every trial
        of the group, whatever its status) and `n_finished`.

    Raises:
        ValueError: for a test metric, an unknown mode, or a metric no trial reported.
    """
    check_metric(trials, metric, mode)
    by = list(by)
    counts = trials.groupby(by, dropna=False).agg(
        n_trials=("trial", "size"), n_finished=("status", lambda s: int((s == "finished").sum()))
    )
    finished = trials[(trials["status"] == "finished") & trials[metric].notna()]
    ranked = finished.sort_values([metric, "trial"], ascending=[mode == "min", True], kind="stable")
    best = ranked.groupby(by, dropna=False, sort=True).head(1)
    best = best.join(counts, on=by)
    return best.sort_values(by, kind="stable").reset_index(drop=True)


def find_row(table: pd.DataFrame, **keys: Any) -> Mapping[str, Any] | None:
    """The one row of `table` whose columns equal `keys` (None matches a missing value), or None."""
    mask = pd.Series(True, index=table.index)
    for column, value in keys.items():
        if column not in table.columns:
            return None
        mask &= table[column].isna() if value is None else table[column] == value
    rows = table[mask]
    if len(rows) > 1:
        raise ValueError(f"{len(rows)} rows match {keys}; add a key to tell them apart")
    return None if rows.empty else rows.iloc[0].to_dict()
