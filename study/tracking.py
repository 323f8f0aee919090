"""Where a study is recorded besides Ray's folders: its Optuna database and, with `--mlflow`, MLflow.

Optuna: by default one SQLite file per study folder, `<storage>/<name>/optuna.db`, holding one Optuna study
per experiment (`<method>-<config>`). SQLite cannot live in an object store, so for an `s3://`-style
`--storage` the file is kept beside the driver (`~/.cache/slm-math-study/optuna/...`) and uploaded to
`<storage>/<name>/optuna.db` after every experiment (downloaded again by `--resume` when the local copy is
gone). `--optuna-storage URL` puts every experiment's study in a database of the user's instead.

MLflow: Ray Tune's `MLflowLoggerCallback`, one MLflow experiment per study experiment, named
`<name>/<method>-<config>` (a tracking server is shared by studies; the prefix keeps them apart). Each trial
is a run with its parameters and every metric it reported; its test generations file is logged as an
artifact (Ray's `save_artifact=True` would upload the whole trial folder, checkpoints included).

Both are checked before Ray starts: a malformed or unreachable URL is a one-line error.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from study.config import StudyConfig
from study.dashboard import optuna_dashboard_line
from study.prepare import DEFAULT_CACHE
from study.stored_experiment import EXPERIMENT_STATE

ARTIFACTS = ("generations_test.jsonl", "generations_test_calculator.jsonl")
"""Trial files logged to MLflow."""
_REMOTE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


@dataclass
class OptunaLocation:
    """Where one study's Optuna studies are stored."""

    url: str
    """The Optuna storage URL the searcher writes to (what `optuna.load_study` and optuna-dashboard take)."""
    upload_to: str | None = None
    """With an object-store --storage: where the local SQLite file is copied after each experiment."""
    shared: bool = False
    """True for a user's --optuna-storage: never delete a study there, refuse to start over one."""

    @property
    def local_file(self) -> Path | None:
        """The SQLite file, when the storage is one."""
        return Path(self.url.removeprefix("sqlite:///")) if self.url.startswith("sqlite:///") else None

    def describe(self) -> str:
        """The line the study prints."""
        line = f"Optuna studies (one per experiment, <method>-<config>): {self.url}"
        if self.upload_to:
            line += f"\n  a local file beside the driver, uploaded to {self.upload_to} after each experiment"
        return f"{line}\n{optuna_dashboard_line(self.url)}"


def optuna_location(config: StudyConfig) -> OptunaLocation:
    """The study's Optuna storage: --optuna-storage, or the SQLite default (see the module docstring)."""
    if config.storage.optuna:
        return OptunaLocation(url=config.storage.optuna, shared=True)
    path = config.study_path
    if path.startswith("file://"):
        path = path.removeprefix("file://")
    if not _REMOTE.match(path):
        return OptunaLocation(url=f"sqlite:///{Path(path).resolve()}/optuna.db")
    key = hashlib.sha256(path.encode()).hexdigest()[:12]
    local = DEFAULT_CACHE / "optuna" / f"{config.storage.name}-{key}" / "optuna.db"
    return OptunaLocation(url=f"sqlite:///{local}", upload_to=f"{path.rstrip('/')}/optuna.db")


def _copy(source: str, destination: str) -> None:
    import pyarrow.fs

    Path(destination).parent.mkdir(parents=True, exist_ok=True) if not _REMOTE.match(destination) else None
    pyarrow.fs.copy_files(source, destination)


def upload(location: OptunaLocation) -> None:
    """Copy the local SQLite file next to the results (object-store --storage only)."""
    if location.upload_to and location.local_file and location.local_file.is_file():
        _copy(str(location.local_file), location.upload_to)


def download(location: OptunaLocation) -> None:
    """On --resume beside an object store: fetch the uploaded file when this machine has no copy."""
    if not (location.upload_to and location.local_file) or location.local_file.is_file():
        return
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(location.upload_to)
    if fs.get_file_info(inner).type == pyarrow.fs.FileType.File:
        _copy(location.upload_to, str(location.local_file))


