"""`StudyConfig`: every setting of one study, validated before anything heavy is imported or started.

The CLI (`study.run`) only parses arguments into this dataclass; `study.tuner.run_study` does the rest.
Nothing here imports torch, Ray or a model, so `--help` and bad-flag errors are instant; the method names
come from the method registry (`trainables.methods`), whose records load without torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from search_spaces.overrides import Override
from study.presets import PRESET_NAMES, get_preset
from trainables.data.load import CONFIGS as DATA_CONFIGS
from trainables.methods import load_plugins, method_names
from trainables.scoring.metric_registry import metric_names, mode_of

SCHEDULERS = ("asha", "none")
SEARCH_METRICS = {f"dev/{name}": mode_of(name) for name in metric_names()} | {
    "train/loss": mode_of("train/loss")
}
"""Metrics reported at every evaluation (so ASHA can compare trials on them) -> the better direction, from
the metric records (`trainables.scoring.metric_registry`)."""
CODE_DATASETS = ("mbpp", "gsm8k-programs", "solution-programs")
DEFAULT_STORAGE = "results"
JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
"""A --optuna-storage path ending so is an Optuna journal file (as `optuna-dashboard FILE` reads it)."""
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_ADDRESS = re.compile(r"auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
"""Study names and addresses are `fullmatch`ed: `$` would let a final newline through (`abc\\n`)."""


@dataclass
class StudyConfig:
    """One study: which experiments, on what data and model, searched how, run where, stored where."""

    methods: tuple[str, ...]
    """Methods to study; `all` expands to every registered method (plugins' included)."""
    configs: tuple[str, ...] = ("main",)
    """GSM8K configs; each (method, config) pair is one experiment with its own Optuna study."""
    trials: int = 50
    """Trials per experiment (raised where the coverage points need more; see search_spaces)."""
    preset: str | None = None
    """tiny, small or paper; None runs the study's real setting (paper) and checks it can be had first."""
    model: str | None = None
    """Base model (hub name or local path) instead of the preset's, for every method."""
    data_dir: str | None = None
    """Folder with gsm8k/ (and mbpp/) JSONL files instead of the preset's source."""
    train_size: int | None = None
    """Training records (default: the preset's)."""
    dev_size: int | None = None
    """Dev records that trials are compared on (default: the preset's)."""
    test_size: int | None = None
    """Test records scored at the end of each trial (default: the preset's)."""
    code_dataset: str | None = None
    """Stacked LoRA's stage-1 coding data: mbpp, gsm8k-programs or solution-programs (None: the preset's)."""
    scheduler: str | None = None
    """asha (early stopping on `metric`) or none (every trial runs all its epochs); None: the preset's."""
    grace_period: int = 1
    """ASHA: evaluations every trial gets before it can be stopped."""
    reduction_factor: float = 2.0
    """ASHA: 1 / reduction_factor of the trials at a rung go on to the next."""
    max_concurrent: int | None = None
    """Trials running at once per experiment; None: as many as the resources hold."""
    cpus_per_trial: float | None = None
    """CPUs reserved per trial; None: 1."""
    gpus_per_trial: float | None = None
    """GPU share per trial (0.25 = four trials per GPU); None: the method's default where GPUs exist."""
    max_failures: int = 2
    """Retries of a trial that crashed (from its last checkpoint)."""
    address: str | None = None
    """A running Ray cluster to join (`host:port` or `auto`); None starts a local one."""
    num_cpus: int | None = None
    """CPUs of the local Ray cluster (None: all); ignored with `address`."""
    dashboard: bool = True
    """Start the Ray dashboard with a local cluster (on 127.0.0.1, token-protected)."""
    storage: str = DEFAULT_STORAGE
    """Local folder or URI (s3://, gs://, ...) holding `<name>/<method>-<config>/`."""
    name: str | None = None
    """The study's folder under `storage`; None: `slm-<preset>`."""
    optuna_storage: str | None = None
    """Optuna storage URL for every experiment's study (RDB URL, redis:// or a journal file); None: a SQLite
    file per study folder, `<storage>/<name>/optuna.db`."""
    mlflow: str | None = None
    """MLflow tracking URI (file:, sqlite:, http(s)://, ...) to log every trial to; None: no MLflow."""
    resume: bool = False
    """Continue an interrupted study with this name (finished trials are not run again)."""
    seed: int = 0
    """Seeds the data split, TPE and every trial's training."""
    metric: str = "dev/accuracy"
    """What the search optimises and ASHA compares (a metric reported at every evaluation)."""
    mode: str | None = None
    """max or min; None: the metric's natural direction."""
    overrides: tuple[Override, ...] = field(default_factory=tuple)
    """Search-space overrides from `--space` and `--space-file`."""
    plugins: tuple[str, ...] = ()
    """Modules that register more methods (`--plugin`); imported here and again in every trial's worker."""

    def __post_init__(self) -> None:
        self.plugins = (self.plugins,) if isinstance(self.plugins, str) else tuple(self.plugins)
        load_plugins(self.plugins)  # before the methods are checked: a plugin's method is a method
        self.methods = self._expand(self.methods, method_names(), "method")
        self.configs = self._expand(self.configs, DATA_CONFIGS, "config")
        if self.scheduler is None:
            known = self.preset_name in PRESET_NAMES
            self.scheduler = get_preset(self.preset_name).scheduler if known else "asha"
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
            raise ValueError(f"no {what} given")
        return tuple(expanded)

    def _check_choices(self) -> None:
        if self.preset is not None and self.preset not in PRESET_NAMES:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESET_NAMES)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.code_dataset is not None and self.code_dataset not in CODE_DATASETS:
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

    def data_overrides(self) -> dict[str, int]:
        """DataConfig fields given on the command line."""
        sizes = {"train_size": self.train_size, "dev_size": self.dev_size, "test_size": self.test_size}
        return {key: value for key, value in sizes.items() if value is not None}


def experiment_name(method: str, config: str) -> str:
    """The folder of one experiment under the study's path: `<method>-<config>`."""
    return f"{method}-{config}"
