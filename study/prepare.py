"""What the driver prepares once, before any trial: data splits, the coding dataset, the base models.

Both `study.train` (one configuration) and `study.tuner` (a search) start here, so a trial run either way
sees the same data and the same base model. Loading a model is left to the trials.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.config import StudyConfig
from trainables.data.load import DataConfig, Splits, load_code_dataset, load_math_splits
from trainables.data.records import CodeRecord
from trainables.methods import get_strategy

DEFAULT_CACHE = Path.home() / ".cache" / "slm-math-study"


@dataclass
class Prepared:
    """Everything trials share, computed once in the driver."""

    splits: dict[str, Splits]
    """GSM8K config (main / socratic) -> train / dev / test records."""
    code_records: list[CodeRecord] = field(default_factory=list)
    """The coding dataset (stacked LoRA's stage 1): empty unless a method's record `needs_code_data`."""
    models: dict[str, str] = field(default_factory=dict)
    """Method -> base model name or path."""
    notes: list[str] = field(default_factory=list)
    """What was loaded, for the user to read (embedded data is said loudly)."""


def data_config_for(
    config: StudyConfig, *, data_config: str, data: Mapping[str, Any] | None = None
) -> DataConfig:
    """The DataConfig of one GSM8K config of a study (`data`: fields over the study's)."""
    values = {**config.data.data_config(), **(data or {})}
    return DataConfig(data_dir=config.data.dir, config=data_config, seed=config.search.seed, **values)


def prepare(
    config: StudyConfig, *, data: Mapping[str, Any] | None = None, cache_dir: Path = DEFAULT_CACHE
) -> Prepared:
    """Load the data for the study's configs and resolve each method's base model (building the tiny one if
    needed); `data` sets DataConfig fields over the study's."""
    splits = {
        c: load_math_splits(data_config_for(config, data_config=c, data=data)) for c in config.data.configs
    }
    notes = [s.description for s in splits.values()]
    code_records: list[CodeRecord] = []
    if any(get_strategy(m).needs_code_data for m in config.search.methods):
        main = next(iter(splits.values()))
        code_records = load_code_dataset(
            config.data.code_dataset, data_dir=config.data.dir, math_train=main.train
        )
        notes.append(f"stage-1 coding dataset: {config.data.code_dataset} ({len(code_records)} tasks)")
    names = base_model_names(config)
    # Each distinct base is resolved once: for `tiny` that builds (or finds) the model and its pretraining.
    resolved = {n: resolve_model(n, config, splits=splits, cache_dir=cache_dir) for n in set(names.values())}
    models = {m: resolved[n] for m, n in names.items()}
    return Prepared(splits=splits, code_records=code_records, models=models, notes=notes)


def base_model_names(config: StudyConfig) -> dict[str, str]:
    """Method -> its base model's name: the study's `model/name`, moved where a method's record says
    (`Strategy.base_models`: QLoRA's T5-base).

    Raises:
        ValueError: for a study without a model (no preset, no `--model`).
    """
    if not config.model.name:
        raise ValueError("no base model: give --model (or --set model/name=...) or a --preset")
    return {m: get_strategy(m).base_model(config.model.name) for m in config.search.methods}


def resolve_model(name: str, config: StudyConfig, *, splits: Mapping[str, Splits], cache_dir: Path) -> str:
    """A hub name or path as it is; `tiny` becomes the path of the study's locally built, pretrained T5."""
    if name != "tiny":
        return name
    from trainables.training.models import cached_tiny_t5

    # The tokenizer learns the vocabulary of the texts the trials will see (questions, solutions, programs).
    texts = [
        text
        for s in splits.values()
        for r in s.train
        for text in (r.question, r.answer_text, r.program or "")
    ]
    base = cached_tiny_t5(cache_dir / "models", texts=texts, size=config.model.tiny_size, seed=0)
    return str(pretrain_tiny_base(base, config)) if config.model.pretrain else str(base)


PRETRAIN_SEED = 1_000_003  # problems of their own, not the study's train / dev / test ones


def pretrain_tiny_base(base: Path, config: StudyConfig) -> Path:
    """The tiny T5 after pretraining on generated texts (see `trainables.training.pretrain`), cached."""
    from trainables.training.pretrain import pretrain
    from trainables.training.train_config import TrainConfig

    settings = dict(config.model.pretrain)
    texts, pairs = pretraining_corpus(config, problems=settings.pop("problems"))
    config = TrainConfig(prompt_style="breakdown", **settings)
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    return pretrain(base, texts=texts, pairs=pairs, config=config, log=log)


def pretraining_corpus(config: StudyConfig, *, problems: int) -> tuple[list[str], list[tuple[str, str]]]:
    """What the tiny base is pretrained on: questions for prefix LM, and (input, target) tasks, from problems
    of a seed of their own (`PRETRAIN_SEED`) at the study's difficulty. No task maps a question to its
    solution, answer or program (`trainables.data.pretraining` says what each teaches)."""
    from trainables.data.generator import generate_problems
    from trainables.data.pretraining import pretraining_pairs

    records = generate_problems(
        problems,
        seed=PRETRAIN_SEED,
        **{
            k: v
            for k, v in config.data.data_config().items()
            if k in ("min_steps", "max_steps", "max_operand")
        },
    )
    return [r.question for r in records], pretraining_pairs(records, seed=PRETRAIN_SEED)
