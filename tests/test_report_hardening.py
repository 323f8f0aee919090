"""The report reads results folders written by an adversary (issue 19): an odd trial folder is listed as
unreadable with the reason and the rest of the report is written; no reader follows a symbolic link out of
the results folder; every value from a folder is escaped in Markdown and HTML, and no link can carry a
scheme. The slow tests build one report from a hostile folder and open it in headless Chromium."""

from __future__ import annotations

import csv
import html.parser
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from hostile_results import (
    FORMULAS,
    IMG,
    JS_FOLDER,
    ODD_KINDS,
    PAYLOADS,
    SCRIPT,
    write_formula_study,
    write_hostile_study,
    write_odd_trial,
)
from test_analysis import generation, test_metrics, trial_params, write_study, write_trial

from analysis.chance import attach_chance
from analysis.load import load_results, read_jsonl
from analysis.render import (
    FORMULA_STARTS,
    TrialLinks,
    generations_page,
    markdown_escape,
    table_csv,
    table_html,
    table_markdown,
)
from analysis.report import Report, _href, make_tables, write_table_files

UNREADABLE_KINDS = [kind for kind in ODD_KINDS if kind != "reference_words"]


@pytest.mark.parametrize("kind", UNREADABLE_KINDS)
def test_an_odd_trial_is_listed_as_unreadable_with_the_reason_and_the_rest_is_read(tmp_path, kind):
    root = tmp_path / "study"
    folders = write_study(root)
    odd = write_odd_trial(root / "lora-main", kind)
    results = load_results([root])
    trials = results.trials.set_index("trial_dir")
    assert trials.at[str(odd), "status"] == "unreadable"
    assert ODD_KINDS[kind] in trials.at[str(odd), "error"], trials.at[str(odd), "error"]
    assert trials.at[str(folders["lora_best"]), "status"] == "finished"
    assert (trials["status"] == "unreadable").sum() == 1
    tables, _ = make_tables(results, metric="dev/accuracy", mode="max")  # the odd trial is the best by dev
    for table in tables.values():
        assert "trial" not in table.frame or str(odd) not in set(table.frame["trial"]), table.title
        table_markdown(table)


def test_references_that_are_words_give_the_verdict_unknown_not_a_crash(tmp_path):
    root = tmp_path / "study"
    odd = write_odd_trial(root / "lora-main", "reference_words")
    results = load_results([root])
    tables, _ = make_tables(results, metric="dev/accuracy", mode="max")
    trial = results.trials.set_index("trial_dir").loc[str(odd)]
    assert trial["status"] == "finished" and trial["signal"] == "unknown"
    table = attach_chance(tables["accuracy_per_model"], results.trials)
    assert table.baselines is not None and len(table.baselines) == 0  # no numeric references: no baseline row
    assert "unknown" in table_markdown(table)


def test_a_generations_file_linked_out_of_the_results_folder_is_never_read(tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"input": "SECRET", "reference": "1", "extracted": "1", "correct": true}\n')
    root = tmp_path / "study"
    folder = write_trial(root / "lora-main", trial_params("lora"), dev=[0.1, 0.2], test=test_metrics(0.2),
                         generations=[generation(True)])  # fmt: skip
    (folder / "generations_test.jsonl").unlink()
    (folder / "generations_test.jsonl").symlink_to(secret)
    trial = load_results([root]).trials.iloc[0]
    assert trial["status"] == "finished" and trial["generations"] is None
    with pytest.raises(ValueError, match="symbolic link"):
        read_jsonl(str(folder / "generations_test.jsonl"))
    with pytest.raises(ValueError, match="symbolic link"):  # a link in a folder above the file
        (tmp_path / "linked").symlink_to(folder)
        read_jsonl(str(tmp_path / "linked" / "result.json"))


def test_a_folder_linked_out_of_the_results_folder_or_a_link_loop_is_not_walked(tmp_path):
    outside = tmp_path / "outside"
    write_trial(outside / "lora-main", trial_params("lora"), dev=[0.1], test=test_metrics(0.2))
    root = tmp_path / "study"
    inside = write_trial(root / "lora-main", trial_params("lora"), dev=[0.1], test=test_metrics(0.3))
    (root / "elsewhere").symlink_to(outside)
    (root / "loop").symlink_to(root)
    started = time.perf_counter()
    trials = load_results([root]).trials
    assert trials["trial_dir"].tolist() == [str(inside)] and time.perf_counter() - started < 5


def test_markdown_and_html_tables_escape_every_value_from_a_folder(tmp_path):
    root = tmp_path / "study"
    write_hostile_study(root)
    results = load_results([root])
    tables, _ = make_tables(results, metric="dev/accuracy", mode="max")
    label = results.trials["trial"].iloc[0]
    trial_id = results.trials["trial_id"].iloc[0]
    links = {label: TrialLinks(page=_href(str(root / "p.html"), root), files=_href(str(root / JS_FOLDER), root),
                               name=trial_id)}  # fmt: skip
    table = tables["accuracy_per_model"]
    assert label in set(table.frame["trial"])
    markdown, page = table_markdown(table, links), table_html(table, links)
    assert markdown_escape(trial_id) in markdown and "data-pwned" in markdown  # shown, as text
    for payload in PAYLOADS:
        assert payload not in markdown and payload not in page
    assert "<" not in markdown.replace("&lt;", "")
    assert "javascript:" not in links[label].files and "javascript%3A" in links[label].files


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/r/javascript:alert(1)/trial", "javascript%3Aalert%281%29/trial"),
        ('/r/a"><b/x', "a%22%3E%3Cb/x"),
        ("/r/data:text/html,x", "data%3Atext/html%2Cx"),
        ("s3://bucket/javascript:x/<t>", "s3://bucket/javascript%3Ax/%3Ct%3E"),
    ],
)
def test_a_link_is_a_percent_encoded_path_whatever_the_folder_is_called(target, expected):
    assert _href(target, Path("/r")) == expected


