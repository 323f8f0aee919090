"""One place that turns bad input into one line on stderr and exit code 2, for every command; a storage that
refuses a write (full, read-only) is such a line too."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage before a flag error; the user wants the one line that says what is wrong."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def run_cli(main: Callable[[], Any]) -> None:
    """Run a command's `main`; bad input (ValueError, a missing file, a missing model) exits 2 with one line.

    Other exceptions are bugs and keep their traceback.
    """
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


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
