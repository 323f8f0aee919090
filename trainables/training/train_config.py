"""`TrainConfig`: the shared loop's settings (the `train/...` keys of a trial's config).

The settings live apart from the loop, which imports torch, so that the command lines check a trial's
settings without importing the training stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainables.data.prompts import PROMPT_STYLES
from trainables.scoring.eval_settings import EvalSettings


@dataclass
class TrainConfig:
    """Settings of the shared loop (the `train/...` keys of a trial's config)."""

    lr: float = 3e-4
    """Peak learning rate of AdamW."""
    epochs: int = 3
    """Passes over the training split."""
    batch_size: int = 16
    """Examples per optimiser step (before gradient accumulation)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    max_micro_batch: int | None = None
    """The most examples per forward / backward pass: a larger micro-batch is halved and its accumulation
    doubled until it fits, the same effective batch (the study's memory check sets it where the largest
    batch would not fit a trial's memory share). None: no cap."""
    warmup_ratio: float = 0.06
    """Fraction of optimiser steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    max_input_tokens: int = 256
    """Inputs are truncated to this many tokens."""
    max_target_tokens: int = 256
    """Targets are truncated to this many tokens."""
    prompt_style: str = "breakdown"
    """How a record becomes (input, target): answer_only, breakdown, no_breakdown or code."""
    group_by_length: bool = False
    """Batch examples of similar length together (`batch_order`): less padding, so faster steps, at the cost
    of batches that are less random."""
    evals_per_epoch: int = 1
    """Dev evaluations (and reports, checkpoints) per epoch, each at the end of an optimiser step (so at most
    one per step)."""
    seed: int = 0
    """Seeds Python, NumPy and torch; the same seed and config give the same metrics on CPU."""
    eval: EvalSettings | None = None
    """Generation and metric settings; defaults when None."""

    def __post_init__(self) -> None:
        if isinstance(self.eval, dict):
            self.eval = EvalSettings(**self.eval)
        self.eval = self.eval or EvalSettings()
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")
        for name in (
            "epochs",
            "batch_size",
            "grad_accum",
            "max_input_tokens",
            "max_target_tokens",
            "evals_per_epoch",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_micro_batch is not None and self.max_micro_batch < 1:
            raise ValueError(f"max_micro_batch must be >= 1, got {self.max_micro_batch}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"unknown prompt_style {self.prompt_style!r}; choose from {', '.join(PROMPT_STYLES)}"
            )
