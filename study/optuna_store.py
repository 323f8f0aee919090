"""Each experiment's Optuna study in a database that Optuna's own tools open, holding what really happened.

Ray's `OptunaSearch` keeps its study in memory and pickles it into the experiment state. Here the study lives
in an Optuna storage (a SQLite file per study folder by default, or any `--optuna-storage` URL), named
`<method>-<config>`, and `StoredOptunaSearch` writes to it truthfully:

- every Ray trial is one Optuna trial with its sampled parameters and user attributes `ray_trial_id`,
  `ray_trial_dir`, and, once it has them, its `test/*` metrics and `generations_test` file;
- the search metric at every evaluation is an intermediate value (the dashboard's learning curves);
- a trial that finished is COMPLETE, one ASHA stopped (no test metrics in its last report) PRUNED at the
  value it was stopped at, one that failed FAIL.

The database, not the pickled searcher, is the truth on `--resume`: Ray snapshots the searcher with its
experiment state, and a driver killed after a snapshot leaves the database ahead of it. The saved state
holds only the Ray -> Optuna trial-id map; a restore reopens the study and reconciles. A trial the database
already finished is not told again; a trial Ray retries after it FAILed is a new Optuna trial with the same
parameters (Optuna never reopens a finished trial); a trial the database holds RUNNING that the snapshot
does not know (asked after it) is given to the next trial Ray asks for, so no trial is duplicated or left
RUNNING; the folder that trial's first Ray trial left (with a checkpoint of a run nobody resumes) is
removed. After each `Tuner.fit`, `settle` ends any trial Ray ended without telling the searcher.

A write the storage refuses (full, read-only) is a `StorageWriteError`, an OSError that says so in one line:
it ends the study with exit 2 (`study.errors`) instead of Optuna's "invalid data in the commit" inside Ray's
loop; the database keeps what it had, so `--resume` continues from there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from study.config import JOURNAL_SUFFIXES
from study.errors import StorageWriteError, storage_write_error
from study.results import COMPLETION_KEY
from trainables.training.setting_types import is_number
from trainables.trial_config import flat_trial

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at `url`: an RDB URL (sqlite:///, postgresql://, mysql://), redis://, or a journal file.

    Raises:
        ValueError: one line, for a malformed URL or a database that cannot be reached.
    """
    try:
        if url.startswith("redis"):
            from optuna.storages.journal import JournalRedisBackend

            return optuna.storages.JournalStorage(JournalRedisBackend(url))
        if not _SCHEME.match(url):
            if not url.endswith(JOURNAL_SUFFIXES) and not os.path.isfile(url):
                raise ValueError(
                    f"--optuna-storage {url!r} is neither a database URL (sqlite:///path.db, "
                    f"postgresql://...) nor a journal file ({', '.join(JOURNAL_SUFFIXES)})"
                )
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(os.path.abspath(url)))
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).parent.is_dir():
            folder = Path(url.removeprefix("sqlite:///")).parent
            raise ValueError(f"--optuna-storage {url}: there is no folder {folder} for the SQLite file")
        # One connection check instead of SQLAlchemy's pool retrying; RDBStorage creates the tables.
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except ValueError:
        raise
    except Exception as error:  # sqlalchemy.exc.ArgumentError / OperationalError, redis, OSError
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot open the Optuna storage {url}: {text}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {}
    return {"connect_args": {"connect_timeout": 10}} if url.startswith(("postgres", "mysql")) else {}


def check_storage(url: str) -> None:
    """Open the storage once, before Ray starts (a typo or a down database is a one-line error)."""
    storage = open_storage(url)
    storage.get_all_studies()


def load_trials(url: str, study_name: str) -> list[optuna.trial.FrozenTrial] | None:
    """The trials of `study_name` at `url`, or None when there is no such study."""
    storage = open_storage(url)
    if study_name not in {s.study_name for s in storage.get_all_studies()}:
        return None
    return optuna.load_study(study_name=study_name, storage=storage).trials


@contextlib.contextmanager
def storage_writes(url: str) -> Iterator[None]:
    """Turn a failed read or write of the Optuna storage at `url` into a `StorageWriteError`."""
    import sqlalchemy.exc

    try:
        yield
    except StorageWriteError:
        raise
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError, OSError) as error:
        raise storage_write_error(url, error) from None


