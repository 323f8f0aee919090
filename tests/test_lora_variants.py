"""LoRA's variants through PEFT: each is PEFT's own model, saves with PEFT's flags and loads with
`PeftModel.from_pretrained`; LoRA+ is PEFT's optimiser; impossible combinations are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from test_stacked_lora import batch, tiny_t5  # the tiny T5 and batch every adapter test uses

from trainables.methods import get_strategy
from trainables.methods.lora import VARIANTS
from trainables.trial import method_optimizer

TARGETS = ("q", "v", "wi")
PEFT_FLAGS = {  # what PEFT itself is given for each variant: the parity reference
    "lora": {},
    "rslora": {"use_rslora": True},
    "dora": {"use_dora": True},
    "pissa": {"init_lora_weights": "pissa"},
    "olora": {"init_lora_weights": "olora"},
    "loraplus": {},
}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch()).logits


def ours(variant: str, **settings):
    strategy = get_strategy("lora")
    config = strategy.make_config(
        {"variant": variant, "r": 4, "target_modules": TARGETS, "dropout": 0.0, **settings}
    )
    torch.manual_seed(1)
    return strategy.apply(tiny_t5(), config, None), config


def trained(model, config, steps: int = 3):
    optimizer = method_optimizer("lora", config)(model, lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        model(**batch(2)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_every_variant_has_a_peft_reference():
    assert set(PEFT_FLAGS) == set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_is_peft_own_model(variant):
    model, _ = ours(variant)
    torch.manual_seed(1)
    reference = get_peft_model(
        tiny_t5(),
        LoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=16, lora_dropout=0.0, target_modules=list(TARGETS),
            **PEFT_FLAGS[variant],
        ),
    )  # fmt: skip
    theirs, mine = reference.state_dict(), model.state_dict()
    assert theirs.keys() == mine.keys()
    assert all(torch.equal(theirs[k], mine[k]) for k in theirs)
    assert torch.equal(logits(model), logits(reference))
    if variant in (
        "pissa",
        "olora",
    ):  # W0 keeps the residual: a fresh adapter still leaves outputs as they were
        torch.testing.assert_close(logits(model), logits(tiny_t5()), rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_trained_variant_saves_and_loads_as_peft_does(variant, tmp_path):
    model, config = ours(variant)
    model = trained(model, config)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["use_dora"] is (variant == "dora")
    assert saved["use_rslora"] is (variant == "rslora")
    assert saved["init_lora_weights"] == {"pissa": "pissa", "olora": "olora"}.get(variant, True)
    loaded = PeftModel.from_pretrained(tiny_t5(), tmp_path)
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-5)


def test_pissa_niter_is_peft_fast_svd():
    model, config = ours("pissa", pissa_niter=4)
    assert model.peft_config["default"].init_lora_weights == "pissa_niter_4"


def test_loraplus_gives_b_its_ratio_of_the_learning_rate():
    model, config = ours("loraplus", loraplus_lr_ratio=8.0)
    optimizer = method_optimizer("lora", config)(model, lr=1e-3, weight_decay=0.0)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert lr_of[id(p)] == pytest.approx(8e-3 if "lora_B" in name else 1e-3), name
    plain = method_optimizer("lora", ours("lora")[1])(model, lr=1e-3, weight_decay=0.0)
    assert [g["lr"] for g in plain.param_groups] == [1e-3]


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("lora", {"variant": "vera"}, "unknown LoRA variant 'vera'; choose from lora, rslora, dora, pissa"),
        (
            "lora",
            {"variant": "dora", "loraplus_lr_ratio": 4.0},
            "loraplus_lr_ratio applies to variant 'loraplus'",
        ),
        ("lora", {"variant": "loraplus", "loraplus_lr_ratio": 0.5}, "must be a finite number >= 1, got 0.5"),
        ("lora", {"variant": "olora", "pissa_niter": 4}, "pissa_niter applies to variant 'pissa' only"),
        ("lora", {"variant": "pissa", "pissa_niter": -1}, "pissa_niter must be an integer >= 0, got -1"),
        ("qlora", {"variant": "pissa"}, "LoRA variant 'pissa' would change the 8-bit W0"),
        ("qlora", {"variant": "olora", "bits": 4}, "LoRA variant 'olora' would change the 4-bit W0"),
        ("stacked", {"variant": "dora"}, "'dora' cannot run under a frozen stacked stage 1"),
        ("stacked", {"variant": "pissa"}, "PiSSA and OLoRA would change the frozen W0"),
        ("stacked", {"use_rslora": True}, "use_rslora is set by strategy/variant=rslora"),
    ],
)
def test_impossible_variants_are_refused_in_one_line(method, settings, message):
    with pytest.raises(ValueError) as error:
        get_strategy(method).make_config(settings)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_stacked_rslora_sets_the_layer_scale_and_keeps_stage1_shared():
    from trainables.methods.stacked import NOT_STAGE1

    config = get_strategy("stacked").make_config({"variant": "rslora", "r2": 16, "alpha2": 8})
    assert config.adapter_config().use_rslora and config.adapter_config().scaling2 == 2.0
    assert {"variant", "loraplus_lr_ratio", "use_rslora"} <= set(NOT_STAGE1["strategy"])


def test_each_variant_is_its_own_group_labelled_as_peft_names_it_and_tested_against_lora():
    from trainables.comparison import Group, comparisons, group_label, groups_of

    assert groups_of("lora", {"strategy/variant": "dora"}) == {"lora_variants": "dora"}
    assert groups_of("lora", {}) == {"method": "lora", "lora_variants": "lora"}  # plain LoRA stands for LoRA
    assert [group_label("lora_variants", v) for v in VARIANTS] == [
        "LoRA",
        "rsLoRA",
        "DoRA",
        "PiSSA",
        "OLoRA",
        "LoRA+",
    ]
    groups = [Group("lora_variants", "main", v, group_label("lora_variants", v)) for v in VARIANTS]
    assert [(a.name, b.name) for a, b in comparisons(groups)] == [(v, "lora") for v in VARIANTS[1:]]
    assert groups_of("qlora", {"strategy/variant": "loraplus"}) == {"qlora_variants": "loraplus"}
    assert groups_of("lora_cot", {"strategy/variant": "pissa", "train/prompt_style": "code"}) == {
        "lora_cot_variants": "pissa"
    }  # the prompt styles are compared on plain LoRA
    sin = {"strategy/baseline": "stacked", "strategy/f": "sin"}
    assert groups_of("stacked", sin) == {"method": "stacked", "stacked": "f=sin", "stacked_variants": "lora"}
    assert groups_of("stacked", sin | {"strategy/variant": "rslora"}) == {"stacked_variants": "rslora"}
    assert groups_of("stacked", {"strategy/baseline": "linear", "strategy/variant": "loraplus"}) == {}


def test_the_report_has_a_table_per_variant_family_with_each_variants_best_trial(tmp_path):
    from test_analysis import test_metrics, trial_params, write_trial

    from analysis.groups import compared_groups
    from analysis.load import load_results
    from analysis.tables import build_tables

    for variant, accuracy in (("lora", 0.3), ("dora", 0.4), ("loraplus", 0.2)):
        params = trial_params("lora", strategy={"variant": variant})
        write_trial(
            tmp_path / "lora-main", params, dev=[accuracy, accuracy], test=test_metrics(accuracy + 0.01)
        )
    trials = load_results([str(tmp_path)]).trials
    table = build_tables(trials)["lora_variants"].frame
    assert table["LoRA variant"].tolist() == ["LoRA", "DoRA", "LoRA+"]
    assert table["Accuracy %"].round(1).tolist() == [31.0, 41.0, 21.0]
    groups = {
        c.group.id: c.trial["test/accuracy"]
        for c in compared_groups(trials, metric="dev/accuracy", mode="max")
    }
    assert groups["method/main/lora"] == groups["lora_variants/main/lora"] == 0.31  # LoRA's row is plain LoRA
    assert groups["lora_variants/main/dora"] == pytest.approx(0.41)
