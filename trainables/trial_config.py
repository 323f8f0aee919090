"""`TrialConfig`: everything one trial needs to know, built from a trial's flat config dict and checked.

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

TOP_KEYS = ("method", "model", "data_config")
"""The trial config's keys outside every group."""
GROUPS = ("strategy", "train/eval", "train")
"""The groups of `/`-keyed settings: the method's config, the evaluation's, the loop's."""


def flat_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` as the one shape a trial config has from the search space to the results: flat, with `/` keys
    (`{"method": "lora", "train/lr": 1e-3, "train/eval/max_new_tokens": 8, "strategy/r": 4}`).

    Results and Ray experiment states written before that shape hold nested configs (`{"train": {"lr":
    1e-3}}`): `params.json`, the trials Ray restores on `--resume`, an old study's best trials that
    `study.confirm` re-runs. This is where they are read: nested mappings are flattened; a flat config comes
    back as a copy of itself.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{k}": v for k, v in flat_trial(value).items()})
        else:
            flat[key] = value
    return flat


@dataclass
class TrialConfig:
    """Everything one trial needs to know, built from the flat trial config (the Ray Tune config dict)."""

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
        """Build from `{"method", "model", "data_config", "strategy/...", "train/...", "train/eval/..."}`
        (or an old nested config, read through `flat_trial`)."""
        top, groups, unknown = _split(flat_trial(config))
        if unknown:
            raise ValueError(f"unknown trial setting(s): {', '.join(unknown)}")
        missing = [key for key in ("method", "model") if key not in top]
        if missing:
            raise ValueError(f"a trial config needs {' and '.join(missing)}")
        strategy = get_strategy(top["method"])
        train = {**groups["train"], **({"eval": groups["train/eval"]} if groups["train/eval"] else {})}
        train.setdefault("prompt_style", strategy.default_prompt_style)
        for group, settings_cls in (("strategy", strategy.config_cls), ("train", TrainConfig)):
            check_number_fields(group, settings_cls, groups[group])
        check_number_fields("train/eval", EvalSettings, groups["train/eval"])
        try:
            return cls(
                method=strategy.name,
                model=str(top["model"]),
                data_config=top.get("data_config", "main"),
                strategy=strategy.make_config(groups["strategy"]),
                train=TrainConfig(**train),
            )
        except TypeError as error:  # a value of the wrong type, e.g. a word where a number belongs
            raise ValueError(f"bad setting for method {strategy.name!r}: {error}") from None


def _split(flat: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """A flat trial config -> its top-level values, each group's `{field: value}`, and the unknown keys."""
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    unknown = []
    for key, value in flat.items():
        group, _, name = key.rpartition("/")
        if group in groups:
            groups[group][name] = value
        elif not group and key in TOP_KEYS:
            top[key] = value
        else:
            unknown.append(key)
    return top, groups, sorted(unknown)


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
