"""The confirmation runs of `study.confirm` -> per-group spread over seeds, paired tests, the published claims.

`<study>/confirm/confirm.json` says which group each experiment re-runs and with which seeds; each seed's
trial folder holds its `generations_test.jsonl`. Examples are paired by their question (the input after
`Question: `, so styles with different instructions pair) and reference answer, never by line order; the
seeds of one group must have scored the same examples. Two groups are compared on the examples and seeds
they share (the code style leaves out the problems whose solution has no program).
"""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import significance as sig
from analysis.groups import Group
from analysis.load import CONFIRM_MANIFEST, load_results, read_jsonl, read_text
from analysis.table import Table

CONFIRM_DIR = "confirm"
SECTIONS = (("confirm_groups", None), ("pairwise", "pairwise"), ("claims", None))
"""(table, chart under it) of the report's confirmation part."""
FIGURES = {
    "pairwise": "Accuracy difference A - B of every compared pair (points), with paired bootstrap 95% intervals; "
    "filled: significant after Holm's correction."
}


@dataclass
class Runs:
    """One confirmation experiment: its seeds' per-example correctness, aligned by example."""

    seeds: list[int]
    keys: list[tuple[str, str, int]]
    """(question, reference, occurrence) of each column."""
    correct: np.ndarray
    """(seeds, examples) 0/1."""
    accuracy: dict[int, float]
    """Seed -> the run's reported test accuracy."""


@dataclass
class Confirmation:
    """Everything a confirmation folder holds."""

    root: str
    manifest: dict[str, Any]
    runs: dict[str, Runs]
    """Experiment name -> its finished seeds."""

    def group(self, group_id: str) -> Group:
        g = self.manifest["groups"][group_id]
        return Group(g["family"], g["config"], g["name"], g["label"])


def _read_text(address: str) -> str | None:
    """The text of a local file or a storage URI (never through a symbolic link: `analysis.load.read_text`);
    None when there is no such file."""
    try:
        return read_text(address)
    except FileNotFoundError:
        return None


def find(locations: list[str]) -> str | None:
    """The confirmation folder of the first location that has one (`<study>/confirm/confirm.json`)."""
    for location in locations:
        text = str(location).rstrip("/")
        base = text if "://" in text else str(Path(text).expanduser().resolve())
        if _read_text(f"{base}/{CONFIRM_DIR}/{CONFIRM_MANIFEST}") is not None:
            return f"{base}/{CONFIRM_DIR}"
    return None


def example_keys(rows: list[dict]) -> list[tuple[str, str, int]]:
    """(question, reference, k): the k-th occurrence of a (question, reference) pair in the file."""
    seen: Counter = Counter()
    keys = []
    for row in rows:
        question = str(row["input"]).split("Question: ", 1)[-1].strip()
        pair = (question, str(row["reference"]))
        keys.append((*pair, seen[pair]))
        seen[pair] += 1
    return keys


def load(root: str) -> Confirmation:
    """Read `root` (a `<study>/confirm` folder): the manifest and every finished seed's generations.

    Raises:
        ValueError: when the seeds of one experiment scored different test examples.
    """
    text = _read_text(f"{root}/{CONFIRM_MANIFEST}")
    if text is None:
        raise FileNotFoundError(f"no {CONFIRM_MANIFEST} in {root}")
    manifest = json.loads(text)
    trials = load_results([root]).trials
    finished = trials[(trials["status"] == "finished") & trials["generations"].notna()]
    runs = {}
    for name, rows in finished.groupby("experiment"):
        runs[posixpath.basename(name)] = _runs(rows)
    return Confirmation(root=root, manifest=manifest, runs=runs)


