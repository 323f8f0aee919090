"""The rank of a learned update: the two measures on known matrices, each method's update read from its
layers (LoRA's s B A, DoRA's whole update, stacked LoRA's f(s2 B2 A2) beside s2 B2 A2), and a trial's report."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from test_stacked_lora import tiny_t5

from trainables.methods import get_strategy
from trainables.methods.stacked_lora import (
    StackedLoraConfig,
    apply_stacked_lora,
    stacked_layers,
    start_stage2,
)
from trainables.scoring.update_rank import (
    RANK_TOLERANCE,
    Updates,
    effective_rank,
    numerical_rank,
    singular_values,
    update_rank_metrics,
)
from trainables.training.reporting import LocalReporter
from trainables.trial import run_trial, update_rank_measure
from trainables.trial_config import TrialConfig


def test_numerical_rank_counts_singular_values_above_the_relative_tolerance():
    assert numerical_rank(singular_values(torch.diag(torch.tensor([2.0, 1.0, 1.0, 0.0])))) == 3
    assert numerical_rank(torch.tensor([1.0, 0.5 * RANK_TOLERANCE])) == 1
    assert numerical_rank(torch.tensor([1.0, 2 * RANK_TOLERANCE])) == 2
    assert numerical_rank(singular_values(torch.zeros(3, 4))) == 0
    rank_one = torch.outer(torch.arange(1.0, 6.0), torch.arange(1.0, 4.0))
    assert numerical_rank(singular_values(1e-6 * rank_one)) == 1  # relative: the size does not matter


def test_effective_rank_is_roy_and_vetterli_entropy_rank():
    p = torch.tensor([0.75, 0.25])
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert effective_rank(torch.ones(5)) == pytest.approx(5.0)
    assert effective_rank(torch.tensor([2.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(3)) == 0.0


def test_trial_metrics_are_medians_over_layers_and_say_when_the_update_depends_on_the_input():
    updates = Updates(
        update={"a": torch.eye(4), "b": torch.diag(torch.tensor([1.0, 1, 0, 0])), "c": torch.zeros(4, 4)}
    )
    metrics, details = update_rank_metrics(updates)
    assert metrics == {"update/numerical_rank": 2.0, "update/effective_rank": pytest.approx(2.0)}
    assert details["tolerance"] == RANK_TOLERANCE and details["update"]["a"]["singular_values"] == [1.0] * 4
    metrics, _ = update_rank_metrics(Updates(product={"a": torch.eye(3)}, input_dependent=True))
    assert metrics == {"update/input_dependent": 1.0, "update/product_numerical_rank": 3.0,
                       "update/product_effective_rank": pytest.approx(3.0)}  # fmt: skip


def perturbed(model):
    """Every adapter weight random, as after training (B leaves zero, DoRA's magnitude moves)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("variant", ["lora", "rslora", "dora"])
def test_a_peft_layer_update_is_what_merging_adds_to_w0(variant):
    strategy = get_strategy("lora")
    config = strategy.make_config({"variant": variant, "r": 2, "target_modules": "q,wi"})
    model = perturbed(strategy.apply(tiny_t5(), config, None))
    updates = strategy.weight_updates(model, config)
    merged = copy.deepcopy(model).merge_and_unload()
    w0 = tiny_t5()
    assert len(updates.update) == 6 + 4  # q: 2 encoder, 2 decoder self- and 2 cross-attentions; wi: 4 blocks
    for name, delta in updates.update.items():
        plain = name.removeprefix("base_model.model.")
        expected = merged.get_submodule(plain).weight - w0.get_submodule(plain).weight
        torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-6)
        layer = model.get_submodule(name)
        s = layer.scaling["default"]
        low_rank = s * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        if variant == "dora":  # the magnitude rescales W0 + s B A: more than the rank-2 product
            assert numerical_rank(singular_values(delta)) > 2
        else:
            torch.testing.assert_close(delta, low_rank)
    assert updates.product == {} and not updates.input_dependent


def stacked_model(**settings):
    config = StackedLoraConfig(r1=2, r2=2, target_modules=("q", "v"), **settings)
    model = apply_stacked_lora(tiny_t5(), config)
    start_stage2(model)
    with torch.no_grad():
        for layer in stacked_layers(model).values():
            layer.lora_B2.normal_(std=0.5)
    return model


def test_stacked_update_is_f_of_the_product_beside_the_product():
    from trainables.methods.stacked import StackedStrategyConfig

    config = StackedStrategyConfig(r1=2, r2=2, f="sin", omega=100.0, target_modules=("q", "v"))
    model = stacked_model(f="sin", omega=100.0)
    updates = get_strategy("stacked").weight_updates(model, config)
    for name, layer in stacked_layers(model).items():
        product = layer.config.scaling2 * layer.lora_B2 @ layer.lora_A2
        torch.testing.assert_close(updates.product[name], product)
        torch.testing.assert_close(updates.update[name], torch.sin(100.0 * product) / 32**0.5)
    metrics, _ = update_rank_metrics(updates)
    assert metrics["update/product_numerical_rank"] == 2.0
    assert metrics["update/numerical_rank"] > 2.0  # sin raised the rank of the rank-2 product


def test_an_activation_space_update_has_no_matrix_to_measure():
    from trainables.methods.stacked import StackedStrategyConfig

    config = StackedStrategyConfig(r1=2, r2=2, f="relu", f_space="activation", target_modules=("q", "v"))
    updates = get_strategy("stacked").weight_updates(stacked_model(f="relu", f_space="activation"), config)
    assert updates.input_dependent and updates.update == {} and len(updates.product) == 12


def test_the_last_report_of_a_trial_carries_the_update_rank_and_its_folder_the_layers(
    micro_t5_dir, micro_splits, tmp_path
):
    trial = TrialConfig.from_dict(
        {
            "method": "lora",
            "model": str(micro_t5_dir),
            "data_config": "main",
            "strategy": {"variant": "loraplus", "r": 2, "loraplus_lr_ratio": 4.0},
            "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3, "max_input_tokens": 64, "max_target_tokens": 48,
                      "prompt_style": "answer_only", "eval": {"max_new_tokens": 8, "metrics": ["accuracy"]}},
        }
    )  # fmt: skip
    reporter = LocalReporter(tmp_path, echo=None)
    final = run_trial(trial, splits={"main": micro_splits}, reporter=reporter, log=lambda message: None)
    assert 1 <= final["update/numerical_rank"] <= 2 and 1 <= final["update/effective_rank"] <= 2
    details = json.loads((tmp_path / "update_rank.json").read_text())
    assert len(details["update"]) == 2 * 6  # q and v: 2 encoder, 2 decoder self- and 2 cross-attentions
    assert update_rank_measure("full", None) is None  # full fine-tuning has no low-rank update to measure
