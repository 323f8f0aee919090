"""Ray Tune experiment folders -> two pandas DataFrames: one row per trial, one row per report.

A trial is any folder holding Ray's `params.json`; its `result.json` has one JSON object per report (the
last one carries the dev and the test metrics), `error.txt` / `error.pkl` mark a crash, and
`generations_test.jsonl` holds the test generations. Folders are found by walking, so the loader does not
depend on how the study names its experiments; method and GSM8K config come from `params.json`. Local
folders and storage URIs (`s3://`, `gs://`, `file://`) are read through pyarrow's filesystems, as Ray does.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import posixpath
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.provenance import add_provenance
from trainables.training.setting_types import is_number
from trainables.trial_config import flat_trial

UNREADABLE = "unreadable"
STATUSES = ("finished", "early_stopped", "error", "incomplete", UNREADABLE)
"""finished: has test metrics; early_stopped: stopped by the scheduler before its last evaluation;
error: crashed (error file) without test metrics; incomplete: not (yet) run to an end (interrupted study);
unreadable: its files are not what Ray and the study write (the reason is in `error`), so none of its
numbers is used."""
GENERATIONS = "generations_test.jsonl"
CONFIRM_MANIFEST = "confirm.json"
"""Marks `<study>/confirm/` (`study.confirm`): its re-runs are not trials of the search, so a study's root
leaves them out; `analysis.confirm` reads them from that folder itself."""
GENERATIONS_CALCULATOR = "generations_test_calculator.jsonl"
# The defaults of `trainables.training.train_config.TrainConfig` for a trial whose config leaves them out
# (kept equal by a test).
DEFAULT_PROMPT_STYLE = "breakdown"
DEFAULT_EPOCHS = 3
DEFAULT_EVALS_PER_EPOCH = 1
RAY_KEYS = ("training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "trial_id", "done")
_NUMERIC_KEYS = ("training_iteration", "time_total_s", "time_this_iter_s", "timestamp")
"""Ray's report keys the loader reads as numbers (every `group/name` metric is one too)."""
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
_UNFINISHED = {"RUNNING", "PENDING", "PAUSED"}


@dataclass
class Results:
    """Every trial found under some result folders."""

    trials: pd.DataFrame
    """One row per trial: identity, method, config, prompt style, `config/...` hyperparameters, the last
    report's metrics, wall time, trainable parameters, peak memory, status and file locations."""
    history: pd.DataFrame
    """One row per report of each trial (`trial`, `training_iteration`, `epoch`, every reported metric)."""
    roots: tuple[str, ...]
    """The folders or URIs that were read."""


class _Store:
    """One result root on a local disk or behind a storage URI."""

    def __init__(self, location: str) -> None:
        import pyarrow.fs

        self.is_uri = bool(_URI.match(location)) and not location.startswith("file://")
        local = location[len("file://") :] if location.startswith("file://") else location
        self.location = location if self.is_uri else str(Path(local).expanduser().resolve())
        self.fs, self.base = pyarrow.fs.FileSystem.from_uri(self.location)
        info = self.fs.get_file_info(self.base)
        if info.type == pyarrow.fs.FileType.NotFound:
            raise FileNotFoundError(f"results folder not found: {location}")
        if info.type != pyarrow.fs.FileType.Directory:
            raise NotADirectoryError(f"results path is not a folder: {location}")
        self.scheme = self.location.split("://", 1)[0] if self.is_uri else ""

    def files_by_folder(self) -> dict[str, set[str]]:
        """Folder -> names of the files in it, for every folder under the root (one listing).

        On a local disk, only regular files reached without a symbolic link: a link planted in a results
        folder must not make the report read (and publish) a file from outside it, nor walk a loop.
        """
        import pyarrow.fs

        if not self.is_uri:
            folders: dict[str, set[str]] = {}
            for folder, _, names in os.walk(self.base, followlinks=False):
                regular = {n for n in names if stat.S_ISREG(os.lstat(os.path.join(folder, n)).st_mode)}
                if regular:
                    folders[folder] = regular
            return folders
        listing = self.fs.get_file_info(pyarrow.fs.FileSelector(self.base, recursive=True))
        folders = {}
        for info in listing:
            if info.type == pyarrow.fs.FileType.File:
                folder, name = posixpath.split(info.path)
                folders.setdefault(folder, set()).add(name)
        return folders

    def read_text(self, path: str) -> str:
        return read_text(self.address(path), self.fs)

    def address(self, path: str) -> str:
        """What a user opens: a local path, or the URI of a remote file."""
        return f"{self.scheme}://{path}" if self.is_uri else path

    def relative(self, path: str) -> str:
        """`path` relative to the root; the root's own name when the root is itself a trial folder."""
        return posixpath.relpath(path, self.base) if path != self.base else posixpath.basename(self.base)


