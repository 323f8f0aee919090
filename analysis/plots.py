"""The report's charts as PNG files, drawn on matplotlib's Agg canvas (no display, no pyplot state).

Every chart has a title saying what data and base model its trials ran on, axis labels with units and a
legend. A row without a finished trial (a group whose trials failed) gets no bar but the word "missing" at its
place, so it never looks like a group that scored 0.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from analysis.chance import SIGNAL
from analysis.chance_plots import chance_lines, cross_collapsed, mark_collapsed, signals
from analysis.table import ACC, CALC, CALC_HIGH, CALC_LOW, HIGH, LOW, PUBLISHED, Table
from trainables.comparison import method_colour, method_label

CONFIG_COLORS = {"main": "#4C72B0", "socratic": "#DD8452"}
DPI = 150


def new_figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A figure on its own Agg canvas (no pyplot, so nothing global) and its 2-D array of axes."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, axes


def save_figure(figure: Figure, path: Path) -> Path:
    """Write `figure` as a PNG at `path` (on white, for dark-mode viewers) and return the path."""
    from study.outputs import write_atomically  # whole, and never through a link planted in the folder

    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=DPI, facecolor="white")
    write_atomically({path: png.getvalue()}, flag="--out")
    return path


def _bars(ax, x: np.ndarray, values, low, high, *, width: float, color: str, hatch: str = "") -> None:
    """Bars with asymmetric error bars and value labels; NaN values get the word 'missing' instead."""
    values, low, high = (np.asarray(a, dtype=float) for a in (values, low, high))
    present = ~np.isnan(values)
    errors = np.vstack([np.where(np.isnan(low), 0, values - low), np.where(np.isnan(high), 0, high - values)])
    ax.bar(x[present], values[present], width, color=color, hatch=hatch, edgecolor="black", linewidth=0.5)
    ax.errorbar(
        x[present], values[present], yerr=errors[:, present], fmt="none", ecolor="black", capsize=3, lw=1
    )
    for xi, value, top in zip(x, values, np.where(np.isnan(high), values, high), strict=True):
        if math.isnan(value):
            ax.text(xi, 1, "missing", rotation=90, ha="center", va="bottom", fontsize=8, color="dimgray")
        elif value >= 8:  # inside the bar, clear of the error bar and the published marker
            ax.text(
                xi + width * 0.02,
                1,
                f"{value:.1f}",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=7,
                color="white",
            )
        else:
            ax.text(xi, top + 1, f"{value:.1f}", ha="center", va="bottom", fontsize=7)


def _published(ax, x: np.ndarray, values) -> None:
    values = np.asarray(values, dtype=float)
    shown = ~np.isnan(values)
    if shown.any():
        ax.scatter(x[shown], values[shown], marker="D", s=36, color="crimson", edgecolor="black", zorder=5)


def _legend(ax, configs: Sequence[str], *, what: str, published: bool) -> None:
    """One entry per config drawn (missing ones too) and one for the published marker."""
    handles = [
        Patch(facecolor=CONFIG_COLORS.get(c, "gray"), edgecolor="black", label=f"{what}, config {c}")
        for c in configs
    ]
    handles.append(
        Line2D([], [], color="black", marker="|", linestyle="none", markersize=10, label="95% bootstrap CI")
    )
    if published:
        handles.append(
            Line2D(
                [],
                [],
                color="crimson",
                marker="D",
                markeredgecolor="black",
                linestyle="none",
                label="published (the study)",
            )
        )
    ax.legend(handles=handles, fontsize=8, loc="upper right")


def _percent_axis(ax, values: Sequence[float], ylabel: str, *, bottom: float = 0.0) -> None:
    finite = [float(v) for v in values if isinstance(v, numbers.Real) and math.isfinite(v)]
    ax.set_ylim(bottom, min(100.0, max(finite, default=10.0) * 1.2 + 5))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def plot_accuracy_per_model(table: Table, path: Path) -> Path:
    """Figure 2: test accuracy per model row with its bootstrap 95% interval, beside the published values."""
    frame = table.frame
    figure, axes = new_figure(max(6.0, 0.9 * len(frame) + 2), 4.2)
    ax = axes[0, 0]
    x = np.arange(len(frame))
    configs = list(dict.fromkeys(frame["Config"]))
    for config in configs:
        rows = (frame["Config"] == config).to_numpy()
        _bars(
            ax,
            x[rows],
            frame[ACC][rows],
            frame[LOW][rows],
            frame[HIGH][rows],
            width=0.6,
            color=CONFIG_COLORS.get(config, "gray"),
        )
    mark_collapsed(ax, x, frame[ACC], signals(frame), width=0.6)
    published = frame[ACC + PUBLISHED] if ACC + PUBLISHED in frame else pd.Series(math.nan, index=frame.index)
    _published(ax, x, published)
    _legend(ax, configs, what="ours", published=published.notna().any())
    chance_lines(ax, table)
    ax.set_xlim(-0.6, len(frame) - 0.4)
    ax.set_xticks(x, [f"{m}\n{c}" for m, c in zip(frame["Model"], frame["Config"], strict=True)], fontsize=8)
    _percent_axis(ax, [*frame[HIGH], *published], "Test accuracy (%)")
    ax.set_xlabel("Model (best trial by dev metric)")
    ax.set_title(_titled("Test accuracy per model", table.on), fontsize=9)
    return save_figure(figure, path)


def _group_categories(frame: pd.DataFrame, label_column: str) -> list[tuple[str, str, str, str, str]]:
    """(group, x label, value, low, high column) per bar position: each group, and a `+ calculator` bar after
    each group whose trials were also scored with the calculator."""
    categories = []
    for group in dict.fromkeys(frame[label_column]):
        categories.append((group, group, ACC, LOW, HIGH))
        rows = frame[frame[label_column] == group]
        if CALC in frame and rows[CALC].notna().any():
            categories.append((group, f"{group}\n+ calculator", CALC, CALC_LOW, CALC_HIGH))
    return categories


def plot_groups(table: Table, path: Path) -> Path:
    """The groups of one family a method declares (prompt styles, f and variants): accuracy with 95% intervals
    per config, a calculator bar where the group was scored with it, published values where comparable."""
    frame, label_column = table.frame, table.columns[0]
    categories = _group_categories(frame, label_column)
    configs = list(dict.fromkeys(frame["Config"]))
    figure, axes = new_figure(max(7.0, 0.9 * len(categories) + 2), 4.4)
    ax = axes[0, 0]
    width = 0.8 / max(len(configs), 1)
    published = ACC + PUBLISHED in frame
    for k, config in enumerate(configs):
        part = frame[frame["Config"] == config].set_index(label_column)
        x = np.arange(len(categories)) + (k - (len(configs) - 1) / 2) * width
        cells = [
            [part.at[g, c] if g in part.index and c in part else math.nan for c in columns]
            for g, _, *columns in categories
        ]
        values, lows, highs = (list(column) for column in zip(*cells, strict=True))
        _bars(ax, x, values, lows, highs, width=width * 0.95, color=CONFIG_COLORS.get(config, "gray"))
        signal = [part.at[g, SIGNAL] if g in part.index and SIGNAL in part else None for g, *_ in categories]
        mark_collapsed(ax, x, values, signal, width=width * 0.95)
        if published:
            _published(ax, x, [part.at[g, ACC + PUBLISHED] if g in part.index and c[0] == ACC else math.nan
                               for g, _, *c in categories])  # fmt: skip
    _legend(ax, configs, what="ours", published=published and frame[ACC + PUBLISHED].notna().any())
    chance_lines(ax, table)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    labels = [label.replace(" (", "\n(") for _, label, *_ in categories]
    ax.set_xticks(np.arange(len(categories)), labels, fontsize=8, rotation=30, ha="right")
    limits = [*frame[HIGH], *frame.get(CALC_HIGH, []), *frame.get(ACC + PUBLISHED, [])]
    _percent_axis(ax, limits, "Test accuracy (%)")
    ax.set_xlabel(f"{label_column} (best trial by dev metric)")
    ax.set_title(_titled(table.title, table.on), fontsize=9)
    return save_figure(figure, path)


def _titled(title: str, on: str) -> str:
    """A chart title with what its trials ran on beneath it."""
    return f"{title}\n{on}" if on else title


def _pareto(points: pd.DataFrame, x: str) -> pd.DataFrame:
    """The points no other point beats on both axes: fewer `x` (cost) and more accuracy."""
    ordered = points.sort_values([x, "accuracy"], ascending=[True, False])
    front, best = [], -math.inf
    for _, row in ordered.iterrows():
        if row["accuracy"] > best:
            front.append(row)
            best = row["accuracy"]
    return pd.DataFrame(front)


def plot_efficiency(trials: pd.DataFrame, table: Table, path: Path) -> Path:
    """Accuracy against trainable parameters and against wall-clock hours: every finished trial (faint), the
    best trial per (method, config) (large; star: main, diamond: socratic) and the Pareto front of those."""
    return save_figure(efficiency_figure(trials, table), path)


def efficiency_figure(trials: pd.DataFrame, table: Table) -> Figure:
    """The efficiency chart (see `plot_efficiency`) as a figure; collapsed trials are crossed out in red."""
    finished = trials[trials["status"] == "finished"]
    finished = (
        finished[finished["test/accuracy"].notna()] if "test/accuracy" in finished else finished.iloc[:0]
    )
    best = table.frame.dropna(subset=[ACC])
    method_of = trials.set_index("trial")["method"]
    figure, axes = new_figure(12.5, 4.6, ncols=2)
    panels = (
        ("params/trainable", "Trainable parameters", "Trainable parameters (count, log scale)"),
        ("hours", "Best trial hours", "Wall-clock hours per trial (GPU or CPU, log scale)"),
    )
    for ax, (trial_column, table_column, xlabel) in zip(axes[0], panels, strict=True):
        for method, group in finished.groupby("method"):
            color = method_colour(method)
            label = f"{method_label(method)}: every trial"
            ax.scatter(
                group[trial_column], 100 * group["test/accuracy"], s=14, alpha=0.35, color=color, label=label
            )
        for _, row in best.iterrows():
            method = method_of.get(row["trial"], "")
            marker = "*" if row["Config"] == "main" else "D"
            ax.scatter(row[table_column], row[ACC], s=110 if marker == "*" else 50, marker=marker, zorder=4,
                       color=method_colour(method), edgecolor="black", linewidth=0.6,
                       label=f"best: {row['Model']}, {row['Config']}")  # fmt: skip
        points = pd.DataFrame({"x": best[table_column], "accuracy": best[ACC]})
        front = _pareto(points[points["x"] > 0], "x")
        if len(front) > 1:
            ax.step(
                front["x"],
                front["accuracy"],
                where="post",
                color="black",
                lw=1,
                ls="--",
                label="Pareto front",
            )
        _log_axis(ax, [*points["x"], *finished.get(trial_column, [])])
        cross_collapsed(ax, finished, best, trial_column=trial_column, table_column=table_column)
        ax.set_xlabel(xlabel)
        accuracies = [*points["accuracy"], *(100 * finished.get("test/accuracy", pd.Series(dtype=float)))]
        _percent_axis(ax, accuracies, "Test accuracy (%)", bottom=-2.0)  # a point at 0 stays whole
        chance_lines(ax, table, legend=False)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    more = axes[0, 1].get_legend_handles_labels()
    unique = dict(zip([*labels, *more[1]], [*handles, *more[0]], strict=True))
    figure.legend(unique.values(), unique.keys(), fontsize=7, loc="outside right center")
    axes[0, 0].set_title(_titled("Accuracy against trainable parameters", table.on), fontsize=9)
    axes[0, 1].set_title(_titled("Accuracy against compute time", table.on), fontsize=9)
    return figure


# --- log axes that carry numbers at any span ---------------------------------------------------------------


def _compact(value: float, _position=None) -> str:
    """A tick label: 12,288 -> '12.3k', 1.5e6 -> '1.5M', 0.0123 -> '0.0123'."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _log_axis(ax, values) -> None:
    """A log-scale x axis that carries numbers at any range: powers of ten where the data span two or more,
    else a few ticks spread over the data (a span of less than a decade shows no power of ten at all)."""
    positive = np.array(
        [float(v) for v in values if isinstance(v, numbers.Real) and math.isfinite(v) and v > 0]
    )
    if not len(positive):
        return
    ax.set_xscale("log")
    low, high = positive.min(), positive.max()
    ax.set_xlim(low / 1.5, high * 1.5)
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a short log axis
    if math.floor(math.log10(high * 1.5)) - math.ceil(math.log10(low / 1.5)) >= 1:
        return  # two or more powers of ten in view: matplotlib's own labels read
    ticks = np.unique([float(f"{t:.2g}") for t in np.geomspace(low / 1.3, high * 1.3, 4)])  # inside the view
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(_compact))
    ax.xaxis.set_minor_locator(NullLocator())
