"""The study's tables: each row is the best trial of a group, chosen by a dev metric, showing its test numbers.

Rows are the groups the study ran (`analysis.groups`, from the method records): every registered method,
plugins included, per GSM8K config in the tables across methods, in the registry's order and with its
display name; and each family a record declares (LoRA + CoT per prompt style, stacked LoRA per f and per
variant) in a table of its own. A group nobody ran is not a row (a line under the table lists them); a group
whose trials all ended without test numbers is a row that says so (`failed`, `stopped early`). Published
numbers stand beside ours only where our trial ran on the published data and base model; all of them are
also in one reference table. Accuracy and similarity are percentages (similarity is 100 x the average
cosine, as the study publishes it), ROUGE-1 is a fraction in [0, 1], perplexity a plain number. The search
summary and importances live in `analysis.diagnostics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.chance import add_signal, attach_chance
from analysis.groups import group_column, with_groups
from analysis.provenance import add_provenance, comparable, describe
from analysis.published import MODEL_ROWS, TABLE_ONE, published_accuracy, table_one
from analysis.select import Choice, check_metric, choose
from analysis.table import (
    ACC,
    CALC,
    CALC_HIGH,
    CALC_LOW,
    HIGH,
    LOW,
    PPL,
    PUBLISHED,
    ROUGE,
    SIM,
    STATUS,
    Table,
)
from trainables.comparison import (
    METHOD_FAMILY,
    group_label,
    group_order,
    groupings,
    method_label,
    method_order,
)
from trainables.data.load import CONFIGS
from trainables.methods import method_names
from trainables.scoring.metric_registry import METRICS
from trainables.training.setting_types import is_number


def _pct(row: Mapping[str, Any] | None, key: str) -> float:
    value = None if row is None else row.get(key)
    return 100.0 * float(value) if is_number(value) else math.nan


def _num(row: Mapping[str, Any] | None, key: str) -> float:
    value = None if row is None else row.get(key)
    return float(value) if is_number(value) else math.nan


def _status(pool: pd.DataFrame) -> str:
    """What a group without a finished trial did: failed (a trial crashed), stopped early, or incomplete."""
    statuses = set(pool["status"])
    if "error" in statuses:
        return "failed"
    return "incomplete" if "incomplete" in statuses else "stopped early"


def _counts(choice: Choice, pool: pd.DataFrame, *key: Any) -> dict[str, Any]:
    """A group's trial counts, its trial and, without a finished trial, what became of its trials."""
    trials, finished = choice.count(*key)
    row = choice.row(*key)
    status = "" if row is not None else _status(pool[_matches(pool, choice.by, key)])
    return {
        "Trials": trials,
        "Finished": finished,
        STATUS: status,
        "trial": None if row is None else row["trial"],
    }


def _matches(pool: pd.DataFrame, by: Sequence[str], key: Sequence[Any]) -> pd.Series:
    mask = pd.Series(True, index=pool.index)
    for column, value in zip(by, key, strict=True):
        mask &= pool[column] == value
    return mask


def _accuracy(row: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        ACC: _pct(row, "test/accuracy"),
        LOW: _pct(row, "test/accuracy_low"),
        HIGH: _pct(row, "test/accuracy_high"),
    }


def _calculator(row: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        CALC: _pct(row, "test/accuracy_calculator"),
        CALC_LOW: _pct(row, "test/accuracy_calculator_low"),
        CALC_HIGH: _pct(row, "test/accuracy_calculator_high"),
    }


def _text_metrics(row: Mapping[str, Any] | None) -> dict[str, float]:
    """Every registered metric but accuracy (which has its own columns), under its record's column."""
    return {
        m.column: (_pct if m.percent else _num)(row, f"test/{m.name}")
        for m in METRICS.values()
        if m.name != "accuracy"
    }


def _config_order(configs) -> list[str]:
    return sorted(set(configs), key=lambda c: (CONFIGS.index(c) if c in CONFIGS else len(CONFIGS), str(c)))


