"""On what each trial ran: its data (generated GSM8K-style problems or GSM8K main / socratic) and its base model.

The data source comes from the study's `study.json` (`data_source`, written by `study.run`); the base model
from the trial's own config. A study folder without that record (results from before it, or a single
experiment folder) says "data not recorded". Published numbers are comparable with ours only where both
are the published ones: GSM8K and a T5-small / T5-base from the hub (`comparable`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import Any

import pandas as pd

PUBLISHED_BASES = {"t5-small": "T5-small", "t5-base": "T5-base"}
"""Hub names of the published base models (an owner prefix such as `google-t5/` is allowed) -> their names."""
DATA_SOURCES = {
    "embedded": "generated GSM8K-style problems",
    "local": "GSM8K {config} (local files)",
    "hub": "GSM8K {config}",
}
"""`study.json`'s `data_source` -> how the report names the data."""
UNKNOWN_DATA = "data not recorded"
DATA, BASE = "data", "base"
"""The trials columns this module adds."""


def _read_text(location: str) -> str | None:
    from analysis.load import read_text  # the loader's careful reading (no symbolic links, regular files)

    try:
        return read_text(location)
    except (OSError, ValueError):
        return None


def study_record(root: str) -> dict[str, Any]:
    """The `study.json` of a study folder, or of the study an experiment folder belongs to ({} if none)."""
    for folder in (root.rstrip("/"), posixpath.dirname(root.rstrip("/"))):
        text = _read_text(f"{folder}/study.json")
        if text is not None:
            try:
                record = json.loads(text)
            except (ValueError, RecursionError):  # not JSON, or nested beyond what the parser takes
                return {}
            return record if isinstance(record, dict) else {}
    return {}


def data_name(record: dict[str, Any], config: str) -> str:
    """How the report names a trial's data, from its study's record and its GSM8K config."""
    template = DATA_SOURCES.get(str(record.get("data_source")))
    return template.format(config=config) if template else UNKNOWN_DATA


def base_name(model: Any) -> str:
    """How the report names a base model: `T5-small` for the published hub models, a local folder by its name."""
    text = str(model) if isinstance(model, str) and model else "unknown base"
    published = PUBLISHED_BASES.get(text.rsplit("/", 1)[-1]) if text.count("/") <= 1 else None
    if published and not text.startswith(("/", ".", "~")):
        return published
    return posixpath.basename(text.rstrip("/")) + " (local)" if "/" in text else text


def add_provenance(trials: pd.DataFrame, roots: Sequence[str] = ()) -> pd.DataFrame:
    """`trials` with columns `data` and `base` (a copy); a frame that has them is returned as is."""
    if DATA in trials and BASE in trials:
        return trials
    records = {root: study_record(root) for root in roots}
    data = []
    for row in trials.to_dict("records"):
        trial_dir = str(row.get("trial_dir", ""))
        owners = [r for r in records if trial_dir.startswith(r.rstrip("/") + "/") or trial_dir == r]
        record = records[max(owners, key=len)] if owners else {}
        data.append(data_name(record, str(row.get("config"))))
    out = trials.copy()
    out[DATA] = data
    out[BASE] = [base_name(row.get("config/model", row.get("model"))) for row in trials.to_dict("records")]
    return out


def comparable(row: dict[str, Any] | None) -> bool:
    """Whether a trial ran on the published setting: GSM8K data and a published base model."""
    if row is None:
        return False
    return str(row.get(DATA, "")).startswith("GSM8K") and row.get(BASE) in PUBLISHED_BASES.values()


def describe(rows: Sequence[dict[str, Any]]) -> str:
    """`Data: GSM8K main; base: T5-small.`: what a table's or chart's trials ran on (each distinct value once)."""
    data = list(dict.fromkeys(str(r.get(DATA, UNKNOWN_DATA)) for r in rows))
    bases = list(dict.fromkeys(str(r.get(BASE, "unknown base")) for r in rows))
    if not rows:
        return ""
    return f"Data: {', '.join(data)}; base model: {', '.join(bases)}."
