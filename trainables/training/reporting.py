"""Where a trial's metrics and checkpoints go: Ray Tune inside a study, a folder for `study.train`.

The loop only sees the `Reporter` protocol, so one training code path serves both.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

SaveCheckpoint = Callable[[Path], None]


class Reporter(Protocol):
    """What the loop needs from its surroundings."""

    def report(self, metrics: dict, *, save: SaveCheckpoint | None = None) -> None:
        """Record one evaluation's metrics; `save(directory)` writes the matching checkpoint."""

    def restore(self) -> Path | None:
        """The folder of the checkpoint to resume from, or None for a fresh start."""

    def trial_dir(self) -> Path:
        """The folder where the trial's artifacts (generations) go."""

    def staging_dir(self) -> Path:
        """Where a file is written whole before it is renamed into `trial_dir`: on its filesystem, outside
        what is uploaded (Ray's upload fails on a file listed and then renamed away)."""


class RayReporter:
    """Reports through `ray.tune.report`; checkpoints go through Ray Tune's checkpoint API."""

    def report(self, metrics: dict, *, save: SaveCheckpoint | None = None) -> None:
        from ray import tune

        if save is None:
            tune.report(dict(metrics))
            return
        with tempfile.TemporaryDirectory(prefix="slm-ckpt-") as directory:
            save(Path(directory))
            # Ray copies the folder to the trial's storage before report returns.
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(directory))

    def restore(self) -> Path | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        return Path(checkpoint.to_directory())

    def trial_dir(self) -> Path:
        return ray_trial_dir()

    def staging_dir(self) -> Path:
        return ray_trial_dir().parent  # Ray's own folder of trial working directories, never uploaded


def ray_trial_dir() -> Path:
    """Where a Ray Tune trial writes its files: its working directory, which the worker itself uploads to the
    study's storage (`SyncConfig(sync_artifacts=True)`: at every reported checkpoint and when the trial
    ends), from whichever node runs it.

    Not `tune.get_context().get_trial_dir()`: in a worker's first trial that names the driver's staging
    folder, which only the driver's node uploads, so on any other node the files would never reach storage.
    """
    from ray.train.context import TrainContext

    directory = Path(TrainContext().get_storage().trial_working_directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class LocalReporter:
    """Keeps reports in memory, prints them as JSON lines, and the latest checkpoint in `out_dir/checkpoint`."""

    def __init__(
        self, out_dir: Path, *, resume: bool = False, echo: Callable[[str], None] | None = print
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self.echo = echo
        self.history: list[dict] = []

    def report(self, metrics: dict, *, save: SaveCheckpoint | None = None) -> None:
        self.history.append(dict(metrics))
        with (self.out_dir / "progress.jsonl").open("a") as file:
            file.write(json.dumps(_json_safe(metrics)) + "\n")
        if self.echo is not None:
            self.echo(json.dumps(_json_safe(metrics)))
        if save is not None:
            self._replace_checkpoint(save)

    def _replace_checkpoint(self, save: SaveCheckpoint) -> None:
        """Write the new checkpoint beside the old one, then swap: a crash at any step leaves a whole one.

        The old folder is renamed aside before the new one is renamed in (a directory cannot be renamed
        over another) and deleted only after; `restore` falls back to the aside copy, which exists alone
        only after a crash between the two renames.
        """
        checkpoint, previous = self.out_dir / "checkpoint", self.out_dir / "checkpoint.previous"
        staging = self.out_dir / "checkpoint.tmp"
        shutil.rmtree(staging, ignore_errors=True)  # a crash mid-save left it: never a whole checkpoint
        staging.mkdir()
        save(staging)
        if checkpoint.is_dir():
            shutil.rmtree(previous, ignore_errors=True)  # older than `checkpoint`, which is whole
            checkpoint.rename(previous)
        staging.rename(checkpoint)
        shutil.rmtree(previous, ignore_errors=True)

    def restore(self) -> Path | None:
        if not self.resume:
            return None
        for name in ("checkpoint", "checkpoint.previous"):  # the newest whole checkpoint
            if (self.out_dir / name).is_dir():
                return self.out_dir / name
        return None

    def trial_dir(self) -> Path:
        return self.out_dir

    def staging_dir(self) -> Path:
        return self.out_dir  # nothing uploads it


def _json_safe(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