def load_results(locations: Sequence[str | Path]) -> Results:
    """Load every trial under `locations` (folders or storage URIs of a study or of single experiments).

    Raises:
        FileNotFoundError: for a location that does not exist.
        ValueError: when no trial is found at all, or a `params.json` / `result.json` cannot be parsed.
    """
    if not locations:
        raise ValueError("no results folder given")
    stores = [_Store(str(location)) for location in locations]
    rows: list[dict] = []
    history: list[dict] = []
    for store in stores:
        prefix = posixpath.basename(store.base.rstrip("/")) if len(stores) > 1 else ""
        folders = _without_confirmation_runs(store, store.files_by_folder())
        states = _trial_states(store, folders)
        for folder, names in sorted(folders.items()):
            if "params.json" not in names:
                continue
            label = posixpath.join(prefix, store.relative(folder)) if prefix else store.relative(folder)
            row, reports = _load_trial_or_reason(store, folder, names, label=label, state=states.get(folder))
            rows.append(row)
            history.extend(
                {"trial": label, "method": row["method"], "config": row["config"], **r} for r in reports
            )
    if not rows:
        raise ValueError(
            f"no Ray Tune trials (folders with params.json) under {', '.join(map(str, locations))}"
        )
    trials = pd.DataFrame(rows)
    duplicated = trials.loc[trials["trial_dir"].duplicated(), "trial_dir"].tolist()
    if duplicated:
        raise ValueError(f"the same trial was found twice (overlapping results folders?): {duplicated[0]}")
    if trials["trial"].duplicated().any():
        raise ValueError(
            f"two results folders share a name; trial {trials['trial'][trials['trial'].duplicated()].iloc[0]}"
        )
    roots = tuple(s.location for s in stores)
    trials = add_provenance(trials, roots)  # on what data and base model each trial ran
    return Results(trials=trials, history=pd.DataFrame(history), roots=roots)


def _without_confirmation_runs(store: _Store, folders: dict[str, set[str]]) -> dict[str, set[str]]:
    """The folders outside any confirmation folder below the root (the root itself may be one)."""
    roots = [f for f, names in folders.items() if CONFIRM_MANIFEST in names and f != store.base]
    return {f: n for f, n in folders.items() if not any(f == r or f.startswith(r + "/") for r in roots)}


class UnreadableTrial(ValueError):
    """A trial folder whose files are not what Ray and the study write; the message says what is wrong."""


def _load_trial_or_reason(
    store: _Store, folder: str, names: set[str], *, label: str, state: tuple[str, int] | None
) -> tuple[dict, list[dict]]:
    """`_load_trial`, or for a folder it cannot read a row with status `unreadable` and the reason."""
    try:
        return _load_trial(store, folder, names, label=label, state=state)
    except (ValueError, TypeError, KeyError, AttributeError, OSError, RecursionError) as error:
        # UnreadableTrial names what is wrong; anything else is a shape the checks below did not foresee
        reason = str(error) if isinstance(error, UnreadableTrial) else f"{type(error).__name__}: {error}"
        row = dict.fromkeys(("method", "config", "prompt_style", "device"))
        row |= dict.fromkeys(("time_total_s", "hours", "started", "search_order", "peak_memory_mb"), math.nan)
        row |= {
            "trial": label,
            "trial_id": posixpath.basename(folder),
            "experiment": posixpath.dirname(label) or ".",
            "trial_dir": store.address(folder),
            "iterations": 0,
            "max_iterations": 0,
            "status": UNREADABLE,
            "error": " ".join(reason.split())[:300],
            "generations": None,
            "generations_calculator": None,
        }
        return row, []


