"""`<storage>/<name>/study.json`: the settings a study was started with, as one flat record.

`study.run` writes it; `--resume` compares it with the settings given again, `study.confirm` rebuilds the
study's config from it, and `analysis` reads the data source and the Optuna storage from it. Its names are
the ones studies were recorded with before the config became a tree (`trials`, `data_dir`,
`optuna_storage`), so that those studies still resume, confirm and report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from study.config import StudyConfig, study_fields

RECORD_NAMES = {
    "model/name": "model",
    "data/dir": "data_dir",
    "data/source": "data_source",
    "scheduler/name": "scheduler",
    "storage/root": "storage",
    "storage/optuna": "optuna_storage",
}
"""`study.json`'s name of a key whose last part is not its name there: the record stays flat, as studies
written before the tree have it, so that they still resume, confirm and report (every other key's name there
is its last part)."""


def record_name(key: str) -> str:
    """The name of a study key in `study.json` (`search/trials` -> `trials`, `data/dir` -> `data_dir`)."""
    return RECORD_NAMES.get(key, key.rsplit("/", 1)[-1])


def study_record(config: StudyConfig) -> dict[str, Any]:
    """`study.json`: every study key's value under its record name, the trial settings as text, the
    plugins, each value's origin, and the data the numbers ran on (embedded, local or hub: what the report
    names; `data_source` is where the data was to come from, resolved)."""
    record = {record_name(key): _copy(leaf.get(config)) for key, leaf in study_fields().items()}
    record["overrides"] = [o.describe() for o in config.overrides]
    record["preset_overrides"] = [o.describe() for o in config.preset_overrides]
    record["plugins"] = list(config.plugins)
    record["origins"] = dict(config.origins)
    source = config.data.data_config().get("source", "auto")
    record["data_source"] = "hub" if source == "auto" else source
    return record


def record_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """Key -> value of the study keys a `study.json` record holds (lists read back as tuples)."""
    names = {record_name(key): key for key in study_fields()}
    return {names[k]: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in names}


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
