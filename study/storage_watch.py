"""A Ray Tune callback that stops the study with one line once its local results storage refuses writes.

Ray logs a failed upload (a trial's checkpoint, the experiment state) and goes on, every few seconds, until
the experiment ends; `StorageWatch` tries a write (`study.results_storage.check_writable`) when a trial fails
or is retried and every `PROBE_EVERY_S` seconds, and raises its `StorageWriteError` out of `Tuner.fit`.
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune

from study.results_storage import check_writable

PROBE_EVERY_S = 5.0
"""How often the driver's loop tries a write while nothing fails."""


class StorageWatch(tune.Callback):
    """Stops the experiment with a `StorageWriteError` once its local storage folder refuses a write: when a
    trial fails or is retried (a checkpoint upload may be why), and every `PROBE_EVERY_S` seconds."""

    def __init__(self, folder: str) -> None:
        self.folder = folder.removeprefix("file://")
        self._last = time.monotonic()

    def _check(self) -> None:
        self._last = time.monotonic()
        check_writable(self.folder)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._last >= PROBE_EVERY_S:
            self._check()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._check()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._check()
