"""Signal or chance on the report's charts: chance baselines as labelled horizontal lines, collapsed trials
cross-hatched (bars) or crossed out (points), with legend entries that say what the marks mean.

The accuracy charts of `analysis.plots` and the search history of `analysis.diagnostics` call these; the
verdicts and baselines come from `analysis.chance` through the tables (`Signal` column, `Table.baselines`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from analysis.chance import COLLAPSED, SIGNAL
from analysis.table import ACC, Table


def signals(frame: pd.DataFrame) -> list:
    """The `Signal` of each row of a table frame (None where the table has no such column)."""
    return list(frame[SIGNAL]) if SIGNAL in frame else [None] * len(frame)


def shows_collapse(signal) -> bool:
    """Whether a `Signal` cell says collapsed."""
    return isinstance(signal, str) and signal.startswith(COLLAPSED)


def mark_collapsed(ax, x, values, signals, *, width: float) -> None:
    """Cross-hatch the bars of collapsed trials in red (`chance_lines` adds the legend entry)."""
    for xi, value, signal in zip(
        np.asarray(x, dtype=float), np.asarray(values, dtype=float), signals, strict=True
    ):
        if shows_collapse(signal) and not math.isnan(value):
            ax.bar(
                xi,
                max(value, 0.5),
                width,
                fill=False,
                hatch="xxx",
                edgecolor="crimson",
                linewidth=1.2,
                zorder=3,
            )


def chance_lines(ax, table: Table, *, legend: bool = True) -> None:
    """The table's chance baselines as labelled horizontal lines; with `legend`, a second legend (upper left)
    naming them and the collapsed hatching, beside the one the chart already has."""
    frame = table.baselines
    handles = []
    if frame is not None and len(frame):
        bottom, top = ax.get_ylim()
        highest = float(frame[ACC].max())
        if highest + 5 > top:  # a baseline above every bar must still show
            ax.set_ylim(bottom, min(100.0, highest * 1.15 + 5))
        label_column = table.columns[0]
        for k, (_, row) in enumerate(frame.iterrows()):
            majority = "majority" in str(row[label_column])
            line = ax.axhline(row[ACC], color="dimgray" if majority else "darkorange", lw=1.1,
                              ls="--" if majority else ":", zorder=2,
                              label=f"{row[label_column]}: {row[ACC]:.1f}%".replace("Chance: ", "chance: "))  # fmt: skip
            ax.annotate(f"{row[ACC]:.1f}%", (1.0, row[ACC]), xycoords=("axes fraction", "data"), xytext=(2, 2 + 8 * (k % 2)),
                        textcoords="offset points", fontsize=7, color=line.get_color(), annotation_clip=False)  # fmt: skip
            handles.append(line)
    if table.frame.get(SIGNAL, pd.Series(dtype=object)).map(shows_collapse).any():
        handles.append(
            Patch(fill=False, hatch="xxx", edgecolor="crimson", label="collapsed: learned nothing")
        )
    if legend and handles:
        first = ax.get_legend()
        ax.legend(handles=handles, fontsize=7, loc="upper left")
        if first is not None:
            ax.add_artist(first)


def cross_collapsed(
    ax, finished: pd.DataFrame, best: pd.DataFrame, *, trial_column: str, table_column: str
) -> None:
    """A red cross over every collapsed trial of the efficiency chart (faint ones and best ones)."""
    if "signal" in finished:
        hit = finished[finished["signal"] == COLLAPSED]
        if len(hit):
            ax.scatter(hit[trial_column], 100 * hit["test/accuracy"], marker="x", s=40, color="crimson", zorder=5,
                       label="collapsed: learned nothing")  # fmt: skip
    chosen = best[best[SIGNAL].map(shows_collapse)] if SIGNAL in best else best.iloc[:0]
    if len(chosen):
        ax.scatter(chosen[table_column], chosen[ACC], marker="x", s=120, color="crimson", zorder=6,
                   label="collapsed: learned nothing")  # fmt: skip


def mark_collapsed_trials(ax, history: pd.DataFrame) -> None:
    """A red cross over each collapsed trial of a search-history panel (`number`, `value`, `signal` columns)."""
    if "signal" not in history:
        return
    hit = history[(history["signal"] == COLLAPSED) & history["value"].notna()]
    if len(hit):
        ax.scatter(hit["number"], hit["value"], marker="x", s=60, color="crimson", zorder=5,
                   label="collapsed (test answers)")  # fmt: skip
