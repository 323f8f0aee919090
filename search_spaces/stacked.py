"""Stacked LoRA, `W = W0 + s1 B1 A1 + f(s2 B2 A2)`: stage 2's (math) rank, alpha, dropout and learning
rate, the nonlinearity f and where it acts, and the baseline the trial runs.

Stage 1 (coding) is the study's, not the trial's: its settings (`r1`, `alpha1`, `target_modules`,
`stage1_*`) are not sampled here, so every trial stacks on the one A1 B1 the study trains first (as in the
study reproduced: A1 B1 trained, then frozen). A study can still search one (`--set stacked:strategy/r1=[8,16]`),
at the price of a stage 1 per value.

Conditional (define-by-run): f and f_space exist only for `baseline == "stacked"` (linear fixes f to the
identity, merged_then_lora is a plain second LoRA). f and the baseline are grouping parameters
(the paper reports the best trial of each), so `COVERAGE` enqueues each f, then each other baseline, then
each stage-2 LoRA variant, once. `omega` (the frequency of f = sin) exists only where f is sin, on a log
scale: with T5-small's gain sqrt(512) the update's slope at zero, omega / sqrt(out), runs from 0.4 to 44.
"""

from __future__ import annotations

from typing import Any

from search_spaces import (
    LORA_ALPHAS,
    LORA_RANKS,
    VARIANT_CONDITIONAL,
    train_params,
    variant_coverage,
    variant_params,
)
from trainables.methods.stacked import STACKED_LORA_VARIANTS, VARIANTS
from trainables.methods.stacked_lora.config import ACTIVATIONS, F_SPACES, PERIODIC

F_CHOICES = tuple(ACTIVATIONS)
"""Every nonlinearity the adapter offers (adding one to `ACTIVATIONS` adds it to the search)."""
DROPOUTS = (0.0, 0.05, 0.1)
OMEGAS = (10.0, 1000.0)
"""Frequency of f = sin, log scale (Ji et al. use frequencies in the hundreds for LoRA)."""

COVERAGE = (
    tuple({"strategy/baseline": "stacked", "strategy/f": f} for f in F_CHOICES)
    + tuple({"strategy/baseline": variant} for variant in VARIANTS[1:])
    + variant_coverage(STACKED_LORA_VARIANTS)
)
CONDITIONAL = frozenset({"strategy/f", "strategy/f_space", "strategy/omega"}) | VARIANT_CONDITIONAL
"""f, f_space (and omega for sin) exist only on the stacked branch; a variant's own settings only for that
variant."""


def space(trial: Any, *, base: dict[str, Any]) -> dict[str, Any]:
    """One stacked LoRA trial's flat config (stage 2's learning rate is `train/lr`, its dropout
    `strategy/dropout`)."""
    baseline = trial.suggest_categorical("strategy/baseline", VARIANTS)
    params: dict[str, Any] = {
        **train_params(trial, base, lr=(1e-4, 3e-3)),
        "strategy/baseline": baseline,
        "strategy/dropout": trial.suggest_categorical("strategy/dropout", DROPOUTS),
        "strategy/r2": trial.suggest_categorical("strategy/r2", LORA_RANKS),
        "strategy/alpha2": trial.suggest_categorical("strategy/alpha2", LORA_ALPHAS),
    }
    if baseline == "stacked":
        params["strategy/f"] = trial.suggest_categorical("strategy/f", F_CHOICES)
        params["strategy/f_space"] = trial.suggest_categorical("strategy/f_space", F_SPACES)
        if params["strategy/f"] in PERIODIC:
            params["strategy/omega"] = trial.suggest_float("strategy/omega", *OMEGAS, log=True)
    return {**base, **params, **variant_params(trial, STACKED_LORA_VARIANTS)}
