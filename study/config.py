"""`StudyConfig`: every setting of one study, validated before anything heavy is imported or started.

The CLI (`study.run`) only parses arguments into this dataclass; `study.tuner.run_study` does the rest.
Nothing here imports torch, Ray or a model, so `--help` and bad-flag errors are instant; the method names
come from the method registry (`trainables.methods`), whose records load without torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.overrides import Override
from study.presets import PRESET_NAMES, preset_settings
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


def setting(
    default: Any = None,
    *,
    key: str,
    help: str,
    flag: str | None = "",
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    metavar: str | None = None,
) -> Any:
    """A field of the study's config tree: its key (`section/name`, what `--set` and a settings file
    write), its help, and its command-line flag (`""`: `--<name>`; None: settable by key only). The CLI is
    generated from these (`study.cli`), so a flag, its help and its check cannot drift apart."""
    meta = {"key": key, "help": help, "flag": flag, "choices": choices, "metavar": metavar}
    if isinstance(default, (dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class StudyConfig:
    """One study: which experiments, on what data and model, searched how, run where, stored where.

    The study's part of the config tree; its trials' part (`train/...`, `train/eval/...`,
    `[method:]strategy/...`) is `overrides` over the preset's (`preset_overrides`) over the search spaces
    and config dataclasses. A field left None takes the preset's value, else the default the help names.
    """

    methods: tuple[str, ...] = setting(
        key="search/methods", flag="--method",
        metavar="METHOD", choices=lambda: (*method_names(), "all"),
        help="a method, or all of them (plugins' included)",
    )  # fmt: skip
    configs: tuple[str, ...] = setting(
        ("main",), key="data/configs", flag="--config",
        metavar="CONFIG", choices=(*DATA_CONFIGS, "both"),
        help="GSM8K config; each (method, config) pair is one experiment with its own Optuna study",
    )  # fmt: skip
    trials: int = setting(
        50, key="search/trials", help="trials per experiment (raised where the coverage points need more)"
    )
    preset: str | None = setting(
        key="preset", choices=PRESET_NAMES,
        help="tiny: generated problems and a small T5 built locally (minutes on a CPU); small: T5-small on a "
        "GSM8K subset; paper: T5-small (T5-base for qlora) on full GSM8K. Default: paper, checked before Ray starts",
    )  # fmt: skip
    model: str | None = setting(
        key="model/name", help="base model for every method: hub name or local path (a method's record may "
        "move it, as QLoRA's does t5-small to t5-base); default: the preset's",
    )  # fmt: skip
    tiny_size: str = setting(
        "tiny", key="model/tiny_size", flag=None,
        help="shape of the locally built T5 when the model is tiny (trainables.training.models.TINY_SIZES)",
    )  # fmt: skip
    pretrain: dict[str, Any] = setting(
        {}, key="model/pretrain", flag=None,
        help="for a locally built T5: prefix-LM pretraining (problems generated, TrainConfig fields); empty: none",
    )  # fmt: skip
    data_dir: str | None = setting(
        key="data/dir",
        flag="--data-dir",
        help="folder with gsm8k/*.jsonl (and mbpp/mbpp.jsonl) instead of the hub",
    )
    data_source: str | None = setting(
        key="data/source", flag=None, choices=DATA_SOURCES,
        help="embedded (generated problems), hub, local, or auto (local with a data dir, else the hub)",
    )  # fmt: skip
    train_size: int | None = setting(key="data/train_size", help="training records (default: all)")
    dev_size: int | None = setting(
        key="data/dev_size", help="dev records trials are compared on (default 500)"
    )
    test_size: int | None = setting(
        key="data/test_size", help="test records scored at a trial's end (default: all)"
    )
    min_steps: int | None = setting(
        key="data/min_steps", flag=None, help="embedded: fewest steps of a problem"
    )
    max_steps: int | None = setting(key="data/max_steps", flag=None, help="embedded: most steps of a problem")
    max_operand: int | None = setting(
        key="data/max_operand", flag=None, help="embedded: largest fresh number"
    )
    code_dataset: str = setting(
        "mbpp", key="data/code_dataset", choices=CODE_DATASETS, help="stacked LoRA's stage-1 coding data"
    )
    scheduler: str | None = setting(
        key="scheduler/name", flag="--scheduler", choices=SCHEDULERS,
        help="ASHA early stopping on the metric, or none: every trial runs all its epochs (default asha)",
    )  # fmt: skip
    grace_period: int = setting(
        1, key="scheduler/grace_period", help="ASHA: evaluations before a trial can stop"
    )
    reduction_factor: float = setting(
        2.0, key="scheduler/reduction_factor", help="ASHA: 1/F of the trials at a rung go on to the next"
    )
    max_concurrent: int | None = setting(
        key="resources/max_concurrent",
        help="trials at once per experiment (default: what the resources hold)",
    )
    cpus_per_trial: float | None = setting(key="resources/cpus_per_trial", help="CPUs per trial (default 1)")
    gpus_per_trial: float | None = setting(
        key="resources/gpus_per_trial",
        help="GPU share per trial, fractions allowed: 0.25 runs four trials per GPU (default: the method's)",
    )
    max_failures: int = setting(2, key="resources/max_failures", help="retries of a crashed trial")
    address: str | None = setting(
        key="resources/address", help="join a running Ray cluster (host:port or auto) instead of starting one"
    )
    num_cpus: int | None = setting(
        key="resources/num_cpus", help="CPUs of the local Ray cluster (default: all)"
    )
    dashboard: bool = setting(
        True, key="resources/dashboard", help="start the Ray dashboard (127.0.0.1, token)"
    )
    preflight: bool = setting(
        True, key="resources/preflight",
        help="check that each method fits its memory share before the trials start (python -m study.preflight "
        "runs the full check)",
    )  # fmt: skip
    storage: str = setting(
        DEFAULT_STORAGE, key="storage/root", flag="--storage",
        help="local folder or URI (s3://bucket/path) holding <name>/<method>-<config>/",
    )  # fmt: skip
    name: str | None = setting(
        key="storage/name", help="the study's folder under --storage (default: slm-<preset>)"
    )
    optuna_storage: str | None = setting(
        key="storage/optuna", flag="--optuna-storage", metavar="URL",
        help="Optuna storage for the studies: sqlite:///f.db, postgresql://..., a journal file f.log "
        "(default: <storage>/<name>/optuna.db)",
    )  # fmt: skip
    mlflow: str | None = setting(
        key="storage/mlflow", metavar="URI",
        help="log every trial to MLflow: file:./mlruns, sqlite:///mlflow.db, http://...",
    )  # fmt: skip
    resume: bool = setting(False, key="storage/resume", help="continue the interrupted study --name")
    seed: int = setting(0, key="search/seed", help="seeds the data split, TPE and every trial")
    metric: str = setting(
        "dev/accuracy", key="search/metric", choices=tuple(SEARCH_METRICS),
        help="what TPE optimises and ASHA compares (a metric reported at every evaluation)",
    )  # fmt: skip
    mode: str | None = setting(
        key="search/mode", choices=("max", "min"), help="whether the metric is maximised (default: its own)"
    )
    overrides: tuple[Override, ...] = field(default_factory=tuple)
    """The trials' settings from a settings file and the command line (`--set`), over the preset's."""
    preset_overrides: tuple[Override, ...] | None = None
    """The trials' settings under the user's: None reads the preset's (`study.presets`); a study file gives
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
        self.methods = self._expand(self.methods or (), method_names(), "method")
        self.configs = self._expand(self.configs, DATA_CONFIGS, "config")
        self._apply_preset()
        self.scheduler = self.scheduler or "asha"
        self._check_choices()
        self._check_numbers()
        if self.address is not None and not _ADDRESS.fullmatch(self.address):
            raise ValueError(f"--address must be host:port, ray://host:port or auto, got {self.address!r}")
        if not self.storage.strip():
            raise ValueError("--storage must be a folder or a URI, got an empty string")
        if not _URI.match(self.storage):
            self.storage = str(Path(self.storage).expanduser().resolve())
        self._check_tracking_uris()
        self.name = self.name or f"slm-{self.preset or 'paper'}"
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"--name must be letters, digits, '.', '-' or '_' (no '/'), got {self.name!r}")
        if self.metric.startswith("test/"):
            raise ValueError(
                f"--metric {self.metric}: choosing hyperparameters on the test split leaks it; use dev/*"
            )
        if self.metric not in SEARCH_METRICS:
            raise ValueError(f"--metric must be one of {', '.join(SEARCH_METRICS)}, got {self.metric!r}")
        self.mode = self.mode or SEARCH_METRICS[self.metric]
        if self.mode not in ("max", "min"):
            raise ValueError(f"--mode must be max or min, got {self.mode!r}")
        self.overrides = tuple(self.overrides)

    @staticmethod
    def _expand(values: tuple[str, ...] | str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
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

    def _apply_preset(self) -> None:
        """The preset's values, under those given (a flag, a file, or a value other than the default);
        records where each value came from."""
        from search_spaces.overrides import parse_override

        origin = f"preset {self.preset_name}"
        trial_settings = []
        for text in preset_settings(self.preset_name):
            key, _, spec = text.partition("=")
            target = study_field(key)
            if target is None:
                trial_settings.append(dataclasses.replace(parse_override(text, methods=None), origin=origin))
                continue
            value = study_value(key, spec)
            if key.startswith(f"{PRETRAIN_KEY}/"):
                name = key.removeprefix(f"{PRETRAIN_KEY}/")
                if name not in self.pretrain:
                    self.pretrain = {**self.pretrain, name: value}
                    self.origins.setdefault(key, origin)
            elif not self._given(target):
                setattr(self, target.name, value)
                self.origins[key] = origin
        if self.preset_overrides is None:
            self.preset_overrides = tuple(trial_settings)
        for f in dataclasses.fields(self):
            if "key" in f.metadata and f.metadata["key"] != PRETRAIN_KEY:
                self.origins.setdefault(f.metadata["key"], "default")

    def _given(self, f: dataclasses.Field) -> bool:
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return f.metadata["key"] in self.origins or getattr(self, f.name) != default

    def _check_choices(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.code_dataset not in CODE_DATASETS:
            raise ValueError(
                f"--code-dataset must be one of {', '.join(CODE_DATASETS)}, got {self.code_dataset!r}"
            )

    def _check_numbers(self) -> None:
        for name in (
            "trials",
            "grace_period",
            "max_concurrent",
            "num_cpus",
            "train_size",
            "dev_size",
            "test_size",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        if self.max_failures < 0:
            raise ValueError(f"--max-failures must be >= 0, got {self.max_failures}")
        if not self.reduction_factor > 1:
            raise ValueError(f"ASHA reduction_factor must be > 1, got {self.reduction_factor}")
        if self.cpus_per_trial is not None and not (
            math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0
        ):
            raise ValueError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")
        gpus = self.gpus_per_trial
        if gpus is not None:
            if not math.isfinite(gpus) or gpus < 0:
                raise ValueError(f"--gpus-per-trial must be >= 0, got {gpus}")
            if gpus > 1 and gpus != int(gpus):
                raise ValueError(f"--gpus-per-trial above 1 must be a whole number of GPUs, got {gpus}")

    def _check_tracking_uris(self) -> None:
        """Only the shape here; `study.tracking.check_tracking` connects, before Ray starts."""
        url = self.optuna_storage
        if url is not None:
            url = self.optuna_storage = url.strip()
            if not _URI.match(url) and not url.endswith(JOURNAL_SUFFIXES):
                raise ValueError(
                    f"--optuna-storage must be a database URL (sqlite:///study.db, postgresql://user@host/db, "
                    f"redis://host) or a journal file ending {', '.join(JOURNAL_SUFFIXES)}, got {url!r}"
                )
            if not _URI.match(url):  # a journal file: absolute, so --resume from another folder finds it
                self.optuna_storage = str(Path(url).expanduser().resolve())
        uri = self.mlflow
        if uri is not None:
            uri = self.mlflow = uri.strip()
            scheme = uri.split(":", 1)[0] if ":" in uri else ""
            if not uri or scheme not in MLFLOW_SCHEMES:
                raise ValueError(
                    f"--mlflow must be a tracking URI starting {', '.join(s + ':' for s in MLFLOW_SCHEMES)}, "
                    f"got {uri!r}"
                )

    @property
    def preset_name(self) -> str:
        """The preset whose defaults apply (paper when none was given)."""
        return self.preset or "paper"

    @property
    def study_path(self) -> str:
        """`<storage>/<name>`: a local path or a URI."""
        return f"{self.storage.rstrip('/')}/{self.name}"

    def experiments(self) -> list[tuple[str, str]]:
        """The (method, config) pairs, in the order they run."""
        return [(method, config) for method in self.methods for config in self.configs]

    def data_settings(self) -> dict[str, Any]:
        """The `DataConfig` fields this study sets (a field it leaves None keeps DataConfig's default)."""
        names = ("train_size", "dev_size", "test_size", "min_steps", "max_steps", "max_operand")
        values = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        # a data dir given by the user wins over the preset's source
        source = "local" if self.data_dir else self.data_source
        return {**values, **({"source": source} if source else {})}


def experiment_name(method: str, config: str) -> str:
    """The folder of one experiment under the study's path: `<method>-<config>`."""
    return f"{method}-{config}"


PRETRAIN_KEY = "model/pretrain"
"""`model/pretrain/<name>`: one setting of the tiny base's pretraining (`StudyConfig.pretrain`)."""


def study_fields() -> dict[str, dataclasses.Field]:
    """Key (`search/trials`) -> the `StudyConfig` field holding it."""
    return {f.metadata["key"]: f for f in dataclasses.fields(StudyConfig) if "key" in f.metadata}


def study_field(key: str) -> dataclasses.Field | None:
    """The `StudyConfig` field of a study key (`model/pretrain/<name>` is the pretrain field's); None for a
    trial key (`train/...`, `strategy/...`, `method:...`)."""
    fields = study_fields()
    return fields.get(PRETRAIN_KEY if key.startswith(f"{PRETRAIN_KEY}/") else key)


def study_value(key: str, raw: Any) -> Any:
    """A study key's value as its field's type (`field_value`)."""
    return field_value(study_field(key), key, raw)


def field_value(f: dataclasses.Field, key: str, raw: Any) -> Any:
    """The value of `key` as the type of its field `f` (of `StudyConfig` or another config made with
    `setting`): `raw` is the text of a `--set` or a flag, or a value read from YAML (a list for a tuple).

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
