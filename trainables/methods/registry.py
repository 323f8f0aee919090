"""The method registry: one record per fine-tuning method, holding everything the rest of the system asks of it.

A method decides which weights exist and which train; everything else (batching, optimiser, evaluation,
checkpoints) is the shared loop's. Each method module ends with one `register_strategy(...)` call, the way
a PEFT tuner package registers itself with `register_peft_method(...)`; `trainables.methods` imports every
module of its package, so adding a method is adding its files (`docs/adding-a-method.md`). A method from
outside the package is loaded with `load_plugins` (`--plugin MODULE` on the command line).

Records are plain data and must stay cheap to import: the study's CLI validates method names before torch
is imported, so a method module imports torch and PEFT inside the functions that use them.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_NAME = re.compile(r"[a-z][a-z0-9_]*")  # fullmatch: `$` lets a final newline through
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


@dataclass
class StrategyContext:
    """What a method may use besides the model: the trial's tokenizer, data and a way to train."""

    tokenizer: Any
    """The trial's tokenizer."""
    model_name: str = ""
    """Hub name or path of the base model (part of a cached stage's identity)."""
    train: Any = None
    """The trial's `TrainConfig` (a first stage derives its own from it)."""
    fit: Callable[..., dict] | None = None
    """`fit(model, pairs, config) -> {"loss", "losses"}`: the shared loop on (input, target) pairs with a
    `TrainConfig`, for methods with a first stage (`trainables.trial.stage_fitter`)."""
    code_records: list | None = None
    """The coding dataset (given to methods whose record sets `needs_code_data`)."""
    cache_dir: Path | None = None
    """A folder shared by all trials of a study (stacked LoRA caches its stage 1 there)."""
    log: Callable[[str], None] = print
    """Where a method says what it did."""


def _no_load_kwargs(config: Any) -> dict:
    return {}


