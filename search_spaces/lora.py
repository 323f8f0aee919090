"""LoRA: the loop's learning rate, batch, warmup and epochs; the adapter's rank, alpha, dropout, targets;
and its variant (PEFT's rslora, dora, pissa, olora; LoRA+), each enqueued once (`COVERAGE`)."""

from __future__ import annotations

from typing import Any

from search_spaces import (
    VARIANT_CONDITIONAL,
    lora_params,
    train_params,
    variant_coverage,
    variant_params,
)
from trainables.methods.lora import VARIANTS

LR = (1e-4, 3e-3)
"""LoRA trains few weights from a zero start, so it wants larger steps than full fine-tuning."""

COVERAGE = variant_coverage(VARIANTS)
CONDITIONAL = VARIANT_CONDITIONAL


def space(trial: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """One LoRA trial's flat config: `base` with the sampled settings on top."""
    return {
        **base,
        **train_params(trial, base, lr=LR),
        **lora_params(trial),
        **variant_params(trial, VARIANTS),
    }