def _runs(trials: pd.DataFrame) -> Runs:
    seeds, matrix, accuracy, keys = [], [], {}, None
    for _, row in trials.sort_values("config/train/seed").iterrows():
        lines = read_jsonl(row["generations"])
        run_keys = example_keys(lines)
        by_key = {k: bool(line["correct"]) for k, line in zip(run_keys, lines, strict=True)}
        if keys is None:
            keys = run_keys
        elif set(run_keys) != set(keys):
            raise ValueError(
                f"{row['trial_dir']} scored other test examples than the other seeds of its group"
            )
        seed = int(row["config/train/seed"])
        seeds.append(seed)
        matrix.append([by_key[k] for k in keys])
        accuracy[seed] = float(row["test/accuracy"])
    return Runs(seeds=seeds, keys=keys or [], correct=np.asarray(matrix, dtype=float), accuracy=accuracy)


def paired(a: Runs, b: Runs) -> tuple[np.ndarray, np.ndarray]:
    """The (seeds, examples) matrices of `a` and `b` on their shared seeds and examples, aligned."""
    seeds = [s for s in a.seeds if s in b.seeds]
    shared = set(b.keys)
    keys = [k for k in a.keys if k in shared]
    ai, bi = {k: i for i, k in enumerate(a.keys)}, {k: i for i, k in enumerate(b.keys)}
    rows_a, rows_b = [a.seeds.index(s) for s in seeds], [b.seeds.index(s) for s in seeds]
    cols_a, cols_b = [ai[k] for k in keys], [bi[k] for k in keys]
    return a.correct[np.ix_(rows_a, cols_a)], b.correct[np.ix_(rows_b, cols_b)]


class _GroupsTable(Table):
    """Only the search's number is the linked trial's own; the others summarise the re-runs."""

    def linked(self, column: str) -> bool:
        return column == "Search's best %"


def groups_table(confirmation: Confirmation, labels: Mapping[str, str] | None = None) -> Table:
    """Per group: mean, standard deviation and t-interval of test accuracy over seeds; the search's number.

    `labels` maps a trial folder (or a trial's label) to its label in the report, so each row links to the
    search trial it re-ran.
    """
    labels = labels or {}
    rows = []
    for group_id, g in confirmation.manifest["groups"].items():
        runs = confirmation.runs.get(g["experiment"])
        values = [100 * v for v in runs.accuracy.values()] if runs else []
        mean, std, low, high = sig.mean_interval(values) if len(values) >= 2 else (math.nan,) * 4
        low, high = max(low, 0.0), min(high, 100.0)  # an accuracy's interval stays within [0, 100]
        search = 100 * g["search"].get("test/accuracy", math.nan)
        rows.append(
            {
                "Group": confirmation.group(group_id).label,
                "Compared as": g["family"],
                "Config": g["config"],
                "Seeds": len(values),
                "Mean accuracy %": mean,
                "Std (points)": std,
                "Mean 95% CI low %": low,
                "Mean 95% CI high %": high,
                "Search's best %": search,
                "Selection gap (points)": search - mean,
                "Search test examples": g["search"].get("test/n", math.nan),
                "Confirm test examples": len(runs.keys) if runs else math.nan,
                "trial": labels.get(g.get("trial_dir", ""), labels.get(g["trial"])),
            }
        )
    note = (
        f"Each group's best search trial re-run with training seeds {confirmation.manifest['seeds']} (the data "
        "split fixed); mean and sample standard deviation of test accuracy over the seeds, the Student-t 95% "
        "interval of the mean, and the test accuracy the search reported for that trial. A positive selection "
        "gap is the optimism of picking the best of many noisy trials."
    )
    table = _GroupsTable(
        key="confirm_groups",
        title="Confirmation runs: accuracy over seeds",
        frame=pd.DataFrame(rows),
        note=note,
    )
    for column in ("Mean accuracy %", "Mean 95% CI low %", "Mean 95% CI high %", "Search's best %"):
        table.formats[column] = "{:.1f}"
    table.formats |= {"Std (points)": "{:.2f}", "Selection gap (points)": "{:+.1f}", "Seeds": "{:.0f}"}
    table.formats |= {"Search test examples": "{:.0f}", "Confirm test examples": "{:.0f}"}
    return table
