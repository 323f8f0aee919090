"""Signal or chance: each trial's answer spread and collapse, its test split's chance baselines, a verdict.

For every finished trial: `test/distinct_answers` and `test/top_answer_share` (its reported metrics, or for
results written before they existed, counted from its `generations_test.jsonl`), `collapsed`
(`trainables.scoring.collapse` defines it), the two chance baselines of its own test examples
(`trainables.scoring.baselines`) and a verdict, the table column `Signal`:

- `collapsed`: its predictions collapsed, whatever its accuracy;
- `chance level`: its accuracy's 95% interval reaches down to the majority-answer baseline of the same
  test examples (not above it);
- `above chance`: its whole interval lies above that baseline;
- `unknown`: it left no generations file with numeric references to compare it with (nor collapsed).

A trial that is collapsed or at chance level "learned nothing"; the report's summary counts them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from analysis.load import read_jsonl
from analysis.table import ACC, HIGH, LOW, Table
from trainables.comparison import Chance, chance_of
from trainables.scoring.baselines import LAST_NUMBER, MAJORITY, question_of
from trainables.scoring.collapse import describe_collapse
from trainables.training.setting_types import is_number

DISTINCT, TOP_SHARE = "test/distinct_answers", "test/top_answer_share"
SIGNAL = "Signal"
"""Table column (and trials column `signal`) holding the verdict."""
COLLAPSED, CHANCE, ABOVE, UNKNOWN = "collapsed", "chance level", "above chance", "unknown"
LEARNED_NOTHING = (COLLAPSED, CHANCE)
BASELINE_KEYS = {MAJORITY: "chance/majority", LAST_NUMBER: "chance/last_number"}
"""Baseline name -> the trials columns of its accuracy (`...`, `..._low`, `..._high`, fractions)."""
CHANCE_COLUMNS = (
    DISTINCT,
    TOP_SHARE,
    "collapsed",
    *(f"{key}{end}" for key in BASELINE_KEYS.values() for end in ("", "_low", "_high")),
    "chance/majority_answer",
    "chance/n",
    "chance/test_set",
    "signal",
    "signal_detail",
)


def _test_set(rows: list[dict]) -> str:
    """A short digest of a test split's (question, reference) pairs: equal for trials tested alike."""
    pairs = [(question_of(str(r.get("input", ""))), str(r.get("reference"))) for r in rows]
    return hashlib.sha1(json.dumps(pairs).encode()).hexdigest()[:12]


def _chance_values(rows: list[dict] | None, chance: Chance) -> dict[str, Any]:
    """The chance columns of one finished trial, from `trainables.comparison.chance_of`."""
    values: dict[str, Any] = {DISTINCT: chance.distinct_answers, TOP_SHARE: chance.top_answer_share}
    values["collapsed"] = chance.collapsed
    if rows:
        values |= {"chance/n": len(rows), "chance/test_set": _test_set(rows)}
    if chance.baselines is None:
        return (
            values  # no numeric references (not a GSM8K-style file): no baselines, the verdict says unknown
        )
    for name, key in BASELINE_KEYS.items():
        b = chance.baselines[name]
        values |= {key: b.accuracy, f"{key}_low": b.low, f"{key}_high": b.high}
    values["chance/majority_answer"] = chance.baselines[MAJORITY].answer
    return values


def _verdict(row: dict[str, Any]) -> tuple[str, str]:
    """(verdict, the verdict with its reason) of one trial row that has its chance columns filled."""
    if row["collapsed"] is True:
        detail = describe_collapse(distinct_answers=row[DISTINCT], top_answer_share=row[TOP_SHARE])
        return COLLAPSED, f"{COLLAPSED}: {detail}"
    majority, low = row.get("chance/majority"), row.get("test/accuracy_low")
    if not (is_number(majority) and is_number(low)):
        return UNKNOWN, f"{UNKNOWN} (no generations file with numeric references to compare with)"
    if low <= majority:
        return CHANCE, f"{CHANCE} (majority answer: {100 * majority:.1f}%)"
    return ABOVE, ABOVE


