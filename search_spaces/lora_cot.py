"""LoRA with a chain-of-thought prompt style: LoRA's space plus `train/prompt_style`.

The style is a grouping parameter: the paper reports the best trial per style, so every style is also
enqueued once (`COVERAGE`) before TPE chooses.
"""

from __future__ import annotations

from typing import Any

from search_spaces.common import lora_params, train_params
from search_spaces.lora import LR
from trainables.data.prompts import COT_STYLES

COVERAGE = tuple({"train/prompt_style": style} for style in COT_STYLES)


def space(trial: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """One LoRA + CoT trial's flat config."""
    style = trial.suggest_categorical("train/prompt_style", COT_STYLES)
    return {**base, **train_params(trial, base, lr=LR), **lora_params(trial), "train/prompt_style": style}
