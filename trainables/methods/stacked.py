"""Stacked LoRA, the study's own method: W = W0 + s1 B1 A1 + f(s2 B2 A2), trained in two stages.

Stage 1 trains A1 B1 on a coding dataset; stage 2 freezes it and trains A2 B2 on GSM8K through f. Stage 1
depends only on its own settings, so it is trained once and shared by every trial with the same ones: a
content-addressed cache in a local folder of each node (`~/.cache/slm-math-study/stage1` for the study),
guarded by a file lock so concurrent trials on a node neither train it twice nor read a half-written
adapter. A file lock needs a local file system, which object storage is not; being content-addressed, the
cache is correct to share across studies, and on a cluster each node trains a given stage 1 at most once.

The `baseline` setting swaps in the comparison methods: `linear` (f = identity), `merged_then_lora`
(stage 1 folded into W0, then a fresh LoRA: COLA-style) and `single_lora` (one LoRA of rank r1 + r2 on
GSM8K only).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainables.data.prompts import code_task_example
from trainables.methods.registry import StrategyContext, register_strategy
from trainables.methods.stacked_lora.config import StackedLoraConfig

if TYPE_CHECKING:  # torch, PEFT and the adapter's modules load when a trial applies the method
    import torch

BASELINES = ("stacked", "linear", "merged_then_lora", "single_lora")
"""The method (first), then the comparison baselines; the search space and the analysis import these."""
CACHE_FORMAT = 1  # bump when what a cached stage 1 means changes


@dataclass
class StackedStrategyConfig(StackedLoraConfig):
    """The adapter's hyperparameters (`StackedLoraConfig`), stage 1's training, and which baseline to run."""

    stage1_lr: float = 1e-3
    """Learning rate of stage 1."""
    stage1_epochs: int = 1
    """Epochs of stage 1 over the coding dataset."""
    baseline: str = "stacked"
    """stacked (the method), linear, merged_then_lora or single_lora (the comparison baselines)."""
    base_bits: int = 0
    """0: a float base; 8 or 4: the base loaded in 8-bit / 4-bit NF4 through bitsandbytes (QLoRA + stacking)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base_bits not in (0, 4, 8):
            raise ValueError(f"base_bits must be 0, 4 or 8, got {self.base_bits}")
        if self.baseline not in BASELINES:
            raise ValueError(
                f"unknown stacked baseline {self.baseline!r}; choose from {', '.join(BASELINES)}"
            )
        if not self.stage1_lr > 0:
            raise ValueError(f"stage1_lr must be > 0, got {self.stage1_lr}")
        if self.stage1_epochs < 1:
            raise ValueError(f"stage1_epochs must be >= 1, got {self.stage1_epochs}")
        self.adapter_config()  # the baseline's overrides must make a valid adapter too

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


def stage1_key(config: StackedStrategyConfig, context: StrategyContext) -> str:
    """A digest of everything stage 1's result depends on: base model, data, adapter shape, training."""
    train = context.train
    parts = {
        "format": CACHE_FORMAT,
        "model": context.model_name,
        "base_bits": config.base_bits,
        "data": hashlib.sha256(
            "\0".join(f"{r.text}\0{r.code}" for r in context.code_records).encode()
        ).hexdigest(),
        "adapter": config.adapter_config().stage1_fields(),
        "dropout": config.dropout,
        "lr": config.stage1_lr,
        "epochs": config.stage1_epochs,
        "train": {
            k: getattr(train, k)
            for k in ("batch_size", "grad_accum", "max_input_tokens", "max_target_tokens", "seed")
        },
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _train_stage1(model: torch.nn.Module, config: StackedStrategyConfig, context: StrategyContext) -> None:
    if not context.code_records:
        raise ValueError("stacked LoRA needs a coding dataset for stage 1 (none was loaded)")
    pairs = [code_task_example(r) for r in context.code_records]
    stage1_train = dataclasses.replace(
        context.train,
        lr=config.stage1_lr,
        epochs=config.stage1_epochs,
        evals_per_epoch=1,
        prompt_style="code",
    )
    context.log(f"stacked LoRA stage 1: training A1 B1 on {len(pairs)} coding tasks")
    context.fit(model, pairs, stage1_train)


def _stage1_from_cache(model, config: StackedStrategyConfig, context: StrategyContext) -> torch.nn.Module:
    """Apply stage 1 to `model`: load the cached adapter, or train it and fill the cache."""
    from trainables.methods.stacked_lora import apply_stacked_lora, load_stacked_lora, save_stacked_lora

    if context.cache_dir is None:
        apply_stacked_lora(model, config.adapter_config())
        _train_stage1(model, config, context)
        return model
    cache = Path(context.cache_dir) / f"stage1-{stage1_key(config, context)}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{cache}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one trial trains; the others wait here, then load its result
        if cache.is_dir():
            context.log(f"stacked LoRA stage 1: reusing {cache}")
            return load_stacked_lora(model, cache)
        apply_stacked_lora(model, config.adapter_config())
        _train_stage1(model, config, context)
        staging = Path(f"{cache}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        save_stacked_lora(model, staging, base_model_name_or_path=context.model_name)
        staging.rename(cache)  # atomic: a reader sees a whole adapter or none
        context.log(f"stacked LoRA stage 1: cached in {cache}")
        return model


def apply_stacked(
    model: torch.nn.Module, config: StackedStrategyConfig, context: StrategyContext
) -> torch.nn.Module:
    """Stage 1 (cached), then freeze it and add the trainable stage-2 adapter."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    from trainables.methods.stacked_lora import start_stage2

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
        )
        return get_peft_model(model, lora)
    model = _stage1_from_cache(model, config, context)
    return start_stage2(model, config.adapter_config())


register_strategy(
    name="stacked",
    config_cls=StackedStrategyConfig,
    apply=apply_stacked,
    display_name="Stacked LoRA",
    colour="#8172B2",
    load_kwargs=lambda config: {"quantization": f"{config.base_bits}bit"} if config.base_bits else {},
    preset_settings="stacked",
    description="stacked LoRA: W0 + A1B1 (coding, frozen) + f(A2B2) (GSM8K)",
    needs_code_data=True,
    order=50,
)