def prepare_studies(
    location: OptunaLocation, names: Iterable[str], *, restored: set[str], study_path: str = ""
) -> None:
    """Before Ray starts: a restored experiment must find its Optuna study, and one that starts afresh must
    not continue an Optuna study of the same name.

    A restored experiment whose study is gone (`optuna.db` deleted) stops the study with one line: Ray would
    resume trials the database no longer knows. For an experiment that starts afresh, a study of its name is
    left by a driver killed before Ray saved anything of the experiment (so Ray starts it over): in the study's
    own file it is deleted, unless it holds finished trials (then Ray's snapshot of them was lost, and
    starting over would drop them: one line); in a shared --optuna-storage it is refused.

    Raises:
        ValueError: one line naming the missing file or study.
    """
    import optuna
    from optuna.trial import TrialState

    from study.optuna_store import open_storage

    download(location)
    if location.local_file and not location.local_file.is_file():
        if restored:  # checked before anything opens the URL, which would create an empty file
            kept = f" (nor at {location.upload_to})" if location.upload_to else ""
            raise ValueError(
                f"cannot resume: the Optuna database {location.local_file} is missing{kept}; it records the "
                f"trials of {', '.join(sorted(restored))}: put it back, or start a new study with --name"
            )
        return  # nothing stored yet; the searcher creates the file
    storage = open_storage(location.url)
    stored = {s.study_name for s in storage.get_all_studies()}
    for name in names:
        if name in restored and name not in stored:
            raise ValueError(
                f"cannot resume: {location.url} holds no Optuna study {name!r}, which records the trials of "
                f"the experiment {name}: put the database back, or start a new study with --name"
            )
        if name in restored or name not in stored:
            continue
        if location.shared:
            raise ValueError(
                f"--optuna-storage {location.url} already holds an Optuna study {name!r}: pass --resume "
                "to continue that study, or use another database"
            )
        finished = optuna.load_study(study_name=name, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        if finished:
            folder = f"{study_path.rstrip('/')}/{name}" if study_path else name
            raise ValueError(
                f"cannot resume: Ray's experiment state ({EXPERIMENT_STATE}) is missing from {folder}, but "
                f"its Optuna study holds {len(finished)} finished trials: put the file back, or start a new "
                "study with --name"
            )
        optuna.delete_study(study_name=name, storage=storage)


def check_mlflow(uri: str) -> None:
    """Reach the MLflow tracking URI once (a local `file:` or `sqlite:` store is created).

    Raises:
        ValueError: one line, when MLflow is not installed or the URI cannot be used.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one try, not minutes of backoff
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ValueError('--mlflow needs MLflow: pip install -e ".[mlflow]"') from None
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as error:  # MlflowException, sqlalchemy errors, connection errors
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot use the MLflow tracking URI {uri}: {text}") from None


def check_tracking(config: StudyConfig, location: OptunaLocation) -> None:
    """Both checks, before Ray starts; prints where the study is recorded."""
    from study.optuna_store import check_storage

    if location.shared:
        check_storage(location.url)  # the default SQLite file is the study's own: nothing to reach
    print(location.describe(), file=sys.stderr)
    if config.storage.mlflow:
        check_mlflow(config.storage.mlflow)
        print(
            f"MLflow: {config.storage.mlflow} (watch it: mlflow ui --backend-store-uri {config.storage.mlflow})",
            file=sys.stderr,
        )


def mlflow_experiment_name(study: str, experiment: str) -> str:
    """The MLflow experiment of one study experiment."""
    return f"{study}/{experiment}"


class StudyMLflowCallback(MLflowLoggerCallback):
    """Ray's MLflow callback: one run per Ray trial (found again by its `ray_trial_id` tag after --resume,
    so a resumed trial keeps its run), and the trial's generations files as artifacts at its end."""

    def __init__(self, tracking_uri: str, *, study: str, experiment: str) -> None:
        super().__init__(tracking_uri, experiment_name=mlflow_experiment_name(study, experiment))
        self._base_tags = {"study": study, "experiment": experiment}
        self._pending: list[tuple[str, str]] = []
        """(run id, trial folder) of finished trials whose generations file had not arrived yet."""

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            runs = self.mlflow_util._get_client().search_runs(
                [self.mlflow_util.experiment_id], f"tags.ray_trial_id = '{trial.trial_id}'"
            )
            if runs:  # the driver was restarted: keep logging to the trial's run
                self._trial_runs[trial] = runs[0].info.run_id
        self.tags = {**self._base_tags, "ray_trial_id": trial.trial_id}  # copied into the new run's tags
        super().log_trial_start(trial)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self._trial_runs.get(trial)
        if run_id is not None and not failed:
            # The worker syncs the trial folder to storage in the background, so the file may not be there
            # yet: then take it from the worker's folder when the trial ran on this machine, or wait for
            # the end of the experiment, when Ray has synced every trial.
            working = getattr(getattr(trial, "storage", None), "trial_working_directory", None)
            client = self.mlflow_util._get_client()
            if not _log_artifacts(client, run_id, trial.path) and not (
                working and Path(working).is_dir() and _log_artifacts(client, run_id, working)
            ):
                self._pending.append((run_id, trial.path))
        super().log_trial_end(trial, failed=failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for run_id, path in self._pending:
            _log_artifacts(self.mlflow_util._get_client(), run_id, path)
        self._pending = []
        super().on_experiment_end(trials, **info)


def mlflow_callback(uri: str, *, study: str, experiment: str) -> StudyMLflowCallback:
    """The MLflow callback of one experiment of `study`."""
    return StudyMLflowCallback(uri, study=study, experiment=experiment)


def _log_artifacts(client: Any, run_id: str, trial_path: str) -> bool:
    """Log the trial's generations files (local folder or object store) to its MLflow run; False when there
    was none to log."""
    import pyarrow.fs

    fs, inner = (
        pyarrow.fs.FileSystem.from_uri(trial_path) if _REMOTE.match(trial_path) else (None, trial_path)
    )
    logged = False
    for name in ARTIFACTS:
        if fs is None:
            path = Path(inner) / name
            if path.is_file():
                client.log_artifact(run_id, str(path))
                logged = True
            continue
        if fs.get_file_info(f"{inner}/{name}").type != pyarrow.fs.FileType.File:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            pyarrow.fs.copy_files(f"{inner}/{name}", f"{tmp}/{name}", source_filesystem=fs)
            client.log_artifact(run_id, f"{tmp}/{name}")
            logged = True
    return logged
