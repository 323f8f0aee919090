"""The report's confirmation part on synthetic confirmation runs written in Ray Tune's format.

`write_confirmation` lays out `<study>/confirm/` as `study.confirm` does: `confirm.json`, then one experiment
per re-run trial with one trial folder per seed, each with its `generations_test.jsonl`.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from test_analysis import test_metrics, trial_params, write_study, write_trial

from analysis import confirm
from analysis.load import load_results
from analysis.pairwise import confirmation_tables

INSTRUCTION = {"breakdown": "Solve the math question step by step.", "code": "Write a Python program."}
SEEDS = [1, 2, 3]


def rows_for(correct: list[bool], *, style: str = "breakdown", shuffle: int | None = None) -> list[dict]:
    """Generations rows for questions 0..n-1; `shuffle` reorders the lines (pairing must not use the order)."""
    rows = [
        {
            "input": f"{INSTRUCTION.get(style, style)} Question: Problem number {i}?",
            "target": "x",
            "prediction": "y",
            "program_output": None,
            "extracted": str(i if ok else -1),
            "reference": str(i),
            "correct": ok,
        }
        for i, ok in enumerate(correct)
    ]
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
    return rows


def write_confirmation(study: Path, groups: dict[str, dict]) -> Path:
    """`groups`: group id -> {"label", "method", "correct": (seeds, n) 0/1, "style", "search", "drop"}."""
    root = study / "confirm"
    manifest = {"seeds": SEEDS, "split_seed": 0, "metric": "dev/accuracy", "mode": "max", "groups": {}}
    for group_id, g in groups.items():
        family, config, name = group_id.split("/")
        experiment = group_id.replace("/", "-")
        style = g.get("style", "breakdown")
        for seed, correct in zip(SEEDS, g["correct"], strict=True):
            rows = rows_for([bool(c) for c in correct], style=style, shuffle=seed)
            rows = [r for r in rows if r["reference"] not in g.get("drop", ())]
            accuracy = sum(r["correct"] for r in rows) / len(rows)
            write_trial(
                root / experiment,
                trial_params(g["method"], config, train={"seed": seed, "prompt_style": style}),
                dev=[accuracy],
                test=test_metrics(accuracy, n=len(rows)),
                generations=rows,
            )
        manifest["groups"][group_id] = {
            "family": family,
            "config": config,
            "name": name,
            "label": g["label"],
            "experiment": experiment,
            "trial": f"{experiment}-source",
            "trial_dir": str(g.get("source", "")),
            "search": {"test/accuracy": g.get("search", 0.9), "test/n": 40},
        }
    root.mkdir(parents=True, exist_ok=True)
    (root / "confirm.json").write_text(json.dumps(manifest))
    return root


def matrix(rate: float, n: int, *, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((len(SEEDS), n)) < rate).astype(int)


@pytest.fixture
def confirmed(tmp_path):
    study = tmp_path / "slm-tiny"
    folders = write_study(study)
    n = 300
    same = matrix(0.5, n, seed=7)
    groups = {
        "method/main/full": {
            "label": "Full fine-tuning",
            "method": "full",
            "correct": matrix(0.8, n, seed=1),
            "source": folders["full_main"],
        },
        "method/main/stacked": {
            "label": "Stacked LoRA",
            "method": "stacked",
            "correct": matrix(0.3, n, seed=2),
        },
        "cot/main/breakdown": {"label": "breakdown", "method": "lora_cot", "correct": same},
        # The same answers with another instruction, in another line order, 5 problems left out.
        "cot/main/code": {
            "label": "code",
            "method": "lora_cot",
            "correct": same,
            "style": "code",
            "drop": ("0", "1", "2", "3", "4"),
        },
    }
    root = write_confirmation(study, groups)
    return study, root


def test_the_study_loader_leaves_the_confirmation_runs_out(confirmed):
    study, root = confirmed
    trials = load_results([study]).trials
    assert not trials["trial_dir"].str.contains("/confirm/").any()
    assert len(load_results([root]).trials) == 4 * len(SEEDS)  # read from its own folder, they are there
    assert confirm.find([str(study)]) == str(root)
    assert confirm.find([str(study / "lora-main")]) is None


def test_pairs_by_question_across_instructions_and_line_orders(confirmed):
    _, root = confirmed
    confirmation = confirm.load(str(root))
    tables, frame = confirmation_tables(confirmation)
    cot = frame[frame["family"] == "cot"].iloc[0]
    # Identical answers on the 295 shared problems: no difference at all, whatever the line order.
    assert cot["n_examples"] == 295 and cot["n_seeds"] == 3
    assert cot["diff_points"] == 0 and cot["p_value"] == 1 and not cot["significant"]
    big = frame[frame["family"] == "method"].iloc[0]
    assert {big["group_a"], big["group_b"]} == {"Full fine-tuning", "Stacked LoRA"}
    sign = 1 if big["group_a"] == "Full fine-tuning" else -1
    assert 40 < sign * big["diff_points"] < 60 and big["significant"] and big["p_holm"] < 1e-6


def test_tables_per_group_and_the_claims_verdicts(confirmed):
    _, root = confirmed
    tables, frame = confirmation_tables(confirm.load(str(root)))
    groups = tables["confirm_groups"].frame.set_index("Group")
    full = groups.loc["Full fine-tuning"]
    assert full["Seeds"] == 3 and 70 < full["Mean accuracy %"] < 90
    assert full["Mean 95% CI low %"] < full["Mean accuracy %"] < full["Mean 95% CI high %"]
    assert full["Search's best %"] == pytest.approx(90.0)
    assert full["Selection gap (points)"] == pytest.approx(90.0 - full["Mean accuracy %"])
    claims = tables["claims"].frame.set_index("Claim")
    assert claims.loc["Stacked LoRA vs full fine-tuning", "Our verdict"].startswith(
        "Not supported: Stacked LoRA is significantly worse than Full fine-tuning"
    )
    code = claims.loc["Code style vs the other CoT styles", "Our verdict"]
    assert code.startswith("Not shown: code is not significantly better than breakdown")
    assert claims.loc["QLoRA on T5-base vs LoRA on T5-small", "Our verdict"].startswith("Not tested")
    # Holm over the whole table: 2 comparisons, the smaller p doubled.
    assert frame["p_holm"].min() == pytest.approx(min(1.0, 2 * frame["p_value"].min()))


def test_seeds_of_one_group_must_score_the_same_examples(tmp_path):
    study = tmp_path / "s"
    root = write_confirmation(
        study, {"method/main/lora": {"label": "LoRA", "method": "lora", "correct": matrix(0.5, 10, seed=0)}}
    )
    folder = sorted((root / "method-main-lora").iterdir())[-1]
    rows = rows_for([True] * 10)
    rows[0]["input"] = "Solve. Question: something else entirely?"
    (folder / "generations_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="scored other test examples"):
        confirm.load(str(root))


@pytest.mark.slow
def test_the_report_writes_the_pairwise_table_chart_and_claims(confirmed, tmp_path):
    from analysis.report import build_report

    study, _ = confirmed
    out = tmp_path / "report"
    report = build_report([str(study)], out)
    with (out / "tables" / "pairwise.csv").open() as file:
        rows = list(csv.DictReader(file))
    wanted = {
        "group_a",
        "group_b",
        "config",
        "diff_points",
        "ci_low",
        "ci_high",
        "p_value",
        "p_holm",
        "significant",
    }
    assert wanted <= set(rows[0]) and len(rows) == 2
    assert (out / "tables" / "pairwise.tex").read_text().count(r"\\") >= 3
    assert report.figures["pairwise"].read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "report.md").read_text()
    assert "## Pairwise comparisons on the confirmation runs" in markdown
    assert "Stacked LoRA vs full fine-tuning" in markdown and "(figures/pairwise.png)" in markdown
    assert "## Confirmation runs: accuracy over seeds" in markdown
    full = next(line for line in markdown.splitlines() if line.startswith("| Full fine-tuning | method"))
    assert "(generations/" in full  # linked to the search trial it re-ran
