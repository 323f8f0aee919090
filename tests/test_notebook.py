"""The report notebook, executed with nbclient, and the whole path from a tiny study to the report.

Both are slow: a Jupyter kernel starts (seconds), and the end-to-end test reads a `python -m study.run
--method all` with the tiniest settings (minutes on two CPU cores; conftest's `every_method_study` runs it
once for this test and test_tuner's).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_analysis import write_study

from analysis.notebook import NOTEBOOK, run_notebook, with_parameters

ROOT = Path(__file__).resolve().parents[1]


def _outputs(notebook) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _texts(notebook, mime: str) -> str:
    return "\n".join(str(o.get("data", {}).get(mime, "")) for o in _outputs(notebook))


def test_the_parameters_cell_is_replaced_and_bad_parameters_are_refused():
    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4), {"results_dirs": ["/r"], "mode": "min"})
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    lines = cell.source.splitlines()
    assert (
        "results_dirs = ['/r']" in lines
        and "mode = 'min'" in lines
        and 'metric = "dev/accuracy"' in cell.source
    )
    assert sum(line.startswith("results_dirs") for line in lines) == 1
    with pytest.raises(ValueError, match="unknown notebook parameter.*lr"):
        with_parameters(nbformat.read(NOTEBOOK, as_version=4), {"lr": 1})


@pytest.mark.slow
def test_the_notebook_shows_the_tables_numbers_and_every_chart(tmp_path):
    root = tmp_path / "slm-tiny"
    write_study(root)
    out = tmp_path / "notebook"
    parameters = {"results_dirs": [str(root)], "out_dir": str(out)}
    notebook = run_notebook(parameters, out / "report.ipynb", timeout_s=300)
    errors = [o for o in _outputs(notebook) if o.output_type == "error"]
    assert not errors, errors
    html = _texts(notebook, "text/html")
    assert "0.4100" in html and "75.00" in html and "0.5084" in html  # Table 1, LoRA main: ours and published
    assert html.count(">missing<") >= 12
    # every chart of the report: six of the study (learning curves and update rank included), five of families
    assert sum("image/png" in o.get("data", {}) for o in _outputs(notebook)) == 11
    assert (out / "report.html").is_file() and nbformat.read(out / "report.ipynb", as_version=4).cells


def _last_report(trial_dir: Path) -> dict:
    lines = [line for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


@pytest.mark.slow
def test_a_tiny_study_of_every_method_becomes_a_report_and_a_notebook(tmp_path, every_method_study):
    """`study.run --method all` -> `analysis.report` -> the notebook; numbers checked against result.json."""
    study, _ = every_method_study  # test_tuner.EVERY_METHOD, read here and by test_tuner's end-to-end test
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    report = [sys.executable, "-m", "analysis.report", str(study), "--out", str(tmp_path / "report")]
    done = subprocess.run(report, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # Every trial folder, read here without the loader: (method, config) -> [(dev accuracy, trial dir)]
    finished: dict[tuple[str, str], list[tuple[float, Path]]] = {}
    for params in study.rglob("params.json"):
        config, last = json.loads(params.read_text()), _last_report(params.parent)
        if "test/accuracy" in last and config.get("strategy/baseline", "stacked") == "stacked":
            key = (config["method"], config["data_config"])
            finished.setdefault(key, []).append((last["dev/accuracy"], params.parent))
    assert {m for m, _ in finished} == {"lora", "lora_cot", "full", "qlora", "stacked"}

    with (tmp_path / "report" / "tables" / "table1_models.csv").open() as file:
        rows = {(r["Model"], r["Config"]): r for r in csv.DictReader(file)}
    for model, method in (
        ("LoRA", "lora"),
        ("QLoRA", "qlora"),
        ("Full fine-tuning", "full"),
        ("Stacked LoRA", "stacked"),
    ):
        row = rows[(model, "main")]
        chosen = Path(row["trial_dir"])
        best_dev = max(dev for dev, _ in finished[(method, "main")])
        last = _last_report(chosen)
        assert last["dev/accuracy"] == best_dev, f"{model}: not the best trial by dev"
        assert float(row["ROUGE-1"]) == pytest.approx(last["test/rouge1"])
        assert float(row["Perplexity"]) == pytest.approx(last["test/perplexity"])
        assert float(row["Similarity %"]) == pytest.approx(100 * last["test/similarity"])
        assert row["generations"] == str(chosen / "generations_test.jsonl")
    assert ("LoRA", "socratic") not in rows  # not run: not a row (and never a 0)
    for name in (
        "accuracy_per_model",
        "cot_styles",
        "stacked_lora",
        "efficiency",
        "search_history",
        "importance",
        "learning_curves",
    ):
        assert (tmp_path / "report" / "figures" / f"{name}.png").stat().st_size > 10_000

    notebook = run_notebook(
        {"results_dirs": [str(study)], "out_dir": str(tmp_path / "nb")}, tmp_path / "nb" / "r.ipynb"
    )
    assert not [o for o in _outputs(notebook) if o.output_type == "error"]
    lora = rows[("LoRA", "main")]
    assert f"{float(lora['ROUGE-1']):.4f}" in _texts(notebook, "text/html")
