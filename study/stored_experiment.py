"""Ray's stored record of an experiment, read before `--resume` hands it to Ray.

Ray resumes an experiment from the newest `experiment_state-*.json` in its folder (its trials and their
states) and its newest pickled snapshots (the search algorithm, the callbacks), but when one cannot be read
it logs the error and starts the experiment over (`TuneController.__init__` swallows restore errors): new
trials run beside the finished ones and the study reports itself interrupted, on every `--resume`, or it
hangs with no trial. So the study reads them first, as Ray would, and stops with one line naming the
damaged or missing one.
"""

from __future__ import annotations

import fnmatch
import json

from study.results import file_names, read_bytes

EXPERIMENT_STATE = "experiment_state-*.json"
"""Ray's snapshot of an experiment's trials (`TuneController.CKPT_FILE_TMPL`)."""
PICKLED_STATES = {
    "searcher-state-*.pkl": "searcher state",  # the searcher (`Searcher.CKPT_FILE_TMPL`)
    "search_gen_state-*.json": "search algorithm state",  # its wrappers (`SearchGenerator.CKPT_FILE_TMPL`)
    "callback-states-*.pkl": "callback state",  # `Callback.CKPT_FILE_TMPL`; only with callbacks (MLflow)
}
"""Ray's other snapshots, each a pickled dict that a restore loads whole."""
SAVED_WITH_STATE = ("searcher-state-*.pkl", "search_gen_state-*.json")
"""Written with every experiment state: without them Ray resumes a searcher that knows no trial."""


def newest(path: str, pattern: str) -> str | None:
    """The newest file in the folder `path` (local or a URI) whose name matches `pattern`, or None.

    Ray's snapshot names end in a sortable timestamp, and Ray resumes from the greatest.
    """
    matching = fnmatch.filter(file_names(path), pattern)
    return f"{path.rstrip('/')}/{max(matching)}" if matching else None


def has_saved_state(path: str) -> bool:
    """Whether Ray snapshotted the experiment at `path` (a driver killed before that leaves none)."""
    return newest(path, EXPERIMENT_STATE) is not None


def check_saved_state(path: str) -> None:
    """Read the experiment's newest snapshots as Ray's restore will.

    Raises:
        ValueError: one line naming the snapshot file that Ray could not restore from.
    """
    state = newest(path, EXPERIMENT_STATE)
    if state is None:
        return  # nothing snapshotted: the experiment starts over (see study.tracking.prepare_studies)
    try:
        saved = json.loads(read_bytes(state) or b"")
        if not isinstance(saved, dict) or not {"trial_data", "runner_data"} <= saved.keys():
            raise ValueError("it holds no trials")
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"cannot resume: Ray's experiment state {state} is damaged ({_reason(error)})"
        ) from None
    import ray.cloudpickle

    for pattern, what in PICKLED_STATES.items():
        pickled = newest(path, pattern)
        if pickled is None and pattern in SAVED_WITH_STATE:
            raise ValueError(f"cannot resume: Ray's {what} ({pattern}) is missing from {path}")
        if pickled is None:
            continue
        try:
            if not isinstance(ray.cloudpickle.loads(read_bytes(pickled) or b""), dict):
                raise ValueError("not a saved state")
        except Exception as error:  # noqa: BLE001 - garbage unpickles into any error at all
            raise ValueError(f"cannot resume: Ray's {what} {pickled} is damaged ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text[:200] or type(error).__name__
