"""The hyperparameters several methods share: the loop's (learning rate, batch, warmup, epochs) and LoRA's.

Every value is a constant or an Optuna suggestion; nothing here imports torch, so the CLI stays fast.
Ranges are for T5-small on GSM8K; the tiny preset uses the same ones (its epochs come from the preset).
"""

from __future__ import annotations

from typing import Any

BATCH_SIZES = (8, 16, 32)
LORA_RANKS = (4, 8, 16, 32)
LORA_ALPHAS = (8, 16, 32, 64)
LORA_TARGETS = ("q,v", "q,k,v,o", "q,k,v,o,wi,wo")
"""Attention only (the LoRA paper's choice), all attention projections, attention plus feed-forward."""


def train_params(trial: Any, base: dict[str, Any], *, lr: tuple[float, float]) -> dict[str, Any]:
    """The shared loop's searched settings; `base["train/epochs"]` (the preset's) is the most epochs tried.

    Args:
        trial: An Optuna trial (or anything with its `suggest_*` methods).
        base: The flat fixed trial config (`train/epochs` must be in it).
        lr: (low, high) of the learning rate, sampled on a log scale.
    """
    return {
        "train/lr": trial.suggest_float("train/lr", lr[0], lr[1], log=True),
        "train/batch_size": trial.suggest_categorical("train/batch_size", BATCH_SIZES),
        "train/warmup_ratio": trial.suggest_float("train/warmup_ratio", 0.0, 0.1),
        "train/epochs": trial.suggest_int("train/epochs", 1, base["train/epochs"]),
    }


def lora_params(trial: Any) -> dict[str, Any]:
    """Rank, alpha, dropout and target modules of one LoRA adapter (`strategy/...`)."""
    return {
        "strategy/r": trial.suggest_categorical("strategy/r", LORA_RANKS),
        "strategy/alpha": trial.suggest_categorical("strategy/alpha", LORA_ALPHAS),
        "strategy/dropout": trial.suggest_float("strategy/dropout", 0.0, 0.2),
        "strategy/target_modules": trial.suggest_categorical("strategy/target_modules", LORA_TARGETS),
    }
