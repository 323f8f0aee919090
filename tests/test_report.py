"""The report: its tables rendered as Markdown / HTML / LaTeX, the trial pages, the files and the CLI.

The numbers checked are the chosen trials' test metrics from the synthetic study of `test_analysis`.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_analysis import generation, test_metrics, trial_params, write_study, write_trial

from analysis.load import load_results
from analysis.render import TrialLinks, latex_escape, table_html, table_latex, table_markdown
from analysis.report import build_report, main
from analysis.tables import build_tables

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tables(tmp_path):
    root = tmp_path / "slm-tiny"
    folders = write_study(root)
    results = load_results([root])
    return build_tables(results.trials), results, folders


def _label(results, folder: Path) -> str:
    return results.trials.loc[results.trials["trial_dir"] == str(folder), "trial"].item()


def test_markdown_links_our_numbers_to_the_trial_but_not_the_published_ones(tables):
    built, results, folders = tables
    label = _label(results, folders["lora_best"])
    links = {label: TrialLinks(page="generations/lora.html", files="../runs/lora", name="a4339_00001")}
    text = table_markdown(built["table1_models"], links)
    lines = text.splitlines()
    assert lines[0].startswith("| Model | Config | ROUGE-1 | ROUGE-1 (published) |") and lines[0].endswith(
        "| Trial |"
    )
    lora = next(line for line in lines if line.startswith("| LoRA | main |"))
    cells = [c.strip() for c in lora.strip("|").split("|")]
    assert cells[2] == "[0.4100](generations/lora.html)" and cells[3] == "0.5084"
    assert cells[6] == "[75.00](generations/lora.html)" and cells[7] == "79.70"
    assert cells[8] == "4" and cells[-1] == "[a4339\\_00001](generations/lora.html) ([files](../runs/lora))"
    assert not any(line.startswith("| QLoRA |") for line in lines)  # not run: not a row


def test_html_and_latex_tables_show_missing_rows_and_escape_text(tables):
    built, _, _ = tables
    html = table_html(built["table1_models"])
    assert 'class="num missing"' not in html and '<td class="num published">0.5084</td>' in html
    latex = table_latex(built["cot_styles"])
    # the last column is the trial's Signal (text), the chance rows follow the trials' rows
    assert r"\begin{tabular}{llrrrrrrrrrrrrl}" in latex and r"no\_breakdown & socratic & 16.0" in latex
    assert r"Accuracy \%" in latex and latex_escape("a_b & 5% #1") == r"a\_b \& 5\% \#1"


@pytest.mark.slow
def test_the_report_command_writes_every_file_with_the_chosen_trials_numbers(tmp_path):
    root = tmp_path / "results" / "slm-tiny"
    folders = write_study(root)
    out = tmp_path / "report"
    report = build_report([str(root)], out)
    for name in ("report.md", "report.html", "table1_models.csv", "table1_models.tex", "calculator.csv"):
        assert report.files[name].is_file(), name
    assert {p.name for p in (out / "figures").iterdir()} == {f"{k}.png" for k in report.figures}
    for path in report.figures.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000

    with (out / "tables" / "table1_models.csv").open() as file:
        rows = {(r["Model"], r["Config"]): r for r in csv.DictReader(file)}
    lora = rows[("LoRA", "main")]
    assert (float(lora["ROUGE-1"]), float(lora["Perplexity"]), float(lora["Similarity %"])) == (
        0.41,
        3.2,
        75.0,
    )
    assert lora["trial_dir"] == str(folders["lora_best"])
    assert lora["generations"] == str(folders["lora_best"] / "generations_test.jsonl")
    assert ("QLoRA", "main") not in rows  # a method the study did not run is not a row

    markdown = (out / "report.md").read_text()
    page = next(p for p in (out / "generations").iterdir() if "a4339" in p.name and "lora-main" in p.name)
    assert (
        f"(generations/{page.name})" in markdown
        and "![" in markdown
        and "(figures/efficiency.png)" in markdown
    )
    text = page.read_text()
    assert "1 of 2 correct" in text and "2 of 2 correct" in text  # without and with the calculator
    assert "Tom has 5 apples" in text and "test/rouge1" in text

    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(report.figures)
    assert not re.search(r'(src|href)="https?://', html) and "<link" not in html and "<script" not in html


@pytest.mark.slow
def test_the_cli_writes_the_report_and_says_where(tmp_path):
    root = tmp_path / "study"
    write_trial(root / "lora-main", trial_params("lora"), dev=[0.1, 0.2], test=test_metrics(0.2),
                generations=[generation(True)])  # fmt: skip
    command = [sys.executable, "-m", "analysis.report", str(root), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "report.html" in done.stdout and (tmp_path / "out" / "report.html").is_file()


def test_no_trials_is_one_error_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Ray Tune trials") and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "results folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_test_metric_cannot_choose_the_reported_trials(tmp_path, capsys):
    write_trial(tmp_path / "lora-main", trial_params("lora"), dev=[0.1, 0.2], test=test_metrics(0.2))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--out", str(tmp_path / "out"), "--metric", "test/accuracy"])
    assert exit_info.value.code == 2 and "test split" in capsys.readouterr().err