def method_pool(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that stand for their method as a whole (stacked LoRA's variants are not "Stacked LoRA")."""
    trials = with_groups(trials)
    return trials[trials[group_column(METHOD_FAMILY)].notna()]


def method_keys(trials: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, config) of every method the study ran, in the registry's order, then per config."""
    pool = method_pool(trials)
    keys = []
    for method in method_order(pool["method"].unique().tolist()):
        configs = pool.loc[pool["method"] == method, "config"]
        keys += [(method, config) for config in _config_order(configs)]
    return keys


def not_run(trials: pd.DataFrame) -> str:
    """`Not run: QLoRA, Full fine-tuning.`: the registered methods with no trial at all ('' for none)."""
    ran = set(trials["method"])
    missing = [method_label(m) for m in method_names() if m not in ran]
    return f"Not run: {', '.join(missing)}." if missing else ""


def _choose_methods(trials: pd.DataFrame, metric: str, mode: str) -> tuple[pd.DataFrame, Choice]:
    pool = method_pool(trials)
    return pool, choose(pool, ("method", "config"), metric=metric, mode=mode)


def _note(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _rows_table(
    rows: Sequence[Mapping[str, Any]],
    key: str,
    title: str,
    note: str,
    *,
    trials: pd.DataFrame,
    formats: Mapping[str, str] | None = None,
) -> Table:
    """A table of `rows`; columns of published numbers that no row has are left out (ours ran elsewhere),
    and so is the status column where every group finished. `on` names the rows' data and base model."""
    frame = pd.DataFrame(list(rows))
    for column in [c for c in frame.columns if c.endswith(PUBLISHED) or c == STATUS]:
        values = frame[column]
        if (values == "").all() if column == STATUS else values.isna().all():
            frame = frame.drop(columns=column)
    indexed = trials.set_index("trial", drop=False)
    reported = [
        indexed.loc[t].to_dict() for t in frame.get("trial", []) if isinstance(t, str) and t in indexed.index
    ]
    table = Table(key=key, title=title, frame=frame, note=note, on=describe(reported))
    table.formats.update({m.column: m.format for m in METRICS.values() if m.column not in table.formats})
    table.formats.update(formats or {})
    return table


def _published_beside(row: Mapping[str, Any] | None, value: float | None) -> float:
    """A published number beside ours only where our trial ran on the published data and base model."""
    return float(value) if value is not None and comparable(row) else math.nan


def models_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Table 1: ROUGE-1, perplexity and similarity of each method per config (published ones beside ours
    where comparable)."""
    pool, choice = _choose_methods(trials, metric, mode)
    rows = []
    for method, config in method_keys(trials):
        row = choice.row(method, config)
        values = table_one(method, config)
        published = {ROUGE: values and values.rouge1, PPL: values and values.perplexity}
        published[SIM] = values and values.similarity_pct
        ours = {}
        for column, value in _text_metrics(row).items():  # each metric, the published number after it
            ours[column] = value
            if column in published:
                ours[column + PUBLISHED] = _published_beside(row, published[column])
        rows.append(
            {"Model": method_label(method), "Config": config, **ours, **_counts(choice, pool, method, config)}
        )
    note = _note(
        f"Test-split numbers of the best finished trial per (method, config), chosen by its last {metric} ({mode}).",
        "Similarity is the average cosine similarity of sentence embeddings, shown as a percentage.",
        not_run(trials),
    )
    title = "Table 1: ROUGE-1, perplexity and semantic similarity per model"
    return _rows_table(rows, "table1_models", title, note, trials=trials)


def accuracy_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Accuracy per method and config (the study's Figure 2) with the bootstrap 95% interval of each trial."""
    pool, choice = _choose_methods(trials, metric, mode)
    rows = []
    for method, config in method_keys(trials):
        row = choice.row(method, config)
        rows.append(
            {
                "Model": method_label(method),
                "Config": config,
                **_accuracy(row),
                ACC + PUBLISHED: _published_beside(row, published_accuracy(METHOD_FAMILY, config, method)),
                "Test examples": _num(row, "test/n"),
                **_counts(choice, pool, method, config),
            }
        )
    note = _note(
        f"Test accuracy of the best trial per (method, config) by {metric} ({mode}); 95% bootstrap intervals.",
        not_run(trials),
    )
    return _rows_table(rows, "accuracy_per_model", "Accuracy per model (Figure 2)", note, trials=trials)


def _family_pool(trials: pd.DataFrame, family: str) -> pd.DataFrame:
    trials = with_groups(trials)
    return trials[trials[group_column(family)].notna()]


def group_table(trials: pd.DataFrame, method: str, grouping, *, metric: str, mode: str) -> Table:
    """One family a method declares: the best trial per (group, config), with the settings it shows."""
    family, column = grouping.family, group_column(grouping.family)
    pool = _family_pool(trials, family)
    choice = choose(pool, ("config", column), metric=metric, mode=mode)
    calculator = "test/accuracy_calculator" in pool and pool["test/accuracy_calculator"].notna().any()
    rows, configs = [], _config_order(pool["config"])
    for config in configs:
        names = group_order(family, pool.loc[pool["config"] == config, column].tolist())
        for name in names:
            row = choice.row(config, name)
            shown = {
                key.rsplit("/", 1)[-1].replace("_", " "): ""
                if row is None or pd.isna(row.get(f"config/{key}"))
                else str(row[f"config/{key}"])
                for key in grouping.shown
            }
            rows.append(
                {
                    grouping.column: group_label(family, name),
                    "Config": config,
                    **shown,
                    **_accuracy(row),
                    ACC + PUBLISHED: _published_beside(row, published_accuracy(family, config, name)),
                    **(_calculator(row) if calculator else {}),
                    **_text_metrics(row),
                    **_counts(choice, pool, config, name),
                }
            )
    absent = [
        f"{grouping.label(name)} ({config})"
        for config in configs or CONFIGS[:1]
        for name in grouping.labels
        if choice.count(config, name) == (0, 0)
    ]
    note = _note(
        f"{method_label(method)}: the best trial per group and config by {metric} ({mode}).",
        grouping.note,
        f"Not run: {', '.join(absent)}." if pool.empty or absent else "",
    )
    return _rows_table(rows, grouping.key, grouping.title, note, trials=trials)


def calculator_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Accuracy without and with the calculator: every method row, and every group row of the families whose
    best trial was scored with the calculator."""
    pool, models = _choose_methods(trials, metric, mode)
    wanted = [(method_label(m), c, models.row(m, c)) for m, c in method_keys(trials)]
    for _, grouping in groupings():
        column = group_column(grouping.family)
        family_pool = _family_pool(trials, grouping.family)
        choice = choose(family_pool, ("config", column), metric=metric, mode=mode)
        for (config, name), row in choice.best.items():
            if is_number(row.get("test/accuracy_calculator")):
                wanted.append((f"{grouping.title}: {grouping.label(name)}", config, row))
    rows, seen = [], set()
    for label, config, row in wanted:
        if row is not None and row["trial"] in seen:
            continue
        seen.add(None if row is None else row["trial"])
        without, with_calc = _pct(row, "test/accuracy"), _pct(row, "test/accuracy_calculator")
        rows.append(
            {
                "Model": label,
                "Prompt style": "-" if row is None else str(row["prompt_style"]),
                "Config": config,
                ACC: without,
                CALC: with_calc,
                "Calculator gain (points)": with_calc - without,
                CALC_LOW: _pct(row, "test/accuracy_calculator_low"),
                CALC_HIGH: _pct(row, "test/accuracy_calculator_high"),
                "trial": None if row is None else row["trial"],
            }
        )
    note = (
        "Each row is one trial's test split decoded twice: freely, and with a calculator that writes the result "
        "of every `<<expr=` annotation. '-' where the trial's style has no annotations or the calculator was off."
    )
    return _rows_table(rows, "calculator", "Accuracy with and without the calculator", note, trials=trials)


def efficiency_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Accuracy against trainable parameters, memory and wall time, per (method, config)."""
    pool, choice = _choose_methods(trials, metric, mode)
    hours = trials.groupby(["method", "config"])["hours"].sum().to_dict()
    rows = []
    for method, config in method_keys(trials):
        row = choice.row(method, config)
        trainable, total = _num(row, "params/trainable"), _num(row, "params/total")
        rows.append(
            {
                "Model": method_label(method),
                "Config": config,
                ACC: _pct(row, "test/accuracy"),
                "Trainable parameters": trainable,
                "Total parameters": total,
                "Trainable share %": 100 * trainable / total if total else math.nan,
                "Peak memory MB": _num(row, "peak_memory_mb"),
                "Best trial hours": _num(row, "hours"),
                "Search hours": float(hours.get((method, config), math.nan)),
                "Device": "" if row is None or row.get("device") is None else row["device"],
                STATUS: _counts(choice, pool, method, config)[STATUS],
                "trial": None if row is None else row["trial"],
            }
        )
    note = _note(
        "Hours are wall-clock time (GPU or CPU, as the Device column says; a shared GPU is counted whole). "
        "Search hours add up every trial of the (method, config) experiment, stopped and failed ones included. "
        "Peak memory is GPU memory on a GPU, the process's resident memory on a CPU.",
        not_run(trials),
    )
    title = "Efficiency: accuracy, trainable parameters, memory and time"
    return _rows_table(rows, "efficiency", title, note, trials=trials)


def published_table(trials: pd.DataFrame, tables: Mapping[str, Table]) -> Table | None:
    """Every published number that no row shows beside ours, in one reference table (None: all are shown)."""
    beside = tables.get("table1_models")
    shown = (
        0
        if beside is None or ROUGE + PUBLISHED not in beside.frame
        else int(beside.frame[ROUGE + PUBLISHED].notna().sum())
    )
    rows = []
    for model in MODEL_ROWS:
        values = TABLE_ONE[(model.method, model.config)]
        accuracy = published_accuracy(METHOD_FAMILY, model.config, model.method)
        rows.append(
            {
                "Published row": model.label,
                "Config": model.config,
                "Data": f"GSM8K {model.config}",
                "Base model": model.base,
                ACC: math.nan if accuracy is None else accuracy,
                ROUGE: values.rouge1,
                PPL: values.perplexity,
                SIM: values.similarity_pct,
            }
        )
    for config, style in (("main", "code"), ("socratic", "code")):
        accuracy = published_accuracy("cot", config, style)
        if accuracy is not None:
            rows.append(
                {
                    "Published row": f"LoRA + CoT, {style} style",
                    "Config": config,
                    "Data": f"GSM8K {config}",
                    "Base model": "T5-small",
                    ACC: accuracy,
                }
            )
    if shown >= len(MODEL_ROWS):
        return None  # every published row stands beside ours already
    note = (
        "The numbers the study being reproduced published (its Table 1, Figure 2 and chain-of-thought results), "
        "for reference: they are not our runs, and stand beside ours in the tables above only where our trial ran "
        "on the same data and base model."
    )
    frame = pd.DataFrame(rows)
    return Table(key="published", title="Published numbers (reference, not our runs)", frame=frame, note=note)


TABLES: tuple[Callable[..., Table], ...] = (models_table, accuracy_table, calculator_table, efficiency_table)
"""The tables across methods; each family a method record declares adds its own (`group_table`)."""


def build_tables(
    trials: pd.DataFrame, *, metric: str = "dev/accuracy", mode: str = "max"
) -> dict[str, Table]:
    """Every table of the report, by key; each trial row says whether it is above chance (column `Signal`)
    and each accuracy table carries the chance baselines of its test examples (`Table.baselines`).

    Raises:
        ValueError: when `metric` cannot choose trials (a test metric, or one no trial reported).
    """
    check_metric(trials, metric, mode)
    trials = add_signal(with_groups(add_provenance(trials)))  # each trial's chance level, groups and data
    tables = [build(trials, metric=metric, mode=mode) for build in TABLES]
    tables += [
        group_table(trials, m, g, metric=metric, mode=mode)
        for m, g in groupings()
        if trials[group_column(g.family)].notna().any()  # a family nobody ran has no table
    ]
    built = {table.key: attach_chance(table, trials) for table in tables}
    reference = published_table(trials, built)
    return built | ({reference.key: reference} if reference is not None else {})