def test_a_trial_page_escapes_every_value_from_a_folder(tmp_path):
    root = tmp_path / "study"
    write_hostile_study(root)
    results = load_results([root])
    tables, _ = make_tables(results, metric="dev/accuracy", mode="max")
    row = results.trials.iloc[0].to_dict()
    page = generations_page(
        row, files=_href(row["trial_dir"], root), generations=read_jsonl(row["generations"]), calculator=None
    )
    for payload in PAYLOADS:
        assert payload not in page
    assert (
        "<script" not in page and "<img" not in page and "<svg" not in page and 'href="javascript' not in page
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_no_csv_cell_from_a_folder_opens_a_formula(tmp_path):
    root = tmp_path / "study"
    write_study(root)
    write_formula_study(root)
    results = load_results([root])
    tables, diagnostics = make_tables(results, metric="dev/accuracy", mode="max")
    write_table_files(Report(results=results, tables=tables, diagnostics=diagnostics), tmp_path / "out")
    cells = []
    for path in sorted((tmp_path / "out" / "tables").glob("*.csv")):
        with path.open(newline="") as file:
            cells += [cell for row in csv.reader(file) for cell in row]
    assert [c for c in cells if c.startswith(FORMULA_STARTS) and not _is_number(c)] == []
    for formula in FORMULAS:  # each reached a table, shown as text
        assert any(cell.startswith("'" + formula) for cell in cells), formula


def test_csv_text_is_neutralised_and_numbers_stay_numbers():
    frame = pd.DataFrame({"trial": ["=1+1", "a-b", "@x"], "delta": [-0.5, 0.25, 1.0], "-n": [-3, 4, 5]})
    text = table_csv(frame)
    assert text.splitlines() == ['"trial","delta","\'-n"', '"\'=1+1",-0.5,-3', '"a-b",0.25,4', '"\'@x",1.0,5']
    assert pd.read_csv(io.StringIO(text))["delta"].tolist() == [-0.5, 0.25, 1.0]


# ---- one report built from a hostile results folder (slow: the whole report, then Chromium) ----


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """The report of a study with hostile values, every odd kind of trial and a link to a file outside,
    written into the results folder itself (so a relative link starts with a folder's name)."""
    from analysis.report import build_report

    root = tmp_path_factory.mktemp("hostile") / "study"
    write_study(root)
    write_hostile_study(root)
    for kind in ODD_KINDS:
        write_odd_trial(root / "lora-main", kind)
    build_report([str(root)], root)
    return root


@pytest.mark.slow
def test_the_report_lists_each_unreadable_trial_with_its_reason_and_is_written_whole(hostile_report):
    markdown = (hostile_report / "report.md").read_text()
    assert "## Unreadable trials" in markdown and (hostile_report / "report.html").is_file()
    listed = markdown.split("## Unreadable trials", 1)[1].split("\n## ", 1)[0]
    for word in (ODD_KINDS[kind] for kind in UNREADABLE_KINDS):
        assert markdown_escape(word) in listed, word
    assert markdown.count("\n## ") >= 8  # the tables' sections are there too
    for payload in PAYLOADS:
        assert payload not in markdown
    assert "<" not in markdown.replace("&lt;", "")


class _LiveElements(html.parser.HTMLParser):
    """Everything in a DOM that can run or fetch: scripts, event handlers, script URLs, foreign images."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed", "svg", "math", "base", "meta", "link", "form"):
            if not (tag == "meta" and attrs == [("charset", "utf-8")]):
                self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on") or name == "data-pwned":
                self.found.append(f"<{tag} {name}>")
            if name in ("href", "src", "action", "formaction") and ":" in value.split("/", 1)[0]:
                if not value.startswith("data:image/png;base64,"):
                    self.found.append(f"<{tag} {name}={value[:40]}>")
        if tag == "img" and not dict(attrs).get("src", "").startswith("data:image/png;base64,"):
            self.found.append("<img> from a value")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(browser: str, page: Path, home: Path) -> str:
    """The DOM headless Chromium builds for `page` after running whatever would run in it."""
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=2000", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs headless Chromium (Debian package: chromium)")
def test_chromium_finds_no_live_element_in_a_report_built_from_a_hostile_folder(hostile_report, tmp_path):
    browser = _chromium()
    pages = [hostile_report / "report.html"]
    pages += [p for p in (hostile_report / "generations").iterdir() if "pwned" in p.read_text()]
    assert len(pages) >= 2  # the report and at least one hostile trial's page
    for page in pages:
        dom = _dom(browser, page, tmp_path)
        parser = _LiveElements()
        parser.feed(dom)
        assert parser.found == [], f"{page.name}: {parser.found[:5]}"
        assert "data-pwned" in dom  # the payloads are there, as text
    report = (hostile_report / "report.html").read_text()
    assert SCRIPT not in report and IMG not in report and 'href="javascript:' not in report


def test_a_confirmation_manifest_linked_out_of_the_results_folder_is_not_read(tmp_path):
    from analysis import confirm

    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    root = tmp_path / "study"
    (root / "confirm").mkdir(parents=True)
    (root / "confirm" / "confirm.json").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        confirm.find([str(root)])
