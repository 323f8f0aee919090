"""Stacked LoRA: closed form, stages, the init that lets every f train, merge, save/load, quantised bases."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import BitsAndBytesConfig, T5Config, T5ForConditionalGeneration

from trainables.methods.stacked_lora import (
    ACTIVATIONS,
    StackedLoraConfig,
    StackedLoraLinear,
    apply_stacked_lora,
    load_stacked_lora,
    merge_and_unload,
    merge_stacked_lora,
    read_stacked_lora_config,
    save_stacked_lora,
    stacked_layers,
    stacked_lora_state_dict,
    start_stage2,
    unmerge_stacked_lora,
)

try:  # imported here, once, so that no test's time includes it
    import bitsandbytes as bnb
except ImportError:  # pragma: no cover - bitsandbytes is a dependency; this guards partial installs
    bnb = None

needs_bnb = pytest.mark.skipif(bnb is None, reason="bitsandbytes is not installed")
F_NAMES = tuple(ACTIVATIONS)


def tiny_t5(**overrides) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=64, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0, **overrides,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(2, 64, (2, 7), generator=g),
        "labels": torch.randint(2, 64, (2, 5), generator=g),
    }


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch()).logits


class Net(nn.Module):
    """Two linear layers named like T5's, so target names match."""

    def __init__(self, d_in: int = 12, d_hidden: int = 10, d_out: int = 6) -> None:
        super().__init__()
        self.q = nn.Linear(d_in, d_hidden)
        self.v = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(torch.tanh(self.q(x)))


def stage2_layer(config: StackedLoraConfig) -> StackedLoraLinear:
    """A wrapped 12 -> 10 linear layer in stage 2, all four factors random (so every term matters)."""
    torch.manual_seed(0)
    layer = StackedLoraLinear(nn.Linear(12, 10), config=config)
    nn.init.normal_(layer.lora_B1, std=0.3)
    layer.start_stage2()
    with torch.no_grad():
        layer.lora_A2.normal_(std=0.5)
        layer.lora_B2.normal_(std=0.5)
    return layer


def omega_for(f: str) -> float:
    """A frequency well away from 1 for sin (so a missing omega shows), the only value others take."""
    return 30.0 if f == "sin" else 1.0


def f_closed_form(f: str, t: torch.Tensor, *, out: int) -> torch.Tensor:
    """f written out: Ji et al.'s sin(omega t) / sqrt(out) for sin, the registry's function otherwise."""
    if f == "sin":
        return torch.sin(omega_for(f) * t) / out**0.5
    return ACTIVATIONS[f](t)


def frozen_weight(layer: StackedLoraLinear) -> torch.Tensor:
    c = layer.config
    return layer.base_layer.weight + c.scaling1 * layer.lora_B1 @ layer.lora_A1


# --- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"f": "swish"}, "'swish'"),
        ({"f_space": "both"}, "'both'"),
        ({"r1": 0}, "r1 must be a positive integer, got 0"),
        ({"r2": -3}, "r2 must be a positive integer, got -3"),
        ({"r2": 2.5}, "got 2.5"),
        ({"alpha1": 0}, "alpha1 must be a finite number > 0, got 0"),
        ({"alpha2": float("nan")}, "got nan"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"init_scale": -1e-3}, "got -0.001"),
        ({"init_scale": 0.0, "f": "relu"}, "'relu' with init_scale 0 never trains"),
        ({"target_modules": ()}, "target_modules ()"),
        ({"target_modules": ("q", "a.b")}, "'a.b'"),
        ({"stage1_merge": "yes"}, "'yes'"),
        ({"f": "sin", "omega": 0.0}, "omega must be a finite number > 0, got 0.0"),
        ({"f": "sin", "omega": float("inf")}, "got inf"),
        ({"f": "relu", "omega": 30.0}, "omega applies to f sin only, not f 'relu'"),
        ({"use_rslora": 1}, "use_rslora must be True or False, got 1"),
    ],
)
def test_config_rejects_bad_value_naming_it(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError) as err:
        StackedLoraConfig(**kwargs)
    assert bad in str(err.value)


