"""One trial: a Ray Tune config dict -> dataclasses -> strategy -> model -> the shared loop.

`math_trainable` is what Ray Tune runs; `run_trial` is the same code with any `Reporter`, which is how
`python -m study.train` runs one configuration without a search. Datasets arrive through
`tune.with_parameters`, never through the config dict, and nothing here reads `sys.argv` or the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.data.load import CONFIGS as DATA_CONFIGS
from trainables.data.records import CodeRecord
from trainables.methods import StrategyContext, get_strategy, load_plugins
from trainables.scoring.evaluation import EvalSettings
from trainables.scoring.update_rank import FILE_NAME, update_rank_metrics, write_update_ranks
from trainables.training.loop import TrainConfig, fit, seed_everything, train_and_evaluate
from trainables.training.memory import TrialMemory, free_memory
from trainables.training.models import load_model, load_tokenizer, pick_device
from trainables.training.reporting import RayReporter, Reporter
from trainables.training.setting_types import check_number_fields


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


def stage_fitter(
    tokenizer, log: Callable[[str], None], memory: TrialMemory | None = None
) -> Callable[..., dict]:
    """A `fit` for strategies with an earlier stage: trains on (input, target) pairs and logs the loss.

    `memory` is the trial's: a stage that ran out of memory (or whose worker died) halves the trial's
    micro-batch too."""

    def fit_stage(model: torch.nn.Module, pairs: Sequence[tuple[str, str]], config: TrainConfig) -> dict:
        losses: list[float] = []
        record = lambda m: losses.append(m["train/loss"])  # noqa: E731
        fit(model, tokenizer, pairs, config, on_eval=record, memory=memory, log=log)
        log(f"stage loss per epoch: {', '.join(f'{x:.4f}' for x in losses)}")
        return {"loss": losses[-1] if losses else float("nan"), "losses": losses}

    return fit_stage


def update_rank_measure(method: str, config: Any) -> Callable[[torch.nn.Module, Path], dict] | None:
    """The end-of-trial measurement of the learned update's rank, for a method whose record says how to
    read its updates (`Strategy.weight_updates`); writes every layer's figures to the trial's folder."""
    strategy = get_strategy(method)
    if strategy.weight_updates is None:
        return None

    def measure(model: torch.nn.Module, trial_dir: Path) -> dict:
        metrics, details = update_rank_metrics(strategy.weight_updates(model, config))
        write_update_ranks(Path(trial_dir) / FILE_NAME, details)
        return metrics

    return measure


def method_optimizer(method: str, config: Any) -> Callable[..., torch.optim.Optimizer] | None:
    """`fit`'s `make_optimizer` for a method with an optimiser of its own (`Strategy.optimizer`), else None."""
    optimizer = get_strategy(method).optimizer
    if optimizer is None:
        return None
    return lambda model, **settings: optimizer(model, config, **settings)


def run_trial(
    trial: TrialConfig,
    *,
    splits: Mapping[str, Any],
    reporter: Reporter,
    code_records: Sequence[CodeRecord] | None = None,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Prepare the model with the trial's strategy, train, evaluate; returns the final metrics."""
    if trial.data_config not in splits:
        raise ValueError(f"no data loaded for config {trial.data_config!r} (have {', '.join(splits)})")
    seed_everything(trial.train.seed)
    strategy = get_strategy(trial.method)
    memory = TrialMemory(reporter.trial_dir(), staging_dir=reporter.staging_dir(), log=log)
    memory.begin()  # a retry after this trial's worker died starts at half its micro-batch
    device = pick_device()
    model = load_model(trial.model, device=device, **strategy.load_kwargs(trial.strategy))
    tokenizer = load_tokenizer(trial.model)
    context = StrategyContext(
        tokenizer=tokenizer,
        model_name=trial.model,
        train=trial.train,
        fit=stage_fitter(tokenizer, log, memory),
        code_records=list(code_records or []),
        cache_dir=cache_dir,
        log=log,
    )
    try:
        model = strategy.apply(model, trial.strategy, context)
        return train_and_evaluate(
            model,
            tokenizer,
            splits[trial.data_config],
            trial.train,
            reporter,
            memory=memory,
            log=log,
            make_optimizer=method_optimizer(trial.method, trial.strategy),
            end_metrics=update_rank_measure(trial.method, trial.strategy),
        )
    finally:
        # A trial stopped by ASHA or crashed must give its memory back to the worker that runs the next one.
        memory.end()
        del model, context
        free_memory(device)


def math_trainable(
    config: dict,
    *,
    splits: Mapping[str, Any],
    code_records: Sequence[CodeRecord] | None = None,
    cache_dir: str | None = None,
    plugins: Sequence[str] = (),
) -> None:
    """The Ray Tune function trainable (bind data and plugin modules with `tune.with_parameters`).

    `plugins` are imported before the config is read: a worker process starts with only the built-in
    methods registered.
    """
    load_plugins(plugins)
    run_trial(
        TrialConfig.from_dict(config),
        splits=splits,
        reporter=RayReporter(),
        code_records=code_records,
        cache_dir=Path(cache_dir) if cache_dir else None,
    )
