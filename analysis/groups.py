"""The groups the report sets side by side, each with its best trial, and which pairs of them it compares.

Which group a trial belongs to is its method record's to say (`trainables.comparison`): each method per GSM8K
config (the trials that stand for the method itself), and each family a record declares (LoRA + CoT per
prompt style, stacked LoRA per f and per variant). The tables show each group's best trial (chosen by the
same `analysis.select.choose`); `study.confirm` re-runs it with fresh seeds; `analysis.confirm` compares the
groups on those runs. Several groups can share a trial (the best stacked-LoRA trial is also the best of its
f): it is re-run once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.load import UNREADABLE
from analysis.select import choose
from trainables.comparison import (
    Group,
    comparisons,
    families,
    group_label,
    group_order,
    groups_of,
)

__all__ = ["Chosen", "Group", "comparisons", "compared_groups", "group_column", "slug", "with_groups"]


@dataclass(frozen=True)
class Chosen:
    """A group and its best trial."""

    group: Group
    trial: dict[str, Any]
    """The trial's row of `Results.trials`."""


def slug(label: str) -> str:
    """A file or folder name for a trial label (`lora-main/trial_ab12` -> `lora-main_trial_ab12`); a long
    label is cut and keeps a hash, so that two long labels stay apart."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")
    if len(name) > 120:  # file names have limits
        name = name[:100] + "_" + hashlib.sha1(label.encode()).hexdigest()[:12]
    return name


def group_column(family: str) -> str:
    """The trials column holding each trial's group in `family` (missing: not in it)."""
    return f"group/{family}"


def _settings(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/") and not pd.isna(v)
    }


def _readable(row: dict[str, Any]) -> bool:
    """A trial whose method is known and whose files could be read (an unreadable one is in no group)."""
    return isinstance(row.get("method"), str) and row.get("status") != UNREADABLE


def with_groups(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with a `group/<family>` column per family (a copy); a frame that has them is returned as is."""
    columns = [group_column(f) for f in families()]
    if all(c in trials for c in columns):
        return trials
    found = [
        groups_of(row["method"], _settings(row)) if _readable(row) else {}
        for row in trials.to_dict("records")
    ]
    added = pd.DataFrame(
        [[g.get(f) for f in families()] for g in found], index=trials.index, columns=columns, dtype=object
    )
    return pd.concat([trials.drop(columns=[c for c in columns if c in trials]), added], axis=1)


def compared_groups(trials: pd.DataFrame, *, metric: str, mode: str) -> list[Chosen]:
    """Every group the report compares that has a finished trial, with that trial, in report order: the
    families in the registry's order, then config, then the family's own order."""
    trials = with_groups(trials)
    out: list[Chosen] = []
    for family in families():
        column = group_column(family)
        pool = trials[trials[column].notna()]
        if pool.empty:
            continue
        choice = choose(pool, ("config", column), metric=metric, mode=mode)
        for config in sorted({k[0] for k in choice.best}, key=str):
            names = group_order(family, [k[1] for k in choice.best if k[0] == config])
            for name in names:
                label = group_label(family, name)
                out.append(Chosen(Group(family, config, name, label), choice.best[(config, name)]))
    return out
