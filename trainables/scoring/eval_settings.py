"""`EvalSettings`: how a split is evaluated (the `train/eval/...` keys of a trial's config).

The settings live apart from the evaluation code, which imports torch, so that the command lines check a
trial's settings without importing the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.scoring.metric_registry import check_names, metric_names
from trainables.scoring.metrics import DEFAULT_SIMILARITY_MODEL

METRICS = metric_names()
"""Every registered metric (`trainables.scoring.metric_registry`): what a split is scored on by default."""


@dataclass
class EvalSettings:
    """How a split is evaluated (the `train/eval/...` keys of a trial's config)."""

    batch_size: int = 32
    """Most sequences generated (or scored for perplexity) together."""
    batch_tokens: int | None = None
    """Most tokens in one evaluation batch, padded: rows x (input + max_new_tokens) for generation, rows x
    (input + target) for perplexity. None: no bound here; a trial sets its training micro-batch's
    (`trainables.training.loop`), so evaluation never needs more memory than training."""
    max_new_tokens: int = 128
    """Generation stops after this many tokens."""
    num_beams: int = 1
    """1 = greedy decoding."""
    metrics: tuple[str, ...] = METRICS
    """Which metrics to compute on the dev split (accuracy is always computed)."""
    test_metrics: tuple[str, ...] = METRICS
    """Which metrics to compute on the test split, once at the end of a trial (accuracy always). A study
    compares trials on dev accuracy, so the costly ones (the MiniLM similarity, ROUGE) can be left to test."""
    similarity_model: str = DEFAULT_SIMILARITY_MODEL
    """sentence-transformers model for the average semantic similarity."""
    calculator: bool = True
    """on: the breakdown style's test split is scored twice from the same model, without and with the
    calculator filling `<<expr=` (`test/accuracy`, `test/accuracy_calculator`); off: without only."""
    program_timeout_s: float = 2.0
    """Wall-time limit of each generated program (code style)."""
    max_examples: int | None = None
    """Evaluate on at most this many records of the split (None = all)."""

    def __post_init__(self) -> None:
        if isinstance(self.calculator, str) and self.calculator.lower() in ("on", "off"):
            self.calculator = self.calculator.lower() == "on"
        if not isinstance(self.calculator, bool):
            raise ValueError(f"calculator must be on or off, got {self.calculator!r}")
        for name, what in (("metrics", "metric(s)"), ("test_metrics", "test metric(s)")):
            value = getattr(self, name)
            value = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
            setattr(self, name, check_names(value, what=what.replace("(s)", "")))
        for name in ("batch_size", "max_new_tokens", "num_beams"):
            if getattr(self, name) < 1:
                raise ValueError(f"eval {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise ValueError(f"eval batch_tokens must be >= 1, got {self.batch_tokens}")
