"""The study report: tables (Markdown, HTML, CSV, LaTeX), PNG charts and a browsable page per reported trial.

    python -m analysis.report results/slm-tiny --out report/
    python -m analysis.report s3://bucket/studies/slm-paper --out report/ --metric dev/accuracy

`report.md` shows the charts as files next to it; `report.html` embeds them, so it is one self-contained
file. Every number a trial produced links to `generations/<trial>.html`: that trial's settings, final
metrics and test generations, and a link to its result folder.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import pandas as pd

from analysis import confirm, curves, pairwise, plots
from analysis import diagnostics as search
from analysis.chance import add_history_signal, add_signal, attach_chance, summary_sentence
from analysis.diagnostics import SearchDiagnostics, diagnose, importance_table, search_table
from analysis.groups import slug, with_groups
from analysis.load import STATUSES, UNREADABLE, Results, load_results, read_jsonl
from analysis.render import (
    PAGE_STYLE,
    TrialLinks,
    generations_page,
    markdown_escape,
    table_csv,
    table_html,
    table_latex,
    table_markdown,
)
from analysis.table import Table
from analysis.tables import build_tables
from analysis.update_rank import plot_update_rank, update_rank_table
from study.outputs import check_output_file, check_output_folder, write_atomically
from trainables.comparison import groupings
from trainables.methods import load_plugins
from trainables.scoring.metric_registry import mode_of

FIGURES = {
    "accuracy_per_model": "Test accuracy per model with bootstrap 95% intervals (diamonds: published values, "
    "drawn only where our trial ran on the published data and base model).",
    "efficiency": "Accuracy against trainable parameters and wall-clock hours (dashed: Pareto front).",
    "search_history": "Optimisation history: every trial's dev metric in search order and the best so far.",
    "importance": "Hyperparameter importance (Optuna's fANOVA on the trials' sampled values and dev metric).",
    "learning_curves": "Dev accuracy at each evaluation against training examples seen, per reported trial "
    "(dashed: collapsed).",
    "update_rank": "Test accuracy against the effective rank of each group's learned update.",
}
"""Chart file stem -> caption (each family a method record declares adds its own: `family_sections`)."""


def figure_caption(figure: str, title: str) -> str:
    """A chart's caption; a family's chart (declared by a method record) is captioned by its table's title."""
    return (FIGURES | confirm.FIGURES).get(figure, f"{title}: test accuracy with 95% intervals.")


SUBFOLDERS = ("figures", "generations", "tables")
"""The folders the report writes inside `--out`."""


@dataclass
class Report:
    """What `build_report` computed and wrote."""

    results: Results
    tables: dict[str, Table]
    diagnostics: list[SearchDiagnostics]
    confirmation: pd.DataFrame | None = None
    """The pairwise comparisons of the confirmation runs (`study.confirm`), when the study has them."""
    figures: dict[str, Path] = field(default_factory=dict)
    """Chart stem -> PNG path."""
    pages: dict[str, Path] = field(default_factory=dict)
    """Trial label -> its generations page."""
    files: dict[str, Path] = field(default_factory=dict)
    """report.md, report.html and every CSV / LaTeX file, by name."""


def make_tables(
    results: Results, *, metric: str, mode: str
) -> tuple[dict[str, Table], list[SearchDiagnostics]]:
    """The tables (the importance table included) and the search diagnostics of `results`."""
    # each trial's chance level and groups (`load_results` added its data and base): tables, charts, summary
    results.trials = with_groups(add_signal(results.trials))
    tables = build_tables(results.trials, metric=metric, mode=mode)
    tables |= chance_tables(results, tables)
    tables["update_rank"] = update_rank_table(results.trials, metric=metric, mode=mode)
    diagnostics = diagnose(results.trials, metric=metric, mode=mode)
    add_history_signal(diagnostics, results.trials)  # the search history crosses out collapsed trials
    tables["search_summary"] = search_table(results.trials, metric=metric, mode=mode)
    tables["importance"] = importance_table(diagnostics, metric=metric)
    return tables, diagnostics


