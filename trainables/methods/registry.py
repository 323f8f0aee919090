"""The strategy registry: a method name -> how to prepare a model for it.

A strategy decides which weights exist and which train; everything else (batching, optimiser, evaluation,
checkpoints) is the shared loop's. Each strategy module ends with one `register_strategy(...)` call, so
adding a method touches one place, the way a PEFT tuner package registers itself in its `__init__`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class StrategyContext:
    """What a strategy may use besides the model: the trial's tokenizer, data and a way to train."""

    tokenizer: Any
    """The trial's tokenizer."""
    model_name: str = ""
    """Hub name or path of the base model (part of a cached stage's identity)."""
    train: Any = None
    """The trial's `TrainConfig` (a first stage derives its own from it)."""
    fit: Callable[..., dict] | None = None
    """`fit(model, pairs, train_config) -> {"loss", "losses"}`: the shared loop on (input, target) pairs, for
    strategies with a first stage (`trial.stage_fitter`)."""
    code_records: list | None = None
    """The coding dataset (stacked LoRA's first stage)."""
    cache_dir: Path | None = None
    """A folder shared by all trials of a study (stacked LoRA caches its stage 1 there)."""
    log: Callable[[str], None] = print
    """Where a strategy says what it did."""


@dataclass(frozen=True)
class Strategy:
    """One fine-tuning method."""

    name: str
    """The method name used on the command line and in results."""
    config_cls: type
    """The dataclass holding this method's hyperparameters."""
    apply: Callable[[torch.nn.Module, Any, StrategyContext], torch.nn.Module]
    """Prepare a freshly loaded model: add adapters, choose what trains. Returns the model to train."""
    load_kwargs: Callable[[Any], dict] = field(default=lambda config: {})
    """Extra `load_model` arguments, e.g. 8-bit quantisation for QLoRA."""
    default_prompt_style: str = "breakdown"
    """The prompt style a trial uses unless the search space says otherwise."""
    description: str = ""
    """One line for `--help` and reports."""

    def make_config(self, values: Mapping[str, Any]) -> Any:
        """Build this strategy's config dataclass from a (Ray Tune) mapping; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)} for method {self.name!r}; "
                f"known: {', '.join(sorted(names))}"
            )
        return self.config_cls(**values)


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(**kwargs: Any) -> Strategy:
    """Add a strategy to the registry (called once at the end of each strategy module)."""
    strategy = Strategy(**kwargs)
    if strategy.name in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} is registered twice")
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The strategy registered under `name`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]
