"""The groups the report sets side by side, each with its best trial, and which pairs of them it compares.

The groups are the rows of `analysis.tables` (chosen by the same `analysis.select.choose`): each method
per GSM8K config (for LoRA + CoT its best prompt style), each CoT prompt style per config, and stacked
LoRA per f and per baseline. `study.confirm` re-runs each group's best trial with fresh seeds;
`analysis.confirm` compares the groups on those runs. Several groups can share a trial (the best
stacked-LoRA trial is also the best of its f): it is re-run once.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.methods import METHOD_LABELS
from analysis.published import COT_METHOD, STACKED_METHOD
from analysis.select import choose
from analysis.tables import BASELINE_LABELS, STACKED, model_pool, stacked_pool


@dataclass(frozen=True)
class Group:
    """One group of trials the report compares."""

    family: str
    """method (method vs method per config), cot (prompt style vs style) or stacked (f vs baselines)."""
    config: str
    """GSM8K config: main or socratic."""
    name: str
    """What it is within its family: a method, a prompt style, `f=<f>` or a baseline."""
    label: str
    """How the report names it: `LoRA`, `code`, `f = relu`, `Single LoRA (math only)`."""

    @property
    def id(self) -> str:
        """`<family>/<config>/<name>`: unique, and a key of `confirm.json`."""
        return f"{self.family}/{self.config}/{self.name}"


@dataclass(frozen=True)
class Chosen:
    """A group and its best trial."""

    group: Group
    trial: dict[str, Any]
    """The trial's row of `Results.trials`."""


def slug(trial: str) -> str:
    """A folder name for a trial label (`lora-main/trial_ab12` -> `lora-main_trial_ab12`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", trial).strip("_")


def compared_groups(trials: pd.DataFrame, *, metric: str, mode: str) -> list[Chosen]:
    """Every group the report compares that has a finished trial, with that trial, in report order."""
    out: list[Chosen] = []
    methods = pd.concat([model_pool(trials), trials[trials["method"] == COT_METHOD]])
    choice = choose(methods, ("config", "method"), metric=metric, mode=mode)
    for (config, method), row in sorted(choice.best.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]))):
        out.append(Chosen(Group("method", config, method, METHOD_LABELS.get(method, method)), row))
    cot = choose(trials[trials["method"] == COT_METHOD], ("config", "prompt_style"), metric=metric, mode=mode)
    for (config, style), row in sorted(cot.best.items()):
        out.append(Chosen(Group("cot", config, style, style), row))
    stacked = choose(stacked_pool(trials), ("config", "baseline", "f"), metric=metric, mode=mode)
    for (config, baseline, f), row in sorted(stacked.best.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if baseline == STACKED:
            out.append(Chosen(Group(STACKED_METHOD, config, f"f={f}", f"f = {f}"), row))
        else:
            out.append(
                Chosen(Group(STACKED_METHOD, config, baseline, BASELINE_LABELS.get(baseline, baseline)), row)
            )
    return out


def _order(method: str) -> int:
    known = list(METHOD_LABELS)
    return known.index(method) if method in known else len(known)


def comparisons(groups: list[Group]) -> list[tuple[Group, Group]]:
    """The pairs the report tests, each (A, B) for the difference A - B.

    Methods: every pair per config. CoT styles: every pair per config. Stacked LoRA: each f against the
    linear stack and against the single LoRA (the baselines that say whether f and stage 1 help).
    """
    pairs: list[tuple[Group, Group]] = []
    configs = sorted({g.config for g in groups})
    for family in ("method", "cot"):
        for config in configs:
            members = [g for g in groups if g.family == family and g.config == config]
            pairs += list(itertools.combinations(members, 2))
    for config in configs:
        stacked = [g for g in groups if g.family == STACKED_METHOD and g.config == config]
        baselines = [g for g in stacked if g.name in ("linear", "single_lora")]
        for g in stacked:
            if g.name.startswith("f="):
                pairs += [(g, b) for b in baselines]
    return pairs