def make_figures(report: Report, directory: Path, *, metric: str) -> dict[str, Path]:
    """Draw every chart into `directory` (PNG)."""
    tables, trials = report.tables, report.results.trials
    if report.confirmation is not None:
        figures = {"pairwise": pairwise.plot_pairwise(report.confirmation, directory / "pairwise.png")}
    else:
        figures = {}
    return figures | {
        "accuracy_per_model": plots.plot_accuracy_per_model(
            tables["accuracy_per_model"], directory / "accuracy_per_model.png"
        ),
        **{
            key: plots.plot_groups(tables[key], directory / f"{key}.png")
            for key, _ in family_sections(tables)
        },
        "efficiency": plots.plot_efficiency(trials, tables["efficiency"], directory / "efficiency.png"),
        "search_history": search.plot_search_history(
            report.diagnostics, directory / "search_history.png", metric=metric
        ),
        "importance": search.plot_importance(report.diagnostics, directory / "importance.png", metric=metric),
        "update_rank": plot_update_rank(tables["update_rank"], directory / "update_rank.png"),
        **chance_figures(report, directory),
    }


def chance_tables(results: Results, tables: dict[str, Table]) -> dict[str, Table]:
    """The tables that tell signal from chance beyond the marks `build_tables` puts in every table."""
    table = curves.curves_table(tables, results.history)
    return {"learning_curves": attach_chance(table, results.trials)}


def chance_figures(report: Report, directory: Path) -> dict[str, Path]:
    """The learning curves chart."""
    path = directory / "learning_curves.png"
    table = report.tables["learning_curves"]
    return {"learning_curves": curves.plot_learning_curves(table, report.results.history, path)}


def _href(target: str, out_dir: Path) -> str:
    """A link from the report folder: relative for a local path, the URI for remote storage; either way a
    percent-encoded path (`urllib`), so no folder name can add a scheme (`javascript:`), a quote or markup.
    The scheme of a storage URI is the user's own results argument, never a folder's name."""
    scheme, sep, path = target.partition("://")
    if sep:
        return f"{scheme}://{urllib.parse.quote(path, safe='/')}"
    return urllib.parse.quote(os.path.relpath(target, out_dir).replace(os.sep, "/"), safe="/")


def write_pages(report: Report, out_dir: Path) -> dict[str, TrialLinks]:
    """A generations page for every trial a table row reports; returns the links the tables use."""
    trials = report.results.trials.set_index("trial", drop=False)
    labels = sorted(
        {
            t
            for table in report.tables.values()
            if "trial" in table.frame
            for t in table.frame["trial"]
            if isinstance(t, str)
        }
    )
    links: dict[str, TrialLinks] = {}
    for label in labels:
        row = trials.loc[label].to_dict()
        generations, calculator_rows = _rows(row.get("generations")), _rows(row.get("generations_calculator"))
        page = out_dir / "generations" / f"{slug(label)}.html"
        files = _href(row["trial_dir"], page.parent)
        text = generations_page(row, files=files, generations=generations, calculator=calculator_rows)
        write_atomically({page: text}, flag="--out")
        report.pages[label] = page
        links[label] = TrialLinks(
            page=_href(str(page), out_dir), files=_href(row["trial_dir"], out_dir), name=str(row["trial_id"])
        )
    return links


def _rows(address: object) -> list[dict] | None:
    """A generations file's rows; None when there is none, or it can no longer be read as the loader did."""
    if not isinstance(address, str):
        return None
    try:
        return read_jsonl(address)
    except (OSError, ValueError):
        return None


def write_table_files(report: Report, out_dir: Path) -> None:
    """Each table as CSV (numbers, with the trial's folder and generations file) and as LaTeX."""
    trials = report.results.trials.set_index("trial")
    for key, table in report.tables.items():
        frame = table.frame.copy()
        if "trial" in frame:
            known = frame["trial"].where(frame["trial"].isin(trials.index))
            frame["trial_dir"] = known.map(trials["trial_dir"])
            frame["generations"] = known.map(trials["generations"])
        if table.baselines is not None and len(table.baselines):  # chance rows last, with no trial
            frame = pd.concat([frame, table.baselines], ignore_index=True)
        csv, tex = out_dir / "tables" / f"{key}.csv", out_dir / "tables" / f"{key}.tex"
        write_atomically({csv: table_csv(frame), tex: table_latex(table)}, flag="--out")
        report.files[csv.name], report.files[tex.name] = csv, tex


