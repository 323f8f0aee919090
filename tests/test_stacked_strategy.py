"""The `stacked` strategy: two stages, a stage-1 cache shared by trials, and the comparison baselines."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from trainables.data.records import CodeRecord
from trainables.methods import StrategyContext, get_strategy
from trainables.methods.stacked import stage1_key
from trainables.methods.stacked_lora import StackedLoraLinear
from trainables.training.models import load_model, load_tokenizer
from trainables.training.train_config import TrainConfig
from trainables.trial import stage_fitter


@pytest.fixture
def context_factory(micro_t5_dir, micro_splits, tmp_path):
    code = [
        CodeRecord(text=r.question, code=r.program, source="gsm8k-programs") for r in micro_splits.train[:32]
    ]
    fits: list[int] = []

    def make(cache_dir=tmp_path / "cache"):
        tokenizer = load_tokenizer(micro_t5_dir)
        fit = stage_fitter(tokenizer, log=lambda message: None)

        def counting_fit(*args, **kwargs):
            fits.append(1)
            return fit(*args, **kwargs)

        return StrategyContext(
            tokenizer=tokenizer,
            model_name=str(micro_t5_dir),
            train=TrainConfig(epochs=1, batch_size=16, max_input_tokens=64, max_target_tokens=48),
            fit=counting_fit,
            code_records=code,
            cache_dir=cache_dir,
            log=lambda message: None,
        )

    make.fits = fits
    return make


def _apply(micro_t5_dir, context, **settings):
    strategy = get_strategy("stacked")
    torch.manual_seed(0)
    return strategy.apply(load_model(micro_t5_dir, device="cpu"), strategy.make_config(settings), context)


def test_two_trials_with_the_same_stage1_train_it_once(micro_t5_dir, context_factory):
    first = _apply(micro_t5_dir, context_factory(), f="relu", r2=4)
    second = _apply(micro_t5_dir, context_factory(), f="gelu", r2=8)  # stage 2 differs, stage 1 does not
    assert len(context_factory.fits) == 1
    a1 = {n: p for n, p in first.named_parameters() if "lora_A1" in n}
    b1 = {n: p for n, p in second.named_parameters() if "lora_B1" in n}
    assert all(torch.equal(p, dict(second.named_parameters())[n]) for n, p in a1.items())
    assert any(p.abs().sum() > 0 for p in b1.values()), "stage 1 did not train B1"
    _apply(micro_t5_dir, context_factory(), f="relu", stage1_lr=3e-3)  # a new stage 1
    assert len(context_factory.fits) == 2


def test_a_trial_is_the_same_whether_it_trained_stage1_or_loaded_it(micro_t5_dir, context_factory):
    # The tiny study's stacked trial scored 48.0% where it trained stage 1 and 43.7% where it loaded the
    # same stage 1: training it had moved the random state that stage 2's A2 and B2 are drawn from.
    trained = _apply(micro_t5_dir, context_factory(), f="relu")
    loaded = _apply(micro_t5_dir, context_factory(), f="relu")
    assert len(context_factory.fits) == 1
    stage2 = {n: p for n, p in trained.named_parameters() if "lora_A2" in n or "lora_B2" in n}
    assert stage2 and all(torch.equal(p, dict(loaded.named_parameters())[n]) for n, p in stage2.items())


def test_concurrent_trials_share_one_stage1(micro_t5_dir, context_factory):
    # Models load first: `from_pretrained` is not thread-safe (Ray's trials are processes, so it need not be).
    strategy = get_strategy("stacked")
    jobs = [(load_model(micro_t5_dir, device="cpu"), context_factory()) for _ in range(2)]
    errors = []

    def trial(model, context):
        try:
            strategy.apply(model, strategy.make_config({"f": "tanh"}), context)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=trial, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(context_factory.fits) == 1


def test_cache_key_ignores_stage2_settings_only(context_factory):
    strategy = get_strategy("stacked")
    context = context_factory()
    key = stage1_key(strategy.make_config({"f": "relu"}), context)
    stage2 = {"f": "silu", "r2": 16, "alpha2": 4, "dropout": 0.1, "variant": "rslora"}
    assert key == stage1_key(strategy.make_config(stage2), context)
    assert key != stage1_key(strategy.make_config({"r1": 4}), context)
    assert key != stage1_key(strategy.make_config({"stage1_epochs": 2}), context)


@pytest.mark.parametrize(
    ("baseline", "check"),
    [
        ("stacked", lambda layer: layer.config.f == "relu"),
        ("linear", lambda layer: layer.config.f == "identity"),
        (
            "merged_then_lora",
            lambda layer: layer.config.stage1_merge and layer.config.f_space == "activation",
        ),
    ],
)
def test_baselines_build_the_adapter_they_name(baseline, check, micro_t5_dir, context_factory):
    model = _apply(micro_t5_dir, context_factory(), baseline=baseline)
    layers = [m for m in model.modules() if isinstance(m, StackedLoraLinear)]
    assert layers and all(check(layer) for layer in layers)


def test_single_lora_baseline_has_the_combined_rank_and_no_stage1(micro_t5_dir, context_factory):
    model = _apply(micro_t5_dir, context_factory(), baseline="single_lora", r1=4, r2=8)
    ranks = {p.shape[0] for n, p in model.named_parameters() if "lora_A" in n}
    assert ranks == {12}
    assert context_factory.fits == []


@pytest.mark.parametrize("name", ["stage1_batch_size", "stage1_warmup_ratio", "stage1_dropout"])
def test_a_bad_stage1_setting_is_named(name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        get_strategy("stacked").make_config({name: 2 if name != "stage1_batch_size" else 0})


def test_bad_baseline_is_named():
    with pytest.raises(ValueError, match="unknown stacked baseline 'cola'"):
        get_strategy("stacked").make_config({"baseline": "cola"})


def test_stacking_on_an_8bit_base_trains_only_stage2(micro_t5_dir, micro_splits, context_factory):
    import bitsandbytes as bnb

    from trainables.data.batching import collate, encode_pairs
    from trainables.data.prompts import format_example

    strategy = get_strategy("stacked")
    config = strategy.make_config({"base_bits": 8, "f": "gelu"})
    torch.manual_seed(0)
    base = load_model(micro_t5_dir, device="cpu", **strategy.load_kwargs(config))
    model = strategy.apply(base, config, context_factory())
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules())
    tokenizer = load_tokenizer(micro_t5_dir)
    pairs = [format_example(r, "breakdown") for r in micro_splits.train[:8]]
    batch = collate(
        encode_pairs(tokenizer, pairs, max_input_tokens=64, max_target_tokens=48), 0, torch.device("cpu")
    )
    model(**batch).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all("lora_A2" in n or "lora_B2" in n for n in with_grad), sorted(with_grad)[:4]


def _stage1_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A1" in n or "lora_B1" in n}


def test_trials_differing_in_what_the_search_samples_share_one_stage1(micro_t5_dir, context_factory):
    # Issue #20: stage 1 used the trial's batch size, warmup and dropout, which the search samples per
    # trial, so each stacked trial of the paper-shape rehearsal trained its own stage 1 (over 30 min each).
    weights = []
    for batch_size, warmup, dropout in ((16, 0.0, 0.0), (8, 0.1, 0.1)):
        context = context_factory()
        context.train = dataclasses.replace(context.train, batch_size=batch_size, warmup_ratio=warmup)
        weights.append(_stage1_weights(_apply(micro_t5_dir, context, f="relu", dropout=dropout)))
    assert len(context_factory.fits) == 1
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_stage1_trains_with_its_own_settings(micro_t5_dir, context_factory):
    trained = []
    context = context_factory(cache_dir=None)
    fit = context.fit
    context.fit = lambda model, pairs, train: (
        trained.append((train, _dropouts(model))) or fit(model, pairs, train)
    )
    model = _apply(
        micro_t5_dir,
        context,
        dropout=0.1,
        stage1_dropout=0.05,
        stage1_batch_size=4,
        stage1_warmup_ratio=0.2,
        stage1_lr=2e-3,
    )
    ((train, dropouts),) = trained
    assert (train.batch_size, train.warmup_ratio, train.lr, train.grad_accum) == (4, 0.2, 2e-3, 1)
    assert dropouts == {0.05}
    assert _dropouts(model) == {0.1}  # stage 2 trains with the trial's dropout


def _dropouts(model) -> set[float]:
    return {m.config.dropout for m in model.modules() if isinstance(m, StackedLoraLinear)}


def test_stage1_settings_are_the_keys_that_change_its_cache_key(context_factory):
    from trainables.methods.stacked import stage1_settings

    strategy = get_strategy("stacked")
    assert strategy.first_stage_settings == stage1_settings()
    changes = {"r1": 4, "alpha1": 8, "target_modules": "q", "stage1_lr": 3e-3, "stage1_epochs": 2}
    changes |= {"stage1_batch_size": 8, "stage1_warmup_ratio": 0.2, "stage1_dropout": 0.1, "base_bits": 8}
    assert {f"strategy/{name}" for name in changes} == {
        k for k in stage1_settings() if k.startswith("strategy/")
    }
    context = context_factory()
    key = stage1_key(strategy.make_config({}), context)
    for name, value in changes.items():
        assert stage1_key(strategy.make_config({name: value}), context) != key, name


# A changed value for every TrainConfig field; stage 1 replaces the optimisation settings with its own
# (`_stage1_own_train`), and never evaluates, so only those leave its key as it is.
TRAIN_CHANGES = {
    "lr": 1e-2,
    "epochs": 5,
    "batch_size": 8,
    "grad_accum": 2,
    "max_micro_batch": 4,
    "warmup_ratio": 0.5,
    "weight_decay": 0.1,
    "max_grad_norm": 0.5,
    "max_input_tokens": 32,
    "max_target_tokens": 32,
    "prompt_style": "code",
    "evals_per_epoch": 3,
    "group_by_length": True,
    "seed": 1,
    "eval": {"max_new_tokens": 7},
}
NOT_STAGE1 = {
    "lr",
    "epochs",
    "batch_size",
    "grad_accum",
    "warmup_ratio",
    "evals_per_epoch",
    "prompt_style",
    "eval",
}


@pytest.mark.parametrize("field", sorted(TRAIN_CHANGES))
def test_every_train_setting_stage1_uses_is_in_its_key(field, context_factory):
    assert set(TRAIN_CHANGES) == {f.name for f in dataclasses.fields(TrainConfig)}
    config = get_strategy("stacked").make_config({})
    context = context_factory()
    key = stage1_key(config, context)
    context.train = dataclasses.replace(context.train, **{field: TRAIN_CHANGES[field]})
    assert (stage1_key(config, context) == key) == (field in NOT_STAGE1)


def test_stage1_key_follows_the_coding_tasks_and_the_base(context_factory):
    config = get_strategy("stacked").make_config({})
    context = context_factory()
    key = stage1_key(config, context)
    first, keys = context.code_records[0], {key}
    for test_list in ((), ("assert f() == 1",)):  # an MBPP prompt shows the task's first test
        context.code_records[0] = dataclasses.replace(first, source="mbpp", test_list=test_list)
        keys.add(stage1_key(config, context))
    assert len(keys) == 3
    context.code_records[0] = first
    assert stage1_key(config, context) == key
    context.model_name = "t5-small"
    assert stage1_key(config, context) != key
    assert stage1_key(get_strategy("stacked").make_config({"base_bits": 8}), context_factory()) != key


def test_each_f_is_tested_against_the_linear_stack_even_when_it_was_searched_as_f_identity():
    from trainables.methods.stacked import f_against_variants

    # the docs' sin study: `--set stacked:strategy/f=[identity,sin]`, no baseline groups
    assert f_against_variants(["f=identity", "f=sin"]) == [("f=sin", "f=identity")]
    assert f_against_variants(["f=identity", "f=sin", "linear", "single_lora"]) == [
        ("f=identity", "linear"),
        ("f=identity", "single_lora"),
        ("f=sin", "linear"),
        ("f=sin", "single_lora"),
    ]
    assert f_against_variants(["f=relu", "merged_then_lora"]) == []
