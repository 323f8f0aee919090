"""`TrialConfig`: everything one trial needs to know, built from a trial's config dict and checked.

It lives apart from the trial's code (`trainables.trial`, which imports torch) so that the command lines
check every trial setting (its key, type, range, the method's own) without importing the training stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.data.load import CONFIGS as DATA_CONFIGS
from trainables.methods import get_strategy
from trainables.scoring.eval_settings import EvalSettings
from trainables.training.setting_types import check_number_fields
from trainables.training.train_config import TrainConfig


@dataclass
class TrialConfig:
    """Everything one trial needs to know, built from the (nested) Ray Tune config dict."""

    method: str
    """A registered strategy name."""
    model: str
    """Hub name or local path of the base T5."""
    data_config: str
    """GSM8K config: main or socratic."""
    strategy: Any
    """The strategy's own config dataclass."""
    train: TrainConfig
    """The shared loop's settings."""

    def __post_init__(self) -> None:
        if self.data_config not in DATA_CONFIGS:
            raise ValueError(f"data_config must be one of {DATA_CONFIGS}, got {self.data_config!r}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrialConfig:
        """Build from `{"method", "model", "data_config", "strategy": {...}, "train": {..., "eval": {...}}}`."""
        unknown = sorted(set(config) - {"method", "model", "data_config", "strategy", "train"})
        if unknown:
            raise ValueError(f"unknown trial setting(s): {', '.join(unknown)}")
        strategy = get_strategy(config["method"])
        train = dict(config.get("train", {}))
        train.setdefault("prompt_style", strategy.default_prompt_style)
        check_number_fields("strategy", strategy.config_cls, config.get("strategy", {}))
        check_number_fields("train", TrainConfig, train)
        if isinstance(train.get("eval"), Mapping):
            check_number_fields("train/eval", EvalSettings, train["eval"])
        try:
            return cls(
                method=strategy.name,
                model=str(config["model"]),
                data_config=config.get("data_config", "main"),
                strategy=strategy.make_config(dict(config.get("strategy", {}))),
                train=TrainConfig(**train),
            )
        except TypeError as error:  # a value of the wrong type, e.g. a word where a number belongs
            raise ValueError(f"bad setting for method {strategy.name!r}: {error}") from None


def default_settings(method: str) -> dict[str, Any]:
    """Flat key (`train/lr`, `train/eval/metrics`, `strategy/r`) -> the value a trial of `method` takes
    where its config gives none: the dataclasses' defaults (and the method's prompt style). Tuples of names
    are written as `a,b`, as the dataclasses read them."""
    strategy = get_strategy(method)
    groups = (("train", TrainConfig), ("train/eval", EvalSettings), ("strategy", strategy.config_cls))
    values = {
        f"{group}/{f.name}": f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for group, cls in groups
        for f in dataclasses.fields(cls)
        if (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)
        and not (group == "train" and f.name == "eval")
    }
    values["train/prompt_style"] = strategy.default_prompt_style
    return {k: ",".join(v) if isinstance(v, tuple) else v for k, v in values.items()}
