"""Signal or chance in the report and at the end of a study: collapsed trials are marked and counted, the
chance baselines of the same test examples sit under every accuracy table with the right numbers and in
its chart, log axes carry numbers at any span, and the learning curves come from each trial's reports."""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import pytest
from test_analysis import test_metrics, trial_params, write_trial

from analysis.chance import add_history_signal, add_signal, attach_chance, summary_sentence
from analysis.curves import curves_table
from analysis.diagnostics import diagnose
from analysis.load import load_results
from analysis.plots import efficiency_figure
from analysis.render import generations_page, table_html, table_latex, table_markdown
from analysis.table import ACC, HIGH, LOW
from analysis.tables import build_tables
from study.results import format_table, print_summary, summarize, trial_chance_lines
from trainables.scoring.metrics import bootstrap_ci

# 20 test problems; the most common reference, 5, answers 6 of them; the question's last number is the
# answer of 4 of them (i = 0, 4, 8, 12, whose b equals the reference).
REFERENCES = ["5"] * 6 + [str(n) for n in range(10, 24)]


def question(i: int) -> str:
    b = REFERENCES[i] if i % 4 == 0 and i < 13 else str(i + 100)
    return f"Answer the math question. Question: Tom has {i + 1} apples and {b} pears. How many?"


def generations(extracted: list[str | None]) -> list[dict]:
    return [
        {
            "input": question(i),
            "target": f"#### {ref}",
            "prediction": f"#### {x}",
            "program_output": None,
            "extracted": x,
            "reference": ref,
            "correct": x == ref,
        }
        for i, (x, ref) in enumerate(zip(extracted, REFERENCES, strict=True))
    ]


def metrics_of(rows: list[dict], **extra) -> dict:
    correct = [r["correct"] for r in rows]
    low, high = bootstrap_ci(correct)
    return test_metrics(sum(correct) / len(correct), n=len(rows)) | {
        "test/accuracy_low": low,
        "test/accuracy_high": high,
        **extra,
    }


def signal_study(root):
    """lora learns (16 of 20), full collapses onto `5` (an old result: no spread metrics), qlora answers
    widely but scores below the majority answer; its spread metrics are reported."""
    learned = generations(REFERENCES[:16] + ["0", "1", "2", "3"])
    collapsed = generations(["5"] * 20)
    chance = generations([str(n) for n in range(30, 45)] + ["5", "5", "5", "10", "11"])
    folders = {
        "lora": write_trial(root / "lora-main", trial_params("lora"), dev=[0.2, 0.5, 0.7],
                            test=metrics_of(learned), generations=learned, trainable=15_000),
        "full": write_trial(root / "full-main", trial_params("full", strategy={}), dev=[0.3, 0.3, 0.3],
                            test=metrics_of(collapsed), generations=collapsed, trainable=12_288),
        "qlora": write_trial(root / "qlora-main", trial_params("qlora"), dev=[0.1, 0.2, 0.25],
                             test=metrics_of(chance, **{"test/distinct_answers": 17, "test/top_answer_share": 0.15}),
                             generations=chance, trainable=18_000),
    }  # fmt: skip
    _add_examples_seen(folders["lora"], per_epoch=1_500)  # a new result; the other two are older ones
    return folders, {"learned": learned, "collapsed": collapsed, "chance": chance}


def _add_examples_seen(folder, *, per_epoch: int) -> None:
    reports = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
    for report in reports:
        report["train/examples_seen"] = int(report["epoch"] * per_epoch)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports))


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "slm-tiny"
    folders, rows = signal_study(root)
    return load_results([root]), folders, rows


def _trial(results, folder) -> str:
    return results.trials.loc[results.trials["trial_dir"] == str(folder), "trial"].item()


