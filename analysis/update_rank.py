"""The rank of what each compared group learned, against its accuracy: `tables/update_rank.csv` and a chart.

A trial measures, at its end, the singular values of every adapted layer's update (`trainables.scoring.
update_rank`: for stacked LoRA f(s2 B2 A2) and its product s2 B2 A2, for LoRA and its variants s B A, DoRA's
whole update) and reports the median over layers of its numerical rank (singular values above 1e-3 of the
largest) and its effective rank (Roy and Vetterli's entropy rank). Each group of the report (`analysis.groups`)
is one row: its best trial's figures and test accuracy. Where a group's update depends on the input (stacked
LoRA with a nonlinear f in activation space) the rank cells say so instead of holding a number; a method
with no low-rank update (full fine-tuning) prints `-`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.groups import compared_groups
from analysis.plots import new_figure, save_figure
from analysis.table import Table
from trainables.training.setting_types import is_number

INPUT_DEPENDENT = "input-dependent (f_space=activation)"
"""What a rank cell says where the update has no matrix (it depends on the input)."""
RANKS = ("numerical_rank", "effective_rank", "product_numerical_rank", "product_effective_rank")
"""The table's rank columns; each is the trial's `update/<column>` metric."""
_FORMATS = {name: "{:.2f}" for name in RANKS} | {"accuracy": "{:.1f}"}


def _value(trial: dict[str, Any], key: str) -> float:
    value = trial.get(key)
    return float(value) if is_number(value) else math.nan


def _row(group, trial: dict[str, Any]) -> dict[str, Any]:
    input_dependent = _value(trial, "update/input_dependent") == 1.0
    f = trial.get("config/strategy/f")  # stacked LoRA's f; "-" for a method without one
    row: dict[str, Any] = {
        "group": group.label,
        "family": group.family,
        "config": group.config,
        "f": f if isinstance(f, str) else "-",
    }
    for column in RANKS:
        value = _value(trial, f"update/{column}")
        row[column] = INPUT_DEPENDENT if input_dependent and math.isnan(value) else value
    row["accuracy"] = 100 * _value(trial, "test/accuracy")
    row["trial"] = trial.get("trial")
    return row


def update_rank_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """One row per compared group: f, the ranks of its best trial's update, and that trial's test accuracy."""
    chosen = compared_groups(trials, metric=metric, mode=mode)  # every family's groups: a trial may recur
    rows = [_row(c.group, c.trial) for c in chosen]
    columns = ["group", "family", "config", "f", *RANKS, "accuracy", "trial"]
    frame = pd.DataFrame(rows, columns=columns)
    return Table(
        "update_rank",
        "Rank of the learned update",
        frame,
        note=(
            "Median over adapted layers of the update's numerical rank (singular values above 1e-3 of the "
            "largest) and effective rank (Roy and Vetterli's entropy rank); for stacked LoRA the update is "
            "f(s2 B2 A2) and `product_` is s2 B2 A2 before f; for LoRA and its variants s B A (DoRA: its "
            "whole update). accuracy: test accuracy %, of the group's best trial."
        ),
        formats=dict(_FORMATS),
    )


def plot_update_rank(table: Table, path: Path) -> Path:
    """Test accuracy against the effective rank of the update, one labelled point per group; groups whose
    update depends on the input, or that have none, are named under the chart instead."""
    frame = table.frame
    numeric = pd.to_numeric(frame["effective_rank"], errors="coerce")
    shown = frame[numeric.notna() & frame["accuracy"].notna()]
    figure, axes = new_figure(7.5, 4.8)
    ax = axes[0, 0]
    ax.scatter(pd.to_numeric(shown["effective_rank"]), shown["accuracy"], s=40, color="#4C72B0", zorder=3)
    for _, row in shown.iterrows():
        label = row["group"] if row["f"] == "-" else f"{row['group']} ({row['f']})"
        ax.annotate(label, (float(row["effective_rank"]), row["accuracy"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("Effective rank of the learned update (median over layers)")
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title("Accuracy against the rank of what each group learned")
    left_out = frame[~frame.index.isin(shown.index)]
    if len(left_out):
        names = ", ".join(f"{g} ({'input-dependent' if isinstance(r, str) else 'no rank'})"
                          for g, r in zip(left_out["group"], left_out["effective_rank"], strict=True))  # fmt: skip
        figure.text(0.01, 0.0, f"not shown: {names}", fontsize=7, color="dimgray", wrap=True)
    ax.grid(alpha=0.3)
    return save_figure(figure, path)