def _load_trial(
    store: _Store, folder: str, names: set[str], *, label: str, state: tuple[str, int] | None
) -> tuple[dict, list[dict]]:
    params = _read_json(store, posixpath.join(folder, "params.json"))
    if not isinstance(params, Mapping):
        raise UnreadableTrial(f"params.json is {_kind(params)}, not a JSON object")
    reports = _read_reports(store, posixpath.join(folder, "result.json")) if "result.json" in names else []
    last = reports[-1] if reports else {}
    for group in ("train", "strategy"):
        _mapping(params, group)  # a group of an old nested config is an object (a flat one has none)
    settings = flat_trial(params)
    row: dict[str, Any] = {
        "trial": label,
        "trial_id": _text(last, "trial_id", "result.json: ") or posixpath.basename(folder),
        "experiment": posixpath.dirname(label) or ".",
        "trial_dir": store.address(folder),
        "method": _text(params, "method", "params.json: "),
        "config": _text(params, "data_config", "params.json: ") or "main",
        "prompt_style": _text(settings, "train/prompt_style", "params.json: ") or DEFAULT_PROMPT_STYLE,
    }
    # every setting as a `config/...` column: what groups a trial (`analysis.groups`) and what a search varied
    row.update({f"config/{key}": _cell(value) for key, value in settings.items()})
    row.update({key: value for key, value in last.items() if key not in row and key != "config"})
    epochs = _whole(settings, "train/epochs", DEFAULT_EPOCHS)
    row["iterations"] = int(last.get("training_iteration", 0))
    row["max_iterations"] = epochs * _whole(settings, "train/evals_per_epoch", DEFAULT_EVALS_PER_EPOCH)
    total = last.get("time_total_s")
    row["time_total_s"] = math.nan if total is None else float(total)
    row["hours"] = row["time_total_s"] / 3600
    first = reports[0] if reports else {}
    started = first.get("timestamp")
    row["started"] = (
        math.nan if started is None else float(started) - float(first.get("time_this_iter_s") or 0.0)
    )
    row["search_order"] = state[1] if state else math.nan
    memory = [r["memory/peak_mb"] for r in reports if is_number(r.get("memory/peak_mb"))]
    row["peak_memory_mb"] = max(memory) if memory else math.nan
    has_error = bool(names & {"error.txt", "error.pkl"})
    row["status"] = _status(last, has_error=has_error, state=state[0] if state else None, row=row)
    row["error"] = _error_line(store, folder, names) if row["status"] == "error" else None
    row["device"] = _device(store, folder, names)
    for key, name in (("generations", GENERATIONS), ("generations_calculator", GENERATIONS_CALCULATOR)):
        if name in names:
            path = posixpath.join(folder, name)
            if row["status"] == "finished":
                _check_generations(store.fs, store.address(path))
            row[key] = store.address(path)
        else:
            row[key] = None
    return row, [{key: value for key, value in r.items() if key != "config"} for r in reports]


def _kind(value: Any) -> str:
    """What a JSON value is, for a reason: `a list`, `a string`, `null`."""
    if value is None:
        return "null"
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "a number")


def _mapping(params: Mapping, key: str) -> Mapping:
    """`params[key]` when it is a JSON object (an empty one when absent)."""
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UnreadableTrial(f"params.json: {key} is {_kind(value)}, not a JSON object")
    return value


def _text(values: Mapping, key: str, where: str) -> str | None:
    """`values[key]` when it is a string (None when absent or null)."""
    value = values.get(key)
    if value is not None and not isinstance(value, str):
        raise UnreadableTrial(f"{where}{key} is {_kind(value)}, not a string")
    return value


def _whole(settings: Mapping, key: str, default: int) -> int:
    """`settings[key]`, a whole number >= 1 (the default when absent)."""
    if key not in settings:
        return default
    value = settings[key]
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UnreadableTrial(f"params.json: {key} is {_shown(value)}, not a whole number >= 1")
    return value


