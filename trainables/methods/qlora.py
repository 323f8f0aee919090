"""QLoRA: LoRA on a base model loaded in 8-bit (or 4-bit NF4) through bitsandbytes.

Quantisation enters at load time through `load_kwargs`, so QLoRA is LoRA plus a loading argument, the way
torchtune derives its QLoRA builders from the LoRA ones. Of LoRA's variants, `pissa` and `olora` are
refused: they subtract s B0 A0 from W0, which on a quantised W0 means dequantising and re-quantising the
residual (PEFT refuses PiSSA there and asks for a float base); the others act beside W0 and keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainables.methods.lora import (
    PLAIN,
    RESIDUAL_INIT_VARIANTS,
    VARIANTS,
    LoraStrategyConfig,
    check_variant,
    lora_optimizer,
    peft_lora_config,
    peft_weight_updates,
    variant_grouping,
)
from trainables.methods.registry import StrategyContext, register_strategy

if TYPE_CHECKING:
    import torch


QLORA_VARIANTS = tuple(v for v in VARIANTS if v not in RESIDUAL_INIT_VARIANTS)
"""The LoRA variants that leave a quantised W0 as it is."""


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
        check_variant(
            self.variant,
            QLORA_VARIANTS,
            why=f"would change the {self.bits}-bit W0 (its init subtracts s B0 A0, and re-quantising is lossy)",
        )


def apply_qlora(
    model: torch.nn.Module, config: QLoraStrategyConfig, context: StrategyContext
) -> torch.nn.Module:
    """Prepare the quantised base for training (fp32 norms, input grads) and add LoRA."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    model = get_peft_model(model, peft_lora_config(config))
    if config.variant == "dora":
        _keep_8bit_scales(model)
    return model


def _keep_8bit_scales(model: torch.nn.Module) -> None:
    """Work around DoRA on an 8-bit base on a CPU (PEFT 0.21, bitsandbytes 0.50): DoRA dequantises the base
    weight in every forward, and on a CPU PEFT then re-wraps it (`dequantize_module_weight`'s
    `module.weight.to(device)`), which hands it back bitsandbytes' `CB` without its `SCB`. The layer's next
    forward takes that pair as a fresh quantisation and drops its scale (`state.SCB = None`), so it fails.
    The frozen int8 weight is already in the layer's state; dropping the stray `CB` keeps the state whole."""
    import bitsandbytes as bnb

    def keep_scale(layer, args):
        if layer.weight.CB is not None and layer.weight.SCB is None and layer.state.SCB is not None:
            layer.weight.CB = None

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            module.register_forward_pre_hook(keep_scale)


register_strategy(
    name="qlora",
    config_cls=QLoraStrategyConfig,
    apply=apply_qlora,
    display_name="QLoRA",
    colour="#55A868",
    load_kwargs=lambda config: {"quantization": f"{config.bits}bit"},
    base_models={"t5-small": "t5-base"},  # the study reproduced runs QLoRA on T5-base
    description="QLoRA: LoRA on T5-base loaded in 8-bit with bitsandbytes",
    optimizer=lora_optimizer,
    weight_updates=peft_weight_updates,
    groupings=(variant_grouping("qlora", "QLoRA", QLORA_VARIANTS),),
    method_settings={"strategy/variant": PLAIN},
    gpu_share=0.5,
    quantized_base=True,
    order=40,
)
