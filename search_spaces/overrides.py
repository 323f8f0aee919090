"""Narrowing or overriding a search space from the command line or a YAML file, without editing code.

    --set train/lr=1e-4..1e-3          a range; keeps the parameter's own scale (log for learning rates)
    --set strategy/f=[relu,gelu]       choices
    --set train/epochs=2               a constant
    --set stacked:strategy/r2=[8,16]   for one method only
    --set 'train/lr={low: 1e-4, high: 1e-2, log: true}'

These are the trial keys of the one override syntax (`study.cli` reads a settings file's and the study's
keys too; `--space` is `--set`'s previous name). A spec for a key the space does not sample adds that key
(a constant, a categorical, or a uniform range - log scale only if the spec says `log: true`).

A search space sees overrides through `NarrowedTrial`, which answers its `suggest_*` calls from the
override where there is one, so a space's code stays the one definition of its parameters.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search_spaces.safe_yaml import load_yaml
from trainables.training.setting_types import is_number

GROUPS = ("train/", "strategy/")
STUDY_SECTIONS = ("preset", "search", "data", "model", "scheduler", "resources", "storage")
"""The sections of the study's own keys (`study.config.StudyConfig`), named in an unknown key's error."""
KINDS = ("fixed", "choices", "range")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_RANGE = re.compile(r"^\s*(\S+?)\s*\.\.\s*(\S+)\s*$")


_SHOWN = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = 6
_SHOWN.maxlevel = 2


def _shown(value: Any, *, quoted: bool = True) -> str:
    """`value` as an error message shows it: one short line whatever the user gave (a long key, a big list)."""
    text = _SHOWN.repr(value) if quoted or not isinstance(value, str) else _SHOWN.repr(value)[1:-1]
    return text if len(text) <= 80 else text[:77] + "..."


def _number(text: str) -> int | float | None:
    """`'1e-4'` -> 0.0001, `'3'` -> 3 (YAML 1.1 reads `1e-4` as a string), anything else -> None."""
    if not _NUMBER.match(text.strip()):
        return None
    value = float(text)
    return int(value) if re.fullmatch(r"[+-]?\d+", text.strip()) else value


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        number = _number(value)
        return value if number is None else number
    return value


@dataclass(frozen=True)
class Override:
    """How one parameter of one method's (or every method's) search space is replaced."""

    key: str
    """The flat trial-config key, e.g. `train/lr`, `strategy/f`, `train/eval/max_new_tokens`."""
    kind: str
    """fixed (one value), choices (categorical) or range (numbers between low and high)."""
    value: Any = None
    """The constant of a fixed override."""
    choices: tuple = ()
    """The values of a choices override."""
    low: float | None = None
    """Lower end of a range."""
    high: float | None = None
    """Upper end of a range."""
    log: bool | None = None
    """Log scale for a range; None keeps the scale the space gives the parameter."""
    method: str | None = None
    """The only method this applies to; None for every method that has the parameter."""
    origin: str = field(default="flag", compare=False)
    """Where it came from: preset <name>, file <path> or flag (the study file records it)."""

    def __post_init__(self) -> None:
        where = f"--set {_shown(self.key, quoted=False)}"
        if not self.key.startswith(GROUPS) or self.key.endswith("/"):
            raise ValueError(
                f"{where}: not a setting; a trial's is train/<name>, train/eval/<name> or strategy/<name>, "
                f"the study's is one of {', '.join(STUDY_SECTIONS)} /<name>, got {_shown(self.key)}"
            )
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {_shown(self.kind)}")
        if self.kind == "choices" and not self.choices:
            raise ValueError(f"{where}: an empty list of choices")
        if self.kind == "range":
            if not (is_number(self.low) and is_number(self.high)) or self.low >= self.high:
                raise ValueError(
                    f"{where}: a range needs numbers low < high, got {_shown(self.low)}..{_shown(self.high)}"
                )
            if self.log and self.low <= 0:
                raise ValueError(f"{where}: a log-scale range needs low > 0, got {_shown(self.low)}")

    @property
    def integer(self) -> bool:
        """A range of whole numbers (both ends written as integers)."""
        return isinstance(self.low, int) and isinstance(self.high, int)

    def accepts(self, value: Any) -> bool:
        """Whether `value` is still possible under this override (used to filter enqueued points)."""
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "choices":
            return value in self.choices
        return is_number(value) and self.low <= value <= self.high

    def suggest(self, trial: Any, *, log: bool = False, integer: bool | None = None) -> Any:
        """The value for one trial: the constant, or a suggestion from `trial` in the overridden domain."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choices":
            return trial.suggest_categorical(self.key, self.choices)
        log = log if self.log is None else self.log
        if self.integer if integer is None else integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=log)

    def spec(self) -> Any:
        """The value as a settings file writes it (`spec_to_override` reads it back)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choices":
            return list(self.choices)
        if self.log is None:
            return f"{self.low}..{self.high}"
        return {"low": self.low, "high": self.high, "log": self.log}

    @property
    def name(self) -> str:
        """`[method:]key`, as a settings file names it."""
        return f"{self.method}:{self.key}" if self.method else self.key

    def describe(self) -> str:
        """The override as the user would write it."""
        prefix = f"{self.method}:" if self.method else ""
        if self.kind == "fixed":
            return f"{prefix}{self.key}={self.value}"
        if self.kind == "choices":
            return f"{prefix}{self.key}=[{','.join(map(str, self.choices))}]"
        scale = "" if self.log is None else (" (log)" if self.log else " (linear)")
        return f"{prefix}{self.key}={self.low}..{self.high}{scale}"


def spec_to_override(key: str, spec: Any, *, method: str | None = None) -> Override:
    """An `Override` from a spec: a scalar, a list, a `{low, high, log}` mapping or a `'low..high'` string."""
    if isinstance(spec, str):
        match = _RANGE.match(spec)
        if match and _number(match.group(1)) is not None and _number(match.group(2)) is not None:
            low, high = _number(match.group(1)), _number(match.group(2))
            return Override(key, "range", low=low, high=high, method=method)
        value = load_yaml(spec, source=f"--set {_shown(key, quoted=False)}") if spec.strip() else ""
        if spec.strip().startswith(("[", "{")):
            return spec_to_override(key, value, method=method)
        return Override(key, "fixed", value=_coerce(value), method=method)
    if isinstance(spec, (list, tuple)):
        return Override(key, "choices", choices=tuple(_coerce(v) for v in spec), method=method)
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"low", "high", "log"})
        if unknown or not {"low", "high"} <= set(spec):
            raise ValueError(
                f"--set {_shown(key, quoted=False)}: a range is {{low: ..., high: ..., log: true|false}}, "
                f"got {_shown(dict(spec))}"
            )
        log = spec.get("log")
        if log is not None and not isinstance(log, bool):
            raise ValueError(
                f"--set {_shown(key, quoted=False)}: log must be true or false, got {_shown(log)}"
            )
        return Override(
            key, "range", low=_coerce(spec["low"]), high=_coerce(spec["high"]), log=log, method=method
        )
    return Override(key, "fixed", value=spec, method=method)


def is_search_spec(text: str) -> bool:
    """Whether a spec's text is a searched range (`low..high`, `{low: ...}`) or list of choices (`[a, b]`)."""
    match = _RANGE.match(text)
    numbers = match and _number(match.group(1)) is not None and _number(match.group(2)) is not None
    return bool(numbers) or text.strip().startswith(("[", "{"))


