"""One search space per method, each an Optuna define-by-run function `space(trial, *, base) -> dict`.

A space returns the whole flat trial config: the fixed `base` (from `study.prepare.base_trial`, flattened
with "/" keys) with its sampled values on top. Keys arrive nested in the trainable (`train/lr` ->
`config["train"]["lr"]`), in exactly the shape `trainables.training.trial.TrialConfig.from_dict` accepts.

`COVERAGE` lists the points each experiment enqueues before TPE samples: one per value of a grouping
parameter the paper reports separately (each CoT style; each stacking f, then each other baseline), so a
study of any size has a trial for every group. `CONDITIONAL` names keys a space samples only on some
branches; a constant override of such a key is applied only where the space asks for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from search_spaces import full, lora, lora_cot, qlora, stacked
from search_spaces.overrides import NarrowedTrial, Override

Space = Callable[..., dict[str, Any]]

SEARCH_SPACES: dict[str, Space] = {
    "lora": lora.space,
    "lora_cot": lora_cot.space,
    "full": full.space,
    "qlora": qlora.space,
    "stacked": stacked.space,
}
COVERAGE: dict[str, tuple[dict[str, Any], ...]] = {"lora_cot": lora_cot.COVERAGE, "stacked": stacked.COVERAGE}
CONDITIONAL: dict[str, frozenset[str]] = {
    "stacked": frozenset({"strategy/f", "strategy/f_space", "strategy/alpha1", "strategy/stage1_lr"})
}


def get_space(method: str) -> Space:
    """The search space of `method`.

    Raises:
        ValueError: for an unknown method, listing the known ones.
    """
    if method not in SEARCH_SPACES:
        raise ValueError(f"no search space for method {method!r}; choose from {', '.join(SEARCH_SPACES)}")
    return SEARCH_SPACES[method]


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 1e-3, "eval": {"n": 1}}}` -> `{"train/lr": 1e-3, "train/eval/n": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten`: "/" keys become nested dicts, as Ray Tune nests them."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def apply_space(trial: Any, *, method: str, base: dict[str, Any], overrides: Sequence[Override] = ()) -> dict:
    """Run `method`'s space on `trial` with `overrides`; returns the flat trial config.

    This is the define-by-run function Ray's `OptunaSearch` calls; bind everything but `trial` with
    `define_by_run` (a `functools.partial` of this module-level function pickles, a closure would not).
    """
    by_key = {o.key: o for o in overrides}
    narrowed = NarrowedTrial(trial, by_key)
    config = get_space(method)(narrowed, base=base)
    for key, override in by_key.items():
        if key in narrowed.asked or key in CONDITIONAL.get(method, ()):
            continue  # answered inside the space, or a branch this trial did not take
        config[key] = override.suggest(trial)
    return config


def define_by_run(
    method: str, base: dict[str, Any], overrides: Sequence[Override] = ()
) -> Callable[[Any], dict]:
    """`apply_space` with everything but the trial bound: what `OptunaSearch(space=...)` takes."""
    return functools.partial(apply_space, method=method, base=dict(base), overrides=tuple(overrides))


def coverage_points(method: str, overrides: Sequence[Override] = ()) -> list[dict[str, Any]]:
    """The points to enqueue for `method`: its `COVERAGE` minus those the overrides rule out."""
    by_key = {o.key: o for o in overrides}
    return [
        dict(point)
        for point in COVERAGE.get(method, ())
        if all(key not in by_key or by_key[key].accepts(value) for key, value in point.items())
    ]


class _FirstChoice:
    """A stand-in trial that answers with a point's value, or the first choice / the low end."""

    def __init__(self, point: Mapping[str, Any]) -> None:
        self.point = point
        self.asked: set[str] = set()

    def _answer(self, name: str, default: Any) -> Any:
        self.asked.add(name)
        return self.point.get(name, default)

    def suggest_float(self, name, low, high, **_):
        return self._answer(name, low)

    def suggest_int(self, name, low, high, **_):
        return self._answer(name, low)

    def suggest_categorical(self, name, choices):
        return self._answer(name, choices[0])


def space_keys(method: str, base: dict[str, Any]) -> set[str]:
    """Every key `method`'s space samples on some branch (its coverage points reach every branch)."""
    keys: set[str] = set()
    for point in ({}, *COVERAGE.get(method, ())):
        recorder = _FirstChoice(point)
        get_space(method)(recorder, base=base)
        keys |= recorder.asked
    return keys
