"""`tables/update_rank.csv` and its chart: each group's update ranks beside its accuracy, and words where
the update depends on the input."""

from __future__ import annotations

import pytest
from test_analysis import test_metrics, trial_params, write_trial

from analysis.load import load_results
from analysis.update_rank import INPUT_DEPENDENT, plot_update_rank, update_rank_table

RANKS = {"update/numerical_rank": 7.0, "update/effective_rank": 5.5}


def _study(root):
    stacked = root / "stacked-main"
    write_trial(
        stacked,
        trial_params(
            "stacked", strategy={"baseline": "stacked", "f": "sin", "omega": 100.0, "f_space": "weight"}
        ),
        dev=[0.3, 0.4],
        test=test_metrics(0.42)
        | RANKS
        | {"update/product_numerical_rank": 4.0, "update/product_effective_rank": 3.2},
    )
    write_trial(
        stacked,
        trial_params("stacked", strategy={"baseline": "stacked", "f": "relu", "f_space": "activation"}),
        dev=[0.3, 0.35],
        test=test_metrics(0.30)
        | {
            "update/input_dependent": 1.0,
            "update/product_numerical_rank": 4.0,
            "update/product_effective_rank": 3.0,
        },
    )
    write_trial(
        root / "lora-main",
        trial_params("lora", strategy={"variant": "dora"}),
        dev=[0.2, 0.25],
        test=test_metrics(0.27) | {"update/numerical_rank": 32.0, "update/effective_rank": 12.25},
    )
    write_trial(root / "full-main", trial_params("full", strategy={}), dev=[0.4, 0.5], test=test_metrics(0.5))


def test_each_group_has_its_ranks_f_and_accuracy(tmp_path):
    _study(tmp_path)
    table = update_rank_table(load_results([str(tmp_path)]).trials, metric="dev/accuracy", mode="max")
    rows = {(r["group"], r["family"]): r for r in table.frame.to_dict("records")}
    assert {"group", "f", "numerical_rank", "effective_rank", "accuracy"} <= set(table.frame.columns)
    sin = rows[("f = sin", "stacked")]
    assert sin["f"] == "sin"
    assert (sin["numerical_rank"], sin["effective_rank"], sin["accuracy"]) == (7.0, 5.5, 42.0)
    assert (sin["product_numerical_rank"], sin["product_effective_rank"]) == (4.0, 3.2)
    relu = rows[("f = relu", "stacked")]
    assert relu["numerical_rank"] == relu["effective_rank"] == INPUT_DEPENDENT
    assert relu["product_numerical_rank"] == 4.0  # s2 B2 A2 is still a matrix
    lora = rows[("DoRA", "lora_variants")]
    assert lora["f"] == "-"
    assert (lora["numerical_rank"], lora["effective_rank"], lora["accuracy"]) == (32.0, 12.25, 27.0)
    full = rows[("Full fine-tuning", "method")]
    assert (
        table.cell(table.frame.index[table.frame["group"] == "Full fine-tuning"][0], "numerical_rank") == "-"
    )
    assert full["accuracy"] == 50.0


def test_the_chart_places_groups_with_a_rank_and_names_the_others(tmp_path):
    _study(tmp_path / "results")
    table = update_rank_table(
        load_results([str(tmp_path / "results")]).trials, metric="dev/accuracy", mode="max"
    )
    path = plot_update_rank(table, tmp_path / "update_rank.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.mark.parametrize("column", ["numerical_rank", "effective_rank"])
def test_a_study_from_before_the_measurement_prints_no_number(tmp_path, column):
    write_trial(tmp_path / "lora-main", trial_params("lora"), dev=[0.2, 0.3], test=test_metrics(0.3))
    table = update_rank_table(load_results([str(tmp_path)]).trials, metric="dev/accuracy", mode="max")
    assert table.cell(0, column) == "-"