def read_scalar(text: str, *, source: str) -> Any:
    """One value's text as YAML reads it, numbers as numbers (`1e-4` too)."""
    return _coerce(load_yaml(text, source=source))


def parse_override(text: str, *, methods: Sequence[str] | None) -> Override:
    """`'[method:]key=spec'` (a `--set` argument or a preset's line) -> `Override`; `methods` None takes
    any prefix (a preset's, checked against the study's methods later).

    Raises:
        ValueError: for a missing `=`, an unknown method prefix or a malformed spec.
    """
    head, sep, spec = text.partition("=")
    if not sep:
        raise ValueError(f"--set expects [method:]key=spec, got {_shown(text)}")
    method, colon, key = head.strip().rpartition(":")
    if colon and methods is not None and method not in methods:
        raise ValueError(
            f"--set {_shown(text)}: unknown method {_shown(method)}; choose from {', '.join(methods)}"
        )
    return spec_to_override(key.strip(), spec, method=method or None)


def route(
    overrides: Iterable[Override], keys_by_method: Mapping[str, set[str]]
) -> dict[str, tuple[Override, ...]]:
    """Which overrides each method gets: a prefixed one its method; an unprefixed `train/...` one every
    method; an unprefixed `strategy/...` one every method that has the key (`keys_by_method`: those its
    space samples and its config's fields, `search_spaces.setting_keys`), or every method when none does (a
    key a method lacks is rejected later).

    Raises:
        ValueError: for a prefix naming a method that is not in this study, or one key overridden twice.
    """
    routed: dict[str, dict[str, Override]] = {m: {} for m in keys_by_method}
    for override in overrides:
        if override.method is not None and override.method not in keys_by_method:
            raise ValueError(f"--set {override.describe()}: method {override.method!r} is not in this study")
        if override.method is not None:
            targets = [override.method]
        elif override.key.startswith("train/"):
            targets = list(keys_by_method)  # every trial has the loop's settings
        else:
            targets = [m for m, keys in keys_by_method.items() if override.key in keys] or list(
                keys_by_method
            )
        for method in targets:
            previous = routed[method].get(override.key)
            if previous is not None and previous.method == override.method:
                raise ValueError(f"--set {override.key} is given twice for method {method!r}")
            if previous is None or override.method is not None:  # a method's own override wins
                routed[method][override.key] = override
    return {m: tuple(by_key.values()) for m, by_key in routed.items()}


class NarrowedTrial:
    """An Optuna trial whose `suggest_*` answers come from the overrides where the user gave one."""

    def __init__(self, trial: Any, overrides: Mapping[str, Override]) -> None:
        self._trial = trial
        self._overrides = overrides
        self.asked: set[str] = set()
        """Keys the space asked for (overridden or not)."""

    def suggest_float(
        self, name: str, low: float, high: float, *, log: bool = False, step: float | None = None
    ):
        self.asked.add(name)
        if name in self._overrides:
            return self._overrides[name].suggest(self._trial, log=log, integer=False)
        return self._trial.suggest_float(name, low, high, log=log, step=step)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False):
        self.asked.add(name)
        if name in self._overrides:
            return self._overrides[name].suggest(self._trial, log=log, integer=True)
        return self._trial.suggest_int(name, low, high, step=step, log=log)

    def suggest_categorical(self, name: str, choices: Sequence[Any]):
        self.asked.add(name)
        override = self._overrides.get(name)
        if override is None:
            return self._trial.suggest_categorical(name, choices)
        if override.kind == "range":
            raise ValueError(
                f"--set {name} is chosen from {list(choices)}: give a list or one value, not a range"
            )
        return override.suggest(self._trial)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)
