"""What a study will cost and whether its trials fit: measured seconds and peaks -> hours, shares, advice.

Pure arithmetic (no torch, no Ray), shared by `python -m study.preflight` and `bench/gpu_check.py`'s
projection, so the two can never disagree on what a trial costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

GPU_SHARES = (0.125, 0.25, 0.5, 1.0)
"""Fractions of a GPU a trial can be given (`--gpus-per-trial`), smallest first."""
HEADROOM = 0.9
"""A trial fits a share when its peak is at most this fraction of it: allocator fragmentation, the CUDA
context (about 0.5 GB, not in torch's counters) and the worker's other objects need the rest."""


@dataclass(frozen=True)
class TrialCost:
    """The seconds of one trial's parts, measured or extrapolated."""

    train_s_per_epoch: float
    """One pass over the training split."""
    epochs: int
    """Passes (the most the search can sample)."""
    eval_s_dev: float
    """One evaluation of the dev split."""
    evals: int
    """Dev evaluations of a trial (epochs x evaluations per epoch)."""
    eval_s_test: float
    """The test split's evaluation, once at the end (twice with the calculator)."""

    @property
    def trial_s(self) -> float:
        """Seconds of a whole trial, not stopped early."""
        return self.epochs * self.train_s_per_epoch + self.evals * self.eval_s_dev + self.eval_s_test


def study_hours(
    costs: dict[str, TrialCost], *, experiments: Sequence[tuple[str, int]], concurrency: dict[str, int]
) -> float:
    """Hours of every experiment in turn, each a (method, trials) pair run `concurrency[method]` at once, no
    early stopping counted (ASHA makes a search cheaper)."""
    seconds = sum(
        math.ceil(trials / max(1, concurrency[method])) * costs[method].trial_s
        for method, trials in experiments
    )
    return seconds / 3600


@dataclass(frozen=True)
class Share:
    """The memory one trial may use: a GPU share, or on a CPU the machine's RAM over the concurrent trials."""

    mb: float
    """MiB the trial may use."""
    describe: str
    """How it was reckoned, for the table."""
    gpu_mb: float | None = None
    """The whole GPU's memory (None on a CPU)."""
    concurrent: int = 1
    """Trials at once sharing the device (or the machine)."""

    def fits(self, peak_mb: float) -> bool:
        return peak_mb <= HEADROOM * self.mb


def gpu_share(*, gpu_mb: float, fraction: float) -> Share:
    """A trial's part of one GPU (`--gpus-per-trial fraction`; from 1 up, whole GPUs, each its own)."""
    concurrent = max(1, math.floor(1 / fraction + 1e-9)) if fraction < 1 else 1
    return Share(
        gpu_mb * min(fraction, 1.0), f"{fraction:g} of a {gpu_mb / 1024:.0f} GiB GPU", gpu_mb, concurrent
    )


def cpu_share(*, ram_mb: float, concurrent: int) -> Share:
    """A trial's part of the machine's RAM when `concurrent` trials run at once."""
    return Share(ram_mb / concurrent, f"{ram_mb / 1024:.0f} GiB RAM / {concurrent} trials", None, concurrent)


def recommend(peak_mb: float, share: Share, *, cpu_slots: int) -> str:
    """The share (GPU) or concurrency (CPU) at which a trial peaking at `peak_mb` fits, as flags to pass."""
    if share.gpu_mb is not None:
        for fraction in GPU_SHARES:
            if peak_mb <= HEADROOM * fraction * share.gpu_mb:
                return f"--gpus-per-trial {fraction:g} ({int(1 / fraction)} per GPU)"
        return "more than one GPU's memory: a smaller batch (--space train/batch_size=[8]) or a larger GPU"
    ram = share.mb * share.concurrent
    fit = math.floor(HEADROOM * ram / peak_mb) if peak_mb > 0 else cpu_slots
    if fit < 1:
        return f"more than this machine's {ram / 1024:.0f} GiB RAM: a smaller batch or a larger machine"
    return f"--max-concurrent {min(fit, cpu_slots)}"


def micro_batch_that_fits(*, peak_mb: float, base_mb: float, batch: int, share: Share) -> int | None:
    """The largest of batch, batch/2, ... 1 whose peak fits `share`, reckoning the memory above `base_mb`
    (the model's) to grow with the micro-batch as it does, linearly; None when even 1 would not fit."""
    micro = batch
    while micro >= 1:
        if share.fits(base_mb + (peak_mb - base_mb) * micro / batch):
            return micro
        if micro == 1:
            return None
        micro = (micro + 1) // 2
    return None
