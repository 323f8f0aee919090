"""What the driver prepares once, before any trial: data splits, the coding dataset, the base models.

Both `study.train` (one configuration) and `study.tuner` (a search) start here, so a trial run either way
sees the same data and the same base model. Loading a model is left to the trials.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.presets import Preset
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


def data_config_for(preset: Preset, *, config: str, data_dir: str | None, seed: int) -> DataConfig:
    """The DataConfig of a preset; a data dir given by the user wins over the preset's source."""
    source = "local" if data_dir else preset.data_source
    return DataConfig(source=source, data_dir=data_dir, config=config, seed=seed, **preset.data)


def prepare(
    preset: Preset,
    *,
    methods: Sequence[str],
    configs: Sequence[str],
    data_dir: str | None = None,
    model: str | None = None,
    seed: int = 0,
    code_dataset: str | None = None,
    cache_dir: Path = DEFAULT_CACHE,
) -> Prepared:
    """Load the data for `configs` and resolve each method's base model (building the tiny one if needed)."""
    splits = {
        c: load_math_splits(data_config_for(preset, config=c, data_dir=data_dir, seed=seed)) for c in configs
    }
    notes = [s.description for s in splits.values()]
    code_records: list[CodeRecord] = []
    if any(get_strategy(m).needs_code_data for m in methods):
        main = next(iter(splits.values()))
        code_dataset = code_dataset or preset.code_dataset
        code_records = load_code_dataset(code_dataset, data_dir=data_dir, math_train=main.train)
        notes.append(f"stage-1 coding dataset: {code_dataset} ({len(code_records)} tasks)")
    names = base_model_names(preset, methods=methods, model=model)
    # Each distinct base is resolved once: for `tiny` that builds (or finds) the model and its pretraining.
    resolved = {n: resolve_model(n, preset, splits=splits, cache_dir=cache_dir) for n in set(names.values())}
    models = {m: resolved[n] for m, n in names.items()}
    return Prepared(splits=splits, code_records=code_records, models=models, notes=notes)


def base_model_names(preset: Preset, *, methods: Sequence[str], model: str | None = None) -> dict[str, str]:
    """Method -> its base model's name: `model` for every method, else the preset field its record names.

    Raises:
        ValueError: for a record naming a field presets do not have.
    """
    return {m: model or preset_field(preset, get_strategy(m).base_model, method=m) for m in methods}


def resolve_model(name: str, preset: Preset, *, splits: Mapping[str, Splits], cache_dir: Path) -> str:
    """A hub name or path as it is; `tiny` becomes the path of the preset's locally built, pretrained T5."""
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
    base = cached_tiny_t5(cache_dir / "models", texts=texts, size=preset.tiny_size, seed=0)
    return str(pretrain_tiny_base(base, preset)) if preset.pretrain else str(base)


PRETRAIN_SEED = 1_000_003  # problems of their own, not the study's train / dev / test ones


def pretrain_tiny_base(base: Path, preset: Preset) -> Path:
    """The tiny T5 after pretraining on generated texts (see `trainables.training.pretrain`), cached."""
    from trainables.training.loop import TrainConfig
    from trainables.training.pretrain import pretrain

    settings = dict(preset.pretrain)
    texts, pairs = pretraining_corpus(preset, problems=settings.pop("problems"))
    config = TrainConfig(prompt_style="breakdown", **settings)
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    return pretrain(base, texts=texts, pairs=pairs, config=config, log=log)


def pretraining_corpus(preset: Preset, *, problems: int) -> tuple[list[str], list[tuple[str, str]]]:
    """What the tiny base is pretrained on: questions for prefix LM, and (input, target) tasks, from problems
    of a seed of their own (`PRETRAIN_SEED`) at the preset's difficulty. No task maps a question to its
    solution, answer or program (`trainables.data.pretraining` says what each teaches)."""
    from trainables.data.generator import generate_problems
    from trainables.data.pretraining import pretraining_pairs

    records = generate_problems(
        problems,
        seed=PRETRAIN_SEED,
        **{k: preset.data[k] for k in ("min_steps", "max_steps", "max_operand") if k in preset.data},
    )
    return [r.question for r in records], pretraining_pairs(records, seed=PRETRAIN_SEED)


def parse_value(raw: str) -> Any:
    """A command-line value as the type it reads as: `3e-3` -> 0.003, `8` -> 8, `true` -> True, `q,v` stays."""
    text = raw.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None, "null": None}.get(text.lower(), text)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`["lr=1e-3", "f=relu", "target_modules=q,v"]` -> `{"lr": 0.001, "f": "relu", "target_modules": "q,v"}`.

    Raises:
        ValueError: for an item without `=`.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {pair!r}")
        values[key.strip()] = parse_value(raw)
    return values


def with_overrides(trial: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Place each override in its group: `train/lr`, `strategy/f`, `train/eval/max_new_tokens`, or a bare
    field name that exactly one group knows (`lr`, `f`, `max_new_tokens`).

    Raises:
        ValueError: for a key no group knows, or one that two groups share.
    """
    from trainables.scoring.evaluation import EvalSettings
    from trainables.training.loop import TrainConfig

    groups = {
        "strategy": {f.name for f in dataclasses.fields(get_strategy(trial["method"]).config_cls)},
        "train": {f.name for f in dataclasses.fields(TrainConfig)} - {"eval"},
        "train/eval": {f.name for f in dataclasses.fields(EvalSettings)},
    }
    out = {**trial, "strategy": dict(trial.get("strategy", {})), "train": dict(trial.get("train", {}))}
    out["train"]["eval"] = dict(out["train"].get("eval", {}))
    for key, value in overrides.items():
        group, _, name = key.rpartition("/")
        if key in ("model", "data_config"):
            out[key] = value
            continue
        candidates = [group] if group else [g for g, names in groups.items() if name in names]
        if len(candidates) != 1 or candidates[0] not in groups or name not in groups[candidates[0]]:
            known = sorted(f"{g}/{n}" for g, names in groups.items() for n in names)
            reason = "is ambiguous" if len(candidates) > 1 else "is not a setting"
            raise ValueError(f"--set {key} {reason} of method {trial['method']!r}; known: {', '.join(known)}")
        target = out["train"]["eval"] if candidates[0] == "train/eval" else out[candidates[0]]
        target[name] = value
    return out


def base_trial(preset: Preset, *, method: str, model: str, data_config: str, seed: int) -> dict[str, Any]:
    """The trial config dict a preset gives before any search or override."""
    train = {**preset.train, "seed": seed, "eval": dict(preset.eval)}
    trial: dict[str, Any] = {"method": method, "model": model, "data_config": data_config, "train": train}
    settings = get_strategy(method).preset_settings
    if settings:
        trial["strategy"] = dict(preset_field(preset, settings, method=method))
    return trial


def preset_field(preset: Preset, name: str, *, method: str) -> Any:
    """The preset field a method's record names (`base_model`, `preset_settings`).

    Raises:
        ValueError: for a name that is not a field of `Preset`.
    """
    if name not in {f.name for f in dataclasses.fields(Preset)}:
        raise ValueError(f"method {method!r} names preset field {name!r}, which presets do not have")
    return getattr(preset, name)
