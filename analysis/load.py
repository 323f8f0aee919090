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
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.provenance import add_provenance
from trainables.training.setting_types import flatten, is_number

STATUSES = ("finished", "early_stopped", "error", "incomplete")
"""finished: has test metrics; early_stopped: stopped by the scheduler before its last evaluation;
error: crashed (error file) without test metrics; incomplete: not (yet) run to an end (interrupted study)."""
GENERATIONS = "generations_test.jsonl"
CONFIRM_MANIFEST = "confirm.json"
"""Marks `<study>/confirm/` (`study.confirm`): its re-runs are not trials of the search, so a study's root
leaves them out; `analysis.confirm` reads them from that folder itself."""
GENERATIONS_CALCULATOR = "generations_test_calculator.jsonl"
# The defaults of `trainables.training.loop.TrainConfig` for a trial whose config leaves them out (kept equal by a
# test; importing the trainables here would import torch into a report command).
DEFAULT_PROMPT_STYLE = "breakdown"
DEFAULT_EPOCHS = 3
DEFAULT_EVALS_PER_EPOCH = 1
RAY_KEYS = ("training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "trial_id", "done")
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
        """Folder -> names of the files in it, for every folder under the root (one listing)."""
        import pyarrow.fs

        listing = self.fs.get_file_info(pyarrow.fs.FileSelector(self.base, recursive=True))
        folders: dict[str, set[str]] = {}
        for info in listing:
            if info.type == pyarrow.fs.FileType.File:
                folder, name = posixpath.split(info.path)
                folders.setdefault(folder, set()).add(name)
        return folders

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8", errors="replace")

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
            row, reports = _load_trial(store, folder, names, label=label, state=states.get(folder))
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


def _load_trial(
    store: _Store, folder: str, names: set[str], *, label: str, state: tuple[str, int] | None
) -> tuple[dict, list[dict]]:
    params = _read_json(store, posixpath.join(folder, "params.json"))
    if not isinstance(params, Mapping):
        raise ValueError(f"{store.address(folder)}/params.json is not a JSON object")
    reports = _read_reports(store, posixpath.join(folder, "result.json")) if "result.json" in names else []
    last = reports[-1] if reports else {}
    train = params.get("train") or {}
    row: dict[str, Any] = {
        "trial": label,
        "trial_id": last.get("trial_id", posixpath.basename(folder)),
        "experiment": posixpath.dirname(label) or ".",
        "trial_dir": store.address(folder),
        "method": params.get("method"),
        "config": params.get("data_config", "main"),
        "prompt_style": train.get("prompt_style", DEFAULT_PROMPT_STYLE),
    }
    # every setting as a `config/...` column: what groups a trial (`analysis.groups`) and what a search varied
    row.update({f"config/{key}": value for key, value in flatten(params, join_lists=True).items()})
    row.update({key: value for key, value in last.items() if key not in row and key != "config"})
    epochs = int(train.get("epochs", DEFAULT_EPOCHS))
    row["iterations"] = int(last.get("training_iteration", 0))
    row["max_iterations"] = epochs * int(train.get("evals_per_epoch", DEFAULT_EVALS_PER_EPOCH))
    row["time_total_s"] = float(last.get("time_total_s", math.nan))
    row["hours"] = row["time_total_s"] / 3600
    first = reports[0] if reports else {}
    row["started"] = float(first.get("timestamp", math.nan)) - float(first.get("time_this_iter_s", 0.0))
    row["search_order"] = state[1] if state else math.nan
    memory = [r["memory/peak_mb"] for r in reports if is_number(r.get("memory/peak_mb"))]
    row["peak_memory_mb"] = max(memory) if memory else math.nan
    has_error = bool(names & {"error.txt", "error.pkl"})
    row["status"] = _status(last, has_error=has_error, state=state[0] if state else None, row=row)
    row["error"] = _error_line(store, folder, names) if row["status"] == "error" else None
    row["device"] = _device(store, folder, names)
    row["generations"] = store.address(posixpath.join(folder, GENERATIONS)) if GENERATIONS in names else None
    calculator = posixpath.join(folder, GENERATIONS_CALCULATOR)
    row["generations_calculator"] = store.address(calculator) if GENERATIONS_CALCULATOR in names else None
    return row, [{key: value for key, value in r.items() if key != "config"} for r in reports]


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
    except json.JSONDecodeError as error:
        raise ValueError(f"cannot parse {store.address(path)}: {error}") from None


def _read_reports(store: _Store, path: str) -> list[dict]:
    """The reports of a trial in iteration order; a repeated iteration (a retried trial) keeps its latest."""
    lines = [line for line in store.read_text(path).splitlines() if line.strip()]
    by_iteration: dict[int, dict] = {}
    for number, line in enumerate(lines, start=1):
        try:
            report = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break  # the line a killed trial was writing; the ones before it are whole
            raise ValueError(f"cannot parse line {number} of {store.address(path)}: {error}") from None
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
    except json.JSONDecodeError:
        return None
    return "GPU" if placement.get("gpu_ids") else "CPU"


def _trial_states(store: _Store, folders: Mapping[str, set[str]]) -> dict[str, tuple[str, int]]:
    """Trial folder -> (Ray's status: TERMINATED, RUNNING, ...; the trial's place in the search order), from
    the newest `experiment_state-*.json`, which lists trials in the order the searcher created them."""
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
                states[posixpath.join(folder, trial["relative_logdir"])] = (trial["status"], order)
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            continue  # Ray's private format changed: the status then comes from the trial's files alone
    return states


def read_jsonl(address: str) -> list[dict]:
    """The JSON lines of a file given as a local path or a storage URI (a generations file).

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: for a line that is not JSON.
    """
    import pyarrow.fs

    location = address if _URI.match(address) else str(Path(address).expanduser().resolve())
    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"no such file: {address}")
    with fs.open_input_stream(path) as stream:
        text = stream.read().decode("utf-8", errors="replace")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"cannot parse line {number} of {address}: {error}") from None
    return rows


def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """The `config/...` columns whose values differ between trials (what a search varied)."""
    columns = [c for c in trials.columns if c.startswith("config/")]
    return [c for c in columns if trials[c].astype(str).nunique(dropna=False) > 1]
