"""What a study compares: each trial's groups, read from its method's record, and the chance level of its test.

A trial belongs to the group of its method per GSM8K config (family `method`) when it stands for the method
itself (`Strategy.method_settings`), and to one group of each family its method declares
(`Strategy.groupings`: LoRA + CoT per prompt style, stacked LoRA per f and per variant). No module outside
a method's own files knows any method's grouping keys: `study.results` (the end-of-study table),
`analysis` (tables, charts, compared groups), `study.confirm` and the pairwise tests all ask this module.

The chance level of a trial (`chance_of`) is the same for all of them too: the chance baselines of its own
test examples (`trainables.scoring.baselines`) and whether its answers collapsed
(`trainables.scoring.collapse`), from its generations file and its reported answer spread.

Records load without torch, and so does this module: a report or the CLI reads it in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainables.methods import STRATEGIES, Grouping, Strategy, method_names
from trainables.scoring.baselines import Baseline, baselines_of_generations
from trainables.scoring.collapse import answer_spread, describe_collapse, is_collapsed
from trainables.training.setting_types import is_number

METHOD_FAMILY = "method"
"""The family of groups that sets methods side by side: one group per (method, GSM8K config)."""
UNREGISTERED_COLOUR = "#808080"
"""How charts draw a method read back from results whose record is not loaded (a plugin not imported)."""


@dataclass(frozen=True)
class Group:
    """One group of trials the study compares."""

    family: str
    """`method` (methods per config), or a family a method's record declares (`cot`, `stacked`)."""
    config: str
    """GSM8K config: main or socratic."""
    name: str
    """What it is within its family: a method, a prompt style, `f=<f>`, a variant."""
    label: str
    """How the report names it: `LoRA`, `code`, `f = relu`, `Single LoRA (math only)`."""

    @property
    def id(self) -> str:
        """`<family>/<config>/<name>`: unique, and a key of `confirm.json`."""
        return f"{self.family}/{self.config}/{self.name}"


def method_label(method: str) -> str:
    """The method's display name (its own name when its record is not loaded)."""
    return STRATEGIES[method].display_name if method in STRATEGIES else method


def method_colour(method: str) -> str:
    """The method's chart colour (gray when its record is not loaded)."""
    return STRATEGIES[method].colour if method in STRATEGIES else UNREGISTERED_COLOUR


def method_order(methods: Sequence[str]) -> list[str]:
    """`methods` in the registry's order; methods without a loaded record follow, by name."""
    known = [m for m in method_names() if m in set(methods)]
    return known + sorted(set(methods) - set(known), key=str)


def groupings() -> list[tuple[str, Grouping]]:
    """(method, grouping) of every family a registered method declares, in the registry's order."""
    return [(name, g) for name in method_names() for g in STRATEGIES[name].groupings]


def families() -> tuple[str, ...]:
    """Every family of compared groups: `method`, then each declared family in the registry's order."""
    return (METHOD_FAMILY, *(g.family for _, g in groupings()))