def test_config_refuses_zero_init_for_an_f_that_would_shift_a_fresh_model(monkeypatch) -> None:
    monkeypatch.setitem(ACTIVATIONS, "softplus", F.softplus)
    with pytest.raises(
        ValueError, match=r"'softplus' with init_scale 0 would shift a fresh model: f\(0\) = 0.69"
    ):
        StackedLoraConfig(f="softplus", init_scale=0.0)
    layer = StackedLoraLinear(nn.Linear(12, 10), config=StackedLoraConfig(f="softplus"))
    x = torch.randn(3, 12)
    before = layer(x)
    layer.start_stage2()  # the offset cancels f(0) != 0 as well
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-6)


def test_config_targets_from_strings_and_dict_round_trip() -> None:
    config = StackedLoraConfig(target_modules="q+k,v", f="gelu", init_scale=0.0)
    assert config.target_modules == ("q", "k", "v")
    assert StackedLoraConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown stacked LoRA setting.*rank"):
        StackedLoraConfig.from_dict({"rank": 4})


def test_registry_holds_the_study_nonlinearities_and_each_is_elementwise() -> None:
    assert {"identity", "relu", "leaky_relu", "gelu", "tanh", "silu", "sin"} <= set(ACTIVATIONS)
    t = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    for name, f in ACTIVATIONS.items():
        # Vectorised and scalar kernels may round the last bit differently (gelu); a non-elementwise f
        # (softmax, a norm) would be off by far more than this.
        torch.testing.assert_close(f(t)[2, 3], f(t[2:3, 3:4])[0, 0], rtol=1e-6, atol=1e-7, msg=name)


# --- exact math ---------------------------------------------------------------------------------------


def test_stage1_is_plain_lora_equal_to_peft() -> None:
    torch.manual_seed(0)
    ours, theirs = Net(), Net()
    theirs.load_state_dict(ours.state_dict())
    apply_stacked_lora(ours, StackedLoraConfig(r1=4, alpha1=8, target_modules=("q",)))
    theirs = get_peft_model(theirs, LoraConfig(r=4, lora_alpha=8, target_modules=["q"]))
    layer = ours.q
    nn.init.normal_(layer.lora_B1)
    with torch.no_grad():
        theirs.base_model.model.q.lora_A["default"].weight.copy_(layer.lora_A1)
        theirs.base_model.model.q.lora_B["default"].weight.copy_(layer.lora_B1)
    x = torch.randn(3, 12)
    expected = x @ frozen_weight(layer).T + layer.base_layer.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(ours(x), theirs(x))
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {"q.lora_A1", "q.lora_B1"}


@pytest.mark.parametrize("f", F_NAMES)
def test_weight_space_output_is_the_closed_form(f: str) -> None:
    layer = stage2_layer(StackedLoraConfig(r1=3, r2=4, alpha2=6, f=f, omega=omega_for(f)))
    s2 = layer.config.scaling2

    def act(t: torch.Tensor) -> torch.Tensor:
        return f_closed_form(f, t, out=10)

    offset = act(s2 * layer.lora_B2_init @ layer.lora_A2_init)
    weight = frozen_weight(layer) + act(s2 * layer.lora_B2 @ layer.lora_A2) - offset
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(layer(x), x @ weight.T + layer.base_layer.bias)
    torch.testing.assert_close(layer.delta_weight(), weight - layer.base_layer.weight)


def test_weight_space_with_zero_init_scale_is_the_formula_without_offset() -> None:
    layer = stage2_layer(StackedLoraConfig(f="gelu", init_scale=0.0))
    assert layer.lora_A2_init is None and layer.lora_B2_init is None
    weight = frozen_weight(layer) + F.gelu(layer.config.scaling2 * layer.lora_B2 @ layer.lora_A2)
    x = torch.randn(4, 12)
    torch.testing.assert_close(layer(x), x @ weight.T + layer.base_layer.bias)


def test_weight_space_with_active_dropout_drops_only_the_stage2_input() -> None:
    layer = stage2_layer(StackedLoraConfig(f="tanh", dropout=0.5)).train()
    x = torch.randn(6, 12)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    expected = x @ frozen_weight(layer).T + layer.base_layer.bias + F.dropout(x, 0.5) @ layer.stage2_delta().T
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("f", F_NAMES)
def test_activation_space_output_is_the_closed_form(f: str) -> None:
    config = StackedLoraConfig(r1=3, r2=4, alpha2=6, f=f, f_space="activation", omega=omega_for(f))
    layer = stage2_layer(config)
    x = torch.randn(2, 5, 12)
    expected = (
        x @ frozen_weight(layer).T
        + layer.base_layer.bias
        + layer.config.scaling2 * f_closed_form(f, x @ layer.lora_A2.T, out=10) @ layer.lora_B2.T
    )
    torch.testing.assert_close(layer(x), expected)


