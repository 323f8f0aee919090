"""Stacked LoRA, the study's own method: W = W0 + s1 B1 A1 + f(s2 B2 A2), trained in two stages.

Stage 1 trains A1 B1 on a coding dataset; stage 2 freezes it and trains A2 B2 on GSM8K through f. Stage 1
owns its settings (`r1`, `alpha1`, `target_modules`, and the `stage1_*` fields: learning rate, epochs,
batch size, warmup, dropout), which the search space leaves fixed, so a study trains one A1 B1 and every
trial stacks on it, as in the study reproduced. Nothing a trial samples for stage 2 (its batch size,
warmup, dropout) reaches stage 1. It is trained once and shared through a content-addressed cache
(`trainables.training.cache`) in a local folder of each node (`~/.cache/slm-math-study/stage1` for the
study), guarded by a file lock so concurrent trials on a node neither train it twice nor read a
half-written adapter. Its key hashes every setting stage 1 trains with, so it is correct to share across
studies, and on a cluster each node trains a given stage 1 at most once; a study that searches a stage-1
setting (`--set stacked:strategy/r1=[8,16]`) trains one per value.

The `baseline` setting (spelled so for compatibility; the report says "variant") swaps in the comparison
variants: `linear` (f = identity), `merged_then_lora`
(stage 1 folded into W0, then a fresh LoRA: COLA-style) and `single_lora` (one LoRA of rank r1 + r2 on
GSM8K only). The study compares its trials per f and per variant (the grouping `stacked`): each f
against the linear stack and the single LoRA, the variants that say whether f and stage 1 help.

Of LoRA's own variants (`strategy/variant`, PEFT's sense: not the comparison variants above), stage 2 takes
those that leave W0 and the stacked layer's form alone: `rslora` (the layer's s2 = alpha2 / sqrt(r2), saved
as PEFT's `use_rslora`) and `loraplus` (PEFT's `create_loraplus_optimizer`, which gives every `lora_B*`
weight, B2 here, its learning rate). `dora` needs PEFT's own layer (a magnitude vector renormalising
W0 + B A), and `pissa` / `olora` initialise from W0's SVD / QR and subtract it from W0, which would change
the frozen W0 that stage 1 was trained on: refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.data.prompts import code_task_example
from trainables.methods.lora import (
    LORAPLUS_LR_RATIO,
    PLAIN,
    RESIDUAL_INIT_VARIANTS,
    check_loraplus_ratio,
    check_variant,
    lora_optimizer,
    peft_weight_updates,
    variant_grouping,
)
from trainables.methods.lora import VARIANTS as LORA_VARIANTS
from trainables.methods.registry import Grouping, StrategyContext, register_strategy
from trainables.methods.stacked_lora.config import ACTIVATIONS, StackedLoraConfig
from trainables.training.cache import build_once, settings_key, texts_digest  # a leaf: imports no trainables

if TYPE_CHECKING:  # torch, PEFT and the adapter's modules load when a trial applies the method
    import torch

    from trainables.training.train_config import TrainConfig

VARIANTS = ("stacked", "linear", "merged_then_lora", "single_lora")
"""The `baseline` setting's values: the method (first), then its comparison variants. "Baseline" alone means
a chance baseline (`trainables.scoring.baselines`); the setting keeps its spelling so that the trials and
search spaces already written still read."""
VARIANT_LABELS = {
    "linear": "Linear stack (no f)",
    "merged_then_lora": "Merged stage 1, then LoRA",
    "single_lora": "Single LoRA (math only)",
}
TESTED_AGAINST = ("linear", "single_lora")
"""The variants each f is tested against: they say whether f, and stage 1, help."""
CACHE_FORMAT = 1  # bump when what a cached stage 1 means changes
STACKED_LORA_VARIANTS = tuple(v for v in LORA_VARIANTS if v not in (*RESIDUAL_INIT_VARIANTS, "dora"))
"""The LoRA variants stage 2 can run (the module docstring says why the others cannot)."""


@dataclass
class StackedStrategyConfig(StackedLoraConfig):
    """The adapter's hyperparameters (`StackedLoraConfig`), stage 1's training, and which baseline to run."""

    stage1_lr: float = 1e-3
    """Learning rate of stage 1."""
    stage1_epochs: int = 1
    """Epochs of stage 1 over the coding dataset; a preset's value is at most the study's `train/epochs`
    (the record's `bounded_by`) unless the user sets this key."""
    stage1_batch_size: int = 16
    """Examples per optimiser step of stage 1 (stage 2's is the trial's `train/batch_size`)."""
    stage1_warmup_ratio: float = 0.06
    """Fraction of stage 1's optimiser steps spent warming its learning rate up."""
    stage1_dropout: float = 0.0
    """Dropout on A1's input while stage 1 trains (`dropout` is stage 2's)."""
    baseline: str = "stacked"
    """stacked (the method), linear, merged_then_lora or single_lora (the comparison baselines)."""
    base_bits: int = 0
    """0: a float base; 8 or 4: the base loaded in 8-bit / 4-bit NF4 through bitsandbytes (QLoRA + stacking)."""
    variant: str = "lora"
    """Stage 2's LoRA variant: lora, rslora or loraplus (sets `use_rslora`; loraplus is the optimiser)."""
    loraplus_lr_ratio: float = LORAPLUS_LR_RATIO
    """LoRA+ only: B2's learning rate over A2's."""

    def __post_init__(self) -> None:
        check_variant(
            self.variant,
            STACKED_LORA_VARIANTS,
            why="cannot run under a frozen stacked stage 1: DoRA needs PEFT's own layer, PiSSA and OLoRA "
            "would change the frozen W0",
        )
        check_loraplus_ratio(self.variant, self.loraplus_lr_ratio)
        if self.use_rslora and self.variant != "rslora":
            raise ValueError("stacked LoRA use_rslora is set by strategy/variant=rslora, not on its own")
        self.use_rslora = self.variant == "rslora"
        super().__post_init__()
        if self.base_bits not in (0, 4, 8):
            raise ValueError(f"base_bits must be 0, 4 or 8, got {self.base_bits}")
        if self.baseline not in VARIANTS:
            raise ValueError(f"unknown stacked baseline {self.baseline!r}; choose from {', '.join(VARIANTS)}")
        if not self.stage1_lr > 0:
            raise ValueError(f"stage1_lr must be > 0, got {self.stage1_lr}")
        if self.stage1_epochs < 1:
            raise ValueError(f"stage1_epochs must be >= 1, got {self.stage1_epochs}")
        if self.stage1_batch_size < 1:
            raise ValueError(f"stage1_batch_size must be >= 1, got {self.stage1_batch_size}")
        if not 0.0 <= self.stage1_warmup_ratio < 1.0:
            raise ValueError(f"stage1_warmup_ratio must be in [0, 1), got {self.stage1_warmup_ratio}")
        if not 0.0 <= self.stage1_dropout < 1.0:  # checked here, or the adapter would name `dropout`
            raise ValueError(f"stage1_dropout must be in [0, 1), got {self.stage1_dropout}")
        self.stage1_adapter_config()  # the baseline's overrides and stage 1's dropout must make valid adapters

    def adapter_config(self) -> StackedLoraConfig:
        """The adapter this trial trains, with the baseline's overrides applied."""
        overrides = {
            "stacked": {},
            "linear": {"f": "identity"},
            "single_lora": {},
            # f = identity in activation space is exactly a second LoRA; stage 1 folds into W0 first.
            "merged_then_lora": {"f": "identity", "f_space": "activation", "stage1_merge": True},
        }[self.baseline]
        fields = {f.name for f in dataclasses.fields(StackedLoraConfig)}
        values = {k: v for k, v in dataclasses.asdict(self).items() if k in fields}
        return StackedLoraConfig(**{**values, **overrides})

    def stage1_adapter_config(self) -> StackedLoraConfig:
        """The adapter as stage 1 trains it: `adapter_config()` with stage 1's own dropout."""
        return dataclasses.replace(self.adapter_config(), dropout=self.stage1_dropout)


STAGE2_FIELDS = ("r2", "alpha2", "f", "omega", "f_space", "init_scale", "stage1_merge", "use_rslora")
"""Adapter fields stage 1 never reads: stage 2 builds A2 B2 from them after stage 1 has trained."""
NOT_STAGE1 = {
    # a baseline acts through the adapter, hashed whole; the variant is stage 2's scale or optimiser, and
    # `dropout` stage 2's (stage 1 trains with `stage1_dropout`, in the hashed adapter)
    "strategy": (*STAGE2_FIELDS, "baseline", "variant", "loraplus_lr_ratio", "dropout"),
    "adapter": STAGE2_FIELDS,
    "train": ("eval",),  # `fit` never evaluates; the other fields are stage 1's own TrainConfig
}


def stage1_key(config: StackedStrategyConfig, context: StrategyContext) -> str:
    """A digest of everything stage 1 is made from: the base, its coding pairs, every setting it trains with.

    The settings are whole dataclasses minus `NOT_STAGE1` (`trainables.training.cache`), so a field added
    later is part of the key until someone shows it cannot change stage 1.
    """
    settings = {
        "format": CACHE_FORMAT,
        "model": context.model_name,
        "pairs": texts_digest(text for pair in _stage1_pairs(context) for text in pair),
        "strategy": config,
        "adapter": config.stage1_adapter_config(),
        "train": _stage1_train(config, context),
    }
    ignore = [f"{part}.{name}" for part, names in NOT_STAGE1.items() for name in names]
    return settings_key(settings, ignore=ignore, length=20)


def _stage1_pairs(context: StrategyContext) -> list[tuple[str, str]]:
    if not context.code_records:
        raise ValueError("stacked LoRA needs a coding dataset for stage 1 (none was loaded)")
    return [code_task_example(r) for r in context.code_records]


def _stage1_own_train(config: StackedStrategyConfig) -> dict[str, Any]:
    """The TrainConfig fields stage 1 sets itself rather than taking the trial's."""
    return {
        "lr": config.stage1_lr,
        "epochs": config.stage1_epochs,
        "batch_size": config.stage1_batch_size,
        "grad_accum": 1,
        "warmup_ratio": config.stage1_warmup_ratio,
        "evals_per_epoch": 1,
        "prompt_style": "code",
    }


def _stage1_train(config: StackedStrategyConfig, context: StrategyContext) -> TrainConfig:
    """What stage 1 trains with: its own optimisation settings, and from the trial's TrainConfig only what a
    study fixes for all its trials (token limits, clipping, weight decay, seed, the memory check's
    micro-batch cap)."""
    return dataclasses.replace(context.train, **_stage1_own_train(config))


def stage1_settings() -> tuple[str, ...]:
    """The trial settings stage 1 is made from (besides the base and the coding data): trials that agree on
    them share one stage 1, so a study that searches none of them trains one (`study.preflight`)."""
    from trainables.training.train_config import TrainConfig  # torch-free

    strategy = [
        f.name for f in dataclasses.fields(StackedStrategyConfig) if f.name not in NOT_STAGE1["strategy"]
    ]
    taken = {*_stage1_own_train(StackedStrategyConfig()), *NOT_STAGE1["train"]}
    train = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in taken]
    return tuple(f"strategy/{name}" for name in strategy) + tuple(f"train/{name}" for name in train)


