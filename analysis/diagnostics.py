"""Search diagnostics per (method, config) experiment: the optimisation history and hyperparameter importance.

Where the study stored its Optuna study (`analysis.stored_study`), history and importance come from it:
Optuna's trial order and values, and Optuna's fANOVA on its COMPLETE trials, exactly what optuna-dashboard
shows. Otherwise (older results, a report on another metric) the study is rebuilt in memory from what every
trial left on disk: its sampled hyperparameters (`params.json`) and its last reported dev metric. Either
way parameters only some trials have (conditional ones, such as stacked LoRA's f) are left out, as Optuna
does.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from analysis.chance_plots import mark_collapsed_trials
from analysis.load import hyperparameter_columns
from analysis.plots import new_figure, save_figure
from analysis.select import choose
from analysis.stored_study import fanova_importances, load_stored_study, stored_history, stored_importances
from analysis.table import Table
from trainables.comparison import method_colour, method_label

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
    return group.sort_values(
        ["search_order", "started", "trial"], kind="stable", na_position="last"
    ).reset_index(drop=True)


def search_history(group: pd.DataFrame, *, metric: str, mode: str) -> pd.DataFrame:
    """Each trial's last dev metric and the best value reached up to it (failed trials have no value)."""
    ordered = _order(group)
    values = (
        pd.to_numeric(ordered[metric], errors="coerce")
        if metric in ordered
        else pd.Series(math.nan, ordered.index)
    )
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
        len(values) > 0 and pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
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
    return fanova_importances(optuna_study(group, metric=metric, mode=mode))


def diagnose(trials: pd.DataFrame, *, metric: str, mode: str) -> list[SearchDiagnostics]:
    """History and importances of every (method, config) experiment in `trials`."""
    diagnostics = []
    for (method, config), group in trials.groupby(["method", "config"], sort=True):
        study = load_stored_study(group, metric=metric, mode=mode)
        if study is not None:
            importances, reason = stored_importances(study, min_trials=MIN_TRIALS)
            history = stored_history(study, group, mode=mode)
        else:
            importances, reason = param_importances(group, metric=metric, mode=mode)
            history = search_history(group, metric=metric, mode=mode)
        diagnostics.append(SearchDiagnostics(method, config, history, importances, reason))
    return diagnostics


def importance_frame(diagnostics: list[SearchDiagnostics]) -> pd.DataFrame:
    """All importances as one long table: method, config, parameter, importance (or the reason for none)."""
    rows = []
    for d in diagnostics:
        if not d.importances:
            rows.append(
                {
                    "method": d.method,
                    "config": d.config,
                    "parameter": None,
                    "importance": math.nan,
                    "note": d.reason,
                }
            )
        for name, value in d.importances.items():
            rows.append(
                {"method": d.method, "config": d.config, "parameter": name, "importance": value, "note": ""}
            )
    return pd.DataFrame(rows, columns=["method", "config", "parameter", "importance", "note"])


def search_table(trials: pd.DataFrame, *, metric: str, mode: str) -> Table:
    """One row per (method, config) experiment: how its trials ended and its best dev value."""
    rows = []
    for (method, config), group in trials.groupby(["method", "config"], sort=True):
        best = choose(group, ("method", "config"), metric=metric, mode=mode).row(method, config)
        statuses = group["status"].value_counts()
        rows.append(
            {
                "Method": method,
                "Config": config,
                "Trials": len(group),
                "Finished": int(statuses.get("finished", 0)),
                "Early stopped": int(statuses.get("early_stopped", 0)),
                "Error": int(statuses.get("error", 0)),
                "Incomplete": int(statuses.get("incomplete", 0)),
                f"Best {metric}": math.nan if best is None else float(best[metric]),
                "Search hours": float(group["hours"].sum()),
                "trial": None if best is None else best["trial"],
            }
        )
    formats = {
        f"Best {metric}": "{:.4g}",
        "Early stopped": "{:.0f}",
        "Error": "{:.0f}",
        "Incomplete": "{:.0f}",
    }
    note = f"The best trial is the best finished one by its last {metric} ({mode}); '-' where none finished."
    table = Table(
        key="search_summary", title="Search summary per experiment", frame=pd.DataFrame(rows), note=note
    )
    table.formats.update(formats)
    return table