def _summary(results: Results, *, metric: str, mode: str) -> str:
    counts = results.trials["status"].value_counts()
    statuses = ", ".join(f"{int(counts.get(s, 0))} {s.replace('_', ' ')}" for s in STATUSES)
    return (
        f"{len(results.trials)} trials from {', '.join(results.roots)}: {statuses}. "
        f"Each table row is the best finished trial of its group by its last {metric} ({mode}), and shows that "
        "trial's test-split numbers; dev numbers appear only in the search diagnostics. Accuracy and semantic "
        "similarity are percentages (similarity = 100 x the average cosine of sentence embeddings); ROUGE-1 is a "
        "fraction. A group the study did not run is not a row (each table lists them under it); a group whose "
        "trials all ended without test numbers says so ('failed', 'stopped early'), never a 0; '-' marks a number "
        "that does not apply. Each table says what data and base model its trials ran on; published numbers "
        "stand beside ours only where those are the published ones (GSM8K, T5-small / T5-base), else in the "
        "reference table. Numbers link to the trial's generations. "
        + summary_sentence(results.trials)
        + " Rows in italics are chance baselines computed on the same test examples; the Signal column says "
        "whether a row's trial is above chance."
    )


SECTIONS = (
    ("table1_models", None),
    ("accuracy_per_model", "accuracy_per_model"),
    ("calculator", None),
    ("efficiency", "efficiency"),
    ("update_rank", "update_rank"),
    ("published", None),
    ("learning_curves", "learning_curves"),
    ("search_summary", "search_history"),
    ("importance", "importance"),
)
"""(table, chart drawn under it) in report order; the families' tables follow the calculator table."""


def family_sections(tables: dict[str, Table]) -> list[tuple[str, str]]:
    """(table, chart) of each family a method record declares that the study ran, in the registry's order."""
    return [(g.key, g.key) for _, g in groupings() if g.key in tables]


def sections(tables: dict[str, Table]) -> list[tuple[str, str | None]]:
    """Every (table, chart) of the report in order."""
    at = [key for key, _ in SECTIONS].index("calculator") + 1
    return [*SECTIONS[:at], *family_sections(tables), *SECTIONS[at:], *confirm.SECTIONS]


