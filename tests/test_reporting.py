"""`LocalReporter`'s checkpoints: a crash at any step of replacing one leaves a whole one to resume from."""

from __future__ import annotations

import os

import pytest

from trainables.training.reporting import LocalReporter


class Crash(Exception):
    pass


def _save(content: str):
    def save(directory):
        (directory / "weights.txt").write_text(content)

    return save


def _resumable(out_dir) -> str | None:
    checkpoint = LocalReporter(out_dir, resume=True, echo=None).restore()
    return None if checkpoint is None else (checkpoint / "weights.txt").read_text()


def test_the_latest_checkpoint_is_restored_and_nothing_else_is_left(tmp_path):
    reporter = LocalReporter(tmp_path, echo=None)
    reporter.report({"step": 1}, save=_save("first"))
    reporter.report({"step": 2}, save=_save("second"))
    assert _resumable(tmp_path) == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "progress.jsonl"]
    assert LocalReporter(tmp_path, resume=False, echo=None).restore() is None


def test_a_crash_while_writing_the_new_checkpoint_keeps_the_previous_one(tmp_path):
    reporter = LocalReporter(tmp_path, echo=None)
    reporter.report({"step": 1}, save=_save("first"))

    def crashing_save(directory):
        (directory / "weights.txt").write_text("half")
        raise Crash

    with pytest.raises(Crash):
        reporter.report({"step": 2}, save=crashing_save)
    assert _resumable(tmp_path) == "first"


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_crash_between_the_renames_keeps_a_whole_checkpoint(tmp_path, monkeypatch, crash_at):
    # The process dies at the `crash_at`-th rename of the second save (or the delete after them): whichever
    # step that is, a restart resumes from the first checkpoint or the second, never from nothing.
    reporter = LocalReporter(tmp_path, echo=None)
    reporter.report({"step": 1}, save=_save("first"))
    real_rename, calls = os.rename, []

    def rename(src, dst, *args, **kwargs):
        calls.append((src, dst))
        if len(calls) == crash_at:
            raise Crash
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(Crash):
        reporter.report({"step": 2}, save=_save("second"))
    monkeypatch.setattr(os, "rename", real_rename)
    assert _resumable(tmp_path) in ("first", "second")

    # the next save after the restart cleans up and leaves one checkpoint
    LocalReporter(tmp_path, resume=True, echo=None).report({"step": 3}, save=_save("third"))
    assert _resumable(tmp_path) == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "progress.jsonl"]


def test_a_crash_before_the_old_checkpoint_is_deleted_resumes_from_the_new_one(tmp_path, monkeypatch):
    import shutil

    reporter = LocalReporter(tmp_path, echo=None)
    reporter.report({"step": 1}, save=_save("first"))
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if os.path.basename(path) == "checkpoint.previous" and os.path.exists(path):
            raise Crash  # dies deleting the old checkpoint, after the new one is in place
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.raises(Crash):
        reporter.report({"step": 2}, save=_save("second"))
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert _resumable(tmp_path) == "second"