def importance_table(diagnostics: list[SearchDiagnostics], *, metric: str) -> Table:
    """The importances as a report table (one row per experiment and hyperparameter)."""
    frame = importance_frame(diagnostics).rename(
        columns={
            "method": "Method",
            "config": "Config",
            "parameter": "Hyperparameter",
            "importance": "Importance",
            "note": "Note",
        }
    )
    frame["Hyperparameter"] = frame["Hyperparameter"].fillna("")
    note = f"fANOVA importance of each hyperparameter for {metric}; conditional ones (e.g. f) are left out."
    return Table(
        key="importance",
        title="Hyperparameter importance per experiment",
        frame=frame,
        note=note,
        formats={"Importance": "{:.3f}"},
    )


def _grid(n: int, width: float, height: float):
    ncols = min(3, max(n, 1))
    nrows = max(1, math.ceil(n / ncols))
    figure, axes = new_figure(width * ncols, height * nrows, ncols=ncols, nrows=nrows)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return figure, flat[:n]


def plot_search_history(diagnostics: Sequence[SearchDiagnostics], path: Path, *, metric: str) -> Path:
    """The optimisation history of each experiment: every trial's dev metric and the best so far."""
    figure, axes = _grid(len(diagnostics), 4.2, 3.3)
    markers = {
        "finished": ("o", "tab:blue"),
        "early_stopped": ("x", "tab:orange"),
        "incomplete": ("s", "tab:gray"),
    }
    for ax, d in zip(axes, diagnostics, strict=True):
        history = d.history
        for status, (marker, color) in markers.items():
            rows = history[(history["status"] == status) & history["value"].notna()]
            if rows.empty:
                continue
            ax.scatter(
                rows["number"],
                rows["value"],
                marker=marker,
                color=color,
                s=22,
                label=status.replace("_", " "),
            )
        ax.plot(history["number"], history["best_so_far"], color="black", lw=1.2, label="best so far")
        mark_collapsed_trials(ax, history)
        failed = history[history["status"] == "error"]
        for number in failed["number"]:
            ax.axvline(number, color="tab:red", alpha=0.3, lw=1)
        if len(failed):
            ax.plot([], [], color="tab:red", alpha=0.5, label="error (no value)")
        ax.set_title(f"{method_label(d.method)}, GSM8K {d.config}", fontsize=9)
        ax.set_xlabel("Trial number (search order)")
        if len(history) <= 12:
            ax.set_xticks(range(len(history)))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.5, len(history) - 0.5)
        ax.set_ylabel(f"{metric} (last report)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    figure.suptitle(f"Optimisation history per experiment ({metric})")
    return save_figure(figure, path)


def plot_importance(diagnostics: Sequence[SearchDiagnostics], path: Path, *, metric: str) -> Path:
    """fANOVA hyperparameter importance per experiment; an experiment with too few trials says so."""
    figure, axes = _grid(len(diagnostics), 4.6, 3.3)
    for ax, d in zip(axes, diagnostics, strict=True):
        ax.set_title(f"{method_label(d.method)}, GSM8K {d.config}", fontsize=9)
        ax.set_xlabel(f"Importance for {metric} (fANOVA, sums to 1)")
        if not d.importances:
            ax.text(
                0.5,
                0.5,
                textwrap.fill(d.reason, 40),
                ha="center",
                va="center",
                fontsize=8,
                transform=ax.transAxes,
            )
            ax.set_yticks([])
            continue
        names = list(d.importances)[::-1]
        values = [d.importances[n] for n in names]
        ax.barh(names, values, height=0.5, color=method_colour(d.method), label="importance")
        for y, value in enumerate(values):
            ax.text(min(value + 0.02, 0.85), y, f"{value:.2f}", va="center", fontsize=7)
        ax.set_ylim(-0.75, max(len(names), 2) - 0.25)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylabel("Hyperparameter")
        ax.legend(fontsize=7, loc="lower right")
    figure.suptitle(f"Hyperparameter importance per experiment ({metric})")
    return save_figure(figure, path)
