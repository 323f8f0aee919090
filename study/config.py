"""`StudyConfig`: every setting of one study, as a tree of one dataclass per section, validated before
anything heavy is imported or started.

    StudyConfig(preset, search: SearchSettings, data: DataSettings, model: ModelSettings,
                scheduler: SchedulerSettings, resources: ResourceSettings, storage: StorageSettings,
                overrides, preset_overrides, plugins, origins)

A setting's key is its path (`data/train_size`, `storage/root`; `study.config_tree`). Each section checks
its own values (`__post_init__`); `StudyConfig` checks what needs two sections (the methods against the
plugins, the default study name against the preset) and puts the preset's values under the given ones.
The CLI (`study.run`) only parses arguments into this tree; `study.tuner.run_study` does the rest. Nothing
here imports torch, Ray or a model, so `--help` and bad-flag errors are instant; the method names come from
the method registry (`trainables.methods`), whose records load without torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from search_spaces.overrides import Override, is_search_spec, read_scalar, spec_to_override
from search_spaces.safe_yaml import load_yaml_file
from study.config_tree import PRETRAIN_KEY, Leaf, field_value, leaves, section, setting, tree_values
from trainables.data.load import CODE_DATASETS
from trainables.data.load import CONFIGS as DATA_CONFIGS
from trainables.data.load import SOURCES as DATA_SOURCES
from trainables.methods import load_plugins, method_names
from trainables.scoring.metric_registry import metric_names, mode_of

SCHEDULERS = ("asha", "none")
SEARCH_METRICS = {f"dev/{name}": mode_of(name) for name in metric_names()} | {
    "train/loss": mode_of("train/loss")
}
"""Metrics reported at every evaluation (so ASHA can compare trials on them) -> the better direction, from
the metric records (`trainables.scoring.metric_registry`)."""
DEFAULT_STORAGE = "results"
JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
"""A --optuna-storage path ending so is an Optuna journal file (as `optuna-dashboard FILE` reads it)."""
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_ADDRESS = re.compile(r"auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
"""Study names and addresses are `fullmatch`ed: `$` would let a final newline through (`abc\\n`)."""


PRESET_DIR = Path(__file__).parent / "presets"
"""The presets: `<name>.yaml` settings files in the one override syntax (the `--set-file` form), nothing
else. A preset sets values in the config tree as `--set` would, under the values a settings file or a flag
gives; a key it leaves out keeps its one default (the search space's range, the config dataclass's field).
A new preset is a new file."""
PRESET_NAMES = tuple(sorted(path.stem for path in PRESET_DIR.glob("*.yaml")))


def check_whole(flag: str, value: Any) -> None:
    """None, or a whole number >= 1 (not a bool), else a ValueError naming `flag`."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{flag} must be a whole number >= 1, got {value!r}")


