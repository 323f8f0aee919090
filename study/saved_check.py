"""The memory check's measurements, kept in the study's folder so that `--resume` need not take them again.

`study.run`'s check measures a step of each method's trial (25 minutes at the paper's shapes on a CPU). What
it measures follows from the trial it builds (`study.preflight.measured_trials`: the model, the largest batch,
the most epochs, the longest prompt style, the token limits, every fixed and sampled setting), the data (its
longest examples, its number of batches), the device and the steps taken. `<study>/memory_check.json` holds a
key of each beside the check's reports; a resumed study reuses the reports' measurements when every key is
unchanged, and measures again, saying what changed, when one is not. The memory share is not keyed: the
study applies its own to the measurements, as the first run did, so the same share gives the same
micro-batch caps. The record is written whole, and only by a check that passed: a refused study leaves no trace.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from study.results import read_text, write_json
from trainables.training.cache import settings_key, texts_digest

RECORD_NAME = "memory_check.json"
FORMAT = 1
"""The record's layout and the measurement's method: a record of another format is measured again."""


def record_path(study_path: str) -> str:
    """Where a study keeps its memory check: beside `study.yaml`."""
    return f"{study_path}/{RECORD_NAME}"


def measured_keys(prepared, trials: Mapping[str, Any], *, device: str, steps: int) -> dict[str, Any]:
    """The keys of what the check measures: `trials` (method -> the `TrialConfig` measured), the prepared
    data and coding tasks, the device (in words) and the training steps per method."""
    records = [r for splits in prepared.splits.values() for r in (*splits.train, *splits.dev, *splits.test)]
    texts = [json.dumps(dataclasses.asdict(r), sort_keys=True) for r in (*records, *prepared.code_records)]
    return {
        "format": FORMAT,
        "device": device,
        "steps": steps,
        "data": texts_digest([*prepared.splits, *texts])[:16],
        "trials": {method: settings_key({"trial": trial}) for method, trial in trials.items()},
    }


def saved_probes(path: str, keys: Mapping[str, Any]) -> tuple[dict[str, list[dict]] | None, str]:
    """Method -> the probes the record at `path` holds, when it was measured under `keys`; else None and why
    not, in words."""
    from trainables.probe import Probe

    text = read_text(path)
    if text is None:
        return None, "the first run left no record of it"
    try:
        record = json.loads(text)
        saved = record["keys"]
        probes = {
            r["method"]: [dataclasses.asdict(Probe(**p)) for p in r["probes"]] for r in record["reports"]
        }
        if not all(probes.values()):
            raise ValueError("a method without measurements")
    except (ValueError, KeyError, TypeError) as error:  # not JSON, or not this layout
        return None, f"the first run's record is unreadable ({type(error).__name__}: {error})"
    changed = _changes(saved, keys) if isinstance(saved, dict) else ["the record's keys"]
    if not changed and set(probes) != set(keys["trials"]):
        changed = ["the methods measured"]
    if changed:
        return None, f"{', '.join(changed)} changed since the first run's"
    return probes, ""


def _changes(saved: Mapping[str, Any], keys: Mapping[str, Any]) -> list[str]:
    if saved.get("format") != keys["format"]:
        return [f"the record's format ({saved.get('format')!r} -> {keys['format']})"]
    changed = []
    if saved.get("device") != keys["device"]:
        changed.append(f"the device ({saved.get('device')} -> {keys['device']})")
    if saved.get("steps") != keys["steps"]:
        changed.append(f"the steps measured ({saved.get('steps')!r} -> {keys['steps']})")
    if saved.get("data") != keys["data"]:
        changed.append("the data")
    before = saved.get("trials") if isinstance(saved.get("trials"), dict) else {}
    if set(before) != set(keys["trials"]):
        changed.append(f"the methods ({', '.join(sorted(before))} -> {', '.join(sorted(keys['trials']))})")
    else:
        changed += [f"{m}'s measured trial" for m, key in keys["trials"].items() if before[m] != key]
    return changed


def save_check(path: str, keys: Mapping[str, Any], reports: Sequence[Any]) -> None:
    """The check's `keys` and reports (`study.preflight.MethodReport`) at `path`, written whole."""
    write_json(path, {"keys": dict(keys), "reports": [dataclasses.asdict(r) for r in reports]})
