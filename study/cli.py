"""The command line, generated from the config tree: a flag per setting of `StudyConfig`'s tree that names
one (its dest is the setting's key, `study.config_tree`), and the one override syntax (`--set KEY=SPEC`,
`--set-file`, `--study-file`) for every key.

    --trials 8  ==  --set search/trials=8          a study key: one value
    --set train/lr=1e-4..1e-3                      a trial key: a fixed value, a range or [choices]
    --set stacked:strategy/r2=[8,16]               for one method only

Values are layered: a field's default, then the preset's, then a study file's (`--study-file`), then a
settings file's (`--set-file`), then the flags; each value remembers which (`StudyConfig.origins`,
`Override.origin`), and `study.study_file` writes the result as the file that reruns the study. Flags,
help and checks come from the same fields: the help is the field's, the check its section's
`__post_init__`. No library is used for this: jsonargparse (litgpt's) is not installed here, and the tree's trial half is a
search space (ranges and choices per key, method prefixes), which a dataclass-to-flags library cannot say.

`--plugin MODULE` is read first: a plugin is an importable module that calls
`trainables.methods.register_strategy(...)` (docs/adding-a-method.md), imported before the full parser is
built, so that `--method` accepts its methods and `--help` lists them. A study passes the same modules to
every trial, which imports them again in its Ray worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from search_spaces.overrides import STUDY_SECTIONS, Override, parse_override, spec_to_override
from study.config import StudyConfig, read_settings_file, study_field, study_fields, study_value
from study.config_tree import PRETRAIN_KEY, Leaf, leaves
from study.errors import OneLineParser
from trainables.methods import load_plugins, method_names

PLUGIN_HELP = (
    "import MODULE (on PYTHONPATH) before reading the other flags; it registers more methods "
    "(repeatable; see docs/adding-a-method.md)"
)


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    """The `--plugin` flag, for `--help` and for the full parse."""
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", help=PLUGIN_HELP)


def preload_plugins(argv: Sequence[str] | None) -> tuple[str, ...]:
    """Import the `--plugin` modules of `argv` (None: `sys.argv`); returns their names.

    Raises:
        ValueError: for a module that cannot be imported.
    """
    parser = argparse.ArgumentParser(add_help=False)
    add_plugin_argument(parser)
    known, _ = parser.parse_known_args(argv)
    load_plugins(known.plugin)
    return tuple(known.plugin)


SECTION_TITLES = {
    "search": "what to study and how it is searched",
    "data": "data",
    "model": "model",
    "scheduler": "scheduler",
    "resources": "resources and cluster",
    "storage": "results",
}
SET_HELP = (
    "a setting in the one override syntax, repeatable: a study key (search/trials=8, data/train_size=64) "
    "or a trial key, fixed or searched (train/epochs=2, train/lr=1e-4..1e-3, strategy/f=[relu,gelu], "
    "stacked:strategy/r2=[8,16]); a bare name (lr, f) where one key has it. docs/configuration.md lists them"
)


def _number(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise argparse.ArgumentTypeError(f"expected a number {'>=' if zero_ok else '>'} 0, got {text!r}")
    return value


def _flag_type(leaf: Leaf) -> Any:
    """How a flag's text becomes the field's type (argparse reports a failure in one line)."""
    kind = str(leaf.field.type)
    if kind.startswith("int"):
        return int
    if kind.startswith("float"):
        return lambda text: _number(text, zero_ok=leaf.key == "resources/gpus_per_trial")
    return str


def add_setting_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    names: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One flag per setting of the config class `cls` that names one (all, or those whose keys are in
    `names`), grouped by section; its dest is its key (`args["data/train_size"]`, read with `vars`). A flag
    not given stays out of the namespace, so the layers under it keep their values; `defaults` are a
    command's own, by key."""
    wanted = set(names) if names is not None else None
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, leaf in leaves(cls).items():
        meta = leaf.field.metadata
        if leaf.flag is None or (wanted is not None and key not in wanted):
            continue
        default = (defaults or {}).get(key, leaf.field.default)
        section = key.split("/")[0]
        group = groups.get(section) or parser.add_argument_group(SECTION_TITLES.get(section, section))
        groups[section] = group
        choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        shown = f" ({', '.join(map(str, choices))})" if choices else ""
        if str(leaf.field.type) == "bool":
            flag = leaf.flag if default is False else f"--no-{leaf.flag.removeprefix('--')}"
            action = "store_true" if default is False else "store_false"
            text = meta["help"] if default is False else f"turn off: {meta['help']}"
            group.add_argument(
                flag, dest=key, action=action, default=argparse.SUPPRESS, help=f"{text} [{key}]"
            )
            continue
        fixed = "" if default in (None, (), dataclasses.MISSING) else f" (default {_shown(default)})"
        repeated = str(leaf.field.type).startswith("tuple")
        group.add_argument(
            leaf.flag,
            dest=key,
            action="append" if repeated else "store",
            type=_flag_type(leaf),
            default=argparse.SUPPRESS,
            metavar=meta["metavar"] or leaf.flag.removeprefix("--").replace("-", "_").upper(),
            help=f"{meta['help']}{shown}{fixed}{' (repeatable)' if repeated else ''} [{key}]",
        )


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """Key -> value of the settings of `cls` given as flags (a repeated flag's values as a tuple)."""
    given = vars(args)
    return {
        key: tuple(given[key]) if isinstance(given[key], list) else given[key]
        for key, leaf in leaves(cls).items()
        if leaf.flag is not None and key in given
    }