def test_sin_update_is_bounded_whatever_omega_and_its_rank_grows_with_omega() -> None:
    """Ji et al.'s point: sin(omega M) / sqrt(out) of a rank-r2 M has a higher rank for a larger omega, while
    every entry stays within 1 / sqrt(out), so raising omega does not raise the update's size."""
    from trainables.scoring.update_rank import numerical_rank, singular_values

    ranks = []
    for omega in (1.0, 30.0, 1000.0):
        layer = stage2_layer(StackedLoraConfig(r1=2, r2=2, f="sin", omega=omega))
        update, product = layer.stage2_update_and_product()
        assert update.abs().max() <= 1 / 10**0.5
        assert numerical_rank(singular_values(product)) == 2
        ranks.append(numerical_rank(singular_values(update)))
    assert ranks[0] < ranks[1] <= ranks[2] and ranks[2] == 10, ranks  # full rank: min(out, in) = 10


def test_rslora_scales_stage2_by_alpha_over_sqrt_r() -> None:
    assert StackedLoraConfig(r2=16, alpha2=8, use_rslora=True).scaling2 == 2.0
    assert StackedLoraConfig(r2=16, alpha2=8, use_rslora=True).scaling1 == 16.0 / 8  # stage 1 keeps alpha / r


# --- init: outputs unchanged, gradients flow, loss falls ----------------------------------------------


def test_fresh_stage1_leaves_the_model_unchanged() -> None:
    model = tiny_t5()
    before = logits(model)
    apply_stacked_lora(model, StackedLoraConfig(target_modules=("q", "k", "v", "o", "wi", "wo")))
    assert len(stacked_layers(model)) == 2 * 6 + 2 * 10
    assert torch.equal(logits(model), before)


@pytest.mark.parametrize("f_space", ["weight", "activation"])
@pytest.mark.parametrize("f", F_NAMES)
def test_fresh_stage2_leaves_outputs_unchanged(f: str, f_space: str) -> None:
    torch.manual_seed(0)
    config = StackedLoraConfig(f=f, f_space=f_space, omega=omega_for(f))
    layer = StackedLoraLinear(nn.Linear(12, 10), config=config)
    nn.init.normal_(layer.lora_B1, std=0.3)
    x = torch.randn(4, 12)
    before = layer(x)
    layer.start_stage2()
    if f_space == "weight":
        assert layer.lora_B2.abs().min() > 0  # small random values, not PEFT's zeros
        assert torch.equal(layer.stage2_delta(), torch.zeros(10, 12))  # f(M) - f(M0): zero bit for bit
    else:
        assert not layer.lora_B2.any()  # PEFT's zero B
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("f_space", ["weight", "activation"])
@pytest.mark.parametrize("f", F_NAMES)
def test_fresh_stage2_gradients_reach_only_A2_and_B2(f: str, f_space: str) -> None:
    torch.manual_seed(0)
    layer = StackedLoraLinear(nn.Linear(12, 10), config=StackedLoraConfig(f=f, f_space=f_space))
    nn.init.normal_(layer.lora_B1, std=0.3)
    layer.start_stage2()
    layer(torch.randn(4, 12)).pow(2).sum().backward()
    assert layer.lora_B2.grad.abs().sum() > 0 and layer.lora_B2.grad.isfinite().all()
    if f_space == "weight":  # B2_0 != 0 carries the gradient on to A2 from the first step
        assert layer.lora_A2.grad.abs().sum() > 0
    else:  # B2 = 0 as in PEFT: A2 moves once B2 has
        assert not layer.lora_A2.grad.any()
    assert all(p.grad is None for p in (layer.lora_A1, layer.lora_B1, layer.base_layer.weight))


def test_zero_init_relu_is_the_trap_the_init_avoids() -> None:
    """PEFT's zero B2 under a weight-space relu: relu'(0) = 0 in torch, so neither factor gets a gradient."""
    layer = stage2_layer(StackedLoraConfig(f="relu"))
    with torch.no_grad():
        layer.lora_B2.zero_()
    layer.lora_A2_init = layer.lora_B2_init = None
    layer(torch.randn(4, 12)).pow(2).sum().backward()
    assert layer.lora_A2.grad.abs().sum() == 0 and layer.lora_B2.grad.abs().sum() == 0