def test_each_trial_gets_its_spread_collapse_and_verdict(study):
    results, folders, _ = study
    trials = add_signal(results.trials).set_index("trial")
    full = trials.loc[_trial(results, folders["full"])]
    assert (full["test/distinct_answers"], full["test/top_answer_share"], full["collapsed"]) == (1, 1.0, True)
    assert full["signal_detail"] == "collapsed: 1 distinct answer, 100% on one"  # counted from the file
    qlora = trials.loc[_trial(results, folders["qlora"])]
    assert qlora["test/distinct_answers"] == 17  # as reported, not the 18 of its file
    assert qlora["collapsed"] is not None and not qlora["collapsed"]
    assert qlora["signal"] == "chance level" and qlora["chance/majority"] == pytest.approx(0.3)
    assert trials.loc[_trial(results, folders["lora"]), "signal"] == "above chance"
    diagnostics = diagnose(results.trials, metric="dev/accuracy", mode="max")
    add_history_signal(diagnostics, results.trials)
    (history,) = [d.history for d in diagnostics if d.method == "full"]
    assert history["signal"].tolist() == ["collapsed"]  # the search-history chart crosses it out
    page = generations_page(full.to_dict() | {"trial": "full"}, files="x", generations=None, calculator=None)
    assert (
        "Signal: collapsed: 1 distinct answer, 100% on one. On the same test examples, always answering 5 "
        in page
    )
    assert summary_sentence(results.trials).startswith(
        "2 of 3 finished trials learned nothing: 1 collapsed (one answer on more than half"
    )


def test_the_accuracy_table_marks_trials_and_holds_the_baselines_of_the_same_examples(study):
    results, folders, rows = study
    table = build_tables(results.trials)["accuracy_per_model"]
    frame = table.frame.set_index(["Model", "Config"])
    assert frame.loc[("Full fine-tuning", "main"), "Signal"] == "collapsed: 1 distinct answer, 100% on one"
    assert frame.loc[("LoRA", "main"), "Signal"] == "above chance"
    assert frame.loc[("QLoRA", "main"), "Signal"].startswith("chance level (majority answer: 30.0%)")
    assert ("LoRA", "socratic") not in frame.index  # a group not run is not a row
    baselines = table.baselines.set_index("Model")
    majority = baselines.loc["Chance: always 5, the majority answer (20 problems)"]
    low, high = bootstrap_ci([ref == "5" for ref in REFERENCES])
    assert (majority[ACC], majority[LOW], majority[HIGH]) == pytest.approx((30.0, 100 * low, 100 * high))
    last = baselines.loc["Chance: last number in the question (20 problems)"]
    low, high = bootstrap_ci([i in (0, 4, 8, 12) for i in range(20)])
    assert (last[ACC], last[LOW], last[HIGH]) == pytest.approx((20.0, 100 * low, 100 * high))
    assert majority["Config"] == "main" and majority["Test examples"] == 20

    markdown = table_markdown(table)
    assert "| *Chance: always 5, the majority answer (20 problems)* | *main* | *30.0* |" in markdown
    assert markdown.splitlines()[-1].endswith("| *chance* |")
    assert (
        '<tr class="chance"><td class="text">Chance: always 5, the majority answer (20 problems)</td>'
        in table_html(table)
    )
    assert r"Chance: last number in the question (20 problems) & main & 20.0" in table_latex(table)
    for key, built in build_tables(results.trials).items():
        assert "Signal" in built.frame or key == "published", key


def test_the_efficiency_chart_labels_a_parameter_axis_narrower_than_a_decade(study):
    results, _, _ = study
    trials = add_signal(results.trials)
    figure = efficiency_figure(trials, build_tables(trials)["efficiency"])
    figure.canvas.draw()
    for ax in figure.axes:
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            shown = [
                t.get_text()
                for t in axis.get_ticklabels()
                if low <= t.get_position()[axis is ax.yaxis] <= high
            ]
            assert len([t for t in shown if t.strip()]) >= 2, (ax.get_title(), axis.axis_name, shown)
    parameters = figure.axes[0]
    labels = [t.get_text() for t in parameters.xaxis.get_ticklabels()]
    assert parameters.get_xscale() == "log"  # 12,288 .. 18,000: no power of ten in view
    assert len(labels) >= 3 and all(label.endswith("k") for label in labels), labels


def test_learning_curves_come_from_each_reported_trials_reports(study):
    results, folders, _ = study
    tables = build_tables(results.trials)
    curves = attach_chance(curves_table(tables, results.history), results.trials).frame.set_index("trial")
    lora = curves.loc[_trial(results, folders["lora"])]
    assert (lora["Evaluations"], lora["First dev %"], lora["Last dev %"]) == (3, 20.0, 70.0)
    assert (lora["Examples seen"], lora["Still improving"]) == (4_500, "yes")
    full = curves.loc[_trial(results, folders["full"])]
    assert full["Still improving"] == "no" and math.isnan(full["Examples seen"])  # flat; an older result
    assert full["Signal"].startswith("collapsed")


