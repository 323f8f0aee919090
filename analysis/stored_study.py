"""The Optuna study an experiment's search stored, read back for the search diagnostics.

A study run by `study.run` keeps one Optuna study per experiment, named after the experiment's folder
(`<method>-<config>`), in `<study>/optuna.db` or in the `optuna_storage` its `study.json` names. Where it is
there, and was searched on the metric the report asks about, the diagnostics take the search history and
the importances from it: the trial numbers are the order Optuna asked for them, and the values the ones
TPE was told (PRUNED trials at the value ASHA stopped them at). Older results without a database, or a
report on another metric, fall back to rebuilding a study from the trial folders.
"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")


def storage_url(study_dir: str) -> str | None:
    """The Optuna storage of a study folder (local or URI), or None when it left none."""
    import pyarrow.fs

    local = study_dir.removeprefix("file://")
    fs, base = pyarrow.fs.FileSystem.from_uri(study_dir if _URI.match(local) else str(Path(local).resolve()))
    record = f"{base}/study.json"
    if fs.get_file_info(record).type == pyarrow.fs.FileType.File:
        with fs.open_input_stream(record) as stream:
            shared = json.loads(stream.read().decode()).get("optuna_storage")
        if shared:
            return shared
    database = f"{base}/optuna.db"
    if fs.get_file_info(database).type != pyarrow.fs.FileType.File:
        return None
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return f"sqlite:///{database}"
    # SQLite needs a local file: copy the uploaded one (an object-store study) to a temporary folder.
    copy = Path(tempfile.mkdtemp(prefix="slm-optuna-")) / "optuna.db"
    with fs.open_input_stream(database) as source, copy.open("wb") as target:
        shutil.copyfileobj(source, target)
    return f"sqlite:///{copy}"


def load_stored_study(group: pd.DataFrame, *, metric: str, mode: str):
    """The stored `optuna.Study` of one experiment's trials, or None (no database, another metric or
    direction, or trials the database does not hold)."""
    import optuna

    experiments = {posixpath.dirname(d.rstrip("/")) for d in group["trial_dir"]}
    if len(experiments) != 1:
        return None
    (experiment,) = experiments
    url = storage_url(posixpath.dirname(experiment))
    if url is None:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=posixpath.basename(experiment), storage=url)
    except (KeyError, ValueError, ImportError):  # no such study; a storage this machine cannot open
        return None
    direction = (
        optuna.study.StudyDirection.MAXIMIZE if mode == "max" else optuna.study.StudyDirection.MINIMIZE
    )
    if study.user_attrs.get("metric") != metric or study.direction != direction:
        return None
    stored = {t.user_attrs.get("ray_trial_id") for t in study.trials}
    return study if set(group["trial_id"].astype(str)) <= stored else None


def stored_history(study, group: pd.DataFrame, *, mode: str) -> pd.DataFrame:
    """The search history in the diagnostics' shape, from the stored study (a trial Ray retried after it
    failed keeps its last Optuna trial)."""
    latest = {t.user_attrs.get("ray_trial_id"): t for t in sorted(study.trials, key=lambda t: t.number)}
    rows = group.set_index(group["trial_id"].astype(str))
    ordered = sorted((t for rid, t in latest.items() if rid in rows.index), key=lambda t: t.number)
    values = pd.Series([t.value if t.value is not None else float("nan") for t in ordered], dtype=float)
    best = values.cummax() if mode == "max" else values.cummin()
    return pd.DataFrame(
        {
            "number": range(len(ordered)),
            "trial": [rows.loc[t.user_attrs["ray_trial_id"], "trial"] for t in ordered],
            "value": values,
            "best_so_far": best,
            "status": [rows.loc[t.user_attrs["ray_trial_id"], "status"] for t in ordered],
            "optuna_number": [t.number for t in ordered],
            "optuna_state": [t.state.name for t in ordered],
        }
    )


def stored_importances(study, *, min_trials: int) -> tuple[dict[str, float], str]:
    """fANOVA importances from a stored Optuna study (its COMPLETE trials), or ({}, why there are none)."""
    import optuna

    values = [t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    metric = study.user_attrs.get("metric", "the metric")
    if len(values) < min_trials:
        return {}, f"not enough trials ({len(values)} complete in Optuna; importance needs {min_trials})"
    if len(set(values)) < 2:
        return {}, f"every trial has the same {metric}"
    return fanova_importances(study)


def fanova_importances(study) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importance of each hyperparameter of `study` (seeded), or ({}, why not)."""
    import optuna

    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        return {}, f"importance not computable: {error}"
    if not importances:
        return {}, "no hyperparameter took two values in every trial"
    return {name: float(value) for name, value in importances.items()}, ""
