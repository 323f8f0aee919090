"""Full fine-tuning: the loop's settings with a smaller learning rate, weight decay, and whether the
shared embedding stays frozen."""

from __future__ import annotations

from typing import Any

from search_spaces import train_params

LR = (1e-5, 1e-3)
"""Every weight moves, so steps an order of magnitude below LoRA's."""


def space(trial: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """One full fine-tuning trial's flat config."""
    return {
        **base,
        **train_params(trial, base, lr=LR),
        "train/weight_decay": trial.suggest_float("train/weight_decay", 0.0, 0.1),
        "strategy/freeze_embeddings": trial.suggest_categorical("strategy/freeze_embeddings", (False, True)),
    }
