"""A config tree of dataclasses and the keys that name its settings: a leaf's key is its path.

A config class (`StudyConfig`, `ConfirmConfig`) holds settings (`setting(...)` fields) and sections (fields
whose default is a dataclass of settings). A setting of section `data` called `train_size` has the key
`data/train_size` (what `--set`, a settings file and `study.yaml` write); a setting of the class itself has
its name as key, after the class's `KEY_PREFIX` (`preset`; `confirm/seeds`). Its flag is `--<name>` unless
the setting names another (`--data-dir`) or none. Nothing is written twice, so a key cannot drift from its
field, and the CLI (`study.cli`) is generated from the same leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PRETRAIN_KEY = "model/pretrain"
"""`model/pretrain/<name>`: one setting of the tiny base's pretraining (`ModelSettings.pretrain`)."""


def setting(
    default: Any = None,
    *,
    help: str,
    flag: str | None = "",
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    metavar: str | None = None,
) -> Any:
    """A leaf of a config tree: its help and its command-line flag (`""`: `--<name>`; None: settable by key
    only). Its key is its path (`config_tree.leaves`). The CLI is generated from these (`study.cli`), so a
    flag, its help and its check cannot drift apart."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
    if isinstance(default, (dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A section of a config tree: a field holding a dataclass of settings, one fresh per config."""
    return field(default_factory=cls, metadata={"section": cls})


@dataclass(frozen=True)
class Leaf:
    """One setting of a tree: its key, the section holding it (None: the config itself) and its field."""

    key: str
    """`section/name`, or the config's `KEY_PREFIX` + name for a setting of the config itself."""
    section: str | None
    """The config's field holding the setting's dataclass; None for a setting of the config itself."""
    field: dataclasses.Field
    """The dataclass field: its name, type, default and `setting` metadata."""

    @property
    def name(self) -> str:
        """The field's name: the key's last part."""
        return self.field.name

    @property
    def flag(self) -> str | None:
        """The command-line flag (`--train-size`), or None for a setting given by key only."""
        flag = self.field.metadata["flag"]
        return None if flag is None else flag or f"--{self.name.replace('_', '-')}"

    @property
    def default(self) -> Any:
        """The field's default value (a fresh one for a tuple or dict)."""
        f = self.field
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    def get(self, config: Any) -> Any:
        """The setting's value in `config`."""
        return getattr(getattr(config, self.section) if self.section else config, self.name)


def leaves(cls: type) -> dict[str, Leaf]:
    """Key -> `Leaf` for every setting of the config class `cls`, in declaration order."""
    prefix = getattr(cls, "KEY_PREFIX", "")
    found: dict[str, Leaf] = {}
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            for g in dataclasses.fields(f.metadata["section"]):
                if "flag" in g.metadata:
                    found[f"{f.name}/{g.name}"] = Leaf(f"{f.name}/{g.name}", f.name, g)
        elif "flag" in f.metadata:
            found[prefix + f.name] = Leaf(prefix + f.name, None, f)
    return found


def tree_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`cls`'s constructor arguments from key -> value: a setting of the config as itself, a section's
    settings as that section's dataclass (its `__post_init__` checks them).

    Raises:
        ValueError: for a key that is not a setting of `cls`.
    """
    known = leaves(cls)
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{key} is not a setting ({', '.join(known)})")
        leaf = known[key]
        if leaf.section is None:
            top[leaf.name] = value
        else:
            sections.setdefault(leaf.section, {})[leaf.name] = value
    types = {f.name: f.metadata["section"] for f in dataclasses.fields(cls) if "section" in f.metadata}
    return {**top, **{name: types[name](**given) for name, given in sections.items()}}


def field_value(f: dataclasses.Field, key: str, raw: Any) -> Any:
    """The value of `key` as the type of its field `f` (a `setting` of a config tree): `raw` is the text of
    a `--set` or a flag, or a value read from YAML (a list for a tuple).

    Raises:
        ValueError: naming the key, for a value of the wrong type, or a range or list (only a trial
            setting is searched).
    """
    from search_spaces.overrides import is_search_spec, read_scalar

    kind = str(f.type)
    where = f"--set {key}"
    if isinstance(raw, str):
        text = raw.strip()
        if is_search_spec(text) and not (kind.startswith("tuple") and text.startswith("[")):
            raise ValueError(
                f"{where}={raw}: only a trial setting (train/..., strategy/...) is searched; give one value"
            )
        raw = read_scalar(text, source=where) if text else None
    if kind.startswith("tuple"):
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
        return tuple(str(item).strip() for item in items)
    choices = f.metadata["choices"]
    named_none = isinstance(choices, tuple) and "none" in choices  # the scheduler called none
    if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null") and not named_none):
        if "None" not in kind and key != PRETRAIN_KEY and not key.startswith(f"{PRETRAIN_KEY}/"):
            raise ValueError(f"{where}: a value is needed")
        return None
    try:
        if kind.startswith("bool"):
            return _boolean(raw)
        if kind.startswith("int"):
            if isinstance(raw, bool) or float(raw) != int(float(raw)):
                raise ValueError
            return int(float(raw))
        if kind.startswith("float"):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
    except (TypeError, ValueError):
        what = kind.split(" ")[0].replace("int", "a whole number").replace("float", "a number")
        raise ValueError(f"{where}: expected {what.replace('bool', 'true or false')}, got {raw!r}") from None
    return raw if key.startswith(f"{PRETRAIN_KEY}/") else str(raw)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text not in ("true", "false", "yes", "no", "on", "off"):
        raise ValueError
    return text in ("true", "yes", "on")
