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

import contextlib
import json
import sys
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from trainables.comparison import chance_of as trial_chance
from trainables.comparison import groups_of
from trainables.scoring.baselines import LAST_NUMBER, MAJORITY
from trainables.training.setting_types import is_number
from trainables.trial_config import flat_trial

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
    """The best trial's group in each family its method's record declares (`trainables.comparison`)."""


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


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
            "config": flat_trial(best.config),  # a trial restored from an older study holds it nested
            "metrics": {k: v for k, v in metrics.items() if _number(v) is not None or isinstance(v, str)},
            "path": best.path,
            "checkpoint": best.checkpoint.path if best.checkpoint else None,
        }
        summary.best |= chance_of(summary.best)
        groups = groups_of(method, summary.best["config"])
        summary.groups = {family: group for family, group in groups.items() if family != "method"}
    return summary


def format_table(summaries: list[ExperimentSummary], *, metric: str) -> str:
    """The end-of-study table: one row per experiment, its best finished trial, then the chance baselines of
    the best trials' test examples (one pair of rows per distinct test set)."""
    header = (
        "method",
        "config",
        "finished",
        "stopped",
        "failed",
        metric,
        "test/accuracy [95% CI]",
        "test answers",
        "best trial",
    )
    rows = [header]
    for s in summaries:
        if s.best is None:
            rows.append(
                (
                    s.method,
                    s.data_config,
                    str(s.finished),
                    str(s.stopped),
                    str(s.failed),
                    "-",
                    "-",
                    "-",
                    "none",
                )
            )
            continue
        m = s.best["metrics"]
        test = _interval(m.get("test/accuracy"), m.get("test/accuracy_low"), m.get("test/accuracy_high"))
        groups = " ".join(f"{k}={v}" for k, v in s.groups.items())
        label = f"{s.best['trial_id']} {groups}".strip()
        counts = (str(s.finished), str(s.stopped), str(s.failed))
        rows.append(
            (s.method, s.data_config, *counts, f"{s.best['value']:.4g}", test, _answers(s.best), label)
        )
    rows += _chance_rows(summaries)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# --- signal or chance: the best trials' collapse and the chance baselines of their test examples ----------


def _interval(value: Any, low: Any, high: Any) -> str:
    """`0.312 [0.220, 0.410]`, with `-` for a missing number."""

    def text(x: Any) -> str:
        return "-" if _number(x) is None else f"{x:.3f}"

    return f"{text(value)} [{text(low)}, {text(high)}]"


def chance_of(best: dict[str, Any]) -> dict[str, Any]:
    """`baselines` (each chance baseline on the best trial's test examples, from its generations file) and
    `collapsed` / `collapse` (from its reported answer spread, else counted from the same file); empty values
    where neither is there. Never raises: the study's results are in by now."""
    chance = trial_chance(_generations(best.get("path")), best.get("metrics", {}))
    baselines = {name: asdict(b) for name, b in chance.baselines.items()} if chance.baselines else None
    return {"baselines": baselines, "collapsed": chance.collapsed, "collapse": chance.collapse}


def _generations(path: Any) -> list[dict] | None:
    text = read_text(f"{path}/generations_test.jsonl") if isinstance(path, str) else None
    if text is None:
        return None
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return None


def _answers(best: dict[str, Any]) -> str:
    if best.get("collapse") is None:
        return "-"
    return ("COLLAPSED: " if best.get("collapsed") else "") + best["collapse"]


def _label(name: str, baseline: dict[str, Any]) -> str:
    """`always 5, the majority answer` or `last number in the question`."""
    return f"always {baseline['answer']}, the {name}" if name == MAJORITY else name


def _chance_rows(summaries: list[ExperimentSummary]) -> list[tuple[str, ...]]:
    """Two rows per distinct set of test examples among the best trials (experiments tested alike share)."""
    sets: dict[tuple, list[str]] = {}
    for s in summaries:
        baselines = (s.best or {}).get("baselines")
        if baselines:
            key = tuple(sorted((name, tuple(sorted(b.items()))) for name, b in baselines.items()))
            sets.setdefault(key, []).append(s.data_config)
    rows = []
    for key, configs in sets.items():
        baselines = {name: dict(items) for name, items in key}
        for name in (MAJORITY, LAST_NUMBER):
            b = baselines[name]
            label = f"chance: {_label(name, b)}"
            config = ",".join(dict.fromkeys(configs))
            test = _interval(b["accuracy"], b["low"], b["high"])
            rows.append((label, config, "-", "-", "-", "-", test, "-", f"same {b['n']} test problems"))
    return rows