def _shown(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def add_override_flags(parser: argparse.ArgumentParser, *, study_file: bool = True) -> None:
    """`--set`, `--set-file`, `--print-config` (and `--study-file`); `--space` / `--space-file` are the
    previous release's names of `--set` / `--set-file`, kept one release."""
    group = parser.add_argument_group("settings (docs/configuration.md)")
    group.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="[METHOD:]KEY=SPEC", help=SET_HELP
    )
    group.add_argument(
        "--space",
        dest="settings",
        action="append",
        metavar="[METHOD:]KEY=SPEC",
        help="the same as --set (its previous name; one release)",
    )
    group.add_argument(
        "--set-file", metavar="YAML", help="a YAML file of settings: key: spec, or method: {key: spec}"
    )
    group.add_argument(
        "--space-file", dest="set_file", metavar="YAML", help="the same as --set-file (its previous name)"
    )
    if study_file:
        group.add_argument(
            "--study-file",
            metavar="YAML",
            help="rerun a study from the study.yaml it saved (flags still override)",
        )
    group.add_argument(
        "--print-config", action="store_true", help="print the resolved config tree as YAML and exit"
    )
    add_plugin_argument(group)


def _trial_override(name: str, spec: Any, *, origin: str) -> Override:
    method, colon, key = name.rpartition(":")
    if colon and method not in method_names():
        raise ValueError(f"--set {name}: unknown method {method!r}; choose from {', '.join(method_names())}")
    return dataclasses.replace(spec_to_override(key, spec, method=method or None), origin=origin)


class Layers:
    """The values given over the defaults, one layer at a time: study keys by key, trial keys as
    overrides (a later layer replaces an earlier one's value for the same key and method)."""

    def __init__(self, *, bare_names: bool = False) -> None:
        self.bare_names = bare_names
        self.study: dict[str, Any] = {}
        self.pretrain: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.trial: dict[tuple[str, str | None], Override] = {}
        self.preset_trial: list[Override] | None = None
        self.file_defaults: list[Override] = []
        """A study file's `from: default` trial settings: applied only where the code gives another value."""

    def add(self, name: str, spec: Any, *, origin: str) -> None:
        key = qualify(name, bare_names=self.bare_names)
        target = study_field(key)
        section = key.split("/")[0]
        if target is None and section in STUDY_SECTIONS and ":" not in key:
            known = ", ".join(k for k in study_fields() if k.split("/")[0] == section)
            raise ValueError(f"--set {key}: not a setting of {section} ({known})")
        if target is None:
            override = _trial_override(key, spec, origin=origin)
            if origin.startswith("default "):
                self.file_defaults.append(
                    dataclasses.replace(override, origin=origin.removeprefix("default "))
                )
                return
            if origin.startswith("preset"):
                self.preset_trial = [*(self.preset_trial or []), override]
                return
            previous = self.trial.get((override.key, override.method))
            if previous is not None and previous.origin == origin:
                raise ValueError(f"--set {override.name} is given twice")
            self.trial[(override.key, override.method)] = override
            return
        if self.origins.get(key) == origin and origin == "flag":
            raise ValueError(f"{key} is given twice (a flag and --set, or --set twice)")
        value = study_value(key, spec)
        if key.startswith(f"{PRETRAIN_KEY}/"):
            self.pretrain[key.removeprefix(f"{PRETRAIN_KEY}/")] = value
        else:
            self.study[key] = value
        self.origins[key] = origin

    def config(self, *, plugins: tuple[str, ...], defaults: Mapping[str, Any]) -> StudyConfig:
        """The `StudyConfig` of these layers over a command's `defaults` (by key; its `__post_init__` adds
        the preset's and checks it all)."""
        values = {**defaults, **self.study}
        if self.pretrain:
            values[PRETRAIN_KEY] = self.pretrain

        def build(edited: tuple[Override, ...] = ()) -> StudyConfig:
            return StudyConfig.from_keys(
                values,
                plugins=plugins,
                overrides=(*self.trial.values(), *edited),
                preset_overrides=tuple(self.preset_trial) if self.preset_trial is not None else None,
                origins=dict(self.origins),
            )

        config = build()
        edited = self._edited_defaults(config)
        return build(edited) if edited else config

    def _edited_defaults(self, config: StudyConfig) -> tuple[Override, ...]:
        """The study file's default entries of the study's methods that no later layer gives and whose value
        the code no longer gives (edited in the file, or changed in the code): the file's value is the run."""
        if not self.file_defaults:
            return ()
        from study.plan import default_overrides

        code = {(o.key, o.method): o for o in default_overrides(config)}
        given = {(o.key, o.method) for o in self.trial.values()}
        return tuple(
            o
            for o in self.file_defaults
            if o.method in config.search.methods
            and not given & {(o.key, o.method), (o.key, None)}
            and code.get((o.key, o.method)) != o
        )


