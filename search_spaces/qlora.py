"""QLoRA: LoRA's space on a base loaded in 8-bit (the bit width is the preset's, not searched)."""

from __future__ import annotations

from typing import Any

from search_spaces.common import lora_params, train_params
from search_spaces.lora import LR


def space(trial: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """One QLoRA trial's flat config."""
    return {**base, **train_params(trial, base, lr=LR), **lora_params(trial)}