def expand(values: tuple[str, ...] | str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Names given (`all` / `both`: every known one) as a tuple without repeats, each checked."""
    values = (values,) if isinstance(values, str) else tuple(values)
    expanded: list[str] = []
    for value in values:
        for item in known if value in ("all", "both") else (value,):
            if item not in known:
                raise ValueError(f"unknown {what} {item!r}; choose from {', '.join(known)} or all")
            if item not in expanded:
                expanded.append(item)
    if not expanded:
        flag = {"method": "--method", "config": "--config"}[what]
        raise ValueError(f"no {what} given: {flag} NAME (or all), or a --study-file")
    return tuple(expanded)


@dataclass
class SearchSettings:
    """`search/...`: which methods are studied, how many trials, and what TPE and ASHA optimise."""

    methods: tuple[str, ...] = setting(
        (), flag="--method", metavar="METHOD", choices=lambda: (*method_names(), "all"),
        help="a method, or all of them (plugins' included)",
    )  # fmt: skip
    trials: int = setting(50, help="trials per experiment (raised where the coverage points need more)")
    seed: int = setting(0, help="seeds the data split, TPE and every trial")
    metric: str = setting(
        "dev/accuracy", choices=tuple(SEARCH_METRICS),
        help="what TPE optimises and ASHA compares (a metric reported at every evaluation)",
    )  # fmt: skip
    mode: str | None = setting(
        choices=("max", "min"), help="whether the metric is maximised (default: its own)"
    )

    def __post_init__(self) -> None:
        # the names are checked by StudyConfig, once the plugins that register more methods are loaded
        self.methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        check_whole("--trials", self.trials)
        if self.metric.startswith("test/"):
            raise ValueError(
                f"--metric {self.metric}: choosing hyperparameters on the test split leaks it; use dev/*"
            )
        if self.metric not in SEARCH_METRICS:
            raise ValueError(f"--metric must be one of {', '.join(SEARCH_METRICS)}, got {self.metric!r}")
        self.mode = self.mode or SEARCH_METRICS[self.metric]
        if self.mode not in ("max", "min"):
            raise ValueError(f"--mode must be max or min, got {self.mode!r}")


@dataclass
class DataSettings:
    """`data/...`: the GSM8K configs and where their records come from, how many of each split."""

    configs: tuple[str, ...] = setting(
        ("main",), flag="--config", metavar="CONFIG", choices=(*DATA_CONFIGS, "both"),
        help="GSM8K config; each (method, config) pair is one experiment with its own Optuna study",
    )  # fmt: skip
    dir: str | None = setting(
        flag="--data-dir", help="folder with gsm8k/*.jsonl (and mbpp/mbpp.jsonl) instead of the hub"
    )
    source: str | None = setting(
        flag=None, choices=DATA_SOURCES,
        help="embedded (generated problems), hub, local, or auto (local with a data dir, else the hub)",
    )  # fmt: skip
    train_size: int | None = setting(help="training records (default: all)")
    dev_size: int | None = setting(help="dev records trials are compared on (default 500)")
    test_size: int | None = setting(help="test records scored at a trial's end (default: all)")
    min_steps: int | None = setting(flag=None, help="embedded: fewest steps of a problem")
    max_steps: int | None = setting(flag=None, help="embedded: most steps of a problem")
    max_operand: int | None = setting(flag=None, help="embedded: largest fresh number")
    code_dataset: str = setting("mbpp", choices=CODE_DATASETS, help="stacked LoRA's stage-1 coding data")

    def __post_init__(self) -> None:
        self.configs = expand(self.configs, DATA_CONFIGS, "config")
        for name in ("train_size", "dev_size", "test_size"):
            check_whole(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.code_dataset not in CODE_DATASETS:
            raise ValueError(
                f"--code-dataset must be one of {', '.join(CODE_DATASETS)}, got {self.code_dataset!r}"
            )

    def data_config(self) -> dict[str, Any]:
        """The `DataConfig` fields these settings set (one left None keeps DataConfig's default)."""
        names = ("train_size", "dev_size", "test_size", "min_steps", "max_steps", "max_operand")
        values = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        source = "local" if self.dir else self.source  # a data dir given by the user wins over the preset's
        return {**values, **({"source": source} if source else {})}


@dataclass
class ModelSettings:
    """`model/...`: the base model every method starts from."""

    name: str | None = setting(
        flag="--model", help="base model for every method: hub name or local path (a method's record may "
        "move it, as QLoRA's does t5-small to t5-base); default: the preset's",
    )  # fmt: skip
    tiny_size: str = setting(
        "tiny", flag=None,
        help="shape of the locally built T5 when the model is tiny (trainables.training.models.TINY_SIZES)",
    )  # fmt: skip
    pretrain: dict[str, Any] = setting(
        {}, flag=None,
        help="for a locally built T5: prefix-LM pretraining (problems generated, TrainConfig fields); empty: none",
    )  # fmt: skip


@dataclass
class SchedulerSettings:
    """`scheduler/...`: ASHA's early stopping, or none."""

    name: str = setting(
        "asha", flag="--scheduler", choices=SCHEDULERS,
        help="ASHA early stopping on the metric, or none: every trial runs all its epochs",
    )  # fmt: skip
    grace_period: int = setting(1, help="ASHA: evaluations before a trial can stop")
    reduction_factor: float = setting(2.0, help="ASHA: 1/F of the trials at a rung go on to the next")

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.name!r}")
        check_whole("--grace-period", self.grace_period)
        if not self.reduction_factor > 1:
            raise ValueError(f"ASHA reduction_factor must be > 1, got {self.reduction_factor}")


@dataclass
class ResourceSettings:
    """`resources/...`: the Ray cluster and each trial's share of it."""

    max_concurrent: int | None = setting(
        help="trials at once per experiment (default: what the resources hold)"
    )
    cpus_per_trial: float | None = setting(help="CPUs per trial (default 1)")
    gpus_per_trial: float | None = setting(
        help="GPU share per trial, fractions allowed: 0.25 runs four trials per GPU (default: the method's)"
    )
    max_failures: int = setting(2, help="retries of a crashed trial")
    address: str | None = setting(
        help="join a running Ray cluster (host:port or auto) instead of starting one"
    )
    num_cpus: int | None = setting(help="CPUs of the local Ray cluster (default: all)")
    dashboard: bool = setting(True, help="start the Ray dashboard (127.0.0.1, token)")
    preflight: bool = setting(
        True,
        help="check that each method fits its memory share before the trials start (python -m study.preflight "
        "runs the full check)",
    )

    def __post_init__(self) -> None:
        check_whole("--max-concurrent", self.max_concurrent)
        check_whole("--num-cpus", self.num_cpus)
        if self.max_failures < 0:
            raise ValueError(f"--max-failures must be >= 0, got {self.max_failures}")
        cpus, gpus = self.cpus_per_trial, self.gpus_per_trial
        if cpus is not None and not (math.isfinite(cpus) and cpus > 0):
            raise ValueError(f"--cpus-per-trial must be > 0, got {cpus}")
        if gpus is not None:
            if not math.isfinite(gpus) or gpus < 0:
                raise ValueError(f"--gpus-per-trial must be >= 0, got {gpus}")
            if gpus > 1 and gpus != int(gpus):
                raise ValueError(f"--gpus-per-trial above 1 must be a whole number of GPUs, got {gpus}")
        if self.address is not None and not _ADDRESS.fullmatch(self.address):
            raise ValueError(f"--address must be host:port, ray://host:port or auto, got {self.address!r}")


@dataclass
class StorageSettings:
    """`storage/...`: where the study's results, Optuna studies and MLflow runs are kept."""

    root: str = setting(
        DEFAULT_STORAGE, flag="--storage",
        help="local folder or URI (s3://bucket/path) holding <name>/<method>-<config>/",
    )  # fmt: skip
    name: str | None = setting(help="the study's folder under --storage (default: slm-<preset>)")
    optuna: str | None = setting(
        flag="--optuna-storage", metavar="URL",
        help="Optuna storage for the studies: sqlite:///f.db, postgresql://..., a journal file f.log "
        "(default: <storage>/<name>/optuna.db)",
    )  # fmt: skip
    mlflow: str | None = setting(
        metavar="URI", help="log every trial to MLflow: file:./mlruns, sqlite:///mlflow.db, http://..."
    )
    resume: bool = setting(False, help="continue the interrupted study --name")

    def __post_init__(self) -> None:
        if not self.root.strip():
            raise ValueError("--storage must be a folder or a URI, got an empty string")
        if not _URI.match(self.root):
            self.root = str(Path(self.root).expanduser().resolve())
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ValueError(f"--name must be letters, digits, '.', '-' or '_' (no '/'), got {self.name!r}")
        self._check_tracking_uris()

    def _check_tracking_uris(self) -> None:
        """Only the shape here; `study.tracking.check_tracking` connects, before Ray starts."""
        url = self.optuna
        if url is not None:
            url = self.optuna = url.strip()
            if not _URI.match(url) and not url.endswith(JOURNAL_SUFFIXES):
                raise ValueError(
                    f"--optuna-storage must be a database URL (sqlite:///study.db, postgresql://user@host/db, "
                    f"redis://host) or a journal file ending {', '.join(JOURNAL_SUFFIXES)}, got {url!r}"
                )
            if not _URI.match(url):  # a journal file: absolute, so --resume from another folder finds it
                self.optuna = str(Path(url).expanduser().resolve())
        uri = self.mlflow
        if uri is not None:
            uri = self.mlflow = uri.strip()
            scheme = uri.split(":", 1)[0] if ":" in uri else ""
            if not uri or scheme not in MLFLOW_SCHEMES:
                raise ValueError(
                    f"--mlflow must be a tracking URI starting {', '.join(s + ':' for s in MLFLOW_SCHEMES)}, "
                    f"got {uri!r}"
                )


@dataclass
class StudyConfig:
    """One study: which experiments, on what data and model, searched how, run where, stored where.

    The study's half of the config tree; its trials' half (`train/...`, `train/eval/...`,
    `[method:]strategy/...`) is `overrides` over the preset's (`preset_overrides`) over the search spaces
    and config dataclasses. A setting left at its default takes the preset's value, if the preset has one.
    """

    KEY_PREFIX: ClassVar[str] = ""
    """A setting of the config itself is keyed by its bare name (`preset`)."""

    preset: str | None = setting(
        choices=PRESET_NAMES,
        help="tiny: generated problems and a small T5 built locally (minutes on a CPU); small: T5-small on a "
        "GSM8K subset; paper: T5-small (T5-base for qlora) on full GSM8K. Default: paper, checked before Ray starts",
    )  # fmt: skip
    search: SearchSettings = section(SearchSettings)
    data: DataSettings = section(DataSettings)
    model: ModelSettings = section(ModelSettings)
    scheduler: SchedulerSettings = section(SchedulerSettings)
    resources: ResourceSettings = section(ResourceSettings)
    storage: StorageSettings = section(StorageSettings)
    overrides: tuple[Override, ...] = field(default_factory=tuple)
    """The trials' settings from a settings file and the command line (`--set`), over the preset's."""
    preset_overrides: tuple[Override, ...] | None = None
    """The trials' settings under the user's: None reads the preset's (`PRESET_DIR`); a study file gives
    the ones it saved."""
    plugins: tuple[str, ...] = ()
    """Modules that register more methods (`--plugin`); imported here and again in every trial's worker."""
    origins: dict[str, str] = field(default_factory=dict)
    """Key -> where its value came from (default, preset <name>, file <path>, flag), for the study file."""

    def __post_init__(self) -> None:
        self.plugins = (self.plugins,) if isinstance(self.plugins, str) else tuple(self.plugins)
        load_plugins(self.plugins)  # before the methods are checked: a plugin's method is a method
        if self.preset is not None and self.preset not in PRESET_NAMES:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESET_NAMES)}")
        methods = expand(self.search.methods or (), method_names(), "method")
        self.search = dataclasses.replace(self.search, methods=methods)
        self._apply_preset()
        if self.storage.name is None:
            self.storage = dataclasses.replace(self.storage, name=f"slm-{self.preset_name}")
        self.overrides = tuple(self.overrides)

    @classmethod
    def from_keys(cls, values: Mapping[str, Any], **rest: Any) -> StudyConfig:
        """The config of key -> value (`{"search/methods": ("lora",), "preset": "tiny"}`: what the CLI's
        layers and a study's record give); `rest` are the fields that are not settings (`overrides`, ...).

        Raises:
            ValueError: for an unknown key or a bad value.
        """
        return cls(**tree_values(cls, values), **rest)

    def _apply_preset(self) -> None:
        """The preset's values, under those given (a flag, a file, or a value other than the default);
        records where each value came from. A section given a value is built again, so its checks run."""
        origin = f"preset {self.preset_name}"
        trial_settings = []
        changes: dict[str, dict[str, Any]] = {}
        pretrain = dict(self.model.pretrain)
        for key, spec, _ in preset_settings(self.preset_name):
            leaf = study_field(key)
            if leaf is None:
                method, _, name = key.rpartition(":")
                override = spec_to_override(name, spec, method=method or None)
                trial_settings.append(dataclasses.replace(override, origin=origin))
                continue
            value = study_value(key, spec)
            if key.startswith(f"{PRETRAIN_KEY}/"):
                name = key.removeprefix(f"{PRETRAIN_KEY}/")
                if name not in self.model.pretrain:
                    pretrain[name] = value
                    self.origins.setdefault(key, origin)
            elif not self._given(leaf):
                changes.setdefault(leaf.section, {})[leaf.name] = value
                self.origins[key] = origin
        if pretrain != self.model.pretrain:
            changes.setdefault("model", {})["pretrain"] = pretrain
        for name, given in changes.items():
            setattr(self, name, dataclasses.replace(getattr(self, name), **given))
        if self.preset_overrides is None:
            self.preset_overrides = tuple(trial_settings)
        for key in study_fields():
            if key != PRETRAIN_KEY:
                self.origins.setdefault(key, "default")

    def _given(self, leaf: Leaf) -> bool:
        return leaf.key in self.origins or leaf.get(self) != leaf.default

    @property
    def preset_name(self) -> str:
        """The preset whose defaults apply (paper when none was given)."""
        return self.preset or "paper"

    @property
    def study_path(self) -> str:
        """`<storage>/<name>`: a local path or a URI."""
        return f"{self.storage.root.rstrip('/')}/{self.storage.name}"

    def experiments(self) -> list[tuple[str, str]]:
        """The (method, config) pairs, in the order they run."""
        return [(method, config) for method in self.search.methods for config in self.data.configs]


