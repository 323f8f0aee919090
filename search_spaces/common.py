"""The hyperparameters several methods share: the loop's (learning rate, batch, warmup, epochs) and LoRA's.

Every value is a constant or an Optuna suggestion; nothing here imports torch, so the CLI stays fast.
Ranges are for T5-small on GSM8K (the paper preset's); a preset narrows them with settings of the same keys.
"""

from __future__ import annotations

from typing import Any

BATCH_SIZES = (8, 16, 32)
EPOCHS = (1, 5)
"""Epochs tried (the study reproduced trains five); `train/epochs=N` fixes them, `1..N` narrows them."""
LORA_RANKS = (4, 8, 16, 32)
LORA_ALPHAS = (8, 16, 32, 64)
LORA_TARGETS = ("q,v", "q,k,v,o", "q,k,v,o,wi,wo")
"""Attention only (the LoRA paper's choice), all attention projections, attention plus feed-forward."""
LORAPLUS_LR_RATIOS = (2.0, 32.0)
"""LoRA+'s B / A learning-rate ratio, log scale: the paper's 16 (and PEFT's example) in the middle."""
PISSA_NITERS = (0, 4, 16)
"""PiSSA's SVD: exact (0), or 4 / 16 subspace iterations (PEFT's `pissa_niter_K`, the fast one)."""
VARIANT_CONDITIONAL = frozenset({"strategy/loraplus_lr_ratio", "strategy/pissa_niter"})
"""A variant's own settings exist only where that variant is chosen."""


def train_params(trial: Any, base: dict[str, Any], *, lr: tuple[float, float]) -> dict[str, Any]:
    """The shared loop's searched settings.

    Args:
        trial: An Optuna trial (or anything with its `suggest_*` methods).
        base: The flat fixed trial config (unused: every loop setting here is searched).
        lr: (low, high) of the learning rate, sampled on a log scale.
    """
    return {
        "train/lr": trial.suggest_float("train/lr", lr[0], lr[1], log=True),
        "train/batch_size": trial.suggest_categorical("train/batch_size", BATCH_SIZES),
        "train/warmup_ratio": trial.suggest_float("train/warmup_ratio", 0.0, 0.1),
        "train/epochs": trial.suggest_int("train/epochs", *EPOCHS),
    }


def lora_params(trial: Any) -> dict[str, Any]:
    """Rank, alpha, dropout and target modules of one LoRA adapter (`strategy/...`)."""
    return {
        "strategy/r": trial.suggest_categorical("strategy/r", LORA_RANKS),
        "strategy/alpha": trial.suggest_categorical("strategy/alpha", LORA_ALPHAS),
        "strategy/dropout": trial.suggest_float("strategy/dropout", 0.0, 0.2),
        "strategy/target_modules": trial.suggest_categorical("strategy/target_modules", LORA_TARGETS),
    }


def variant_params(trial: Any, variants: tuple[str, ...]) -> dict[str, Any]:
    """The LoRA variant (`strategy/variant`, one of `variants`) and its own settings where it has any."""
    variant = trial.suggest_categorical("strategy/variant", variants)
    params: dict[str, Any] = {"strategy/variant": variant}
    if variant == "loraplus":
        params["strategy/loraplus_lr_ratio"] = trial.suggest_float(
            "strategy/loraplus_lr_ratio", *LORAPLUS_LR_RATIOS, log=True
        )
    if variant == "pissa":
        params["strategy/pissa_niter"] = trial.suggest_categorical("strategy/pissa_niter", PISSA_NITERS)
    return params


def variant_coverage(variants: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """One enqueued point per variant, so that a study of len(variants) trials or more tries each."""
    return tuple({"strategy/variant": variant} for variant in variants)
