"""LoRA + chain-of-thought prompting: LoRA trained and evaluated with one prompt style.

The style (one of `trainables.data.prompts.COT_STYLES`) is the trial's `train/prompt_style` setting, so the study
compares the styles (its grouping, `cot`: a table, confirmed groups, every pair tested); the adapter itself is plain
LoRA.
"""

from __future__ import annotations

from trainables.data.prompts import PROMPT_STYLES
from trainables.methods.lora import LoraStrategyConfig, apply_lora, lora_optimizer, peft_weight_updates
from trainables.methods.registry import Grouping, register_strategy

STYLES = Grouping(
    family="cot",
    keys=("train/prompt_style",),
    key="cot_styles",
    title="Accuracy per chain-of-thought prompt style",
    column="Prompt style",
    # answer_only first: the floor the chain-of-thought styles are read against
    labels={style: style for style in PROMPT_STYLES},
    note="The calculator columns are the same trial's test accuracy when a calculator fills each `<<expr=` "
    "step (breakdown style only).",
)

register_strategy(
    name="lora_cot",
    config_cls=LoraStrategyConfig,
    apply=apply_lora,
    display_name="LoRA + CoT",
    colour="#CCB974",
    default_prompt_style="breakdown",
    groupings=(STYLES,),
    description="LoRA with a chain-of-thought prompt style: breakdown, no_breakdown or code",
    optimizer=lora_optimizer,
    weight_updates=peft_weight_updates,
    order=20,
)
