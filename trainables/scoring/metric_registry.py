"""A metric is one record: its name, how it is computed from a split's generations, which way is better, and
whether it is cheap enough for the dev split at every evaluation.

Everything that scores or shows a metric reads these records: evaluation of a split in a trial
(`trainables.scoring.evaluation`), `study.evaluate` (the same `score` on a predictions or generations file,
against the same references), the study's `--metric` and its direction, and the report's tables and their
columns. A metric is added with one `register_metric(...)` call, as lm-evaluation-harness registers one.

The records load without torch; a metric's `compute` imports what it needs when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from trainables.data.arithmetic import parse_number
from trainables.scoring.metrics import DEFAULT_SIMILARITY_MODEL, answers_match, rouge1, semantic_similarity

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
LOWER_IS_BETTER_KEYS = ("train/loss",)
"""Reported numbers that are not metrics of a split but that a study may optimise: lower is better."""


@dataclass(frozen=True)
class SplitGenerations:
    """What a split's evaluation produced: the input of every metric that is computed from generations."""

    predictions: Sequence[str]
    """The generated texts."""
    targets: Sequence[str]
    """What the prompt style trains the model to write for each example (ROUGE-1 and similarity compare
    with these, in a trial and in `study.evaluate` alike)."""
    extracted: Sequence[Fraction | None]
    """The answer found in each prediction (or printed by its program), None where there is none."""
    answers: Sequence[str]
    """The reference final answers."""
    similarity_model: str = DEFAULT_SIMILARITY_MODEL
    """sentence-transformers model for the similarity metric."""

    @property
    def correct(self) -> list[bool]:
        """Whether each extracted answer equals its reference."""
        return [answers_match(x, a) for x, a in zip(self.extracted, self.answers, strict=True)]

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping], *, similarity_model: str = DEFAULT_SIMILARITY_MODEL):
        """From the rows of a trial's `generations_test.jsonl` (`prediction`, `target`, `extracted`,
        `reference`).

        Raises:
            ValueError: naming the first row that lacks a field or holds a value of the wrong kind.
        """
        predictions, targets, extracted, answers = [], [], [], []
        for number, row in enumerate(rows, start=1):
            for key in ("prediction", "target", "reference"):
                if not isinstance(row.get(key), str):
                    raise ValueError(f"row {number}: {key!r} must be a string")
            value = row.get("extracted")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"row {number}: 'extracted' must be a string or null")
            try:
                extracted.append(None if value is None else parse_number(value))
            except ValueError:
                raise ValueError(f"row {number}: 'extracted' is not a number: {value[:40]!r}") from None
            predictions.append(row["prediction"])
            targets.append(row["target"])
            answers.append(row["reference"])
        if not rows:
            raise ValueError("no generations to score")
        return cls(predictions, targets, extracted, answers, similarity_model)


@dataclass(frozen=True)
class Metric:
    """One metric of a split: the record evaluation, `study.evaluate`, `--metric` and the report read."""

    name: str
    """Its key: `dev/<name>` and `test/<name>` in results, a name in `--metrics` and `eval/metrics`."""
    higher_is_better: bool
    """Which way is better (the study's search direction when it is `--metric`)."""
    cheap: bool
    """Cheap enough for the dev split at every evaluation (`study.evaluate` computes these by default)."""
    column: str
    """The report's table column, with its unit: "ROUGE-1", "Similarity %"."""
    compute: Callable[[SplitGenerations], float] | None = None
    """The number of a split from its generations; None for a metric that needs the model itself
    (perplexity: evaluation computes it from the model's likelihood of the targets)."""
    percent: bool = False
    """The report shows 100 x the value."""
    description: str = ""
    """One line: what it measures."""
    format: str = field(default="{:.4f}")
    """How the report prints it."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"metric name must be lower_snake_case, got {self.name!r}")


METRICS: dict[str, Metric] = {}
"""Metric name -> record, in registration order (the order of table columns: Table 1's ROUGE-1, perplexity,
similarity)."""


def register_metric(**kwargs) -> Metric:
    """Add a metric (one call per metric).

    Raises:
        ValueError: for a name registered twice or a record field that is not valid.
    """
    metric = Metric(**kwargs)
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    METRICS[metric.name] = metric
    return metric


def metric_names(*, from_generations: bool = False, cheap: bool | None = None) -> tuple[str, ...]:
    """Registered metric names (those computable from generations only, or only the cheap / costly ones)."""
    return tuple(
        m.name
        for m in METRICS.values()
        if (not from_generations or m.compute is not None) and (cheap is None or m.cheap == cheap)
    )


def check_names(
    names: Sequence[str], *, what: str = "metric", from_generations: bool = False
) -> tuple[str, ...]:
    """`names` as a tuple, each a registered metric (computable from generations where asked).

    Raises:
        ValueError: `unknown metric 'bleu'; choose from accuracy, rouge1, similarity`.
    """
    known = metric_names(from_generations=from_generations)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(known)}")
    return tuple(names)


def mode_of(key: str) -> str:
    """`max` or `min`: the better direction of a reported key (`dev/perplexity` -> min, `train/loss` -> min);
    a key that names no metric is taken as higher-is-better."""
    if key in LOWER_IS_BETTER_KEYS:
        return "min"
    metric = METRICS.get(key.rsplit("/", 1)[-1])
    return "max" if metric is None or metric.higher_is_better else "min"


def compute_metrics(split: SplitGenerations, names: Sequence[str]) -> dict[str, float]:
    """The named metrics of a split that are computed from generations (others are skipped), by their
    records: the one scoring code of a trial and of `study.evaluate`."""
    return {name: float(METRICS[name].compute(split)) for name in names if METRICS[name].compute is not None}


register_metric(
    name="accuracy",
    higher_is_better=True,
    cheap=True,
    column="Accuracy %",
    compute=lambda split: sum(split.correct) / len(split.correct),
    percent=True,
    description="share of examples whose final answer equals the reference (exact fractions)",
)
register_metric(
    name="rouge1",
    higher_is_better=True,
    cheap=True,
    column="ROUGE-1",
    compute=lambda split: rouge1(split.predictions, split.targets),
    description="mean ROUGE-1 F-measure of each generation against its target",
)
register_metric(
    name="perplexity",
    higher_is_better=False,
    cheap=True,
    column="Perplexity",
    description="exp of the mean negative log-likelihood per target token (needs the model)",
)
register_metric(
    name="similarity",
    higher_is_better=True,
    cheap=False,
    column="Similarity %",
    compute=lambda split: semantic_similarity(
        split.predictions, split.targets, model_name=split.similarity_model
    ),
    percent=True,
    format="{:.2f}",
    description="average cosine of sentence embeddings of each generation and its target (MiniLM)",
)
