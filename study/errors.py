"""One place that turns bad input into one line on stderr and exit code 2, for every command; a storage that
refuses a write (full, read-only) is such a line too. Ctrl-C is `interrupted` and exit 130, also inside a long
native call (`interruptible`). A command's exit skips the interpreter's last walk over its heap (`run_cli`)."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted"
"""The line a command ends with on Ctrl-C."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage before a flag error; the user wants the one line that says what is wrong."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def run_cli(main: Callable[[], Any]) -> None:
    """Run a command's `main`; bad input (ValueError, a missing file, a missing model) exits 2 with one line.

    Other exceptions are bugs and keep their traceback.

    At exit the heap is frozen (`gc.freeze`, the last exit handler): the interpreter's final garbage collection
    then skips every object torch, transformers and Ray left, which took 1.9 s of each study command's exit
    here (`bench/bench_exit.py`); the process's memory goes back with the process. Registered once, however
    often `run_cli` is called in one process.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)  # before `main` imports Ray or torch: it runs after their exit handlers
    try:
        main()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (ValueError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


@contextlib.contextmanager
def interruptible(*, grace_s: float = 1.0) -> Iterator[None]:
    """Ctrl-C ends the command within `grace_s` seconds inside this block, even while the main thread is in
    one long native call.

    Python raises KeyboardInterrupt only between bytecodes, and one call into torch holds it back that long:
    a backward pass (22 s measured for a T5-small-shaped batch of 16 on this 2-core CPU; the rehearsal's
    steps at batch 32 took 55-165 s, most of it backward). The signal's
    byte on a wakeup fd wakes a thread, which lets KeyboardInterrupt end the block if it does within
    `grace_s`, and otherwise prints `interrupted` and ends the process with 130 there and then: no `finally`
    runs, so only a block that writes nothing may be wrapped (the memory check measures, it saves nothing).
    """
    if threading.current_thread() is not threading.main_thread() or not callable(
        signal.getsignal(signal.SIGINT)
    ):
        yield  # signals are the main thread's; a SIGINT ignored or left to the OS needs no watcher
        return
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)  # the C signal handler must never block on it
    previous = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    left = threading.Event()

    def watch() -> None:
        while data := os.read(wake_read, 64):  # each byte a signal number; end of file: the block was left
            if signal.SIGINT in data and not left.wait(grace_s):
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os.write(2, f"{INTERRUPTED}\n".encode())
                os._exit(EXIT_INTERRUPTED)

    watcher = threading.Thread(target=watch, name="interruptible", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        left.set()
        signal.set_wakeup_fd(previous)
        os.close(wake_write)
        watcher.join()
        os.close(wake_read)


_FULL = ("disk is full", "no space left", "quota exceeded")  # SQLite, ENOSPC, EDQUOT
_READ_ONLY = ("readonly", "read-only", "permission denied")  # SQLite, EROFS, EACCES


class StorageWriteError(OSError):
    """A storage (the Optuna database, the study's results folder) refused a write: one line that says why."""


def storage_write_error(url: str, error: Exception, *, what: str = "the Optuna study") -> StorageWriteError:
    """`error` (Optuna's `StorageInternalError`, a SQLAlchemy error, an OSError) as one line about writing
    `what` at `url`."""
    cause = error.__cause__ or error
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    lowered = text.lower()
    if any(words in lowered for words in _FULL):
        why = "the storage is full"
    elif any(words in lowered for words in _READ_ONLY):
        why = "the storage is read-only"
    else:
        why = "the storage refused a write"
    return StorageWriteError(f"cannot write {what} at {url}: {why} ({text})")