def _train_stage1(model: torch.nn.Module, config: StackedStrategyConfig, context: StrategyContext) -> None:
    from trainables.methods.stacked_lora import apply_stacked_lora

    apply_stacked_lora(model, config.stage1_adapter_config())
    pairs = _stage1_pairs(context)
    context.log(f"stacked LoRA stage 1: training A1 B1 on {len(pairs)} coding tasks")
    context.fit(model, pairs, _stage1_train(config, context))


def _stage1_from_cache(model, config: StackedStrategyConfig, context: StrategyContext) -> torch.nn.Module:
    """Apply stage 1 to `model`: load the cached adapter, or train it and fill the cache."""
    from trainables.methods.stacked_lora import load_stacked_lora, save_stacked_lora

    if context.cache_dir is None:
        _train_stage1(model, config, context)
        return model
    trained = []

    def build(staging: Path) -> None:  # runs under the cache's lock: the other trials wait, then load it
        _train_stage1(model, config, context)
        save_stacked_lora(model, staging, base_model_name_or_path=context.model_name)
        trained.append(True)

    cache = build_once(Path(context.cache_dir) / f"stage1-{stage1_key(config, context)}", build)
    if trained:
        context.log(f"stacked LoRA stage 1: cached in {cache}")
        return model
    context.log(f"stacked LoRA stage 1: reusing {cache}")
    return load_stacked_lora(model, cache)


