"""A `Table` as Markdown, HTML or LaTeX, and a trial's generations as a browsable HTML page.

Links are given per trial label: `TrialLinks(page, files)`, where `page` is the trial's generations page
and `files` its result folder. Every number a trial produced links to that trial's page.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.table import PUBLISHED, Table

PAGE_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; vertical-align: top; }
th { background: #f0f2f5; }
td.text, th.text { text-align: left; }
td.missing { color: #999; font-style: italic; }
td.published { background: #fafafa; color: #555; }
tr.wrong td.mark { background: #fde2e2; } tr.right td.mark { background: #e1f5e1; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.95em; }
img { max-width: 100%; border: 1px solid #ddd; }
p.note { color: #555; font-size: 0.9em; }
tr.chance td { background: #f6f6ee; font-style: italic; }
a { color: #1a5fb4; }
"""


@dataclass(frozen=True)
class TrialLinks:
    """Where a reader goes from a table cell: the trial's generations page and its result folder."""

    page: str
    """Path of the trial's generations page, relative to the report, percent-encoded (`urllib.parse.quote`)."""
    files: str
    """The trial's result folder: a path relative to the report, or a storage URI, percent-encoded."""
    name: str
    """What the link says: Ray's trial id."""


def _trial_label(trial: Any) -> str | None:
    return None if trial is None or (isinstance(trial, float) and math.isnan(trial)) else str(trial)


