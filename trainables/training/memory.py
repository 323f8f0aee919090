"""Memory: what a phase of a trial peaks at, giving it back between trials, and surviving running out.

An out-of-memory error in a training step is not the end of a trial: the loop halves the micro-batch and
doubles gradient accumulation (`TrialMemory.halve`), so an optimiser step still sums the same examples
and the learning-rate schedule is unchanged, and redoes the step; only at a micro-batch of 1 does the trial
fail. A worker killed for memory leaves no Python error to catch: `TrialMemory` notices on the retry that
the previous attempt never ended and starts it at half the micro-batch.

`SLM_TESTING_OOM_ABOVE_TOKENS=N` makes every training micro-batch of more than N tokens (input plus target,
padded) raise the out-of-memory error, so CPU tests and CI exercise the path. It is the one environment
variable a trainable reads, and it is read here only.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

OOM_HOOK_ENV = "SLM_TESTING_OOM_ABOVE_TOKENS"
_OOM_PHRASES = ("out of memory", "can't allocate memory", "cannot allocate memory")


class ForcedOutOfMemory(torch.OutOfMemoryError):
    """Raised by the testing hook; an out-of-memory error in every respect the loop looks at."""


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's `torch.OutOfMemoryError`, a CPU allocation failure (`MemoryError`, or the RuntimeError of
    torch's CPU allocator), or the testing hook's error."""
    if isinstance(error, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(p in str(error).lower() for p in _OOM_PHRASES)


def oom_hook_limit() -> int | None:
    """The testing hook's token limit, or None when `SLM_TESTING_OOM_ABOVE_TOKENS` is unset.

    Raises:
        ValueError: when it is set to anything but a whole number >= 1.
    """
    raw = os.environ.get(OOM_HOOK_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{OOM_HOOK_ENV} must be a whole number of tokens >= 1, got {raw!r}")
    return int(raw)


def check_oom_hook(batch: dict[str, torch.Tensor], limit: int | None) -> None:
    """Raise `ForcedOutOfMemory` when a padded (input + target) batch holds more than `limit` tokens."""
    if limit is None:
        return
    tokens = batch["input_ids"].numel() + batch["labels"].numel()
    if tokens > limit:
        raise ForcedOutOfMemory(f"{OOM_HOOK_ENV}={limit}: a micro-batch of {tokens} tokens")


@dataclass
class MicroBatching:
    """How an optimiser step's examples are split: micro-batches of `size`, `accum` of them summed."""

    size: int
    """Examples per forward / backward pass."""
    accum: int
    """Micro-batches whose gradients one optimiser step sums."""

    def halved(self) -> MicroBatching:
        """Half the micro-batch (rounded up), twice the accumulation: the same examples per optimiser step."""
        return MicroBatching((self.size + 1) // 2, self.accum * 2)

    def split(self, batch: list[int]) -> list[list[int]]:
        """A micro-batch of the trial's configured size, cut into micro-batches of the current size."""
        return [batch[i : i + self.size] for i in range(0, len(batch), self.size)]


class TrialMemory:
    """A trial's answer to running out of memory: how often its micro-batches have been halved, kept in
    `memory.json` in the trial's folder with whether an attempt is running.

    An attempt that finds the record still marked running follows one whose worker died (killed for memory,
    or SIGKILLed) without a word: it starts at half the micro-batch of that one. Without a folder (a first
    stage, a preflight) the record lives in memory only.
    """

    def __init__(self, trial_dir: Path | None = None, *, staging_dir: Path | None = None, log=print) -> None:
        self.path = None if trial_dir is None else Path(trial_dir) / "memory.json"
        self.staging_dir = staging_dir
        """Where the record is written before it is renamed in (`Reporter.staging_dir`); None: its folder."""
        self.log = log
        self.halvings = 0
        """Halvings of the training micro-batch in force."""
        self.eval_halvings = 0
        """Halvings of the evaluation batch in force."""
        self.oom_retries = 0
        """Out-of-memory errors recovered from (training, evaluation, a dead worker's retry)."""
        self.start_mb: float | None = None
        """The worker's resident memory when the trial began: in a reused worker, what the trials before it
        left behind."""

    def begin(self) -> None:
        """Take the halvings of earlier attempts, one more when the last one died, and mark this one running."""
        self.start_mb = resident_mb()
        previous = self._read()
        self.halvings = previous.get("halvings", 0)
        self.eval_halvings = previous.get("eval_halvings", 0)
        self.oom_retries = previous.get("oom_retries", 0)
        if previous.get("running"):
            self.halvings, self.eval_halvings = self.halvings + 1, self.eval_halvings + 1
            self.oom_retries += 1
            self.log("the previous attempt's worker died (killed for memory?): micro-batches halved")
        self._save(running=True)

    def end(self) -> None:
        """The attempt ended in Python (finished, stopped or raised): its retry is no dead worker's."""
        self._save(running=False)

    def batching(self, size: int, accum: int) -> MicroBatching:
        """The configured micro-batching with the halvings in force."""
        batching = MicroBatching(size, accum)
        for _ in range(self.halvings):
            batching = batching.halved() if batching.size > 1 else batching
        return batching

    def halve(self, batching: MicroBatching, what: str) -> MicroBatching:
        """After an out-of-memory error in `what`: the halved micro-batching, recorded and logged.

        Raises:
            torch.OutOfMemoryError: at a micro-batch of 1, with one line saying so.
        """
        if batching.size <= 1:
            raise torch.OutOfMemoryError(
                f"out of memory in {what} at a micro-batch of 1: the model does not fit this device's share"
            )
        halved = batching.halved()
        self.halvings, self.oom_retries = self.halvings + 1, self.oom_retries + 1
        self._save(running=True)
        self.log(
            f"out of memory in {what}: micro-batch halved to {halved.size}, gradient accumulation {halved.accum}"
        )
        return halved

    def halve_eval(self, batch_size: int, what: str) -> None:
        """After an out-of-memory error in evaluation: its batch (and token budget) halves, recorded and logged.

        Raises:
            torch.OutOfMemoryError: when the evaluation batch was already 1.
        """
        if batch_size <= 1:
            raise torch.OutOfMemoryError(f"out of memory in {what} at an evaluation batch of 1")
        self.eval_halvings, self.oom_retries = self.eval_halvings + 1, self.oom_retries + 1
        self._save(running=True)
        self.log(f"out of memory in {what}: evaluation batch halved to {(batch_size + 1) // 2}")

    def metrics(self, batching: MicroBatching) -> dict[str, float]:
        """What a report records of it."""
        metrics = {
            "train/micro_batch_size": batching.size,
            "train/grad_accum": batching.accum,
            "oom_retries": self.oom_retries,
        }
        if self.start_mb is not None:
            metrics["memory/worker_start_mb"] = self.start_mb
        return metrics

    def _save(self, *, running: bool) -> None:
        if self.path is None:
            return
        record = {
            "halvings": self.halvings,
            "eval_halvings": self.eval_halvings,
            "oom_retries": self.oom_retries,
            "running": running,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = (self.staging_dir or self.path.parent) / f".{self.path.parent.name}-{self.path.name}.tmp"
        staging.write_text(json.dumps(record))
        staging.replace(self.path)

    def _read(self) -> dict:
        if self.path is None or not self.path.is_file():
            return {}
        return json.loads(self.path.read_text())


def free_memory(device: torch.device | None = None) -> None:
    """Give what the last phase held back: Python garbage, the CUDA cache, and glibc's free heap to the OS
    (without `malloc_trim` a worker that ran one large trial stays that large for every trial after it)."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def resident_mb() -> float:
    """The process's resident memory now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


class PeakMemory:
    """The peak memory of a block: CUDA's allocator peak on a GPU, resident memory sampled every few
    milliseconds on a CPU (the process's lifetime peak, `ru_maxrss`, cannot be reset).

        with PeakMemory(device) as peak:
            ...
        peak.mb
    """

    def __init__(self, device: torch.device, *, interval_s: float = 0.005) -> None:
        self.device, self.interval_s, self.mb = device, interval_s, 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.mb = resident_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.mb = max(self.mb, resident_mb())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_reserved(self.device) / 2**20
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.mb = max(self.mb, resident_mb())