def add_signal(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with the chance columns added (a copy); a frame that has them already is returned as is.

    A generations file the loader vetted but can no longer read gives no baselines (verdict `unknown`).
    """
    if "signal" in trials:
        return trials
    records = []
    for row in trials.to_dict("records"):
        values: dict[str, Any] = dict.fromkeys(CHANCE_COLUMNS)
        finished = row.get("status") == "finished"
        generations = row.get("generations")
        if finished:  # what the trial reported wins over a recount from its generations
            rows = None
            if isinstance(generations, str):
                try:
                    rows = read_jsonl(generations)
                except (OSError, ValueError):
                    rows = None  # gone or changed since the loader read it: no baselines, the verdict says unknown
            values |= _chance_values(rows, chance_of(rows, row))
            values["signal"], values["signal_detail"] = _verdict({**row, **values})
        records.append(values)
    added = pd.DataFrame(records, index=trials.index, columns=list(CHANCE_COLUMNS))
    return pd.concat([trials.drop(columns=[c for c in CHANCE_COLUMNS if c in trials]), added], axis=1)


def learned_nothing(trials: pd.DataFrame) -> tuple[int, int, int, int]:
    """(finished trials, collapsed, at chance level, unknown) among `trials` (which `add_signal` filled)."""
    signals = add_signal(trials)["signal"]
    finished = int(signals.notna().sum())
    return (
        finished,
        int((signals == COLLAPSED).sum()),
        int((signals == CHANCE).sum()),
        int((signals == UNKNOWN).sum()),
    )


def summary_sentence(trials: pd.DataFrame) -> str:
    """How many finished trials learned nothing, for the report's summary."""
    finished, collapsed, chance, unknown = learned_nothing(trials)
    text = (
        f"{collapsed + chance} of {finished} finished trials learned nothing: {collapsed} collapsed (one answer on "
        f"more than half of the test problems, or too few distinct answers) and {chance} not above the "
        "majority-answer baseline of their test split (95% interval reaching down to it)."
    )
    if unknown:
        text += f" {unknown} could not be compared with a baseline (no generations file with references)."
    return text


def add_history_signal(diagnostics, trials: pd.DataFrame) -> None:
    """Give each search history (`SearchDiagnostics.history`, however it was built) its trials' verdicts, in a
    `signal` column, so the search-history chart can cross out the collapsed ones."""
    verdicts = add_signal(trials).set_index("trial")["signal"]
    for diagnostic in diagnostics:
        diagnostic.history["signal"] = diagnostic.history["trial"].map(verdicts)


def attach_chance(table: Table, trials: pd.DataFrame) -> Table:
    """Mark each row's trial with its verdict (column `Signal`) and, for a table with an accuracy column, put
    the chance baselines of the rows' test examples under them (`Table.baselines`). Returns `table`."""
    if "trial" not in table.frame:
        return table
    details = add_signal(trials).set_index("trial")["signal_detail"].to_dict()
    table.frame[SIGNAL] = [
        details[t] if isinstance(t, str) and isinstance(details.get(t), str) else "-"
        for t in table.frame["trial"]
    ]
    if ACC in table.frame:
        table.baselines = baseline_frame(table, trials)
    return table


def baseline_frame(table: Table, trials: pd.DataFrame) -> pd.DataFrame:
    """Two rows (majority answer, last number) per distinct test set among the rows' trials, with the configs
    of the rows tested on it; the row label goes in the table's first column."""
    chance = add_signal(trials).set_index("trial")
    label_column = table.columns[0]
    groups: dict[str, list[str]] = {}  # test set -> the trials tested on it, in row order
    for trial in table.frame["trial"]:
        # a trial whose references are not numbers has a test set but no baselines (its verdict: unknown)
        if isinstance(trial, str) and is_number(chance.at[trial, "chance/majority"]):
            groups.setdefault(chance.at[trial, "chance/test_set"], []).append(trial)
    rows = []
    for members in groups.values():
        first = chance.loc[members[0]]
        configs = ", ".join(dict.fromkeys(str(chance.at[t, "config"]) for t in members))
        n = int(first["chance/n"])
        for name, key in BASELINE_KEYS.items():
            what = f"always {first['chance/majority_answer']}, the {name}" if name == MAJORITY else name
            rows.append(
                {
                    label_column: f"Chance: {what} ({n} problems)",
                    "Config": configs,
                    ACC: 100 * first[key],
                    LOW: 100 * first[f"{key}_low"],
                    HIGH: 100 * first[f"{key}_high"],
                    "Test examples": n,
                }
            )
    return pd.DataFrame(rows, columns=[label_column, "Config", ACC, LOW, HIGH, "Test examples"])
