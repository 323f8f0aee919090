"""Loading Ray Tune result folders, choosing trials by dev, and the tables built from them.

The helpers below write trial folders the way Ray Tune 2.60 does (checked against a real `tune.Tuner` run):
`params.json` indented with sorted keys, `result.json` with one JSON object per report holding Ray's own keys
and the (flat) config, `progress.csv`, and for a crash `error.txt` / `error.pkl` with an empty `result.json`.
Other test modules import them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.diagnostics import diagnose, param_importances, search_history, search_table
from analysis.groups import group_column, with_groups
from analysis.load import DEFAULT_EPOCHS, DEFAULT_EVALS_PER_EPOCH, DEFAULT_PROMPT_STYLE, load_results
from analysis.published import TABLE_ONE
from analysis.select import choose
from analysis.table import ACC, CALC, HIGH, LOW, PPL, PUBLISHED, ROUGE, SIM
from analysis.tables import build_tables
from trainables.comparison import method_label
from trainables.methods import method_names

RAY_CONTEXT = {"pid": 4242, "hostname": "node-1", "node_ip": "10.0.0.2"}
_COUNTER = {"n": 0}


def trial_params(method: str, config: str = "main", **groups) -> dict:
    """A flat trial config as `study` builds it; `train=` / `strategy=` entries update the defaults."""
    train = {"lr": 1e-3, "epochs": 2, "batch_size": 16, "seed": 0, "eval/max_new_tokens": 64}
    train.update(groups.get("train", {}))
    strategy = {"r": 8, "alpha": 16, "target_modules": ["q", "v"]}
    strategy.update(groups.get("strategy", {}))
    return {
        "method": method,
        "model": "t5-small",
        "data_config": config,
        **{f"strategy/{key}": value for key, value in strategy.items()},
        **{f"train/{key}": value for key, value in train.items()},
    }


def test_metrics(
    accuracy: float, *, rouge1=0.5, perplexity=3.0, similarity=0.8, n=96, calculator=None
) -> dict:
    """The metrics the last report adds (`test/...`)."""
    metrics = {
        "test/accuracy": accuracy,
        "test/accuracy_low": max(accuracy - 0.05, 0.0),
        "test/accuracy_high": min(accuracy + 0.05, 1.0),
        "test/perplexity": perplexity,
        "test/rouge1": rouge1,
        "test/similarity": similarity,
        "test/n": n,
    }
    if calculator is not None:
        metrics |= {
            "test/accuracy_calculator": calculator,
            "test/accuracy_calculator_low": calculator - 0.04,
            "test/accuracy_calculator_high": calculator + 0.04,
        }
    return metrics


test_metrics.__test__ = False  # a helper, not a test


def write_trial(
    experiment: Path,
    params: dict,
    *,
    dev: list[float],
    test: dict | None = None,
    error: str | None = None,
    seconds_per_report: float = 30.0,
    trainable: int = 1000,
    generations: list[dict] | None = None,
    calculator_generations: list[dict] | None = None,
) -> Path:
    """One trial folder in Ray Tune's on-disk format; `dev` holds the dev accuracy of each report."""
    _COUNTER["n"] += 1
    trial_id = f"a4339_{_COUNTER['n']:05d}"
    folder = experiment / f"math_trainable_{trial_id}_{_COUNTER['n']}_2026-11-29_09-24-14"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    reports = []
    for i, accuracy in enumerate(dev, start=1):
        report = {
            "epoch": float(i),
            "step": 10 * i,
            "train/loss": 2.0 / i,
            "train/examples_per_s": 100.0,
            "dev/accuracy": accuracy,
            "dev/perplexity": 3.5 - accuracy,
            "dev/rouge1": 0.4,
            "dev/similarity": 0.7,
            "params/trainable": trainable,
            "params/total": 100_000,
            "memory/peak_mb": 500.0 + i,
        }
        if i == len(dev) and test is not None:
            report |= test
        report |= {
            "timestamp": int(1_795_944_256 + 1000 * _COUNTER["n"] + seconds_per_report * i),
            "checkpoint_dir_name": f"checkpoint_{i - 1:06d}",
            "done": False,
            "training_iteration": i,
            "trial_id": trial_id,
            "date": "2026-11-29_09-24-16",
            "time_this_iter_s": seconds_per_report,
            "time_total_s": seconds_per_report * i,
            **RAY_CONTEXT,
            "config": params,
            "time_since_restore": seconds_per_report * i,
            "iterations_since_restore": i,
        }
        reports.append(report)
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in reports))
    if reports:
        columns = [k for k in reports[0] if k != "config"] + [k for k in reports[-1] if k not in reports[0]]
        with (folder / "progress.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(reports)
    if error is not None:
        (folder / "error.txt").write_text(
            f"Failure # 1 (occurred at 2026-11-29_09-24-19)\nTraceback ...\n{error}\n"
        )
        (folder / "error.pkl").write_bytes(b"\x80\x05N.")
    if generations is not None:
        (folder / "generations_test.jsonl").write_text("".join(json.dumps(g) + "\n" for g in generations))
    if calculator_generations is not None:
        text = "".join(json.dumps(g) + "\n" for g in calculator_generations)
        (folder / "generations_test_calculator.jsonl").write_text(text)
    return folder


def generation(correct: bool, prediction: str = "5 + 3 = 8 #### 8") -> dict:
    """One row of `generations_test.jsonl`."""
    return {
        "input": "Tom has 5 apples and buys 3. How many?",
        "target": "5 + 3 = <<5+3=8>>8 #### 8",
        "prediction": prediction,
        "program_output": None,
        "extracted": "8" if correct else "7",
        "reference": "8",
        "correct": correct,
    }


def write_study(root: Path, *, data_source: str = "hub") -> dict[str, Path]:
    """A small study covering every table, on GSM8K from the hub (`data_source`, as `study.run` records it in
    `study.json`) with T5-small: returns the folders of the trials the tests look at."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.json").write_text(json.dumps({"methods": ["all"], "data_source": data_source}))
    s = {}
    lora = root / "lora-main"
    # dev picks `lora_best` (0.30 > 0.25) although the other trial tests higher
    s["lora_best"] = write_trial(
        lora,
        trial_params("lora", train={"lr": 1e-3}),
        dev=[0.2, 0.3],
        test=test_metrics(0.31, rouge1=0.41, perplexity=3.2, similarity=0.75, calculator=0.35),
        generations=[generation(True), generation(False)],
        calculator_generations=[generation(True), generation(True)],
    )
    s["lora_test_higher"] = write_trial(
        lora, trial_params("lora", train={"lr": 3e-4}), dev=[0.2, 0.25], test=test_metrics(0.5)
    )
    s["lora_stopped"] = write_trial(lora, trial_params("lora", train={"lr": 3e-3}), dev=[0.9])  # ASHA: 1 of 2
    s["lora_error"] = write_trial(
        lora, trial_params("lora", train={"lr": 1e-2}), dev=[], error="RuntimeError: boom"
    )
    s["full_main"] = write_trial(
        root / "full-main",
        trial_params("full", strategy={}),
        dev=[0.4, 0.45],
        test=test_metrics(0.44),
        trainable=100_000,
    )
    cot = root / "lora_cot-socratic"
    for style, accuracy in (("breakdown", 0.2), ("code", 0.26), ("no_breakdown", 0.15)):
        calc = 0.3 if style == "breakdown" else None
        s[f"cot_{style}"] = write_trial(
            cot,
            trial_params("lora_cot", "socratic", train={"prompt_style": style}),
            dev=[accuracy, accuracy],
            test=test_metrics(accuracy + 0.01, calculator=calc),
        )
    stacked = root / "stacked-main"
    for f, accuracy in (("relu", 0.3), ("gelu", 0.35)):
        s[f"stacked_{f}"] = write_trial(
            stacked,
            trial_params(
                "stacked", strategy={"baseline": "stacked", "f": f, "f_space": "weight", "r1": 8, "r2": 8}
            ),
            dev=[accuracy, accuracy],
            test=test_metrics(accuracy - 0.02, rouge1=0.33),
        )
    s["stacked_linear"] = write_trial(
        stacked,
        trial_params("stacked", strategy={"baseline": "linear", "r1": 8, "r2": 8}),
        dev=[0.5, 0.6],  # the best stacked-method trial by dev, but a baseline: not Table 1's stacked row
        test=test_metrics(0.55),
    )
    return s


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "slm-tiny"
    return root, write_study(root)


def _row(results, folder: Path) -> pd.Series:
    rows = results.trials[results.trials["trial_dir"] == str(folder)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_loader_reads_every_trial_with_its_settings_metrics_and_status(study):
    root, s = study
    results = load_results([root])
    assert len(results.trials) == 11
    best = _row(results, s["lora_best"])
    assert (best["method"], best["config"], best["prompt_style"]) == ("lora", "main", DEFAULT_PROMPT_STYLE)
    assert best["config/train/lr"] == 1e-3 and best["config/strategy/target_modules"] == "q,v"
    assert best["config/train/eval/max_new_tokens"] == 64
    assert best["test/rouge1"] == 0.41 and best["dev/accuracy"] == 0.3  # the last report's values
    assert best["time_total_s"] == 60.0 and math.isclose(best["hours"], 60.0 / 3600)
    assert best["params/trainable"] == 1000 and best["peak_memory_mb"] == 502.0
    assert best["iterations"] == 2 and best["max_iterations"] == 2
    assert best["generations"] == str(s["lora_best"] / "generations_test.jsonl")
    statuses = {
        name: _row(results, s[name])["status"] for name in ("lora_best", "lora_stopped", "lora_error")
    }
    assert statuses == {"lora_best": "finished", "lora_stopped": "early_stopped", "lora_error": "error"}
    assert _row(results, s["lora_error"])["error"] == "RuntimeError: boom"
    assert _row(results, s["cot_code"])["prompt_style"] == "code"
    assert _row(results, s["stacked_gelu"])["config/strategy/f"] == "gelu"
    history = results.history[results.history["trial"] == best["trial"]]
    assert history["dev/accuracy"].tolist() == [0.2, 0.3] and history["training_iteration"].tolist() == [1, 2]


def test_an_old_nested_params_json_reads_as_its_flat_form(tmp_path):
    """Studies written before the trial config was flat hold it nested in `params.json`: same row."""
    flat = trial_params("lora_cot", train={"prompt_style": "code", "epochs": 3, "evals_per_epoch": 2})
    nested: dict = {}
    for key, value in flat.items():
        *groups, name = key.split("/")
        node = nested
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = value
    assert nested["train"]["eval"] == {"max_new_tokens": 64}  # an old study's shape
    rows = {}
    for name, params in (("flat", flat), ("nested", nested)):
        write_trial(tmp_path / name / "lora_cot-main", params, dev=[0.2, 0.3], test=test_metrics(0.3))
        [rows[name]] = load_results([tmp_path / name]).trials.to_dict("records")
    shown = ("prompt_style", "max_iterations", "config/train/lr", "config/strategy/target_modules")
    assert [rows["nested"][k] for k in shown] == [rows["flat"][k] for k in shown] == ["code", 6, 1e-3, "q,v"]
    config = {k for k in rows["flat"] if k.startswith("config/")}
    assert {k for k in rows["nested"] if k.startswith("config/")} == config


def test_a_retried_trial_that_finished_is_finished_and_an_interrupted_one_incomplete(tmp_path):
    experiment = tmp_path / "lora-main"
    retried = write_trial(
        experiment, trial_params("lora"), dev=[0.1, 0.2], test=test_metrics(0.2), error="OOM"
    )
    running = write_trial(experiment, trial_params("lora"), dev=[0.1])
    state = {"trial_data": [[json.dumps({"relative_logdir": running.name, "status": "RUNNING"}), "{}"]]}
    (experiment / "experiment_state-2026-11-29_09-24-14.json").write_text(json.dumps(state))
    results = load_results([tmp_path])
    assert _row(results, retried)["status"] == "finished"
    assert _row(results, running)["status"] == "incomplete"


def test_a_truncated_last_line_is_skipped_but_a_corrupt_middle_line_makes_the_trial_unreadable(tmp_path):
    folder = write_trial(tmp_path / "lora-main", trial_params("lora"), dev=[0.1, 0.2], test=test_metrics(0.2))
    text = (folder / "result.json").read_text()
    (folder / "result.json").write_text(text + '{"epoch": 3, "dev/acc')
    assert load_results([tmp_path]).trials.iloc[0]["status"] == "finished"
    lines = text.splitlines()
    (folder / "result.json").write_text(lines[0][:20] + "\n" + lines[1] + "\n")
    trial = load_results([tmp_path]).trials.iloc[0]
    assert trial["status"] == "unreadable" and trial["error"].startswith("cannot parse line 1 of result.json")


def test_bad_locations_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="results folder not found"):
        load_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no Ray Tune trials"):
        load_results([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no results folder given"):
        load_results([])


def test_a_storage_uri_reads_the_same_trials(study):
    root, _ = study
    local, uri = load_results([root]).trials, load_results([root.as_uri()]).trials
    assert sorted(local["trial"]) == sorted(uri["trial"])
    assert local.set_index("trial")["test/accuracy"].equals(uri.set_index("trial")["test/accuracy"])


def test_two_roots_are_told_apart_and_an_overlap_is_refused(tmp_path):
    for name in ("a", "b"):
        write_trial(
            tmp_path / name / "lora-main", trial_params("lora"), dev=[0.1, 0.2], test=test_metrics(0.2)
        )
    results = load_results([tmp_path / "a", tmp_path / "b"])
    assert sorted(t.split("/")[0] for t in results.trials["trial"]) == ["a", "b"]
    with pytest.raises(ValueError, match="found twice"):
        load_results([tmp_path, tmp_path / "a"])


def test_the_best_trial_is_chosen_by_dev_among_finished_trials_never_by_test(study):
    root, s = study
    trials = load_results([root]).trials
    lora = trials[trials["method"] == "lora"]
    best = choose(lora, ("method", "config"))
    assert best.row("lora", "main")["trial_dir"] == str(
        s["lora_best"]
    )  # not the higher-test one, not the stopped one
    assert list(best.counts.values()) == [(4, 2)]
    by_perplexity = choose(lora, ("method",), metric="dev/perplexity", mode="min")
    assert by_perplexity.row("lora")["trial_dir"] == str(s["lora_best"])  # 3.5 - 0.30 < 3.5 - 0.25
    with pytest.raises(ValueError, match="test split"):
        choose(trials, ("method",), metric="test/accuracy")
    with pytest.raises(ValueError, match="no trial reported 'dev/bleu'"):
        choose(trials, ("method",), metric="dev/bleu")


def test_a_tie_on_dev_goes_to_the_first_trial_by_name_whatever_the_reading_order(tmp_path):
    experiment = tmp_path / "lora-main"
    first = write_trial(experiment, trial_params("lora"), dev=[0.5, 0.5], test=test_metrics(0.1))
    write_trial(experiment, trial_params("lora"), dev=[0.5, 0.5], test=test_metrics(0.9))
    trials = load_results([tmp_path]).trials
    for order in (trials, trials.iloc[::-1]):
        assert choose(order, ("method",)).row("lora")["trial_dir"] == str(first)


def test_every_trial_gets_its_groups_from_its_method_record(study):
    root, s = study
    trials = with_groups(load_results([root]).trials)
    groups = {
        name: _row(trials_of(trials), s[name]) for name in ("stacked_gelu", "stacked_linear", "cot_code")
    }
    assert groups["stacked_gelu"][group_column("method")] == "stacked"
    assert groups["stacked_gelu"][group_column("stacked")] == "f=gelu"
    # a variant is its own group, and not the method itself
    assert pd.isna(groups["stacked_linear"][group_column("method")])
    assert groups["stacked_linear"][group_column("stacked")] == "linear"
    assert groups["cot_code"][group_column("cot")] == "code"


def trials_of(trials: pd.DataFrame):
    """`_row` reads `.trials`: a frame stands for the results it came from."""
    return type("Results", (), {"trials": trials})


def test_table1_shows_the_chosen_trials_test_numbers_beside_the_published_ones(study):
    root, s = study
    results = load_results([root])
    table = build_tables(results.trials)["table1_models"]
    frame = table.frame.set_index(["Model", "Config"])
    lora = frame.loc[("LoRA", "main")]
    chosen = _row(results, s["lora_best"])
    assert lora["trial"] == chosen["trial"]
    assert (lora[ROUGE], lora[PPL], lora[SIM]) == (0.41, 3.2, pytest.approx(75.0))
    assert (lora[ROUGE + PUBLISHED], lora[PPL + PUBLISHED], lora[SIM + PUBLISHED]) == (0.5084, 3.2633, 79.70)
    assert (lora["Trials"], lora["Finished"]) == (4, 2)
    stacked = frame.loc[("Stacked LoRA", "main")]
    assert stacked["trial"] == _row(results, s["stacked_gelu"])["trial"]  # the linear variant is not this row
    assert stacked[ROUGE] == 0.33
    # the methods that ran, in the registry's order; those that did not are listed under the table
    ran = set(zip(results.trials["method"], results.trials["config"], strict=True))
    expected = [(method_label(m), c) for m in method_names() for c in ("main", "socratic") if (m, c) in ran]
    assert list(frame.index) == expected
    missing = [method_label(m) for m in method_names() if m not in {m for m, _ in ran}]
    assert missing and table.note.endswith(f"Not run: {', '.join(missing)}.")
    assert table.on == "Data: GSM8K main, GSM8K socratic; base model: T5-small."
    # QLoRA's published row has no run of ours beside it: the reference table holds every published number
    assert len(TABLE_ONE) == 7 and len(build_tables(results.trials)["published"].frame) == 7 + 2


def test_a_group_whose_trials_failed_is_a_failed_row_never_a_zero(study):
    root, _ = study
    write_trial(root / "qlora-main", trial_params("qlora"), dev=[], error="RuntimeError: out of memory")
    table = build_tables(load_results([root]).trials)["table1_models"]
    index = table.frame.index[(table.frame["Model"] == "QLoRA") & (table.frame["Config"] == "main")][0]
    assert math.isnan(table.frame.at[index, ROUGE]) and pd.isna(table.frame.at[index, "trial"])
    assert table.cell(index, ROUGE) == "failed" and table.cell(index, SIM) == "failed"
    assert table.cell(index, ROUGE + PUBLISHED) == "-"  # no number of ours to set it beside
    assert "0.0000" not in table.text_frame().loc[index].tolist()


def test_published_numbers_stand_beside_ours_only_on_the_published_data_and_base(tmp_path):
    """The tiny preset's generated problems on a tiny base: no published column anywhere; the published
    numbers are in one reference table, and every table says what its trials ran on."""
    root = tmp_path / "slm-tiny"
    write_study(root, data_source="embedded")
    tables = build_tables(load_results([root]).trials)
    assert not [(k, c) for k, t in tables.items() for c in t.frame.columns if c.endswith(PUBLISHED)]
    reference = tables["published"].frame.set_index(["Published row", "Config"])
    assert (
        reference.loc[("LoRA", "main"), ROUGE] == 0.5084
        and reference.loc[("QLoRA", "main"), "Base model"] == "T5-base"
    )
    assert reference.loc[("Full fine-tuning", "main"), ACC] == 45.0
    assert tables["accuracy_per_model"].on.startswith(
        "Data: generated GSM8K-style problems; base model: T5-small"
    )


def test_accuracy_cot_calculator_and_stacked_tables_hold_the_chosen_trials_numbers(study):
    root, s = study
    results = load_results([root])
    tables = build_tables(results.trials)
    accuracy = tables["accuracy_per_model"].frame.set_index(["Model", "Config"])
    full = accuracy.loc[("Full fine-tuning", "main")]
    assert (full[ACC], full[LOW], full[HIGH], full[ACC + PUBLISHED]) == pytest.approx(
        (44.0, 39.0, 49.0, 45.0)
    )
    cot = tables["cot_styles"].frame.set_index(["Config", "Prompt style"])
    assert cot.loc[("socratic", "code"), ACC] == pytest.approx(27.0)
    assert cot.loc[("socratic", "code"), ACC + PUBLISHED] == 18.2
    assert cot.loc[("socratic", "breakdown"), CALC] == pytest.approx(30.0)
    assert ("main", "code") not in cot.index  # a style not run is not a row
    assert "answer_only (socratic)" in tables["cot_styles"].note
    calculator = tables["calculator"].frame.set_index(["Model", "Config"])
    row = calculator.loc[("LoRA", "main")]
    assert (row[ACC], row[CALC], row["Calculator gain (points)"]) == pytest.approx((31.0, 35.0, 4.0))
    stacked = tables["stacked_lora"].frame.set_index("Variant")
    assert (
        stacked.loc["f = gelu", ACC] == pytest.approx(33.0) and stacked.loc["f = gelu", "f space"] == "weight"
    )
    assert stacked.loc["Linear stack (no f)", ACC] == pytest.approx(55.0)
    assert "f = tanh" not in stacked.index and "f = tanh (main)" in tables["stacked_lora"].note


def test_efficiency_and_search_tables_count_every_trial(study):
    root, s = study
    tables = build_tables(load_results([root]).trials)
    efficiency = tables["efficiency"].frame.set_index(["Model", "Config"])
    lora = efficiency.loc[("LoRA", "main")]
    assert lora["Trainable parameters"] == 1000 and lora["Trainable share %"] == pytest.approx(1.0)
    assert lora["Search hours"] == pytest.approx((60 + 60 + 30 + 0) / 3600)
    search = search_table(load_results([root]).trials, metric="dev/accuracy", mode="max").frame
    search = search.set_index(["Method", "Config"])
    assert search.loc[("lora", "main"), ["Trials", "Finished", "Early stopped", "Error"]].tolist() == [
        4,
        2,
        1,
        1,
    ]


@pytest.mark.slow
def test_importance_needs_enough_trials_and_names_what_varied(tmp_path):
    experiment = tmp_path / "lora-main"
    for i, (lr, r) in enumerate([(1e-4, 4), (3e-4, 8), (1e-3, 4), (3e-3, 16), (1e-2, 8), (2e-3, 4)]):
        accuracy = 0.1 + 0.05 * i
        write_trial(experiment, trial_params("lora", train={"lr": lr}, strategy={"r": r}), dev=[accuracy, accuracy],
                    test=test_metrics(accuracy))  # fmt: skip
    trials = load_results([tmp_path]).trials
    importances, reason = param_importances(trials, metric="dev/accuracy", mode="max")
    assert reason == "" and set(importances) == {"train/lr", "strategy/r"}
    assert sum(importances.values()) == pytest.approx(1.0)


def test_importance_of_too_few_trials_says_so_instead_of_failing(tmp_path):
    write_trial(tmp_path / "lora-main", trial_params("lora"), dev=[0.1, 0.1], test=test_metrics(0.1))
    (diagnostics,) = diagnose(load_results([tmp_path]).trials, metric="dev/accuracy", mode="max")
    assert diagnostics.importances == {} and diagnostics.reason.startswith(
        "not enough trials (1 with dev/accuracy"
    )
    assert diagnostics.history["best_so_far"].tolist() == [0.1]


def test_search_history_keeps_the_best_so_far_and_skips_failed_trials(study):
    root, _ = study
    trials = load_results([root]).trials
    history = search_history(trials[trials["method"] == "lora"], metric="dev/accuracy", mode="max")
    assert history["value"].tolist()[:3] == [0.3, 0.25, 0.9]
    assert history["best_so_far"].tolist()[:3] == [0.3, 0.3, 0.9]
    assert history["status"].tolist()[3] == "error" and math.isnan(history["value"].iloc[3])


def test_the_search_order_comes_from_rays_experiment_state_when_there_is_one(tmp_path):
    experiment = tmp_path / "lora-main"
    first = write_trial(experiment, trial_params("lora"), dev=[0.1, 0.1], test=test_metrics(0.1))
    second = write_trial(experiment, trial_params("lora"), dev=[0.4, 0.4], test=test_metrics(0.4))
    (history,) = [
        d.history for d in diagnose(load_results([tmp_path]).trials, metric="dev/accuracy", mode="max")
    ]
    assert history["value"].tolist() == [0.1, 0.4]  # by start time
    entries = [
        [json.dumps({"relative_logdir": f.name, "status": "TERMINATED"}), "{}"] for f in (second, first)
    ]
    (experiment / "experiment_state-2026-11-29_09-24-14.json").write_text(json.dumps({"trial_data": entries}))
    (history,) = [
        d.history for d in diagnose(load_results([tmp_path]).trials, metric="dev/accuracy", mode="max")
    ]
    assert history["value"].tolist() == [0.4, 0.1] and history["best_so_far"].tolist() == [0.4, 0.4]


@pytest.mark.slow
def test_the_loaders_defaults_are_the_training_loops():
    from trainables.training.train_config import TrainConfig

    defaults = TrainConfig()
    assert (defaults.prompt_style, defaults.epochs, defaults.evals_per_epoch) == (
        DEFAULT_PROMPT_STYLE,
        DEFAULT_EPOCHS,
        DEFAULT_EVALS_PER_EPOCH,
    )