def _cell(value: Any) -> Any:
    """A setting as a table cell: a list (`target_modules`) as comma-joined text, so that it hashes."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _shown(value: Any) -> str:
    """A JSON value as a reason shows it: short."""
    text = "null" if value is None else json.dumps(value) if isinstance(value, (str, bool)) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _status(last: Mapping, *, has_error: bool, state: str | None, row: Mapping) -> str:
    if any(key.startswith("test/") for key in last):
        return "finished"  # a trial retried after a crash keeps its error.txt but did finish
    if has_error:
        return "error"
    if state in _UNFINISHED or not last or row["iterations"] >= row["max_iterations"]:
        return "incomplete"
    return "early_stopped"


def _read_json(store: _Store, path: str) -> Any:
    try:
        return json.loads(store.read_text(path))
    except (ValueError, RecursionError) as error:  # also a number too long to convert, or nesting too deep
        raise UnreadableTrial(f"cannot parse {posixpath.basename(path)}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _read_reports(store: _Store, path: str) -> list[dict]:
    """The reports of a trial in iteration order; a repeated iteration (a retried trial) keeps its latest.

    Raises:
        UnreadableTrial: for a line (but the last) that is not JSON, a line that is not a JSON object, or a
            metric that is not a number.
    """
    lines = [line for line in store.read_text(path).splitlines() if line.strip()]
    by_iteration: dict[int, dict] = {}
    for number, line in enumerate(lines, start=1):
        try:
            report = json.loads(line)
        except (ValueError, RecursionError) as error:
            if number == len(lines):
                break  # the line a killed trial was writing; the ones before it are whole
            raise UnreadableTrial(
                f"cannot parse line {number} of result.json: {_first_line(error)}"
            ) from None
        if not isinstance(report, dict):
            raise UnreadableTrial(f"line {number} of result.json is {_kind(report)}, not a JSON object")
        for key, value in report.items():
            numeric = "/" in key or key in _NUMERIC_KEYS
            if (
                numeric
                and value is not None
                and not (isinstance(value, numbers.Real) and not isinstance(value, bool))
            ):
                raise UnreadableTrial(f"line {number} of result.json: {key} is {_kind(value)}, not a number")
        by_iteration[int(report.get("training_iteration", number))] = report
    return [by_iteration[i] for i in sorted(by_iteration)]


def _error_line(store: _Store, folder: str, names: set[str]) -> str:
    if "error.txt" not in names:
        return "error (see error.pkl)"
    lines = [line.strip() for line in store.read_text(posixpath.join(folder, "error.txt")).splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "error (error.txt is empty)"


def _device(store: _Store, folder: str, names: set[str]) -> str | None:
    """GPU or CPU, from the `placement.json` the study driver writes (None when absent or unreadable)."""
    if "placement.json" not in names:
        return None
    try:
        placement = json.loads(store.read_text(posixpath.join(folder, "placement.json")))
    except (ValueError, RecursionError):
        return None
    return ("GPU" if placement.get("gpu_ids") else "CPU") if isinstance(placement, dict) else None


def _trial_states(store: _Store, folders: Mapping[str, set[str]]) -> dict[str, tuple[str, int]]:
    """Trial folder -> (Ray's status: TERMINATED, RUNNING, ...; the trial's place in the search order), from
    the newest `experiment_state-*.json`, which lists trials in the order the searcher created them.

    Ray's public readers of this file (`tune.ExperimentAnalysis`, `ResultGrid`, `Tuner.restore`) are not
    used: they rebuild each trial with `Trial.from_json_state`, which runs `cloudpickle.loads` on hex
    fields of the JSON (`_nonjson_fields`, `CLOUDPICKLE_FALLBACK` values), so a results folder from a
    shared bucket would run its author's code in the report. Only two plain JSON fields of each entry
    are read here, as data; `tests/test_ray_experiment_state.py` pins the format against Ray 2.60.
    """
    states: dict[str, tuple[str, int]] = {}
    for folder, names in folders.items():
        snapshots = sorted(
            name for name in names if name.startswith("experiment_state-") and name.endswith(".json")
        )
        if not snapshots:
            continue
        try:
            data = json.loads(store.read_text(posixpath.join(folder, snapshots[-1])))
            for order, entry in enumerate(data.get("trial_data", [])):
                trial = json.loads(entry[0])
                status = trial["status"]
                states[posixpath.join(folder, str(trial["relative_logdir"]))] = (
                    status if isinstance(status, str) else None,
                    order,
                )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
            continue  # Ray's private format changed: the status then comes from the trial's files alone
    return states


def read_text(address: str, fs: Any = None) -> str:
    """The text of a file given as a local path or a storage URI (`fs`: its filesystem, when known).

    A local file is read only when no symbolic link leads to it (below a results root, which the loader
    resolves, there is then none) and only when it is a regular file (a FIFO would block the report).

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: for a local path through a symbolic link, or one that is not a regular file.
    """
    if _URI.match(address) and not address.startswith("file://"):
        import pyarrow.fs

        path = address.split("://", 1)[1]
        if fs is None:
            fs, path = pyarrow.fs.FileSystem.from_uri(address)
        if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
            raise FileNotFoundError(f"no such file: {address}")
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8", errors="replace")
    path = os.path.abspath(os.path.expanduser(address.removeprefix("file://")))
    if os.path.realpath(path) != path:
        raise ValueError(
            f"{address} is reached through a symbolic link; results are read only from their folder"
        )
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{address} is not a regular file")
        return file.read().decode("utf-8", errors="replace")


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def read_jsonl(address: str, fs: Any = None) -> list[dict]:
    """The rows of a generations file given as a local path or a storage URI: each line a JSON object of
    plain values (strings, numbers, booleans, null), as the study writes them.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: for a line that is not such an object, or a local file behind a symbolic link.
    """
    name = posixpath.basename(address)
    rows = []
    for number, line in enumerate(read_text(address, fs).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise ValueError(f"cannot parse line {number} of {name}: {_first_line(error)}") from None
        if not isinstance(row, dict):
            raise ValueError(f"line {number} of {name} is {_kind(row)}, not a JSON object")
        odd = next((key for key, value in row.items() if not _plain(value)), None)
        if odd is not None:
            raise ValueError(f"line {number} of {name}: {odd} is {_kind(row[odd])}, not a string or number")
        rows.append(row)
    return rows


def _check_generations(fs: Any, address: str) -> None:
    """Refuse, as an unreadable trial, a generations file the report could not read."""
    try:
        read_jsonl(address, fs)
    except ValueError as error:
        raise UnreadableTrial(str(error)) from None


def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """The `config/...` columns whose values differ between trials (what a search varied)."""
    columns = [c for c in trials.columns if c.startswith("config/")]
    return [c for c in columns if trials[c].astype(str).nunique(dropna=False) > 1]