def _with_defaults(strategy: Strategy, settings: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    filled = dict(settings)
    for key in keys:
        if filled.get(key) is None:
            filled[key] = strategy.setting_default(key)
    return filled


def is_method_itself(method: str, settings: Mapping[str, Any]) -> bool:
    """Whether a trial with these settings (flat `strategy/...` keys) stands for its method as a whole."""
    strategy = STRATEGIES.get(method)
    if strategy is None:
        return True  # a method read back without its record has no variants we could know of
    wanted = strategy.method_settings
    values = _with_defaults(strategy, settings, list(wanted))
    return all(values.get(key) == value for key, value in wanted.items())


def groups_of(method: str, settings: Mapping[str, Any]) -> dict[str, str]:
    """Family -> the trial's group name in it: `method` (when it stands for its method) and each family its
    method declares that the trial belongs to."""
    out = {METHOD_FAMILY: method} if is_method_itself(method, settings) else {}
    strategy = STRATEGIES.get(method)
    for grouping in strategy.groupings if strategy else ():
        group = grouping.group_of(_with_defaults(strategy, settings, grouping.keys))
        if group is not None:
            out[grouping.family] = str(group)  # a setting's value from a results file: shown as text
    return out


def grouping_of(family: str) -> Grouping:
    """The grouping record that declares `family`.

    Raises:
        ValueError: for a family no registered method declares.
    """
    for _, grouping in groupings():
        if grouping.family == family:
            return grouping
    raise ValueError(f"unknown family {family!r}; choose from {', '.join(families())}")


def group_label(family: str, name: str) -> str:
    """How the report names group `name` of `family`."""
    if family == METHOD_FAMILY:
        return method_label(name)
    return grouping_of(family).label(name)


def group_order(family: str, names: Sequence[str]) -> list[str]:
    """`names` in the family's order: methods by the registry, groups by their record's labels, then by name."""
    if family == METHOD_FAMILY:
        return method_order(names)
    known = [n for n in grouping_of(family).labels if n in set(names)]
    return known + sorted(set(names) - set(known), key=str)


def comparisons(groups: Sequence[Group]) -> list[tuple[Group, Group]]:
    """The pairs the study tests, each (A, B) for the difference A - B, per family and config: every pair of
    methods, and within a declared family the pairs its record's `pairs` names."""
    out: list[tuple[Group, Group]] = []
    for family in families():
        for config in sorted({g.config for g in groups}):
            members = {g.name: g for g in groups if g.family == family and g.config == config}
            names = group_order(family, list(members))
            if family == METHOD_FAMILY:
                pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
            else:
                pairs = grouping_of(family).pairs(names)
            out += [(members[a], members[b]) for a, b in pairs if a in members and b in members]
    return out


def group_text(method: str, settings: Mapping[str, Any]) -> str:
    """The trial's groups inside its method, for one line of text: `cot=code`, `stacked=f=relu`."""
    return " ".join(f"{f}={g}" for f, g in groups_of(method, settings).items() if f != METHOD_FAMILY)


# --- chance: the baselines of a trial's own test examples, and whether its answers collapsed ---------------


@dataclass(frozen=True)
class Chance:
    """How a trial's test result compares with chance on the same examples."""

    baselines: dict[str, Baseline] | None
    """Each chance baseline on its test examples; None without a generations file with numeric references."""
    distinct_answers: float | None
    """Different answers among its test predictions (reported, else counted from its generations)."""
    top_answer_share: float | None
    """Share of the test examples given the most common answer."""
    collapsed: bool | None
    """Whether its answers collapsed (`trainables.scoring.collapse`); None when nothing says."""
    collapse: str | None
    """The collapse numbers in words (`3 distinct answers, the top one 80%`)."""


def chance_of(rows: Sequence[Mapping] | None, metrics: Mapping[str, Any]) -> Chance:
    """The chance level of one trial from its test generations (`rows`, None when it has none) and its last
    report (`metrics`: `test/distinct_answers`, `test/top_answer_share`, `test/n` win over a recount)."""
    baselines = None
    if rows:
        try:
            baselines = baselines_of_generations(rows)
        except ValueError:
            pass  # no numeric references (not a GSM8K-style file): no baselines to show
    spread = {k: metrics.get(f"test/{k}") for k in ("distinct_answers", "top_answer_share")}
    if rows and not all(is_number(v) for v in spread.values()):
        counted = answer_spread([r.get("extracted") for r in rows])  # a result from before these metrics
        spread = {k: v if is_number(v) else counted[k] for k, v in spread.items()}
    n = metrics.get("test/n") if is_number(metrics.get("test/n")) else len(rows or [])
    known = n and all(is_number(v) for v in spread.values())
    return Chance(
        baselines=baselines,
        distinct_answers=spread["distinct_answers"] if is_number(spread["distinct_answers"]) else None,
        top_answer_share=spread["top_answer_share"] if is_number(spread["top_answer_share"]) else None,
        collapsed=is_collapsed(**spread, n=int(n)) if known else None,
        collapse=describe_collapse(**spread) if known else None,
    )
