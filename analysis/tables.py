"""The study's tables: each row is the best trial of a group, chosen by a dev metric, showing its test numbers.

Rows are fixed by the study (Table 1's models, every CoT style and config, every f and baseline), so a
group without a finished trial is a row of NaN that prints "missing". Accuracy and similarity are
percentages (similarity is 100 x the average cosine, as the study publishes it), ROUGE-1 is a fraction in
[0, 1], perplexity a plain number. The search summary and importances live in `analysis.diagnostics`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from analysis.chance import add_signal, attach_chance
from analysis.methods import METHOD_LABELS
from analysis.published import (
    ACCURACY_PCT,
    COT_ACCURACY_PCT,
    COT_METHOD,
    MODEL_ROWS,
    STACKED_METHOD,
    TABLE_ONE,
    ModelRow,
)
from analysis.select import Choice, check_metric, choose
from analysis.table import ACC, CALC, CALC_HIGH, CALC_LOW, HIGH, LOW, PPL, PUBLISHED, ROUGE, SIM, Table
from search_spaces.stacked import F_CHOICES
from trainables.data.prompts import PROMPT_STYLES
from trainables.methods.stacked import BASELINES

STACKED = BASELINES[0]
"""The `baseline` value of the stacked variant itself (a trial without the column is one)."""

CONFIGS = ("main", "socratic")
BASELINE_LABELS = {
    "linear": "Linear stack (no f)",
    "merged_then_lora": "Merged stage 1, then LoRA",
    "single_lora": "Single LoRA (math only)",
}


def _pct(row: Mapping[str, Any] | None, key: str) -> float:
    value = None if row is None else row.get(key)
    return 100.0 * float(value) if _number(value) else math.nan


def _num(row: Mapping[str, Any] | None, key: str) -> float:
    value = None if row is None else row.get(key)
    return float(value) if _number(value) else math.nan


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _counts(choice: Choice, *key: Any) -> dict[str, Any]:
    """A group's trial counts (also for a missing row, whose trials may all have failed) and its trial."""
    trials, finished = choice.count(*key)
    row = choice.row(*key)
    return {"Trials": trials, "Finished": finished, "trial": None if row is None else row["trial"]}


def _accuracy(row: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        ACC: _pct(row, "test/accuracy"),
        LOW: _pct(row, "test/accuracy_low"),
        HIGH: _pct(row, "test/accuracy_high"),
    }


def _text_metrics(row: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        ROUGE: _num(row, "test/rouge1"),
        PPL: _num(row, "test/perplexity"),
        SIM: _pct(row, "test/similarity"),
    }