def apply_stacked(
    model: torch.nn.Module, config: StackedStrategyConfig, context: StrategyContext
) -> torch.nn.Module:
    """Stage 1 (cached), then freeze it and add the trainable stage-2 adapter."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    from trainables.methods.stacked_lora import start_stage2
    from trainables.training.loop import random_state_kept

    if config.base_bits:
        # fp32 norms and input gradients for a quantised base, as for QLoRA
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.baseline == "single_lora":
        rank = config.r1 + config.r2
        lora = LoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM,
            r=rank,
            lora_alpha=config.alpha2 / config.r2 * rank,  # the stage-2 scale s2, at the combined rank
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            use_rslora=config.use_rslora,
        )
        return get_peft_model(model, lora)
    with random_state_kept():  # stage 2 starts from one random state, whether stage 1 trained here or loaded
        model = _stage1_from_cache(model, config, context)
    return start_stage2(model, config.adapter_config())


def stacked_weight_updates(model: torch.nn.Module, config: StackedStrategyConfig):
    """Stage 2's learned update f(s2 B2 A2) and its product s2 B2 A2 on every stacked layer (the single
    LoRA baseline: its PEFT layers' s B A)."""
    import torch

    from trainables.methods.stacked_lora import stacked_layers
    from trainables.scoring.update_rank import Updates

    if config.baseline == "single_lora":
        return peft_weight_updates(model)
    updates = Updates()
    with torch.no_grad():
        for name, layer in stacked_layers(model).items():
            update, product = layer.stage2_update_and_product()
            updates.product[name] = product
            if update is None:
                updates.input_dependent = True
            else:
                updates.update[name] = update
    return updates


