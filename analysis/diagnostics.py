"""Search diagnostics per (method, config) experiment: the optimisation history and hyperparameter importance.

Ray's `OptunaSearch` keeps its Optuna study inside the searcher's pickled state, so the study is rebuilt
in memory from what every trial left on disk: its sampled hyperparameters (`params.json`) and its last
reported dev metric, the value the searcher was told. Optuna's fANOVA evaluator then ranks the parameters;
parameters only some trials have (conditional ones, such as stacked LoRA's f) are left out, as Optuna does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.load import hyperparameter_columns

MIN_TRIALS = 3
"""Fewer trials with a dev metric than this give no importance (fANOVA's forest needs a spread)."""


@dataclass
class SearchDiagnostics:
    """One experiment's search, ready to plot."""

    method: str
    config: str
    history: pd.DataFrame
    """One row per trial in the order the search ran them: `number`, `trial`, `value`, `best_so_far`, `status`."""
    importances: dict[str, float] = field(default_factory=dict)
    """Hyperparameter -> fANOVA importance (they add up to 1); empty when `reason` says why."""
    reason: str = ""
    """Why there are no importances (too few trials, nothing varied), or ''."""


def _order(group: pd.DataFrame) -> pd.DataFrame:
    """Trials in the order the searcher made them: Ray's experiment state lists them so; without it, by the
    time each trial started (Optuna's trial ids are random, so they cannot order trials)."""
    return group.sort_values(["search_order", "started", "trial"], kind="stable", na_position="last").reset_index(
        drop=True
    )


def search_history(group: pd.DataFrame, *, metric: str, mode: str) -> pd.DataFrame:
    """Each trial's last dev metric and the best value reached up to it (failed trials have no value)."""
    ordered = _order(group)
    values = pd.to_numeric(ordered[metric], errors="coerce") if metric in ordered else pd.Series(math.nan, ordered.index)
    values = values.where(ordered["status"] != "error")
    best = values.cummax() if mode == "max" else values.cummin()
    return pd.DataFrame(
        {
            "number": range(len(ordered)),
            "trial": ordered["trial"],
            "value": values,
            "best_so_far": best,
            "status": ordered["status"],
        }
    )


def optuna_study(group: pd.DataFrame, *, metric: str, mode: str):
    """An in-memory `optuna.Study` holding one completed trial per trial of `group` that has `metric`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    usable = group[(group["status"] != "error") & pd.to_numeric(group[metric], errors="coerce").notna()]
    distributions = _distributions(usable)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in usable.iterrows():
        params = {name: _value(row[f"config/{name}"], dist) for name, dist in distributions.items()}
        params = {name: value for name, value in params.items() if value is not None}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={name: distributions[name] for name in params},
                value=float(row[metric]),
            )
        )
    return study


def _distributions(trials: pd.DataFrame) -> dict:
    """Parameter name -> Optuna distribution spanning the values the trials took."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions = {}
    for column in hyperparameter_columns(trials):
        values = trials[column].dropna()
        name = column.removeprefix("config/")
        if _is_numeric(values):
            low, high = float(values.min()), float(values.max())
            if low == high:
                continue  # varied only through missing values: nothing to split on
            if all(float(v).is_integer() for v in values):
                distributions[name] = IntDistribution(int(low), int(high))
            else:
                # Learning rates span decades: a log scale keeps fANOVA's splits meaningful.
                distributions[name] = FloatDistribution(low, high, log=low > 0 and high / low >= 100)
        elif len(values):
            distributions[name] = CategoricalDistribution(sorted({str(v) for v in values}))
    return distributions


def _is_numeric(values: pd.Series) -> bool:
    return (
        len(values) > 0
        and pd.api.types.is_numeric_dtype(values)
        and not pd.api.types.is_bool_dtype(values)
    )


def _value(value, distribution):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(distribution, CategoricalDistribution):
        return str(value)
    return int(value) if isinstance(distribution, IntDistribution) else float(value)


def param_importances(group: pd.DataFrame, *, metric: str, mode: str) -> tuple[dict[str, float], str]:
    """fANOVA importances of the hyperparameters a search varied, or ({}, why there are none)."""
    values = pd.to_numeric(group[metric], errors="coerce")[group["status"] != "error"].dropna()
    if len(values) < MIN_TRIALS:
        return {}, f"not enough trials ({len(values)} with {metric}; importance needs {MIN_TRIALS})"
    if values.nunique() < 2:
        return {}, f"every trial has the same {metric}"
    import optuna  # only now: it takes a while to import

    study = optuna_study(group, metric=metric, mode=mode)
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"importance not computable: {error}"
    if not importances:
        return {}, "no hyperparameter took two values in every trial"
    return {name: float(value) for name, value in importances.items()}, ""


def diagnose(trials: pd.DataFrame, *, metric: str, mode: str) -> list[SearchDiagnostics]:
    """History and importances of every (method, config) experiment in `trials`."""
    diagnostics = []
    for (method, config), group in trials.groupby(["method", "config"], sort=True):
        importances, reason = param_importances(group, metric=metric, mode=mode)
        history = search_history(group, metric=metric, mode=mode)
        diagnostics.append(SearchDiagnostics(method, config, history, importances, reason))
    return diagnostics


def importance_frame(diagnostics: list[SearchDiagnostics]) -> pd.DataFrame:
    """All importances as one long table: method, config, parameter, importance (or the reason for none)."""
    rows = []
    for d in diagnostics:
        if not d.importances:
            rows.append({"method": d.method, "config": d.config, "parameter": None, "importance": math.nan, "note": d.reason})
        for name, value in d.importances.items():
            rows.append({"method": d.method, "config": d.config, "parameter": name, "importance": value, "note": ""})
    return pd.DataFrame(rows, columns=["method", "config", "parameter", "importance", "note"])
