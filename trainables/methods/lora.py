"""LoRA (Hu et al. 2021): the base model is frozen, low-rank A and B train on the targeted linear layers.

`variant` picks one of the LoRA variants PEFT 0.21 ships, each through PEFT's own switch so that a trained
adapter saves, loads and merges as PEFT's does (nothing here re-implements one):

* `lora`: plain LoRA, update (alpha / r) B A.
* `rslora`: `LoraConfig(use_rslora=True)`, scale alpha / sqrt(r) (Kalajdzievski 2023).
* `dora`: `LoraConfig(use_dora=True)`, weight = magnitude * direction, a trainable magnitude vector per
  layer (Liu et al. 2024).
* `pissa`: `init_lora_weights="pissa"` (full SVD) or `"pissa_niter_K"` (K subspace iterations): A, B start
  from W0's principal singular vectors and W0 keeps the residual (Meng et al. 2024).
* `olora`: `init_lora_weights="olora"`: A, B from the QR of W0, W0 keeps the residual (Büyükakyüz 2024).
* `loraplus`: plain LoRA trained by `peft.optimizers.create_loraplus_optimizer`: B's learning rate is
  `loraplus_lr_ratio` times A's (Hayou et al. 2024).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.methods.registry import Grouping, StrategyContext, register_strategy
from trainables.training.setting_types import is_number

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig

# T5's attention projections are q, k, v, o; its feed-forward layers wi (wi_0 / wi_1 when gated) and wo.
T5_LINEAR_NAMES = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")

VARIANT_LABELS = {
    "lora": "LoRA",
    "rslora": "rsLoRA",
    "dora": "DoRA",
    "pissa": "PiSSA",
    "olora": "OLoRA",
    "loraplus": "LoRA+",
}
"""Variant -> how PEFT and its papers name it (the report's group labels)."""
VARIANTS = tuple(VARIANT_LABELS)
"""The LoRA variants a LoRA-based method may run (`strategy/variant`)."""
PLAIN = VARIANTS[0]
"""Plain LoRA: what a trial of a LoRA-based method stands for in the tables across methods."""
RESIDUAL_INIT_VARIANTS = ("pissa", "olora")
"""Variants whose initialisation subtracts s B0 A0 from W0: they change the frozen base weight."""
LORAPLUS_LR_RATIO = 16.0
"""LoRA+'s default ratio of B's learning rate to A's (the paper's and PEFT's example value)."""


@dataclass
class LoraStrategyConfig:
    """Hyperparameters of a LoRA adapter."""

    r: int = 8
    """Rank of A (r x in) and B (out x r)."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / r) * B A (alpha / sqrt(r) for rslora)."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    target_modules: tuple[str, ...] = ("q", "v")
    """Names of T5 linear layers that get an adapter."""
    variant: str = "lora"
    """Which LoRA variant: lora, rslora, dora, pissa, olora or loraplus (the module docstring says how)."""
    loraplus_lr_ratio: float = LORAPLUS_LR_RATIO
    """LoRA+ only: B's learning rate over A's (>= 1)."""
    pissa_niter: int = 0
    """PiSSA only: 0 for the exact SVD (`pissa`), K > 0 for K subspace iterations (`pissa_niter_K`)."""

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = tuple(m for m in self.target_modules.replace("+", ",").split(",") if m)
        self.target_modules = tuple(self.target_modules)
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        bad = [m for m in self.target_modules if m not in T5_LINEAR_NAMES]
        if not self.target_modules or bad:
            raise ValueError(f"LoRA target_modules {bad or '()'} are not T5 linear layers {T5_LINEAR_NAMES}")
        check_variant(self.variant, VARIANTS)
        check_loraplus_ratio(self.variant, self.loraplus_lr_ratio)
        if (
            isinstance(self.pissa_niter, bool)
            or not isinstance(self.pissa_niter, int)
            or self.pissa_niter < 0
        ):
            raise ValueError(f"LoRA pissa_niter must be an integer >= 0, got {self.pissa_niter!r}")
        if self.pissa_niter and self.variant != "pissa":
            raise ValueError(f"LoRA pissa_niter applies to variant 'pissa' only, not {self.variant!r}")


def check_variant(variant: str, allowed: tuple[str, ...], *, why: str = "") -> None:
    """Raise a one-line `ValueError` for a variant that is unknown or not in `allowed` (and say `why`)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown LoRA variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if variant not in allowed:
        raise ValueError(f"LoRA variant {variant!r} {why}; choose from {', '.join(allowed)}")


def check_loraplus_ratio(variant: str, ratio: Any) -> None:
    """LoRA+'s ratio must be a finite number >= 1, and is a setting of variant `loraplus` alone."""
    if not is_number(ratio) or ratio < 1:
        raise ValueError(f"LoRA loraplus_lr_ratio must be a finite number >= 1, got {ratio!r}")
    if variant != "loraplus" and ratio != LORAPLUS_LR_RATIO:
        raise ValueError(f"LoRA loraplus_lr_ratio applies to variant 'loraplus' only, not {variant!r}")


def against_plain(groups: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs a variant family tests: each variant against plain LoRA (does it beat it?)."""
    return [(g, PLAIN) for g in groups if g != PLAIN and PLAIN in groups]


def _variant_of(settings: Mapping[str, Any], *, only: Mapping[str, Any]) -> str | None:
    """A trial's LoRA variant, or None for a trial outside the family (its `only` settings differ)."""
    return settings["strategy/variant"] if all(settings[k] == v for k, v in only.items()) else None


def variant_grouping(
    method: str,
    display_name: str,
    variants: tuple[str, ...] = VARIANTS,
    *,
    only: Mapping[str, Any] | None = None,
) -> Grouping:
    """A LoRA-based method's family `<method>_variants`: one group per LoRA variant, labelled as PEFT names
    it, each tested against plain LoRA (`trainables.comparison` makes its table, groups and pairs). `only`:
    settings a trial must have to be in it (stacked LoRA: the method itself, not a baseline)."""
    only = dict(only or {})
    return Grouping(
        family=f"{method}_variants",
        keys=("strategy/variant", *only),
        title=f"{display_name} per LoRA variant",
        column="LoRA variant",
        group=functools.partial(_variant_of, only=only),
        labels={v: VARIANT_LABELS[v] for v in variants},
        pairs=against_plain,
        note="Each variant through PEFT's own flag (use_rslora, use_dora, init_lora_weights) or LoRA+'s "
        "optimiser; the method's row in the tables across methods is plain LoRA.",
    )


def peft_init(config: LoraStrategyConfig) -> bool | str:
    """PEFT's `init_lora_weights` for the config's variant (True: Kaiming A, zero B)."""
    if config.variant == "pissa":
        return f"pissa_niter_{config.pissa_niter}" if config.pissa_niter else "pissa"
    if config.variant == "olora":
        return "olora"
    return True


def peft_lora_config(config: LoraStrategyConfig) -> LoraConfig:
    """The PEFT config for `config`: its variant as PEFT's own flags (zero-init B for lora, rslora, dora
    and loraplus, so a fresh adapter leaves outputs unchanged; pissa and olora move W0's part into B A)."""
    from peft import LoraConfig, TaskType  # PEFT takes seconds to import: only when a trial needs it

    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        use_rslora=config.variant == "rslora",
        use_dora=config.variant == "dora",
        init_lora_weights=peft_init(config),
    )


def apply_lora(
    model: torch.nn.Module, config: LoraStrategyConfig, context: StrategyContext
) -> torch.nn.Module:
    """Freeze the base model and add a trainable LoRA adapter."""
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(config))