def variant_group(settings: Mapping[str, Any]) -> str | None:
    """A plain-LoRA trial's group: `f=<f>` for the method itself, else its variant (`linear`, `single_lora`,
    ...); a trial of another LoRA variant (rslora, loraplus) is compared in `stacked_variants` instead."""
    if settings["strategy/variant"] != PLAIN:
        return None
    baseline = settings["strategy/baseline"]
    return f"f={settings['strategy/f']}" if baseline == VARIANTS[0] else baseline


def f_against_variants(groups: Sequence[str]) -> list[tuple[str, str]]:
    """Each f group against the linear stack and the single LoRA (merged_then_lora is shown, not tested).

    A study without the `linear` baseline still has the linear stack when it searched f = identity (the same
    model: `linear` only fixes f), so a study of `f=[identity,sin]` tests sin against it."""
    against = [b for b in TESTED_AGAINST if b in groups]
    if "linear" not in groups and "f=identity" in groups:
        against.insert(0, "f=identity")
    return [(g, b) for g in groups if g.startswith("f=") for b in against if b != g]


GROUPS = Grouping(
    family="stacked",
    keys=("strategy/baseline", "strategy/f", "strategy/variant"),
    key="stacked_lora",
    title="Stacked LoRA per f and against its variants",
    column="Variant",
    group=variant_group,
    labels={f"f={f}": f"f = {f}" for f in ACTIVATIONS} | VARIANT_LABELS,
    shown=(
        "strategy/f_space",
        "strategy/omega",
    ),  # omega: sin's frequency, searched (not a group: continuous)
    pairs=f_against_variants,
    note="W = W0 + A1B1 + f(A2B2): the best trial per f, and per variant. Linear stack: f is the identity; "
    "merged: stage 1 merged into W0 before a new LoRA; single: one LoRA on math only.",
)


register_strategy(
    name="stacked",
    bounded_by={"strategy/stage1_epochs": "train/epochs"},  # issue #20: a rehearsal cuts stage 1 too
    first_stage_settings=stage1_settings(),
    config_cls=StackedStrategyConfig,
    apply=apply_stacked,
    display_name="Stacked LoRA",
    colour="#8172B2",
    load_kwargs=lambda config: {"quantization": f"{config.base_bits}bit"} if config.base_bits else {},
    description="stacked LoRA: W0 + A1B1 (coding, frozen) + f(A2B2) (GSM8K)",
    needs_code_data=True,
    optimizer=lora_optimizer,
    weight_updates=stacked_weight_updates,
    groupings=(
        GROUPS,
        variant_grouping(
            "stacked", "Stacked LoRA", STACKED_LORA_VARIANTS, only={"strategy/baseline": VARIANTS[0]}
        ),
    ),
    method_settings={"strategy/baseline": VARIANTS[0], "strategy/variant": PLAIN},
    order=50,
)
