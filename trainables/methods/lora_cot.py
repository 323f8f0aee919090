"""LoRA + chain-of-thought prompting: LoRA trained and evaluated with one prompt style.

The style (one of `trainables.data.prompts.COT_STYLES`) is the trial's `train/prompt_style` setting, so the study
compares the styles (its grouping, `cot`: a table, confirmed groups, every pair tested), on plain LoRA; the
adapter is LoRA or one of its variants (`strategy/variant`, compared in the family `lora_cot_variants`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.data.prompts import PROMPT_STYLES
from trainables.methods.lora import (
    PLAIN,
    LoraStrategyConfig,
    apply_lora,
    lora_optimizer,
    peft_weight_updates,
    variant_grouping,
)
from trainables.methods.registry import Grouping, register_strategy


def plain_style(settings: Mapping[str, Any]) -> str | None:
    """A plain-LoRA trial's prompt style (trials of another LoRA variant are compared in its variant family)."""
    return settings["train/prompt_style"] if settings["strategy/variant"] == PLAIN else None


STYLES = Grouping(
    family="cot",
    keys=("train/prompt_style", "strategy/variant"),
    group=plain_style,
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
    groupings=(STYLES, variant_grouping("lora_cot", "LoRA + CoT")),
    method_settings={"strategy/variant": PLAIN},
    description="LoRA with a chain-of-thought prompt style: breakdown, no_breakdown or code",
    optimizer=lora_optimizer,
    weight_updates=peft_weight_updates,
    order=20,
)