def experiment_name(method: str, config: str) -> str:
    """The folder of one experiment under the study's path: `<method>-<config>`."""
    return f"{method}-{config}"


def study_fields() -> dict[str, Leaf]:
    """Key (`search/trials`) -> the `Leaf` of the tree holding it."""
    return leaves(StudyConfig)


def study_field(key: str) -> Leaf | None:
    """The leaf of a study key (`model/pretrain/<name>` is the pretrain field's); None for a trial key
    (`train/...`, `strategy/...`, `method:...`)."""
    return study_fields().get(PRETRAIN_KEY if key.startswith(f"{PRETRAIN_KEY}/") else key)


def study_value(key: str, raw: Any) -> Any:
    """A study key's value as its field's type (`config_tree.field_value`)."""
    return field_value(study_field(key).field, key, raw)


def read_settings_file(
    path: str | Path, *, annotated: bool = False, source: str | None = None
) -> list[tuple[str, Any, str | None]]:
    """(name, spec, recorded origin) of every entry of a settings file (`key: spec`, `method: {key: spec}`,
    `method:key: spec`: a preset is one) or of a study file (`key: {value: spec, from: origin}`); `source`
    names the file in errors (default: the flag that reads it)."""
    where = source or f"{'--study-file' if annotated else '--set-file'} {path}"
    data = load_yaml_file(Path(path), source=where) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of key: spec, got {type(data).__name__}")
    methods = method_names()
    entries = []
    for name, spec in data.items():
        name = str(name)
        if name in methods and isinstance(spec, Mapping) and not annotated:
            entries += [(f"{name}:{k}", v, None) for k, v in spec.items()]
        elif annotated:
            if not (isinstance(spec, Mapping) and set(spec) == {"value", "from"}):
                raise ValueError(f"{where}: {name} should be {{value: ..., from: ...}}, got {spec!r}"[:200])
            entries.append((name, spec["value"], str(spec["from"])))
        elif "/" in name or study_field(name) is not None:
            entries.append((name, spec, None))
        else:
            raise ValueError(f"{where}: {name!r} is neither a method ({', '.join(methods)}) nor a key")
    return entries


def preset_settings(name: str) -> list[tuple[str, Any, str | None]]:
    """(name, spec, None) of every setting of the preset called `name`, in its file's order.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return read_settings_file(PRESET_DIR / f"{name}.yaml", source=f"preset {name}")


def preset_values(name: str, *, under: str = "") -> dict[str, Any]:
    """Key -> the fixed value the preset called `name` gives it, for the keys under `under` (`data/`:
    `{"train_size": 2000, ...}`) or every key; searched values and a method's own settings are left out."""
    values = {}
    for key, spec, _ in preset_settings(name):
        searched = isinstance(spec, (list, dict)) or (isinstance(spec, str) and is_search_spec(spec))
        if key.startswith(under) and ":" not in key and not searched:
            # YAML has typed the value already, except where a number has no dot (`3e-3`): read_scalar's job
            value = read_scalar(spec, source=f"preset {name} {key}") if isinstance(spec, str) else spec
            values[key.removeprefix(under)] = value
    return values