@pytest.mark.slow
def test_the_report_counts_the_trials_that_learned_nothing_and_draws_their_curves(tmp_path):
    from analysis.report import build_report

    root = tmp_path / "slm-tiny"
    signal_study(root)
    report = build_report([str(root)], tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "2 of 3 finished trials learned nothing: 1 collapsed" in markdown
    assert (
        "## Learning curves of the reported trials" in markdown
        and "(figures/learning_curves.png)" in markdown
    )
    assert report.figures["learning_curves"].stat().st_size > 10_000
    html = (tmp_path / "report" / "report.html").read_text()
    # two rows under the accuracy, calculator and efficiency tables and the LoRA and QLoRA per-variant tables
    # (no CoT or stacked trial ran)
    assert html.count('<tr class="chance">') == 2 * 5
    with (tmp_path / "report" / "tables" / "accuracy_per_model.csv").open() as file:
        rows = {(r["Model"], r["Config"]): r for r in csv.DictReader(file)}
    assert float(rows[("Chance: always 5, the majority answer (20 problems)", "main")][ACC]) == pytest.approx(
        30.0
    )
    assert rows[("Full fine-tuning", "main")]["Signal"].startswith("collapsed")


# --- the end of `study.run` ------------------------------------------------------------------------------


def _result(trial_id, folder, metrics):
    return SimpleNamespace(metrics={"trial_id": trial_id, **metrics}, error=None, config={}, path=str(folder),
                           checkpoint=None)  # fmt: skip


def test_the_end_of_study_table_shows_the_baselines_and_warns_of_a_collapsed_best_trial(study, capsys):
    _, folders, rows = study
    full = summarize([_result("f1", folders["full"], {"dev/accuracy": 0.3, **metrics_of(rows["collapsed"])})],
                     method="full", data_config="main", metric="dev/accuracy", mode="max")  # fmt: skip
    lora = summarize([_result("l1", folders["lora"], {"dev/accuracy": 0.7, **metrics_of(rows["learned"])})],
                     method="lora", data_config="main", metric="dev/accuracy", mode="max")  # fmt: skip
    assert full.best["collapsed"] is True and lora.best["collapsed"] is False
    table = format_table([lora, full], metric="dev/accuracy").splitlines()
    assert "test answers" in table[0] and "COLLAPSED: 1 distinct answer, 100% on one" in table[2]
    majority = next(line for line in table if line.startswith("chance: always 5, the majority answer"))
    low, high = bootstrap_ci([ref == "5" for ref in REFERENCES])
    assert f"0.300 [{low:.3f}, {high:.3f}]" in majority and "same 20 test problems" in majority
    assert len(table) == 1 + 2 + 2  # both experiments share their test problems: one pair of chance rows

    print_summary([lora, full], metric="dev/accuracy", heading="best trial of each experiment:")
    out, err = capsys.readouterr()
    assert out.startswith("best trial of each experiment:\nmethod") and "chance: last number" in out
    assert err == (
        "warning: the best trial of full-main (f1) is collapsed (1 distinct answer, 100% on one): it learned "
        "nothing, and its accuracy is chance, not signal\n"
    )


def test_study_train_prints_the_baselines_of_its_test_problems_and_warns(study):
    _, folders, rows = study
    lines = trial_chance_lines(
        metrics_of(rows["chance"]), str(folders["qlora"]), method="qlora", data_config="main"
    )
    low, high = bootstrap_ci([ref == "5" for ref in REFERENCES])
    assert lines[0].startswith(
        f"chance on the same 20 test problems: always 5, the majority answer 0.300 [{low:.3f}, {high:.3f}]; "
    )
    assert lines[1].startswith("warning: the trial of qlora-main (study.train) is not above chance")
    assert len(lines) == 2
    assert trial_chance_lines({}, "/no/such/folder", method="lora", data_config="main") == []


def test_a_trial_without_a_usable_generations_file_is_unknown_not_an_error(tmp_path):
    rows = [
        {"input": "Question: 1 and 2?", "prediction": "3", "extracted": str(i)} for i in range(20)
    ]  # no reference
    write_trial(
        tmp_path / "lora-main", trial_params("lora"), dev=[0.1], test=test_metrics(0.5), generations=rows
    )
    write_trial(tmp_path / "full-main", trial_params("full"), dev=[0.1], test=test_metrics(0.5))  # no file
    trials = add_signal(load_results([tmp_path]).trials)
    assert trials["signal"].tolist() == ["unknown", "unknown"]
    assert trials["test/distinct_answers"].tolist()[1] == 20  # counted from the file all the same
    assert summary_sentence(trials).endswith(
        "2 could not be compared with a baseline (no generations file with references)."
    )
