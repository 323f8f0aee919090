"""One search space per method, each an Optuna define-by-run function `space(trial, *, base) -> dict`.

A space returns the whole flat trial config: the fixed `base` (`study.plan.base_trial`, "/" keys) with its
sampled values on top. That flat dict is what Ray passes to the trainable (`study.optuna_store`), what
`trainables.trial_config.TrialConfig.from_dict` reads and what the results store (`params.json`).

A method's space is the module its registry record names (`Strategy.search_space`: `search_spaces.<name>`
for the built-in methods, any importable module for a plugin), imported when first asked for. It holds:
- `space(trial, *, base)`: the define-by-run function;
- `COVERAGE` (optional): the points each experiment enqueues before TPE samples, one per value of a
  grouping parameter the paper reports separately (each CoT style; each stacking f, then each other
  baseline), so a study of any size has a trial for every group;
- `CONDITIONAL` (optional): keys the space samples only on some branches; a constant override of such a
  key is applied only where the space asks for it.

The settings several spaces search (the loop's learning rate, batch, warmup and epochs; one LoRA adapter's
and its variant's) are defined here once, as constants and Optuna suggestions (nothing imports torch, so
the CLI stays fast). Ranges are for T5-small on GSM8K (the paper preset's); a preset narrows them with
settings of the same keys.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from search_spaces.overrides import NarrowedTrial, Override
from trainables.methods import get_strategy

Space = Callable[..., dict[str, Any]]

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


def space_module(method: str) -> ModuleType:
    """The module holding `method`'s search space, as its registry record names it.

    Raises:
        ValueError: for an unknown method (listing the known ones) or a record naming a module without
            a `space` function.
    """
    path = get_strategy(method).search_space
    try:
        module = importlib.import_module(path)
    except ImportError as err:
        raise ValueError(f"method {method!r}: cannot import its search space {path} ({err})") from None
    if not callable(getattr(module, "space", None)):
        raise ValueError(f"method {method!r}: its search space module {path} has no space(trial, *, base)")
    return module


def get_space(method: str) -> Space:
    """The search space of `method` (see `space_module`)."""
    return space_module(method).space


def coverage(method: str) -> tuple[dict[str, Any], ...]:
    """`method`'s coverage points before any override (its space module's `COVERAGE`, or none)."""
    return tuple(getattr(space_module(method), "COVERAGE", ()))


def conditional_keys(method: str) -> frozenset[str]:
    """The keys `method`'s space samples only on some branches (its module's `CONDITIONAL`, or none)."""
    return frozenset(getattr(space_module(method), "CONDITIONAL", ()))


def apply_space(trial: Any, *, method: str, base: dict[str, Any], overrides: Sequence[Override] = ()) -> dict:
    """Run `method`'s space on `trial` with `overrides`; returns the flat trial config.

    This is the define-by-run function Ray's `OptunaSearch` calls; bind everything but `trial` with
    `define_by_run` (a `functools.partial` of this module-level function pickles, a closure would not).
    """
    by_key = {o.key: o for o in overrides}
    narrowed = NarrowedTrial(trial, by_key)
    config = get_space(method)(narrowed, base=base)
    for key, override in by_key.items():
        if key in narrowed.asked or key in conditional_keys(method):
            continue  # answered inside the space, or a branch this trial did not take
        config[key] = override.suggest(trial)
    return config


def define_by_run(
    method: str, base: dict[str, Any], overrides: Sequence[Override] = ()
) -> Callable[[Any], dict]:
    """`apply_space` with everything but the trial bound: what `OptunaSearch(space=...)` takes."""
    return functools.partial(apply_space, method=method, base=dict(base), overrides=tuple(overrides))


def coverage_points(method: str, overrides: Sequence[Override] = ()) -> list[dict[str, Any]]:
    """The points to enqueue for `method`: its `COVERAGE` minus those the overrides rule out, and minus those
    they pin whole (every key a fixed value): every trial matches such a point, so it covers no group."""
    by_key = {o.key: o for o in overrides}
    return [
        dict(point)
        for point in coverage(method)
        if all(key not in by_key or by_key[key].accepts(value) for key, value in point.items())
        and not all(key in by_key and by_key[key].kind == "fixed" for key in point)
    ]


class _Recorder:
    """A stand-in trial that answers with a point's value, or the first choice / the low end; it records
    each key's domain as the `Override` that gives it (a range with its scale, or the choices)."""

    def __init__(self, point: Mapping[str, Any]) -> None:
        self.point = point
        self.domains: dict[str, Override] = {}

    def _answer(self, domain: Override, default: Any) -> Any:
        self.domains.setdefault(domain.key, domain)
        return self.point.get(domain.key, default)

    def suggest_float(self, name, low, high, *, log=False, **_):
        return self._answer(Override(name, "range", low=float(low), high=float(high), log=log), low)

    def suggest_int(self, name, low, high, *, log=False, **_):
        return self._answer(Override(name, "range", low=int(low), high=int(high), log=log), low)

    def suggest_categorical(self, name, choices):
        return self._answer(Override(name, "choices", choices=tuple(choices)), choices[0])


def space_domains(method: str, base: dict[str, Any]) -> dict[str, Override]:
    """Key -> the domain `method`'s space samples it from, for every key it samples on some branch (its
    coverage points reach every branch): the search space's own defaults, as overrides would give them."""
    recorder = _Recorder({})
    for point in ({}, *coverage(method)):
        recorder.point = point
        get_space(method)(recorder, base=base)
    return recorder.domains


def space_keys(method: str, base: dict[str, Any]) -> set[str]:
    """Every key `method`'s space samples on some branch."""
    return set(space_domains(method, base))


def setting_keys(method: str, base: dict[str, Any]) -> set[str]:
    """The `strategy/...` keys a trial of `method` has, with those its space samples: where an unprefixed
    `--set strategy/...` (or a preset's) goes (`route`). A setting the space leaves alone is still the
    method's (stacked LoRA's `target_modules`, which its stage 1 owns)."""
    fields = {f"strategy/{f.name}" for f in dataclasses.fields(get_strategy(method).config_cls)}
    return space_keys(method, base) | fields


def searched_keys(method: str, base: dict[str, Any], overrides: Sequence[Override] = ()) -> set[str]:
    """The keys whose value differs between trials of `method` under `overrides`: those its space samples
    that no override fixes, and those the overrides search themselves."""
    fixed = {o.key for o in overrides if o.kind == "fixed"}
    sampled = {k for k, domain in space_domains(method, base).items() if domain.kind != "fixed"}
    return (sampled - fixed) | {o.key for o in overrides if o.kind != "fixed"}


def space_upper(method: str, key: str, base: dict[str, Any]) -> Any:
    """The high end of the range (or the largest of the numbers) `method`'s space samples `key` from
    (`train/epochs`: the most epochs a trial can run, ASHA's horizon); None where it samples no number."""
    domain = space_domains(method, base).get(key)
    if domain is None or domain.kind == "fixed":
        return None
    if domain.kind == "range":
        return domain.high
    numbers = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in domain.choices)
    return max(domain.choices) if numbers else None
