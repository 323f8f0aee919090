"""LoRA + chain-of-thought prompting: LoRA trained and evaluated with one prompt style.

The style (one of `trainables.data.prompts.COT_STYLES`) is the trial's `train/prompt_style` setting, so the study can
report accuracy per style and config; the adapter itself is plain LoRA.
"""

from __future__ import annotations

from trainables.methods.lora import LoraStrategyConfig, apply_lora, lora_optimizer, peft_weight_updates
from trainables.methods.registry import register_strategy

register_strategy(
    name="lora_cot",
    config_cls=LoraStrategyConfig,
    apply=apply_lora,
    display_name="LoRA + CoT",
    colour="#CCB974",
    default_prompt_style="breakdown",
    description="LoRA with a chain-of-thought prompt style: breakdown, no_breakdown or code",
    optimizer=lora_optimizer,
    weight_updates=peft_weight_updates,
    order=20,
)
