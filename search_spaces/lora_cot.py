"""LoRA with a chain-of-thought prompt style: LoRA's space plus `train/prompt_style`.

The style is a grouping parameter: the paper reports the best trial per style, so every style is also
enqueued once (`COVERAGE`) before TPE chooses. `answer_only` is one of them, as the floor: a style whose
interval does not clear answer-only's has not shown that its reasoning helps.
"""

from __future__ import annotations

from typing import Any

from search_spaces import (
    VARIANT_CONDITIONAL,
    lora_params,
    train_params,
    variant_coverage,
    variant_params,
)
from search_spaces.lora import LR
from trainables.data.prompts import PROMPT_STYLES
from trainables.methods.lora import VARIANTS

STYLES = PROMPT_STYLES
"""What the search chooses from: answer_only is the floor every chain-of-thought style is read against."""

COVERAGE = tuple({"train/prompt_style": style} for style in (*STYLES[1:], STYLES[0])) + variant_coverage(
    VARIANTS
)
"""Each style, longest targets first and answer_only (a few tokens) last, so that workers running them side
by side finish together (in the tiny study the breakdown trial takes about twice answer_only's time); then
each LoRA variant."""
CONDITIONAL = VARIANT_CONDITIONAL


def space(trial: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """One LoRA + CoT trial's flat config."""
    style = trial.suggest_categorical("train/prompt_style", STYLES)
    return {
        **base,
        **train_params(trial, base, lr=LR),
        **lora_params(trial),
        **variant_params(trial, VARIANTS),
        "train/prompt_style": style,
    }