def model_pool(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of Table 1's methods; for stacked LoRA only the stacked variant, not its baselines."""
    methods = {row.method for row in MODEL_ROWS}
    is_baseline = (
        (trials["method"] == STACKED_METHOD) & trials["baseline"].notna() & (trials["baseline"] != STACKED)
    )
    return trials[trials["method"].isin(methods) & ~is_baseline]


def model_rows(trials: pd.DataFrame) -> list[ModelRow]:
    """Table 1's rows, then any (method, config) of its methods that the study did not publish."""
    rows = list(MODEL_ROWS)
    known = {(r.method, r.config) for r in rows}
    pool = model_pool(trials)
    for method, config in sorted(set(zip(pool["method"], pool["config"], strict=True)) - known):
        rows.append(ModelRow(METHOD_LABELS.get(method, method), method, config))
    return rows


def _rows_table(
    rows: Sequence[Mapping[str, Any]],
    key: str,
    title: str,
    note: str,
    formats: Mapping[str, str] | None = None,
) -> Table:
    table = Table(key=key, title=title, frame=pd.DataFrame(list(rows)), note=note)
    table.formats.update(formats or {})
    return table


def models_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Table 1: ROUGE-1, perplexity and similarity of each model row, ours beside the published ones."""
    choice = choose(model_pool(trials), ("method", "config"), metric=metric, mode=mode)
    rows = []
    for model in model_rows(trials):
        row = choice.row(model.method, model.config)
        published = TABLE_ONE.get((model.method, model.config))
        ours = _text_metrics(row)
        rows.append(
            {
                "Model": model.label,
                "Config": model.config,
                ROUGE: ours[ROUGE],
                ROUGE + PUBLISHED: published.rouge1 if published else math.nan,
                PPL: ours[PPL],
                PPL + PUBLISHED: published.perplexity if published else math.nan,
                SIM: ours[SIM],
                SIM + PUBLISHED: published.similarity_pct if published else math.nan,
                **_counts(choice, model.method, model.config),
            }
        )
    note = (
        f"Test-split numbers of the best finished trial per (method, config), chosen by its last {metric} ({mode}). "
        "Similarity is the average cosine similarity of sentence embeddings, shown as a percentage."
    )
    return _rows_table(
        rows, "table1_models", "Table 1: ROUGE-1, perplexity and semantic similarity per model", note
    )


def accuracy_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Accuracy per model (the study's Figure 2) with the bootstrap 95% interval of each trial."""
    choice = choose(model_pool(trials), ("method", "config"), metric=metric, mode=mode)
    rows = []
    for model in model_rows(trials):
        row = choice.row(model.method, model.config)
        rows.append(
            {
                "Model": model.label,
                "Config": model.config,
                **_accuracy(row),
                ACC + PUBLISHED: ACCURACY_PCT.get((model.method, model.config), math.nan),
                "Test examples": _num(row, "test/n"),
                **_counts(choice, model.method, model.config),
            }
        )
    note = (
        f"Test accuracy of the best trial per (method, config) by {metric} ({mode}); 95% bootstrap intervals."
    )
    return _rows_table(rows, "accuracy_per_model", "Accuracy per model (Figure 2)", note)


def _styles(trials: pd.DataFrame) -> list[str]:
    seen = trials.loc[trials["method"] == COT_METHOD, "prompt_style"].dropna().unique().tolist()
    # answer_only first: the floor the chain-of-thought styles are read against
    return list(PROMPT_STYLES) + sorted(set(seen) - set(PROMPT_STYLES))


def cot_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """LoRA + chain-of-thought: accuracy per prompt style and config (with the calculator where it applies)."""
    choice = choose(
        trials[trials["method"] == COT_METHOD], ("config", "prompt_style"), metric=metric, mode=mode
    )
    rows = []
    for config in CONFIGS:
        for style in _styles(trials):
            row = choice.row(config, style)
            rows.append(
                {
                    "Prompt style": style,
                    "Config": config,
                    **_accuracy(row),
                    ACC + PUBLISHED: COT_ACCURACY_PCT.get((style, config), math.nan),
                    CALC: _pct(row, "test/accuracy_calculator"),
                    CALC_LOW: _pct(row, "test/accuracy_calculator_low"),
                    CALC_HIGH: _pct(row, "test/accuracy_calculator_high"),
                    **_counts(choice, config, style),
                }
            )
    note = (
        f"Best LoRA + CoT trial per (style, config) by {metric} ({mode}). The calculator column is the same "
        "trial's test accuracy when a calculator fills each `<<expr=` step (breakdown style only)."
    )
    return _rows_table(rows, "cot_styles", "Accuracy per chain-of-thought prompt style", note)


def calculator_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Accuracy without and with the calculator, for every breakdown-style row of the other tables."""
    models = choose(model_pool(trials), ("method", "config"), metric=metric, mode=mode)
    cot = choose(trials[trials["method"] == COT_METHOD], ("config", "prompt_style"), metric=metric, mode=mode)
    wanted = [(m.label, m.config, models.row(m.method, m.config)) for m in model_rows(trials)]
    wanted += [(METHOD_LABELS[COT_METHOD], c, cot.row(c, "breakdown")) for c in CONFIGS]
    rows = []
    for label, config, row in wanted:
        without, with_calc = _pct(row, "test/accuracy"), _pct(row, "test/accuracy_calculator")
        rows.append(
            {
                "Model": label,
                "Prompt style": "breakdown" if row is None else row["prompt_style"],
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
    return _rows_table(rows, "calculator", "Accuracy with and without the calculator", note)


def stacked_pool(trials: pd.DataFrame) -> pd.DataFrame:
    """Stacked LoRA trials with `baseline` filled in (a trial without one is the stacked variant)."""
    pool = trials[trials["method"] == STACKED_METHOD].copy()
    pool["baseline"] = pool["baseline"].fillna(STACKED)
    return pool


def stacked_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Stacked LoRA per nonlinearity f, then its baselines, per config."""
    pool = stacked_pool(trials)
    choice = choose(pool, ("config", "baseline", "f"), metric=metric, mode=mode)
    configs = sorted(pool["config"].unique()) or ["main"]
    variants = [(STACKED, f, f"f = {f}") for f in F_CHOICES] + [
        (b, None, BASELINE_LABELS[b]) for b in BASELINES[1:]
    ]
    rows = []
    for config in configs:
        for baseline, f, label in variants:
            row = choice.row(config, baseline, f)
            rows.append(
                {
                    "Variant": label,
                    "Config": config,
                    "f space": "" if row is None or row.get("f_space") is None else row["f_space"],
                    **_accuracy(row),
                    **_text_metrics(row),
                    **_counts(choice, config, baseline, f),
                }
            )
    note = (
        f"W = W0 + A1B1 + f(A2B2): the best trial per f, and per baseline, by {metric} ({mode}). Linear stack: "
        "f is the identity; merged: stage 1 merged into W0 before a new LoRA; single: one LoRA on math only."
    )
    return _rows_table(rows, "stacked_lora", "Stacked LoRA per f and against its baselines", note)


def efficiency_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """Accuracy against trainable parameters, memory and wall time, per (method, config)."""
    models = choose(model_pool(trials), ("method", "config"), metric=metric, mode=mode)
    cot = choose(trials[trials["method"] == COT_METHOD], ("method", "config"), metric=metric, mode=mode)
    hours = trials.groupby(["method", "config"])["hours"].sum().to_dict()
    wanted = [(m.label, m.method, m.config) for m in model_rows(trials)]
    wanted += [(METHOD_LABELS[COT_METHOD], COT_METHOD, c) for c in CONFIGS]
    rows = []
    for label, method, config in wanted:
        row = (cot if method == COT_METHOD else models).row(method, config)
        trainable, total = _num(row, "params/trainable"), _num(row, "params/total")
        rows.append(
            {
                "Model": label,
                "Config": config,
                ACC: _pct(row, "test/accuracy"),
                "Trainable parameters": trainable,
                "Total parameters": total,
                "Trainable share %": 100 * trainable / total if total else math.nan,
                "Peak memory MB": _num(row, "peak_memory_mb"),
                "Best trial hours": _num(row, "hours"),
                "Search hours": float(hours.get((method, config), math.nan)),
                "Device": "" if row is None or row.get("device") is None else row["device"],
                "trial": None if row is None else row["trial"],
            }
        )
    note = (
        "Hours are wall-clock time (GPU or CPU, as the Device column says; a shared GPU is counted whole). "
        "Search hours add up every trial of the (method, config) experiment, stopped and failed ones included. "
        "Peak memory is GPU memory on a GPU, the process's resident memory on a CPU."
    )
    return _rows_table(
        rows, "efficiency", "Efficiency: accuracy, trainable parameters, memory and time", note
    )


BUILDERS: tuple[Callable[..., Table], ...] = (
    models_table,
    accuracy_table,
    cot_table,
    calculator_table,
    stacked_table,
    efficiency_table,
)


def build_tables(
    trials: pd.DataFrame, *, metric: str = "dev/accuracy", mode: str = "max"
) -> dict[str, Table]:
    """Every table of the report, by key; each trial row says whether it is above chance (column `Signal`)
    and each accuracy table carries the chance baselines of its test examples (`Table.baselines`).

    Raises:
        ValueError: when `metric` cannot choose trials (a test metric, or one no trial reported).
    """
    check_metric(trials, metric, mode)
    trials = add_signal(trials)  # each trial's collapse and chance baselines (read once, used by every table)
    tables = [attach_chance(build(trials, metric=metric, mode=mode), trials) for build in BUILDERS]
    return {table.key: table for table in tables}