def write_documents(
    report: Report, out_dir: Path, links: dict[str, TrialLinks], *, title: str, summary: str
) -> None:
    """report.md (charts as files) and report.html (charts embedded as data URIs)."""
    markdown = [f"# {markdown_escape(title)}", "", markdown_escape(summary), ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(summary)}</p>"]
    unreadable = report.results.trials.query(f"status == '{UNREADABLE}'")
    if len(unreadable):  # listed with the reason; none of their numbers is in a table or a chart
        heading = "Unreadable trials"
        note = (
            "Trial folders whose files are not what Ray and the study write; none of their numbers is used."
        )
        reasons = list(zip(unreadable["trial"], unreadable["error"], strict=True))
        markdown += [f"## {heading}", "", note, ""]
        markdown += [f"- {markdown_escape(str(t))}: {markdown_escape(str(r))}" for t, r in reasons] + [""]
        items = "".join(f"<li>{html.escape(str(t))}: {html.escape(str(r))}</li>" for t, r in reasons)
        body += [f"<h2>{heading}</h2>", f'<p class="note">{note}</p>', f"<ul>{items}</ul>"]
    for key, figure in sections(report.tables):
        if key not in report.tables:
            continue  # the confirmation sections, for a study without confirmation runs
        table = report.tables[key]
        note = f"{table.on} {table.note}".strip()  # what data and base model, then how to read it
        markdown += [
            f"## {markdown_escape(table.title)}",
            "",
            markdown_escape(note),
            "",
            table_markdown(table, links),
            "",
        ]
        body += [
            f"<h2>{html.escape(table.title)}</h2>",
            f'<p class="note">{html.escape(note)}</p>',
            table_html(table, links),
        ]
        if figure:
            path = report.figures[figure]
            caption = figure_caption(figure, table.title)
            markdown += [f"![{caption}](figures/{path.name})", "", f"*{caption}*", ""]
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    files = ", ".join(f"[{name}](tables/{name})" for name in sorted(report.files))
    markdown += ["## Files", "", f"Tables as CSV and LaTeX: {files}.", ""]
    body.append(
        "<h2>Files</h2><p>Tables as CSV and LaTeX: "
        + ", ".join(f'<a href="tables/{html.escape(n)}">{html.escape(n)}</a>' for n in sorted(report.files))
        + ".</p>"
    )
    document = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{PAGE_STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    write_atomically(
        {out_dir / "report.md": "\n".join(markdown), out_dir / "report.html": document}, flag="--out"
    )
    report.files["report.md"], report.files["report.html"] = out_dir / "report.md", out_dir / "report.html"


def build_report(
    locations: list[str],
    out_dir: str | Path,
    *,
    metric: str = "dev/accuracy",
    mode: str = "max",
    title: str = "slm-math-study report",
    plugins: Sequence[str] = (),
) -> Report:
    """Load the results at `locations` and write the whole report into `out_dir`.

    Raises:
        FileNotFoundError: for a results location that does not exist.
        ValueError: when no trial is found, `metric` cannot choose trials, or `out_dir` (or a file or folder
            the report writes in it) is not a folder, a regular file or a new path (`study.outputs`).
    """
    check_output_folder("--out", Path(out_dir).expanduser())
    out = Path(out_dir).expanduser().resolve()
    for folder in (out / name for name in SUBFOLDERS):  # a link here would send the files elsewhere
        check_output_folder("--out", folder, link_ok=False)
    for name in ("report.md", "report.html"):
        check_output_file("--out", out / name)
    load_plugins(plugins)  # their methods' display names, colours and groupings
    results = load_results(locations)
    tables, diagnostics = make_tables(results, metric=metric, mode=mode)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(results=results, tables=tables, diagnostics=diagnostics)
    found = confirm.find([str(location) for location in locations])
    if found is not None:  # the confirmation runs of `python -m study.confirm`
        trials = results.trials
        labels = dict(zip(trials["trial"], trials["trial"], strict=True))
        labels |= dict(zip(trials["trial_dir"], trials["trial"], strict=True))
        confirm_tables, report.confirmation = pairwise.confirmation_tables(confirm.load(found), labels)
        tables.update(confirm_tables)
    with matplotlib.rc_context(
        {"text.parse_math": False}
    ):  # a folder's `$\\frac{$` is text, not TeX to fail on
        report.figures = make_figures(report, out / "figures", metric=metric)
    links = write_pages(report, out)
    write_table_files(report, out)
    write_documents(report, out, links, title=title, summary=_summary(results, metric=metric, mode=mode))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Write the study's tables, charts and trial pages from Ray Tune result folders.",
        epilog="Exit status 2 means bad input (no such folder, no trials, an unknown metric).",
    )
    parser.add_argument(
        "results", nargs="+", help="results folders or storage URIs (a study, or single experiments)"
    )
    parser.add_argument(
        "--out", required=True, help="folder to write report.md, report.html, tables/, figures/ into"
    )
    parser.add_argument(
        "--metric", default="dev/accuracy", help="dev metric that picks each group's best trial"
    )
    parser.add_argument(
        "--mode", choices=("max", "min"), help="max or min (default: the metric's own direction)"
    )
    parser.add_argument("--title", default="slm-math-study report", help="the report's heading")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers methods (the study's --plugin), for their names, colours and "
        "groups; without it their trials are shown by method name (repeatable)",
    )
    return parser


def _run(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    mode = args.mode or mode_of(args.metric)  # the metric record's direction
    report = build_report(
        args.results, args.out, metric=args.metric, mode=mode, title=args.title, plugins=args.plugin
    )
    print(
        f"wrote {report.files['report.html']} and {report.files['report.md']} ({len(report.results.trials)} trials)"
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m analysis.report`: bad input exits 2 with one line `error: ...`."""
    from study.errors import run_cli

    run_cli(lambda: _run(argv))


if __name__ == "__main__":
    main()
