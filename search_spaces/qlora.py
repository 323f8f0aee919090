"""QLoRA: LoRA's space on a base loaded in 8-bit (the bit width is the preset's, not searched), with the
variants that leave a quantised W0 alone."""

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
from trainables.methods.qlora import QLORA_VARIANTS

COVERAGE = variant_coverage(QLORA_VARIANTS)
CONDITIONAL = VARIANT_CONDITIONAL


def space(trial: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """One QLoRA trial's flat config."""
    return {
        **base,
        **train_params(trial, base, lr=LR),
        **lora_params(trial),
        **variant_params(trial, QLORA_VARIANTS),
    }