def storage_failure_in(error: BaseException) -> StorageWriteError | None:
    """The `StorageWriteError` behind `error`, if any: Ray's loop re-raises a searcher's error as a `TuneError`
    holding its traceback as text, with the original as its context."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, StorageWriteError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _stored(method):
    """A searcher method whose storage failure ends the study with one line (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: StoredOptunaSearch, *args: Any, **kwargs: Any) -> Any:
        with storage_writes(self._storage_url):
            return method(self, *args, **kwargs)

    return wrapper


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


class StoredOptunaSearch(OptunaSearch):
    """`OptunaSearch` on a stored study that records pruned trials, Ray folders and test metrics, and resumes
    from the database (see the module docstring)."""

    def __init__(self, *, storage_url: str, study_name: str, experiment_path: str, **kwargs: Any) -> None:
        self._storage_url = storage_url
        self._experiment_path = experiment_path.rstrip("/")
        self._orphans: list[int] = []
        if storage_url.startswith("sqlite:///"):
            Path(storage_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(storage=open_storage(storage_url), study_name=study_name, **kwargs)
        self._ot_study.set_user_attr("ray_experiment", self._experiment_path)
        self._ot_study.set_user_attr("metric", self.metric)

    # --- pickling: Ray saves the searcher at every experiment snapshot and in tuner.pkl -------------------

    def _state(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_ot_study", None)
        state.pop("_storage", None)
        state["_ot_trials"] = {ray_id: trial._trial_id for ray_id, trial in self._ot_trials.items()}
        return state

    def __getstate__(self) -> dict[str, Any]:
        return self._state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        ids = state.pop("_ot_trials")
        self.__dict__.update(state)
        self._reopen(ids)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self._state(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__setstate__(pickle.load(file))

    def _reopen(self, ids: dict[str, int]) -> None:
        """Reconnect to the study and rebuild the Ray -> Optuna map from the database."""
        self._storage = open_storage(self._storage_url)
        self._ot_study = optuna.load_study(
            study_name=self._study_name,
            storage=self._storage,
            sampler=self._sampler,
            pruner=optuna.pruners.NopPruner(),
        )
        known = set(ids.values())
        self._ot_trials = {ray_id: optuna.Trial(self._ot_study, tid) for ray_id, tid in ids.items()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self._orphans = [t._trial_id for t in running if t._trial_id not in known]

    # --- the search --------------------------------------------------------------------------------------

    def _stored_state(self, trial_id: str) -> TrialState:
        return self._storage.get_trial(self._ot_trials[trial_id]._trial_id).state

    @_stored
    def suggest(self, trial_id: str) -> dict | None:
        """The trial's flat config, as the search space returned it: Ray's `OptunaSearch.suggest` nests it
        on "/" (`unflatten_dict`), and the trainable and the results take the flat dict, so it is undone here.
        """
        if trial_id not in self._ot_trials and self._orphans:
            # Asked for after the snapshot the driver was restored from: that Optuna trial is this one.
            orphan = self._orphans.pop(0)
            self._remove_folder_of(orphan)
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, orphan)
        config = super().suggest(trial_id)
        trial = self._ot_trials[trial_id]
        trial.set_user_attr("ray_trial_id", trial_id)
        trial.set_user_attr("ray_trial_dir", f"{self._experiment_path}/trial_{trial_id}")
        return None if config is None else flat_trial(config)

    def _remove_folder_of(self, orphan: int) -> None:
        """Remove the folder of the Ray trial an orphan Optuna trial ran as before the driver was killed: Ray's
        restored state never knew it, so its checkpoint would never be resumed, and the report would read
        it as a trial of its own."""
        folder = self._storage.get_trial(orphan).user_attrs.get("ray_trial_dir")
        if (
            not isinstance(folder, str)
            or Path(folder).parent.as_posix() != Path(self._experiment_path).as_posix()
        ):
            return  # not a trial folder of this experiment
        import pyarrow.fs

        fs, inner = (
            pyarrow.fs.FileSystem.from_uri(folder)
            if _SCHEME.match(folder)
            else (pyarrow.fs.LocalFileSystem(), folder)
        )
        if fs.get_file_info(inner).type == pyarrow.fs.FileType.Directory:
            fs.delete_dir(inner)

    def _retry_if_failed(self, trial_id: str) -> None:
        """Ray runs a FAILed trial again on --resume: that run is a new Optuna trial with the same params.
        (A result only comes from a run, so a result for a FAILed trial is a run that Ray retried.)"""
        if trial_id not in self._ot_trials or self._stored_state(trial_id) != TrialState.FAIL:
            return
        failed = self._storage.get_trial(self._ot_trials[trial_id]._trial_id)
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs={**failed.user_attrs, "retry_of": failed.number},
        )
        # Not enqueue_trial + ask: ask would first take any coverage point still waiting in the queue.
        new_id = self._storage.create_new_trial(self._ot_study._study_id, template_trial=template)
        self._ot_trials[trial_id] = optuna.Trial(self._ot_study, new_id)
        self._completed_trials.discard(trial_id)

    @_stored
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._retry_if_failed(trial_id)
        if trial_id in self._completed_trials or self._stored_state(trial_id).is_finished():
            return  # a trial Ray re-runs after a restore, which the database already holds finished
        value, step = _number(result.get(self.metric)), result.get("training_iteration")
        if value is None or step is None:
            return  # a diverged trial's NaN is not a point of a learning curve
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns when a resumed trial reports a step again
            self._ot_trials[trial_id].report(value, int(step))

    @_stored
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not error and result:
            self._retry_if_failed(trial_id)  # a retried trial whose one result is its last
        if trial_id not in self._ot_trials or trial_id in self._completed_trials:
            return
        if self._stored_state(trial_id).is_finished():
            self._completed_trials.add(trial_id)
            return
        trial = self._ot_trials[trial_id]
        result = result or {}
        for key, value in result.items():
            if key.startswith("test/") and (_number(value) is not None or isinstance(value, str)):
                trial.set_user_attr(key, value)
        if COMPLETION_KEY in result:
            trial.set_user_attr(
                "generations_test", f"{self._experiment_path}/trial_{trial_id}/generations_test.jsonl"
            )
        value = _number(result.get(self.metric))
        if value is not None and "training_iteration" in result and not error:
            # Ray hands a trial's last result (the one that stops it) to on_trial_complete only.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # already reported (a result Ray sent both ways)
                trial.report(value, int(result["training_iteration"]))
        if error or (value is None and not result):
            state, value = TrialState.FAIL, None
        elif COMPLETION_KEY in result:
            state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        else:
            # No test metrics in the last report: ASHA stopped it. PRUNED, at the value it stopped at.
            state, value = TrialState.PRUNED, None
        self._ot_study.tell(trial, value, state=state)
        self._completed_trials.add(trial_id)


def settle(url: str, study_name: str, results: Iterable[Any], *, metric: str) -> int:
    """After `Tuner.fit`: end every Optuna trial still RUNNING whose Ray trial ended, as it ended.

    Ray does not always tell the searcher: a trial that fails while its reused worker is reset
    ("Trainable runner reuse requires reset_config()...") ends in ERROR without `on_trial_complete`.

    Args:
        results: Ray's `ResultGrid` (each result's `path` ends in `trial_<id>`).

    Returns:
        How many trials were settled.
    """
    with storage_writes(url):
        return _settle(optuna.load_study(study_name=study_name, storage=open_storage(url)), results, metric)


def _settle(study: optuna.Study, results: Iterable[Any], metric: str) -> int:
    running = {
        t.user_attrs.get("ray_trial_id"): t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    }
    settled = 0
    for result in results:
        trial = running.get(Path(result.path).name.removeprefix("trial_"))
        metrics = result.metrics or {}
        if trial is None or (result.error is None and not metrics.get("done")):
            continue  # not in the database as RUNNING, or not ended (an interrupted study)
        value = _number(metrics.get(metric))
        if result.error is not None or value is None:
            study.tell(trial.number, state=TrialState.FAIL)
        elif COMPLETION_KEY in metrics:
            study.tell(trial.number, value)
        else:
            study.tell(trial.number, state=TrialState.PRUNED)
        settled += 1
    return settled
