"""The study saved as the file that reruns it: `<storage>/<name>/study.yaml`, every key of the resolved
config tree with its value and where the value came from (default, preset <name>, file <path>, flag).

    python -m study.run --study-file results/slm-tiny/study.yaml --name again   # flags still override

The file holds the study's keys, the trials' settings given over the search spaces (the preset's, a
settings file's, the flags'), then every other trial setting of each of its methods as the code gives it
(`from: default`: the search space's range or choices, else the trial dataclasses' value), so the file
alone shows the whole space. Read back, a default entry the code still gives is the code's; one edited
(or one the code no longer gives) is the file's value.

`study.json` is the same settings as one flat record, what `--resume` compares with the settings given
again, `study.confirm` rebuilds the study's config from, and `analysis` reads the data source and the Optuna
storage from. Its names are the ones studies were recorded with before the config became a tree (`trials`,
`data_dir`, `optuna_storage`), so that those studies still resume, confirm and report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from search_spaces.overrides import STUDY_SECTIONS
from study.config import StudyConfig, study_field, study_fields
from study.config_tree import PRETRAIN_KEY

FILE_NAME = "study.yaml"


def _plain(value: Any) -> Any:
    """Tuples as lists: YAML's safe dumper writes no tuples."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def study_tree(config: StudyConfig) -> dict[str, dict[str, Any]]:
    """Key -> `{value, from}` for every study key, every trial setting the study gives, then every other
    trial setting of its methods (`from: default`)."""
    from study.plan import default_overrides, study_overrides

    tree: dict[str, dict[str, Any]] = {}
    if config.plugins:
        tree["plugins"] = {"value": list(config.plugins), "from": "flag"}
    order = {section: i for i, section in enumerate(STUDY_SECTIONS)}
    for key, leaf in sorted(study_fields().items(), key=lambda item: order[item[0].split("/")[0]]):
        if key == PRETRAIN_KEY:
            for name, value in config.model.pretrain.items():
                full = f"{PRETRAIN_KEY}/{name}"
                tree[full] = {"value": _plain(value), "from": config.origins.get(full, "default")}
            continue
        tree[key] = {"value": _plain(leaf.get(config)), "from": config.origins.get(key, "default")}
    for override in (*study_overrides(config), *default_overrides(config)):
        tree[override.name] = {"value": _plain(override.spec()), "from": override.origin}
    return tree


def study_yaml(config: StudyConfig) -> str:
    """The resolved tree as YAML, with a header saying how to rerun it."""
    header = (
        f"# The resolved config tree of study {config.storage.name}: key -> value and where it came from.\n"
        f"# Rerun: python -m study.run --study-file {FILE_NAME} --name NEW (flags still override)\n"
    )
    lines, section = [], None
    for key, entry in study_tree(config).items():
        part = key.split("/")[0] if study_field(key) is not None or key == "plugins" else "trials"
        if part != section and section is not None:
            lines.append("")  # a blank line between sections
        section = part
        text = yaml.safe_dump({key: entry}, default_flow_style=True, sort_keys=False, width=10_000)
        lines.append(text.strip()[1:-1])
    return header + "\n".join(lines) + "\n"


def print_study(config: StudyConfig) -> None:
    """`--print-config`: every trial setting checked (an unknown key or bad value is one line), then the
    resolved tree printed."""
    from study.plan import plan_experiments

    plan_experiments(config)
    print(study_yaml(config), end="")


def write_study_file(config: StudyConfig) -> str:
    """Write `<study>/study.yaml` (whole: `study.results.write_text`); returns its path."""
    from study.results import write_text

    path = f"{config.study_path}/{FILE_NAME}"
    write_text(path, study_yaml(config))
    return path


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