@pytest.mark.parametrize("f_space", ["weight", "activation"])
@pytest.mark.parametrize("f", F_NAMES)
def test_stage2_regression_loss_falls(f: str, f_space: str) -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    target_weight = base.weight.detach() + 0.5 * torch.rand(8, 16)  # a shift every f can move towards
    x = torch.randn(64, 16)
    y = x @ target_weight.T + base.bias.detach()
    layer = StackedLoraLinear(base, config=StackedLoraConfig(r1=2, r2=4, f=f, f_space=f_space))
    layer.start_stage2()
    optimiser = torch.optim.Adam([layer.lora_A2, layer.lora_B2], lr=2e-2)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(layer(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (f, f_space, losses[0], losses[-1])


@pytest.mark.parametrize("f", F_NAMES)
def test_stage2_seq2seq_loss_falls_and_stage1_and_base_stay_bit_identical(f: str) -> None:
    model = apply_stacked_lora(tiny_t5(), StackedLoraConfig(r1=4, r2=4, f=f))
    for layer in stacked_layers(model).values():
        nn.init.normal_(layer.lora_B1, std=0.1)  # as if stage 1 had trained
    start_stage2(model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A2", "lora_B2")) for n in trainable)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # frozen ones get no step
    model.train()
    losses = []
    for _ in range(25):
        loss = model(**batch()).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], (f, losses[0], losses[-1])
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


# --- merge, save, load ---------------------------------------------------------------------------------


def trained_stage2(config: StackedLoraConfig) -> T5ForConditionalGeneration:
    """A tiny T5 whose stage 1 and stage 2 factors are all non-zero, as after training."""
    model = apply_stacked_lora(tiny_t5(), config)
    for layer in stacked_layers(model).values():
        nn.init.normal_(layer.lora_B1, std=0.2)
    start_stage2(model)
    for layer in stacked_layers(model).values():
        with torch.no_grad():
            layer.lora_B2.normal_(std=0.2)
    return model


@pytest.mark.parametrize("f", ["relu", "gelu", "sin"])
def test_merged_equals_unmerged_and_unmerge_restores_w0(f: str) -> None:
    model = trained_stage2(StackedLoraConfig(f=f, omega=omega_for(f), target_modules=("q", "v", "wi")))
    w0 = {n: layer.base_layer.weight.clone() for n, layer in stacked_layers(model).items()}
    unmerged = logits(model)
    merge_stacked_lora(model)
    torch.testing.assert_close(logits(model), unmerged)
    layer = model.encoder.block[0].layer[0].SelfAttention.q
    x = torch.randn(3, 32)
    assert torch.equal(layer(x), layer.base_layer(x))  # merged: the base layer alone
    with pytest.raises(ValueError, match="already merged"):
        merge_stacked_lora(model)
    unmerge_stacked_lora(model)
    with pytest.raises(ValueError, match="not merged"):
        unmerge_stacked_lora(model)
    for name, layer in stacked_layers(model).items():
        torch.testing.assert_close(layer.base_layer.weight, w0[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model), unmerged)


def test_merge_and_unload_leaves_a_plain_model_with_the_same_outputs() -> None:
    model = trained_stage2(StackedLoraConfig(f="silu"))
    expected = logits(model)
    merge_and_unload(model)
    assert type(model.decoder.block[1].layer[1].EncDecAttention.v) is nn.Linear
    assert not any(isinstance(m, StackedLoraLinear) for m in model.modules())
    torch.testing.assert_close(logits(model), expected)


def test_merged_layer_refuses_to_train() -> None:
    layer = stage2_layer(StackedLoraConfig())
    layer.merge()
    layer.eval()(torch.randn(2, 12))  # evaluating is fine, even with gradients on
    with pytest.raises(RuntimeError, match="unmerge"):
        layer.train()(torch.randn(2, 12))


def test_activation_space_merges_only_for_identity() -> None:
    model = trained_stage2(StackedLoraConfig(f="tanh", f_space="activation"))
    w0 = model.encoder.block[0].layer[0].SelfAttention.q.base_layer.weight.clone()
    with pytest.raises(ValueError, match="f='tanh' cannot be merged"):
        merge_stacked_lora(model)
    assert torch.equal(
        model.encoder.block[0].layer[0].SelfAttention.q.base_layer.weight, w0
    )  # nothing merged
    linear = trained_stage2(StackedLoraConfig(f="identity", f_space="activation"))
    expected = logits(linear)
    torch.testing.assert_close(logits(merge_stacked_lora(linear)), expected)


@pytest.mark.parametrize("f", ["leaky_relu", "sin"])
@pytest.mark.parametrize("f_space", ["weight", "activation"])
def test_save_load_round_trip_reproduces_outputs(tmp_path, f_space: str, f: str) -> None:
    config = StackedLoraConfig(
        f=f, omega=omega_for(f), f_space=f_space, r2=4, target_modules=("q", "o", "wo")
    )
    model = trained_stage2(config)
    save_stacked_lora(model, tmp_path, base_model_name_or_path="t5-tiny")
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "STACKED_LORA" and saved["stage"] == 2 and saved["f_space"] == f_space
    assert read_stacked_lora_config(tmp_path) == (config, 2)
    loaded = load_stacked_lora(tiny_t5(), tmp_path)
    assert torch.equal(logits(loaded), logits(model))
    assert not any(p.requires_grad for p in loaded.parameters())
    resumed = load_stacked_lora(tiny_t5(), tmp_path, is_trainable=True)
    assert all(n.endswith(("lora_A2", "lora_B2")) for n, p in resumed.named_parameters() if p.requires_grad)
    assert set(stacked_lora_state_dict(resumed)) == set(stacked_lora_state_dict(model))


def test_stage1_checkpoint_takes_a_trial_stage2_config(tmp_path) -> None:
    stage1 = apply_stacked_lora(tiny_t5(), StackedLoraConfig(r1=4, alpha1=4))
    for layer in stacked_layers(stage1).values():
        nn.init.normal_(layer.lora_B1, std=0.2)
    save_stacked_lora(stage1, tmp_path)
    assert all(k.endswith(("lora_A1", "lora_B1")) for k in stacked_lora_state_dict(stage1))
    model = load_stacked_lora(tiny_t5(), tmp_path, is_trainable=True)
    assert torch.equal(logits(model), logits(stage1))
    start_stage2(model, StackedLoraConfig(r1=4, alpha1=4, r2=2, f="tanh"))
    layer = model.encoder.block[0].layer[0].SelfAttention.q
    assert layer.config.f == "tanh" and layer.lora_A2.shape == (2, 32)
    torch.testing.assert_close(logits(model), logits(stage1), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="already started"):
        start_stage2(model)
    with pytest.raises(ValueError, match="stage-1 settings"):
        start_stage2(load_stacked_lora(tiny_t5(), tmp_path), StackedLoraConfig(r1=8, alpha1=4))


def test_stage1_merge_folds_stage1_into_w0_cola_style(tmp_path) -> None:
    config = StackedLoraConfig(f="identity", f_space="activation", stage1_merge=True)
    model = apply_stacked_lora(tiny_t5(), config)
    layer = model.encoder.block[1].layer[0].SelfAttention.v
    nn.init.normal_(layer.lora_B1, std=0.2)
    expected_w0 = frozen_weight(layer).detach()
    before = logits(model)
    start_stage2(model)
    assert layer.stage1_merged and torch.equal(layer.base_layer.weight, expected_w0)
    torch.testing.assert_close(logits(model), before)
    with torch.no_grad():
        layer.lora_B2.normal_(std=0.2)
    save_stacked_lora(model, tmp_path)
    assert torch.equal(logits(load_stacked_lora(tiny_t5(), tmp_path)), logits(model))


def test_gated_t5_layers_take_adapters() -> None:
    model = tiny_t5(feed_forward_proj="gated-gelu")
    apply_stacked_lora(model, StackedLoraConfig(target_modules=("wi_0", "wi_1", "wo")))
    start_stage2(model)
    model(**batch()).loss.backward()
    assert model.decoder.block[1].layer[2].DenseReluDense.wi_1.lora_B2.grad.abs().sum() > 0


# --- bad input --------------------------------------------------------------------------------------------


def test_apply_refuses_unknown_targets_and_a_second_apply() -> None:
    with pytest.raises(ValueError, match=r"\['wi'\] not found in T5ForConditionalGeneration.*'wi_0'"):
        apply_stacked_lora(
            tiny_t5(feed_forward_proj="gated-gelu"), StackedLoraConfig(target_modules=("q", "wi"))
        )
    model = apply_stacked_lora(tiny_t5(), StackedLoraConfig())
    with pytest.raises(ValueError, match="already has stacked LoRA layers"):
        apply_stacked_lora(model, StackedLoraConfig())
    with pytest.raises(ValueError, match="has no stacked LoRA layers"):
        start_stage2(tiny_t5())
    with pytest.raises(ValueError, match="must be nn.Linear.*layer_norm"):
        apply_stacked_lora(tiny_t5(), StackedLoraConfig(target_modules=("layer_norm",)))


def test_load_refuses_foreign_or_mismatched_adapters(tmp_path) -> None:
    save_stacked_lora(apply_stacked_lora(tiny_t5(), StackedLoraConfig(r1=4)), tmp_path / "r4")
    (tmp_path / "r4" / "adapter_config.json").write_text(
        (tmp_path / "r4" / "adapter_config.json").read_text().replace('"r1": 4', '"r1": 2')
    )
    with pytest.raises(ValueError, match="lora_A1 has shape"):
        load_stacked_lora(tiny_t5(), tmp_path / "r4")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    with pytest.raises(ValueError, match="holds a 'LORA' adapter"):
        load_stacked_lora(tiny_t5(), tmp_path / "lora")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_stacked_lora(tiny_t5(), tmp_path / "missing")


def test_a_wrapper_follows_its_models_mode_so_eval_has_no_dropout() -> None:
    model = trained_stage2(StackedLoraConfig(f="gelu", dropout=0.5))
    assert not model.encoder.block[0].layer[0].SelfAttention.q.training
    assert torch.equal(logits(model), logits(model))


# --- 8-bit base (QLoRA + stacking) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny_t5")
    tiny_t5().save_pretrained(path)
    return str(path)


def load_quantised(path: str, bits: int = 8) -> T5ForConditionalGeneration:
    if bits == 8:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    model = T5ForConditionalGeneration.from_pretrained(
        path, quantization_config=quantization, device_map={"": "cpu"}
    )
    return model.eval()


@needs_bnb
@pytest.mark.slow  # two 8-bit loads and a backward: about a second
def test_8bit_base_trains_only_A2_B2_and_refuses_merging(tiny_t5_dir: str, tmp_path) -> None:
    model = load_quantised(tiny_t5_dir)
    apply_stacked_lora(model, StackedLoraConfig(f="relu", target_modules=("q", "v", "wo")))
    q = model.encoder.block[0].layer[0].SelfAttention.q
    assert isinstance(q.base_layer, bnb.nn.Linear8bitLt) and q.quantized and q.lora_A1.dtype == torch.float32
    int8_before = q.base_layer.weight.detach().clone()
    for layer in stacked_layers(model).values():
        nn.init.normal_(layer.lora_B1, std=0.2)
    start_stage2(model)
    model.train()
    model(**batch()).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(n.endswith(("lora_A2", "lora_B2")) for n in with_grad)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in with_grad)
    assert torch.equal(q.base_layer.weight, int8_before)
    with pytest.raises(ValueError, match="cannot merge stacked LoRA into a quantised Linear8bitLt"):
        merge_stacked_lora(model)
    model.eval()
    save_stacked_lora(model, tmp_path)
    assert torch.equal(logits(load_stacked_lora(load_quantised(tiny_t5_dir), tmp_path)), logits(model))


@needs_bnb
@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_base_output_is_the_base_layers_plus_the_float_delta(tiny_t5_dir: str, bits: int) -> None:
    model = load_quantised(tiny_t5_dir, bits)
    apply_stacked_lora(model, StackedLoraConfig(f="tanh", target_modules=("q",)))
    layer = model.decoder.block[1].layer[1].EncDecAttention.q
    nn.init.normal_(layer.lora_B1, std=0.2)
    layer.start_stage2()
    with torch.no_grad():
        layer.lora_B2.normal_(std=0.2)
    model.train()  # bitsandbytes' CPU 4-bit eval kernel needs in_features >= its block size (64); ours is 32
    x = torch.randn(4, 32)
    torch.testing.assert_close(layer(x) - layer.base_layer(x), x @ layer.delta_weight().T)
    if bits == 8:  # W0 differs from the float model's only by int8 rounding
        float_weight = tiny_t5().decoder.block[1].layer[1].EncDecAttention.q.weight
        expected = x @ (float_weight + layer.delta_weight()).T
        torch.testing.assert_close(layer(x), expected, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="stage1_merge needs a float base"):
        model.encoder.block[0].layer[0].SelfAttention.q.start_stage2(
            StackedLoraConfig(f="tanh", target_modules=("q",), stage1_merge=True)
        )