_MARKDOWN_SPECIAL = str.maketrans(
    {**{ch: "\\" + ch for ch in "\\`*_[]|"}, "<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " "}
)


def markdown_escape(text: str) -> str:
    """`text` as Markdown shows it literally, on one line and inside a table cell: markup characters
    backslash-escaped (emphasis, code, links, cell bars) and `<`, `>`, `&` as entities, which every renderer
    honours (a backslash before `<` is not honoured by all), so a value can never become HTML or a link."""
    return text.translate(_MARKDOWN_SPECIAL)


def table_markdown(table: Table, links: Mapping[str, TrialLinks] | None = None) -> str:
    """A GitHub-flavoured Markdown table; our numbers link to their trial's page, a last column to the trial."""
    links = links or {}
    columns = table.columns
    has_trial = "trial" in table.frame
    header = [*columns, "Trial"] if has_trial else columns
    text_columns = table.text_columns
    aligns = ["---" if c in text_columns else "---:" for c in columns] + (["---"] if has_trial else [])
    lines = ["| " + " | ".join(map(markdown_escape, header)) + " |", "| " + " | ".join(aligns) + " |"]
    for index in table.frame.index:
        trial = _trial_label(table.frame.at[index, "trial"]) if has_trial else None
        link = links.get(trial) if trial else None
        cells = []
        for column in columns:
            text = markdown_escape(table.cell(index, column))
            linkable = link and table.linked(column) and text != "-"
            cells.append(f"[{text}]({link.page})" if linkable else text)
        if has_trial:
            name = markdown_escape(link.name) if link else ""
            cells.append(f"[{name}]({link.page}) ([files]({link.files}))" if link else "missing")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _baseline_lines_markdown(table, has_trial=has_trial)
    return "\n".join(lines)


def _baseline_lines_markdown(table: Table, *, has_trial: bool) -> list[str]:
    """The chance rows under a Markdown table, in italics so they never read as a trial."""
    return [
        "| "
        + " | ".join(
            [*(f"*{markdown_escape(t)}*" for t in row.values()), *(["*chance*"] if has_trial else [])]
        )
        + " |"
        for row in table.baseline_rows()
    ]


def table_html(table: Table, links: Mapping[str, TrialLinks] | None = None) -> str:
    """An HTML table; missing numbers in grey italics, published ones shaded, ours linked to their trial."""
    links = links or {}
    columns = table.columns
    has_trial = "trial" in table.frame
    text_columns = table.text_columns
    head = "".join(
        f'<th class="{"text" if c in text_columns else "num"}">{html.escape(c)}</th>' for c in columns
    )
    head += '<th class="text">Trial</th>' if has_trial else ""
    body = []
    for index in table.frame.index:
        trial = _trial_label(table.frame.at[index, "trial"]) if has_trial else None
        link = links.get(trial) if trial else None
        cells = []
        for column in columns:
            text = table.cell(index, column)
            classes = ["text" if column in text_columns else "num"]
            classes += ["published"] if column.endswith(PUBLISHED) else []
            classes += ["missing"] if text == "missing" else []
            content = html.escape(text)
            if link and table.linked(column) and text != "-":
                content = f'<a href="{html.escape(link.page)}">{content}</a>'
            cells.append(f'<td class="{" ".join(classes)}">{content}</td>')
        if has_trial:
            if link:
                short = html.escape(link.name)
                files = html.escape(link.files)
                cells.append(
                    f'<td class="text"><a href="{html.escape(link.page)}">{short}</a> (<a href="{files}">files</a>)</td>'
                )
            else:
                cells.append('<td class="text missing">missing</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    body += _baseline_rows_html(table, has_trial=has_trial)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _baseline_rows_html(table: Table, *, has_trial: bool) -> list[str]:
    """The chance rows under an HTML table (class `chance`: shaded, italic)."""
    text_columns = table.text_columns
    rows = []
    for row in table.baseline_rows():
        cells = [
            f'<td class="{"text" if c in text_columns else "num"}">{html.escape(t)}</td>'
            for c, t in row.items()
        ]
        cells += ['<td class="text">chance</td>'] if has_trial else []
        rows.append('<tr class="chance">' + "".join(cells) + "</tr>")
    return rows


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def table_latex(table: Table) -> str:
    """A booktabs `tabular` of the printed table (needs `\\usepackage{booktabs}`)."""
    columns = table.columns
    spec = "".join("l" if c in table.text_columns else "r" for c in columns)
    text = table.text_frame()
    lines = [
        f"% {latex_escape(table.title)}",
        f"% {latex_escape(table.note)}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in columns) + r" \\",
        "\\midrule",
    ]
    for _, row in text.iterrows():
        lines.append(" & ".join(latex_escape(str(row[c])) for c in columns) + r" \\")
    chance = table.baseline_rows()
    if chance:  # the chance baselines of the same test examples, apart from the trials
        lines.append("\\midrule")
        lines += [" & ".join(latex_escape(row[c]) for c in columns) + r" \\" for row in chance]
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection")."""


def spreadsheet_text(value: Any) -> Any:
    """`value`, and a string that opens with a formula character behind a `'`, as OWASP advises: a results
    folder's `=HYPERLINK(...)` is shown by a spreadsheet, never run. Numbers are not strings and stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def table_csv(frame: pd.DataFrame) -> str:
    """`frame` as CSV with every text cell and header passed through `spreadsheet_text` and quoted (a bare
    CR would end the row for a spreadsheet, and the cell after it would open a formula unprefixed)."""
    columns = [frame.iloc[:, index] for index in range(frame.shape[1])]
    safe = pd.concat(
        [c if pd.api.types.is_numeric_dtype(c) else c.astype(object).map(spreadsheet_text) for c in columns],
        axis=1,
    )
    safe.columns = [spreadsheet_text(column) for column in frame.columns]
    return safe.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)


def _generation_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    columns = ("input", "target", "prediction", "program_output", "extracted", "reference", "correct")
    present = [c for c in columns if any(c in r for r in rows)]
    head = "".join(f'<th class="text">{c}</th>' for c in ["#", *present])
    body = []
    for number, row in enumerate(rows):
        state = "right" if row.get("correct") else "wrong"
        cells = [f'<td class="mark">{number}</td>']
        for column in present:
            value = row.get(column)
            cells.append(
                f'<td class="text"><pre>{html.escape("" if value is None else str(value))}</pre></td>'
            )
        body.append(f'<tr class="{state}">' + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def generations_page(
    trial: Mapping[str, Any],
    *,
    files: str,
    generations: Sequence[Mapping[str, Any]] | None,
    calculator: Sequence[Mapping[str, Any]] | None,
) -> str:
    """A self-contained HTML page: one trial's settings, final metrics and test generations."""
    title = f"{trial['method']} / {trial['config']} / {trial['trial']}"
    settings = {
        k.removeprefix("config/"): v for k, v in trial.items() if k.startswith("config/") and not pd.isna(v)
    }
    metrics = {
        k: v
        for k, v in trial.items()
        if k.startswith(("test/", "dev/", "train/", "params/")) and not pd.isna(v)
    }
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p>Status: {html.escape(str(trial["status"]))}. Result folder: <a href="{html.escape(files)}">'
        f"{html.escape(files)}</a></p>",
        *_signal_line(trial),
        "<h2>Final metrics (last report)</h2>",
        _key_values(metrics),
        "<h2>Settings</h2>",
        _key_values(settings),
    ]
    for heading, rows in (
        ("Test generations", generations),
        ("Test generations with the calculator", calculator),
    ):
        if rows is None:
            continue
        correct = sum(bool(r.get("correct")) for r in rows)
        source = "generations_test_calculator.jsonl" if rows is calculator else "generations_test.jsonl"
        parts += [
            f"<h2>{heading}</h2>",
            f"<p>{correct} of {len(rows)} correct (green: correct, red: wrong); from {source} in the result "
            "folder.</p>",
            _generation_rows(rows),
        ]
    if generations is None:
        parts.append("<p>This trial left no generations file (it did not reach its test evaluation).</p>")
    return _document(title, "\n".join(parts))


def _signal_line(trial: Mapping[str, Any]) -> list[str]:
    """The trial's verdict (`analysis.chance`): above chance, chance level or collapsed, with the baselines."""
    detail = trial.get("signal_detail")
    if not isinstance(detail, str):
        return []
    text = f"Signal: {detail}."
    majority, last = trial.get("chance/majority"), trial.get("chance/last_number")
    if (
        isinstance(majority, float)
        and isinstance(last, float)
        and not (math.isnan(majority) or math.isnan(last))
    ):
        text += (
            f" On the same test examples, always answering {trial.get('chance/majority_answer')} scores "
            f"{100 * majority:.1f}% and answering the question's last number {100 * last:.1f}%."
        )
    return [f'<p class="signal">{html.escape(text)}</p>']


def _key_values(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="text">{html.escape(k)}</td><td class="text">{html.escape(_short(v))}</td></tr>'
        for k, v in sorted(values.items())
    )
    return f"<table><tbody>{rows}</tbody></table>"


def _short(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _document(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{PAGE_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