def warning_lines(summaries: list[ExperimentSummary], *, what: str = "the best trial of") -> list[str]:
    """One line for each best trial that learned nothing: collapsed, or not above the majority answer."""
    lines = []
    for s in summaries:
        best = s.best or {}
        name = f"{s.method}-{s.data_config} ({best.get('trial_id')})"
        majority = ((best.get("baselines") or {}).get(MAJORITY) or {}).get("accuracy")
        low = _number(best.get("metrics", {}).get("test/accuracy_low"))
        if best.get("collapsed"):
            lines.append(
                f"warning: {what} {name} is collapsed ({best['collapse']}): it learned nothing, "
                "and its accuracy is chance, not signal"
            )
        elif majority is not None and low is not None and low <= majority:
            lines.append(
                f"warning: {what} {name} is not above chance: its 95% interval reaches down to "
                f"the majority-answer baseline {majority:.3f} of the same test problems"
            )
    return lines


def trial_chance_lines(
    metrics: dict[str, Any], trial_dir: str, *, method: str, data_config: str
) -> list[str]:
    """What `study.train` says after one trial: the chance baselines of its test problems, then a warning
    if it learned nothing (the same line `study.run` prints for a best trial)."""
    best = {"trial_id": "study.train", "metrics": metrics, "path": trial_dir}
    best |= chance_of(best)
    lines = []
    if best["baselines"]:
        parts = [
            f"{_label(name, b)} {_interval(b['accuracy'], b['low'], b['high'])}"
            for name, b in best["baselines"].items()
        ]
        n = best["baselines"][MAJORITY]["n"]
        lines.append(f"chance on the same {n} test problems: " + "; ".join(parts))
    summary = ExperimentSummary(method=method, data_config=data_config, best=best)
    return lines + warning_lines([summary], what="the trial of")


def print_summary(
    summaries: list[ExperimentSummary], *, metric: str, heading: str, out: TextIO | None = None
) -> None:
    """The end-of-study output: `heading`, the table on stdout, then one warning line per best trial that
    learned nothing on stderr."""
    print(heading, file=out or sys.stdout)
    print(format_table(summaries, metric=metric), file=out or sys.stdout)
    for line in warning_lines(summaries):
        print(line, file=out or sys.stderr)


# --- storage: a local folder or any URI pyarrow knows (Ray Tune stores through pyarrow too) --------------


def _fs(path: str):
    import pyarrow.fs

    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` (local or URI), creating parent folders; whole or not at all (an object store
    writes a whole object, a local file is written beside and renamed into place)."""
    import pyarrow.fs

    fs, inner = _fs(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    staged = f"{inner}.{uuid.uuid4().hex[:8]}.part" if isinstance(fs, pyarrow.fs.LocalFileSystem) else inner
    try:
        with fs.open_output_stream(staged) as stream:
            stream.write(text.encode())
        if staged != inner:
            fs.move(staged, inner)
    except BaseException:
        if staged != inner:
            with contextlib.suppress(OSError):
                fs.delete_file(staged)
        raise


def read_text(path: str) -> str | None:
    """The text at `path`, or None when there is no such file."""
    data = read_bytes(path)
    return None if data is None else data.decode()


def read_bytes(path: str) -> bytes | None:
    """The bytes at `path` (local or URI), or None when there is no such file."""
    import pyarrow.fs

    fs, inner = _fs(path)
    if fs.get_file_info(inner).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(inner) as stream:
        return stream.read()


def file_names(folder: str) -> list[str]:
    """The names of the files directly in `folder` (local or URI); none when there is no such folder."""
    import pyarrow.fs

    fs, inner = _fs(folder)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True))
    return [info.base_name for info in infos if info.type == pyarrow.fs.FileType.File]


def write_json(path: str, data: Any) -> None:
    """`data` as indented JSON at `path`."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
