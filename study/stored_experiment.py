"""Ray's stored record of an experiment, read before `--resume` hands it to Ray.

Ray resumes an experiment from the newest `experiment_state-*.json` in its folder (its trials and their
states) and its newest pickled snapshots (the search algorithm, the callbacks), but when one cannot be read
it logs the error and starts the experiment over (`TuneController.__init__` swallows restore errors): new
trials run beside the finished ones and the study reports itself interrupted, on every `--resume`, or it
hangs with no trial. So `study.run` and `study.confirm` read them first, as Ray would, and stop with one
line naming the damaged or missing one.
"""

from __future__ import annotations

import fnmatch
import json
import pickletools

from study.results import file_names, read_bytes

EXPERIMENT_STATE = "experiment_state-*.json"
"""Ray's snapshot of an experiment's trials (`TuneController.CKPT_FILE_TMPL`)."""
TUNER_STATE = "tuner.pkl"
"""The Tuner's settings, pickled when it is made (`Tuner.restore` loads it first, `Tuner.can_restore` looks
for it)."""
PICKLED_STATES = {
    "searcher-state-*.pkl": "searcher state",  # the searcher (`Searcher.CKPT_FILE_TMPL`)
    "search_gen_state-*.json": "search algorithm state",  # its wrappers (`SearchGenerator.CKPT_FILE_TMPL`)
    "basic-variant-state-*.json": "grid state",  # a grid search (`BasicVariantGenerator.CKPT_FILE_TMPL`)
    "callback-states-*.pkl": "callback state",  # `Callback.CKPT_FILE_TMPL`; only with callbacks (MLflow)
}
"""Ray's other snapshots, each a pickled dict that a restore loads whole."""
SEARCHED = ("searcher-state-*.pkl", "search_gen_state-*.json")
"""Written with every experiment state of a search (`study.run`): without them Ray resumes a searcher that
knows no trial."""
GRID = ("basic-variant-state-*.json",)
"""Written with every experiment state of a grid (`study.confirm`): without it Ray runs the grid again."""


def newest(path: str, pattern: str) -> str | None:
    """The newest file in the folder `path` (local or a URI) whose name matches `pattern`, or None.

    Ray's snapshot names end in a sortable timestamp, and Ray resumes from the greatest.
    """
    matching = fnmatch.filter(file_names(path), pattern)
    return f"{path.rstrip('/')}/{max(matching)}" if matching else None


def has_saved_state(path: str) -> bool:
    """Whether Ray snapshotted the experiment at `path` (a driver killed before that leaves none)."""
    return newest(path, EXPERIMENT_STATE) is not None


def check_saved_state(path: str, *, saved_with_state: tuple[str, ...] = SEARCHED) -> None:
    """Read the experiment's newest snapshots as Ray's restore will.

    Args:
        path: the experiment's folder (local or a URI).
        saved_with_state: the snapshots Ray writes with every experiment state for this kind of experiment
            (`SEARCHED` or `GRID`).

    Raises:
        ValueError: one line naming the snapshot file that Ray could not restore from.
    """
    state = newest(path, EXPERIMENT_STATE)
    if state is None:
        companion = next((p for p in saved_with_state if newest(path, p)), None)
        if companion is not None:  # snapshotted, then the experiment state was lost
            raise ValueError(
                f"cannot resume: Ray's experiment state ({EXPERIMENT_STATE}) is missing from {path}, "
                f"beside its {PICKLED_STATES[companion]}"
            )
        return  # nothing snapshotted: the experiment starts over (see study.tracking.prepare_studies)
    try:
        saved = json.loads(read_bytes(state) or b"")
        if not isinstance(saved, dict) or not {"trial_data", "runner_data"} <= saved.keys():
            raise ValueError("it holds no trials")
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"cannot resume: Ray's experiment state {state} is damaged ({_reason(error)})"
        ) from None
    _check_tuner_state(path)
    import ray.cloudpickle

    for pattern, what in PICKLED_STATES.items():
        pickled = newest(path, pattern)
        if pickled is None and pattern in saved_with_state:
            raise ValueError(f"cannot resume: Ray's {what} ({pattern}) is missing from {path}")
        if pickled is None:
            continue
        try:
            if not isinstance(ray.cloudpickle.loads(read_bytes(pickled) or b""), dict):
                raise ValueError("not a saved state")
        except Exception as error:  # noqa: BLE001 - garbage unpickles into any error at all
            raise ValueError(f"cannot resume: Ray's {what} {pickled} is damaged ({_reason(error)})") from None


def _check_tuner_state(path: str) -> None:
    """`tuner.pkl` is there and whole. Its opcodes are walked, not run: unpickling it would rebuild the
    searcher, which opens the Optuna database (creating an empty one where it was deleted)."""
    tuner = f"{path.rstrip('/')}/{TUNER_STATE}"
    data = read_bytes(tuner)
    if data is None:
        raise ValueError(f"cannot resume: Ray's tuner state ({TUNER_STATE}) is missing from {path}")
    try:
        for _ in pickletools.genops(data):
            pass
    except Exception as error:  # noqa: BLE001 - a cut or garbled pickle fails in many ways
        raise ValueError(f"cannot resume: Ray's tuner state {tuner} is damaged ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text[:200] or type(error).__name__
