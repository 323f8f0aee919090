"""LoRA (Hu et al. 2021): the base model is frozen, low-rank A and B train on the targeted linear layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainables.methods.registry import StrategyContext, register_strategy

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig

# T5's attention projections are q, k, v, o; its feed-forward layers wi (wi_0 / wi_1 when gated) and wo.
T5_LINEAR_NAMES = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo")


@dataclass
class LoraStrategyConfig:
    """Hyperparameters of a LoRA adapter."""

    r: int = 8
    """Rank of A (r x in) and B (out x r)."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / r) * B A."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    target_modules: tuple[str, ...] = ("q", "v")
    """Names of T5 linear layers that get an adapter."""

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


def peft_lora_config(config: LoraStrategyConfig) -> LoraConfig:
    """The PEFT config for `config` (zero-init B, so a fresh adapter leaves outputs unchanged)."""
    from peft import LoraConfig, TaskType  # PEFT takes seconds to import: only when a trial needs it

    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
    )


def apply_lora(
    model: torch.nn.Module, config: LoraStrategyConfig, context: StrategyContext
) -> torch.nn.Module:
    """Freeze the base model and add a trainable LoRA adapter."""
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(config))


register_strategy(
    name="lora",
    config_cls=LoraStrategyConfig,
    apply=apply_lora,
    display_name="LoRA",
    colour="#4C72B0",
    description="LoRA on T5-small: frozen base, trainable low-rank A, B",
    order=10,
)