def qualify(name: str, *, bare_names: bool = False) -> str:
    """A bare name (`lr`, `f`, `trials`) as its full key where exactly one key has that last part (only
    with `bare_names`: study.train's shorthand, which imports the trial dataclasses to look it up); any
    other name as it is (an unknown one is refused where it is read, naming it)."""
    if "/" in name or ":" in name or study_field(name) is not None:
        return name
    if not bare_names:
        raise ValueError(
            f"--set {name}: write the setting's key: train/<name>, train/eval/<name> or strategy/<name> "
            "for a trial, or a study key such as search/trials (docs/configuration.md)"
        )
    keys = [key for key in _known_keys() if key.rsplit("/", 1)[-1] == name]
    if len(keys) != 1:
        reason = f"is ambiguous ({', '.join(keys)})" if keys else "is not a setting"
        raise ValueError(f"--set {name} {reason}; write its key, e.g. train/lr, strategy/f, search/trials")
    return keys[0]


def _known_keys() -> list[str]:
    """Every key of the tree (the trial dataclasses' fields too): what a bare name is looked up in."""
    from trainables.methods import get_strategy
    from trainables.training.train_config import EvalSettings, TrainConfig

    keys = [k for k in study_fields() if k != PRETRAIN_KEY]
    keys += [f"train/{f.name}" for f in dataclasses.fields(TrainConfig) if f.name != "eval"]
    keys += [f"train/eval/{f.name}" for f in dataclasses.fields(EvalSettings)]
    strategy = {f.name for m in method_names() for f in dataclasses.fields(get_strategy(m).config_cls)}
    return keys + [f"strategy/{name}" for name in sorted(strategy)]


def parse_settings(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    *,
    defaults: Mapping[str, Any] | None = None,
    bare_names: bool = False,
) -> tuple[StudyConfig, argparse.Namespace]:
    """Command-line arguments -> a validated `StudyConfig` and the namespace (for a command's own flags);
    `defaults` are a command's own defaults, by key (study.train's preset is tiny).

    Raises:
        ValueError: one line naming the key, for an unknown key or a bad value.
    """
    plugins = preload_plugins(argv)  # first: their methods are valid values of --method and --set
    args = parser.parse_args(argv)
    layers = Layers(bare_names=bare_names)
    study_file = getattr(args, "study_file", None)
    if study_file:
        for name, spec, origin in read_settings_file(study_file, annotated=True):
            if name == "plugins":
                plugins = tuple(dict.fromkeys((*spec, *plugins)))
                load_plugins(plugins)
                continue
            trial_key = study_field(name) is None
            kept = origin if origin.startswith("preset") and trial_key else f"file {study_file}"
            kept = f"default {kept}" if origin == "default" and trial_key else kept
            layers.add(name, spec, origin=kept)
    if args.set_file:
        for name, spec, _ in read_settings_file(args.set_file, annotated=False):
            layers.add(name, spec, origin=f"file {args.set_file}")
    for text in args.settings:
        head, sep, spec = text.partition("=")
        if not sep:
            parse_override(text, methods=method_names())  # the one message for a missing '='
        layers.add(head.strip(), spec, origin="flag")
    for key, value in given_flags(args, StudyConfig).items():
        if layers.origins.get(key) == "flag":
            raise ValueError(f"{key} is given twice (a flag and --set)")
        layers.study[key] = value
        layers.origins[key] = "flag"
    return layers.config(plugins=plugins, defaults=defaults or {}), args


def study_parser(prog: str, description: str, epilog: str = "") -> OneLineParser:
    """The parser of `python -m study.run` (and of the commands that take a study's flags)."""
    parser = OneLineParser(prog=prog, description=description, epilog=epilog)
    add_setting_flags(parser, StudyConfig)
    add_override_flags(parser)
    return parser