def _every_pair(groups: Sequence[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]


@dataclass(frozen=True)
class Grouping:
    """One family of compared groups inside a method: how its trials split, and how the report shows them.

    A trial's group is read from its settings (trial-config paths such as `train/prompt_style` or
    `strategy/f`, with the method's defaults filled in where a trial leaves one out). Each group's best trial
    becomes a row of the family's table, a group `study.confirm` re-runs over seeds, and a side of the pairs
    the pairwise table tests (`trainables.comparison` derives all of them from this record).
    """

    family: str
    """The family's name, unique over the registry: the `--family` of `study.confirm` and the first part of
    each group's id `<family>/<config>/<group>` (`cot`, `stacked`)."""
    keys: tuple[str, ...]
    """The trial settings whose values make a group, e.g. `("train/prompt_style",)`."""
    title: str
    """The family's table and chart title, e.g. "Accuracy per chain-of-thought prompt style"."""
    key: str = ""
    """File stem of the table and chart (`tables/<key>.csv`, `figures/<key>.png`); empty means `family`."""
    column: str = "Group"
    """The table's first column, naming each group ("Prompt style", "Variant")."""
    group: Callable[[Mapping[str, Any]], str | None] | None = None
    """Settings (the `keys`, defaults filled in) -> the trial's group name, None for a trial outside this
    family; None (the default) joins the values of `keys` with `,`."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Group name -> how the report names it; groups listed here come first, in this order (others follow
    by name, labelled by their name)."""
    shown: tuple[str, ...] = ()
    """Settings printed beside each group's row: the value its best trial had (stacked LoRA's `f_space`)."""
    pairs: Callable[[Sequence[str]], list[tuple[str, str]]] = field(default=_every_pair)
    """The group names present (in table order) -> the pairs (A, B) the pairwise table tests as A - B;
    default: every pair."""
    note: str = ""
    """What a reader needs to know to read the family's table."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.family):
            raise ValueError(f"grouping family must be lower_snake_case, got {self.family!r}")
        if not self.keys or not all(isinstance(k, str) and "/" in k for k in self.keys):
            raise ValueError(f"grouping {self.family!r}: keys must be settings like 'train/prompt_style'")
        if not self.key:
            object.__setattr__(self, "key", self.family)

    def group_of(self, settings: Mapping[str, Any]) -> str | None:
        """The group of a trial with these settings (None: not in this family)."""
        if self.group is not None:
            return self.group(settings)
        values = [settings.get(k) for k in self.keys]
        return None if any(v is None for v in values) else ",".join(map(str, values))

    def label(self, group: str) -> str:
        """How the report names `group`."""
        return self.labels.get(group, group)


@dataclass(frozen=True)
class Strategy:
    """One fine-tuning method: the record every other part of the system reads."""

    name: str
    """The method name used on the command line, in trial configs and in results (lower_snake_case)."""
    config_cls: type
    """The dataclass holding this method's hyperparameters (the trial config's `strategy` group)."""
    apply: Callable[[torch.nn.Module, Any, StrategyContext], torch.nn.Module]
    """Prepare a freshly loaded model: add adapters, choose what trains. Returns the model to train."""
    display_name: str
    """How tables, charts and reports name the method, e.g. "Stacked LoRA"."""
    colour: str
    """The method's colour in charts, `#RRGGBB`."""
    description: str = ""
    """One line saying what trains (`python -m study.train --help` lists it)."""
    load_kwargs: Callable[[Any], dict] = field(default=_no_load_kwargs)
    """Extra `load_model` arguments for a config, e.g. 8-bit quantisation for QLoRA."""
    base_models: Mapping[str, str] = field(default_factory=dict)
    """The study's base model (`model/name`) -> the base this method trains on instead (QLoRA: t5-small ->
    t5-base, as in the study reproduced); a base not listed is the method's too. The method's own default,
    so that no preset names it."""
    bounded_by: Mapping[str, str] = field(default_factory=dict)
    """Setting -> the loop setting it never exceeds unless given under its own key (stacked LoRA:
    `{"strategy/stage1_epochs": "train/epochs"}`, so `--set train/epochs=1` cuts stage 1 too); the
    study applies it to a preset's value (`study.plan.study_overrides`)."""
    first_stage_settings: tuple[str, ...] = ()
    """The trial settings of a method's first stage (stacked LoRA's stage 1), trained once and shared by the
    trials that agree on them: a study that searches none of them trains one first stage, not one per trial
    (`study.preflight` projects it so). Empty: no first stage.
    """
    search_space: str = ""
    """Dotted path of the module holding the method's search space (`space`, optional `COVERAGE` and
    `CONDITIONAL`); empty means `search_spaces.<name>`. The study imports it, trainables never does."""
    gpu_share: float = 0.25
    """GPU share of one trial where the cluster has GPUs (0.25: four trials share a GPU)."""
    default_prompt_style: str = "breakdown"
    """The prompt style a trial uses unless its config says otherwise."""
    needs_code_data: bool = False
    """Whether trials need the coding dataset (`StrategyContext.code_records`) and the shared stage cache."""
    quantized_base: bool = False
    """Whether the base always loads through bitsandbytes: without a GPU the study checks its CPU path first."""
    order: int = 100
    """Where the method comes in `--method all`, tables and legends (smaller first; ties by name)."""
    optimizer: Callable[..., Any] | None = None
    """`optimizer(model, config, *, lr, weight_decay) -> torch.optim.Optimizer` for the trial's training
    (LoRA+ gives B its own learning rate); None: AdamW over every trainable weight."""
    weight_updates: Callable[[torch.nn.Module, Any], Any] | None = None
    """`weight_updates(model, config) -> trainables.scoring.update_rank.Updates`: the (out, in) update of every
    adapted layer at the end of a trial, whose rank the results report; None: the method reports none."""
    groupings: tuple[Grouping, ...] = ()
    """The families of groups its trials are compared in besides the method as a whole (LoRA + CoT per
    prompt style; stacked LoRA per f and per variant): each a table, confirmed groups and tested pairs."""
    method_settings: Mapping[str, Any] = field(default_factory=dict)
    """Settings a trial must have to stand for the method itself in the tables across methods (stacked
    LoRA: `{"strategy/baseline": "stacked"}`, so that its comparison variants are not "Stacked LoRA");
    empty: every trial does."""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"method name must be lower_snake_case, got {self.name!r}")
        if not dataclasses.is_dataclass(self.config_cls):
            raise ValueError(f"method {self.name!r}: config_cls must be a dataclass, got {self.config_cls!r}")
        if not callable(self.apply) or not callable(self.load_kwargs):
            raise ValueError(f"method {self.name!r}: apply and load_kwargs must be callables")
        for name in ("optimizer", "weight_updates"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise ValueError(f"method {self.name!r}: {name} must be a callable or None")
        if not self.display_name.strip():
            raise ValueError(f"method {self.name!r}: display_name is empty")
        if not _COLOUR.fullmatch(self.colour):
            raise ValueError(f"method {self.name!r}: colour must be #RRGGBB, got {self.colour!r}")
        if not 0 < self.gpu_share <= 1:
            raise ValueError(f"method {self.name!r}: gpu_share must be in (0, 1], got {self.gpu_share}")
        if not self.search_space:
            object.__setattr__(self, "search_space", f"search_spaces.{self.name}")
        if not all(isinstance(g, Grouping) for g in self.groupings):
            raise ValueError(f"method {self.name!r}: groupings must be Grouping records")
        object.__setattr__(self, "groupings", tuple(self.groupings))

    def base_model(self, study_model: str) -> str:
        """The base this method trains on in a study whose base model is `study_model`."""
        return self.base_models.get(study_model, study_model)

    def setting_default(self, key: str) -> Any:
        """The value a trial has for setting `key` when its config leaves it out (None: no default known).

        `strategy/<field>` defaults come from the config dataclass; `train/prompt_style` from the record.
        """
        part, _, name = key.partition("/")
        if key == "train/prompt_style":
            return self.default_prompt_style
        if part == "strategy":
            for f in dataclasses.fields(self.config_cls):
                if f.name == name and f.default is not dataclasses.MISSING:
                    return f.default
        return None

    def make_config(self, values: Mapping[str, Any]) -> Any:
        """Build this method's config dataclass from a (Ray Tune) mapping; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)} for method {self.name!r}; "
                f"known: {', '.join(sorted(names))}"
            )
        return self.config_cls(**values)


STRATEGIES: dict[str, Strategy] = {}
"""Method name -> record (iterate `method_names()` for the study's order)."""


def register_strategy(**kwargs: Any) -> Strategy:
    """Add a method to the registry (called once at the end of each method module).

    Raises:
        ValueError: for a name registered twice, or a record field that is not valid.
    """
    strategy = Strategy(**kwargs)
    if strategy.name in STRATEGIES:
        raise ValueError(f"method {strategy.name!r} is registered twice")
    taken = {g.family: s.name for s in STRATEGIES.values() for g in s.groupings} | {"method": "every method"}
    for grouping in strategy.groupings:
        if grouping.family in taken:
            raise ValueError(
                f"method {strategy.name!r}: grouping family {grouping.family!r} is taken ({taken[grouping.family]})"
            )
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The method registered under `name`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}")
    return STRATEGIES[name]


def method_names() -> tuple[str, ...]:
    """Every registered method name, in the study's order: what `--method all` runs (plugins included
    once loaded). No module writes the list out again."""
    return tuple(sorted(STRATEGIES, key=lambda name: (STRATEGIES[name].order, name)))


def load_plugins(modules: Sequence[str]) -> None:
    """Import each module (dotted name on `sys.path`), so that the methods it registers exist.

    A study imports them in the driver and again in every Ray worker, before a trial config is read;
    importing a module twice is a no-op, so this is safe to call for every trial.

    Raises:
        ValueError: naming a module that cannot be imported, and why.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:  # a plugin's own import error is the user's to read, in one line
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"--plugin {module}: cannot import it ({reason})") from None
