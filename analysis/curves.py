"""Learning curves: dev accuracy at each evaluation against training examples seen, for every reported trial.

A reader sees whether a trial's budget was too short (its curve still climbing at its last evaluation) or
whether it learned nothing at all (flat, or collapsed: dashed). The trials are the rows of the accuracy
table and of each family's table (each group's best trial); the numbers come from each trial's reports
(`Results.history`, Ray's `result.json`). Results written before the loop reported `train/examples_seen`
are drawn against epochs instead.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps

from analysis.chance import COLLAPSED, SIGNAL
from analysis.plots import new_figure, save_figure
from analysis.table import Table
from trainables.comparison import groupings, method_colour

MODELS_PANEL = "Models"


def sources() -> list[tuple[str, str]]:
    """(table key, panel title): where the reported trials come from, in panel order: the accuracy table, then
    the table of each family a method record declares (its first column names the group)."""
    return [("accuracy_per_model", MODELS_PANEL)] + [(g.key, g.title) for _, g in groupings()]


EXAMPLES, DEV = "train/examples_seen", "dev/accuracy"
FORMATS = {
    "Evaluations": "{:.0f}",
    "Examples seen": "{:,.0f}",
    "First dev %": "{:.1f}",
    "Best dev %": "{:.1f}",
    "Last dev %": "{:.1f}",
}


def _curve(history: pd.DataFrame, trial: str, *, examples: bool = True) -> pd.DataFrame:
    """One trial's evaluations in order: `x` (examples seen, or epochs when not reported or not `examples`)
    and `dev` (%)."""
    rows = history[history["trial"] == trial].sort_values("training_iteration")
    rows = rows[pd.to_numeric(rows.get(DEV), errors="coerce").notna()] if DEV in rows else rows.iloc[:0]
    x = rows[EXAMPLES] if examples and _has_examples(rows) else rows.get("epoch")
    return pd.DataFrame({"x": pd.to_numeric(x, errors="coerce"), "dev": 100 * rows[DEV].astype(float)})


def _has_examples(rows: pd.DataFrame) -> bool:
    return EXAMPLES in rows and len(rows) > 0 and bool(rows[EXAMPLES].notna().all())


def _improving(dev: list[float]) -> str:
    """'yes' when the last evaluation is the best so far and above the one before: the budget ended too soon."""
    if len(dev) < 2:
        return "-"
    return "yes" if dev[-1] >= max(dev) and dev[-1] > dev[-2] else "no"


def curves_table(tables: dict[str, Table], history: pd.DataFrame) -> Table:
    """One row per reported trial (a trial in several tables once, under its first group)."""
    rows, seen = [], set()
    for key, panel in sources():
        if key not in tables:
            continue  # a family nobody ran
        frame, label_column = tables[key].frame, tables[key].columns[0]
        for _, row in frame.iterrows():
            trial = row.get("trial")
            if not isinstance(trial, str) or trial in seen:
                continue
            seen.add(trial)
            reports = history[history["trial"] == trial] if len(history) else history
            curve = _curve(history, trial) if len(history) else pd.DataFrame({"x": [], "dev": []})
            dev = curve["dev"].tolist()
            examples = curve["x"].iloc[-1] if len(curve) and _has_examples(reports) else math.nan
            rows.append(
                {
                    "Panel": panel,
                    "Group": str(row[label_column]),
                    "Config": str(row["Config"]),
                    "Evaluations": len(dev),
                    "Examples seen": examples,
                    "First dev %": dev[0] if dev else math.nan,
                    "Best dev %": max(dev) if dev else math.nan,
                    "Last dev %": dev[-1] if dev else math.nan,
                    "Still improving": _improving(dev),
                    "trial": trial,
                }
            )
    columns = ["Panel", "Group", "Config", "Evaluations", "Examples seen", "First dev %", "Best dev %",
               "Last dev %", "Still improving", "trial"]  # fmt: skip
    note = (
        "Dev accuracy of each reported trial at every evaluation. 'Still improving': its last evaluation was its "
        "best and above the one before, so a longer budget might have helped. Examples seen counts training "
        "examples, repeats included (epochs x training examples)."
    )
    table = Table(key="learning_curves", title="Learning curves of the reported trials",
                  frame=pd.DataFrame(rows, columns=columns), note=note)  # fmt: skip
    table.formats.update(FORMATS)
    return table


def plot_learning_curves(table: Table, history: pd.DataFrame, path: Path) -> Path:
    """Dev accuracy against training examples seen, one panel per source table; collapsed trials dashed."""
    frame = table.frame
    panels = [p for _, p in sources() if (frame["Panel"] == p).any()] or [MODELS_PANEL]
    figure, axes = new_figure(5.2 * len(panels) + 2.5, 4.2, ncols=len(panels))
    # one x axis for every curve: examples seen when every drawn trial reported them (older results did not)
    drawn = history[history["trial"].isin(frame["trial"])] if len(history) else history
    against_examples = all(_has_examples(group) for _, group in drawn.groupby("trial")) and len(drawn) > 0
    trial_methods = history.drop_duplicates("trial").set_index("trial")["method"] if len(history) else {}
    for ax, panel in zip(axes[0], panels, strict=True):
        rows = frame[frame["Panel"] == panel]
        colors = _colors(rows, trial_methods)
        for (_, row), color in zip(rows.iterrows(), colors, strict=True):
            curve = _curve(history, row["trial"], examples=against_examples)
            if curve.empty:
                continue
            collapsed = str(row.get(SIGNAL, "")).startswith(COLLAPSED)
            label = f"{row['Group']}, {row['Config']}" + (" (collapsed)" if collapsed else "")
            ax.plot(curve["x"], curve["dev"], marker="o", ms=3, lw=1.3, color=color,
                    ls="--" if collapsed else "-", label=label)  # fmt: skip
        ax.set_title(panel)
        ax.set_xlabel("Training examples seen" if against_examples else "Epochs (examples seen not reported)")
        ax.set_ylabel("Dev accuracy (%)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no finished trial", transform=ax.transAxes, ha="center", color="dimgray")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 100)
    return save_figure(figure, path)


def _colors(rows: pd.DataFrame, trial_methods) -> list:
    """A method's colour for a panel of different methods; a colour map when one method fills the panel."""
    methods = [trial_methods.get(t) for t in rows["trial"]] if len(trial_methods) else [None] * len(rows)
    if len(set(methods)) == len(methods):
        return [method_colour(m) for m in methods]
    return [tuple(c) for c in colormaps["tab10"](np.arange(len(rows)) % 10)]
