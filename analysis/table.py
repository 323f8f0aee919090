"""`Table`: one table of the report, its numbers kept as numbers and each row tied to the trial it came from.

A row no trial exists for (a method not run yet) keeps NaN numbers and no trial, and prints "missing",
never 0. Column names carry their units; a published number's column ends in " (published)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

PUBLISHED = " (published)"
ACC, LOW, HIGH = "Accuracy %", "95% CI low %", "95% CI high %"
ROUGE, PPL, SIM = "ROUGE-1", "Perplexity", "Similarity %"
CALC, CALC_LOW, CALC_HIGH = (
    "Accuracy with calculator %",
    "Calculator 95% CI low %",
    "Calculator 95% CI high %",
)
UNLINKED = frozenset({"Trials", "Finished", "Early stopped", "Error", "Incomplete", "Search hours"})
"""Numeric columns that count or add up a group's trials rather than report the row's trial."""
MISSING = "missing"
"""Printed for a number of a row that no trial exists for, when the row does not say why (`STATUS`)."""
STATUS = "Status"
"""Column saying what became of a group without a finished trial (`failed`, `stopped early`, `incomplete`):
its number cells print that word."""
_FORMATS = {ACC: "{:.1f}", LOW: "{:.1f}", HIGH: "{:.1f}", ROUGE: "{:.4f}", PPL: "{:.4f}", SIM: "{:.2f}"}
_FORMATS |= {CALC: "{:.1f}", CALC_LOW: "{:.1f}", CALC_HIGH: "{:.1f}", "Calculator gain (points)": "{:+.1f}"}
_FORMATS |= {"Trainable parameters": "{:,.0f}", "Total parameters": "{:,.0f}", "Trainable share %": "{:.3g}"}
_FORMATS |= {"Peak memory MB": "{:,.0f}", "Best trial hours": "{:.3f}", "Search hours": "{:.3f}"}
_FORMATS |= {"Test examples": "{:.0f}", "Trials": "{:.0f}", "Finished": "{:.0f}"}


@dataclass
class Table:
    """One table of the report."""

    key: str
    """File stem of its CSV / LaTeX files."""
    title: str
    """Heading in the report."""
    frame: pd.DataFrame
    """The numbers; column `trial` names the trial each row came from (None: no trial, a missing row)."""
    note: str = ""
    """What a reader needs to know to read it (units, how trials were chosen)."""
    formats: dict[str, str] = field(default_factory=lambda: dict(_FORMATS))
    """Column -> format string."""
    baselines: pd.DataFrame | None = None
    """Chance rows printed under the trials' rows (`analysis.chance`): some of the table's columns, no trial."""
    on: str = ""
    """What data and base model its rows' trials ran on (`analysis.provenance.describe`)."""

    def cell(self, index: int, column: str) -> str:
        """The printed text of one cell: formatted, `missing` in a missing row, `-` where nothing applies."""
        value = self.frame.at[index, column]
        if isinstance(value, str):
            return value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            has_trial = "trial" not in self.frame or not pd.isna(self.frame.at[index, "trial"])
            if column.endswith(PUBLISHED) or has_trial:
                return "-"
            status = self.frame.at[index, STATUS] if STATUS in self.frame else None
            return status if isinstance(status, str) and status else MISSING
        return self.formats.get(column.removesuffix(PUBLISHED), "{}").format(value)

    def linked(self, column: str) -> bool:
        """Whether `column` holds a number of the row's trial (not a published one, not a count)."""
        return column not in self.text_columns and not column.endswith(PUBLISHED) and column not in UNLINKED

    @property
    def text_columns(self) -> set[str]:
        """Columns of words (model, config, ...), left-aligned and never linked."""
        return {c for c in self.columns if self.frame[c].map(lambda v: isinstance(v, str)).all()}

    @property
    def columns(self) -> list[str]:
        """The columns a reader sees (all but `trial`)."""
        return [c for c in self.frame.columns if c != "trial"]

    def text_frame(self) -> pd.DataFrame:
        """The table as printed text (what the Markdown and LaTeX files show)."""
        return pd.DataFrame({c: [self.cell(i, c) for i in self.frame.index] for c in self.columns})

    def baseline_rows(self) -> list[dict[str, str]]:
        """The chance rows as printed text, one dict per row over `columns`: '-' where a column does not apply."""
        if self.baselines is None:
            return []
        rows = []
        for _, baseline in self.baselines.iterrows():
            cells = {}
            for column in self.columns:
                value = baseline.get(column)
                if isinstance(value, str):
                    cells[column] = value
                elif value is None or (isinstance(value, float) and math.isnan(value)):
                    cells[column] = "-"
                else:
                    cells[column] = self.formats.get(column, "{}").format(value)
            rows.append(cells)
        return rows
