"""QLoRA: LoRA on a base model loaded in 8-bit (or 4-bit NF4) through bitsandbytes.

Quantisation enters at load time through `load_kwargs`, so QLoRA is LoRA plus a loading argument, the way
torchtune derives its QLoRA builders from the LoRA ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainables.methods.lora import LoraStrategyConfig, peft_lora_config
from trainables.methods.registry import StrategyContext, register_strategy

if TYPE_CHECKING:
    import torch


@dataclass
class QLoraStrategyConfig(LoraStrategyConfig):
    """LoRA hyperparameters plus how the frozen base is quantised."""

    bits: int = 8
    """8 (LLM.int8) as in the study, or 4 (NF4)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory on large bases (off by default: T5-base fits easily)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits not in (4, 8):
            raise ValueError(f"QLoRA bits must be 4 or 8, got {self.bits}")


def apply_qlora(
    model: torch.nn.Module, config: QLoraStrategyConfig, context: StrategyContext
) -> torch.nn.Module:
    """Prepare the quantised base for training (fp32 norms, input grads) and add LoRA."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return get_peft_model(model, peft_lora_config(config))


register_strategy(
    name="qlora",
    config_cls=QLoraStrategyConfig,
    apply=apply_qlora,
    display_name="QLoRA",
    colour="#55A868",
    load_kwargs=lambda config: {"quantization": f"{config.bits}bit"},
    base_model="qlora_model",
    description="QLoRA: LoRA on T5-base loaded in 8-bit with bitsandbytes",
    gpu_share=0.5,
    quantized_base=True,
    order=40,
)
