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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import confirm, curves, pairwise, plots
from analysis import diagnostics as search
from analysis.chance import add_history_signal, add_signal, attach_chance, summary_sentence
from analysis.diagnostics import SearchDiagnostics, diagnose, importance_table, search_table
from analysis.groups import slug, with_groups
from analysis.load import Results, load_results, read_jsonl
from analysis.render import (
    PAGE_STYLE,
    TrialLinks,
    generations_page,
    table_html,
    table_latex,
    table_markdown,
)
from analysis.table import Table
from analysis.tables import build_tables
from analysis.update_rank import plot_update_rank, update_rank_table
from trainables.comparison import groupings

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
    """A link from the report folder: relative for a local path, the URI itself for remote storage."""
    if "://" in target:
        return target
    return urllib.parse.quote(os.path.relpath(target, out_dir).replace(os.sep, "/"), safe="/:.-_~")


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
        generations = read_jsonl(row["generations"]) if isinstance(row.get("generations"), str) else None
        calculator = row.get("generations_calculator")
        calculator_rows = read_jsonl(calculator) if isinstance(calculator, str) else None
        page = out_dir / "generations" / f"{slug(label)}.html"
        files = _href(row["trial_dir"], page.parent)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(
            generations_page(row, files=files, generations=generations, calculator=calculator_rows)
        )
        report.pages[label] = page
        links[label] = TrialLinks(
            page=_href(str(page), out_dir), files=_href(row["trial_dir"], out_dir), name=str(row["trial_id"])
        )
    return links


def write_table_files(report: Report, out_dir: Path) -> None:
    """Each table as CSV (numbers, with the trial's folder and generations file) and as LaTeX."""
    trials = report.results.trials.set_index("trial")
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    for key, table in report.tables.items():
        frame = table.frame.copy()
        if "trial" in frame:
            known = frame["trial"].where(frame["trial"].isin(trials.index))
            frame["trial_dir"] = known.map(trials["trial_dir"])
            frame["generations"] = known.map(trials["generations"])
        if table.baselines is not None and len(table.baselines):  # chance rows last, with no trial
            frame = pd.concat([frame, table.baselines], ignore_index=True)
        csv, tex = out_dir / "tables" / f"{key}.csv", out_dir / "tables" / f"{key}.tex"
        frame.to_csv(csv, index=False)
        tex.write_text(table_latex(table))
        report.files[csv.name], report.files[tex.name] = csv, tex


def _summary(results: Results, *, metric: str, mode: str) -> str:
    counts = results.trials["status"].value_counts()
    statuses = ", ".join(
        f"{int(counts.get(s, 0))} {s.replace('_', ' ')}"
        for s in ("finished", "early_stopped", "error", "incomplete")
    )
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
    markdown = [f"# {title}", "", summary, ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(summary)}</p>"]
    for key, figure in sections(report.tables):
        if key not in report.tables:
            continue  # the confirmation sections, for a study without confirmation runs
        table = report.tables[key]
        note = f"{table.on} {table.note}".strip()
        markdown += [f"## {table.title}", "", note, "", table_markdown(table, links), ""]
        body += [
            f"<h2>{html.escape(table.title)}</h2>",
            f'<p class="note">{html.escape(note)}</p>',
            table_html(table, links),
        ]
        if figure:
            path = report.figures[figure]
            caption = (FIGURES | confirm.FIGURES).get(
                figure, f"{table.title}: test accuracy with 95% intervals."
            )
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
    (out_dir / "report.md").write_text("\n".join(markdown))
    document = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{PAGE_STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
    (out_dir / "report.html").write_text(document)
    report.files["report.md"], report.files["report.html"] = out_dir / "report.md", out_dir / "report.html"


def build_report(
    locations: list[str],
    out_dir: str | Path,
    *,
    metric: str = "dev/accuracy",
    mode: str = "max",
    title: str = "slm-math-study report",
) -> Report:
    """Load the results at `locations` and write the whole report into `out_dir`.

    Raises:
        FileNotFoundError: for a results location that does not exist.
        ValueError: when no trial is found, or `metric` cannot choose trials.
    """
    results = load_results(locations)
    tables, diagnostics = make_tables(results, metric=metric, mode=mode)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(results=results, tables=tables, diagnostics=diagnostics)
    found = confirm.find([str(location) for location in locations])
    if found is not None:  # the confirmation runs of `python -m study.confirm`
        trials = results.trials
        labels = dict(zip(trials["trial"], trials["trial"], strict=True))
        labels |= dict(zip(trials["trial_dir"], trials["trial"], strict=True))
        confirm_tables, report.confirmation = pairwise.confirmation_tables(confirm.load(found), labels)
        tables.update(confirm_tables)
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
        "--mode", choices=("max", "min"), help="max or min (default: min for perplexity and loss)"
    )
    parser.add_argument("--title", default="slm-math-study report", help="the report's heading")
    return parser


def _run(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    mode = args.mode or ("min" if args.metric.endswith(("perplexity", "loss")) else "max")
    report = build_report(args.results, args.out, metric=args.metric, mode=mode, title=args.title)
    print(
        f"wrote {report.files['report.html']} and {report.files['report.md']} ({len(report.results.trials)} trials)"
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m analysis.report`: bad input exits 2 with one line `error: ...`."""
    from study.errors import run_cli

    run_cli(lambda: _run(argv))


if __name__ == "__main__":
    main()