def lora_optimizer(model: torch.nn.Module, config: Any, *, lr: float, weight_decay: float):
    """AdamW over the trainable weights; for `loraplus`, PEFT's LoRA+ optimizer (B at `lr * ratio`)."""
    import torch

    if getattr(config, "variant", "lora") != "loraplus":
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=lr,
        loraplus_lr_ratio=config.loraplus_lr_ratio,
        loraplus_weight_decay=weight_decay,
    )


def peft_weight_updates(model: torch.nn.Module, config: Any = None):
    """Each PEFT LoRA layer's learned update (out, in): `s B A` as PEFT's `get_delta_weight` gives it, and
    for DoRA the whole update its merge would make, `m (W0 + s B A) / ||W0 + s B A||_c - W0` (PEFT's
    `merge_safe` on a copy of W0). For pissa and olora W0 already holds the residual, so this is `s B A` too.
    """
    import torch
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    from trainables.scoring.update_rank import Updates

    updates = Updates()
    for name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        (adapter,) = layer.active_adapters
        variant = layer.lora_variant.get(adapter)
        with torch.no_grad():
            if variant is None:
                delta = layer.get_delta_weight(adapter)
            else:
                w0 = dequantize_module_weight(layer.get_base_layer()).float()
                delta = variant.merge_safe(layer, adapter, w0.clone()).float() - w0
                layer._cache_pop(f"{adapter}-weight_norm")  # merge_safe caches it for an unmerge to come
        updates.update[name] = delta.float()
    return updates


register_strategy(
    name="lora",
    config_cls=LoraStrategyConfig,
    apply=apply_lora,
    display_name="LoRA",
    colour="#4C72B0",
    description="LoRA on T5-small: frozen base, trainable low-rank A, B (or a PEFT variant of it)",
    optimizer=lora_optimizer,
    weight_updates=peft_weight_updates,
    groupings=(variant_grouping("lora", "LoRA"),),
    method_settings={"strategy/variant": PLAIN},
    order=10,
)
