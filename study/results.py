"""What a finished experiment leaves besides Ray's own files: the best trial, as JSON and as a table row.

Layout under the storage path (local folder or URI), one folder per (method, GSM8K config):

    <storage>/<name>/study.json                        the StudyConfig the study was started with
    <storage>/<name>/best_configs.json                 every experiment's best trial, one list
    <storage>/<name>/<method>-<config>/                Ray Tune's experiment: tuner.pkl, experiment_state
    <storage>/<name>/<method>-<config>/best_config.json
    <storage>/<name>/<method>-<config>/<trial>/        result.json, progress.csv, params.json,
                                                       generations_test.jsonl, placement.json, checkpoint_*/

The best trial is the best by the search metric among trials that finished (their last report carries the
test metrics); trials ASHA stopped early have no test metrics and are counted as stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from trainables.methods.stacked import BASELINES

COMPLETION_KEY = "test/accuracy"
"""The trainable's last report, and only that one, carries the test metrics."""


@dataclass
class ExperimentSummary:
    """The outcome of one (method, config) experiment."""

    method: str
    data_config: str
    finished: int = 0
    """Trials that ran all their epochs."""
    stopped: int = 0
    """Trials ASHA stopped early."""
    failed: int = 0
    """Trials that ended in an error after their retries."""
    best: dict[str, Any] | None = None
    """The best finished trial: trial_id, value, config, metrics, path, and checkpoint (its last one: the
    weights its test metrics come from); None when no trial finished."""
    groups: dict[str, Any] = field(default_factory=dict)
    """The best trial's grouping parameters (prompt style, f, baseline)."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def summarize(
    result_grid: Any, *, method: str, data_config: str, metric: str, mode: str
) -> ExperimentSummary:
    """Count the trials of a Ray `ResultGrid` and pick its best finished trial."""
    summary = ExperimentSummary(method=method, data_config=data_config)
    candidates = []
    for result in result_grid:
        metrics = result.metrics or {}
        if result.error is not None:
            summary.failed += 1
        elif COMPLETION_KEY in metrics:
            summary.finished += 1
            if _number(metrics.get(metric)) is not None:
                candidates.append(result)
        else:
            summary.stopped += 1
    if candidates:
        sign = 1 if mode == "max" else -1
        best = max(candidates, key=lambda r: sign * float(r.metrics[metric]))
        metrics = {
            k: v for k, v in best.metrics.items() if k.startswith(("dev/", "test/", "params/", "train/"))
        }
        summary.best = {
            "method": method,
            "data_config": data_config,
            "trial_id": best.metrics.get("trial_id"),
            "metric": metric,
            "mode": mode,
            "value": float(best.metrics[metric]),
            "config": best.config,
            "metrics": {k: v for k, v in metrics.items() if _number(v) is not None or isinstance(v, str)},
            "path": best.path,
            "checkpoint": best.checkpoint.path if best.checkpoint else None,
        }
        strategy, train = best.config.get("strategy", {}), best.config.get("train", {})
        for key, value in (("prompt_style", train.get("prompt_style")), ("f", strategy.get("f"))):
            if value is not None:
                summary.groups[key] = value
        if strategy.get("baseline") not in (None, BASELINES[0]):  # a stacked baseline, not the method
            summary.groups["baseline"] = strategy["baseline"]
    return summary


def format_table(summaries: list[ExperimentSummary], *, metric: str) -> str:
    """The end-of-study table: one row per experiment, its best finished trial."""
    header = (
        "method",
        "config",
        "finished",
        "stopped",
        "failed",
        metric,
        "test/accuracy [95% CI]",
        "best trial",
    )
    rows = [header]
    for s in summaries:
        if s.best is None:
            rows.append(
                (s.method, s.data_config, str(s.finished), str(s.stopped), str(s.failed), "-", "-", "none")
            )
            continue
        m = s.best["metrics"]
        test = f"{m.get('test/accuracy', float('nan')):.3f} [{m.get('test/accuracy_low', float('nan')):.3f}, "
        test += f"{m.get('test/accuracy_high', float('nan')):.3f}]"
        groups = " ".join(f"{k}={v}" for k, v in s.groups.items())
        label = f"{s.best['trial_id']} {groups}".strip()
        counts = (str(s.finished), str(s.stopped), str(s.failed))
        rows.append((s.method, s.data_config, *counts, f"{s.best['value']:.4g}", test, label))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# --- storage: a local folder or any URI pyarrow knows (Ray Tune stores through pyarrow too) --------------


def _fs(path: str):
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` (local or URI), creating parent folders."""
    fs, inner = _fs(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(text.encode())


def read_text(path: str) -> str | None:
    """The text at `path`, or None when there is no such file."""
    import pyarrow.fs

    fs, inner = _fs(path)
    if fs.get_file_info(inner).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(inner) as stream:
        return stream.read().decode()


def write_json(path: str, data: Any) -> None:
    """`data` as indented JSON at `path`."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
