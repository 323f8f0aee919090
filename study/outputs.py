"""Where a command may write: a regular file or a new path, never a device, a FIFO, a socket, a folder or a
symbolic link, and each file written whole (a temporary name beside it, then a rename).

A rename replaces whatever directory entry is at the target, so writing atomically to `--out /dev/null`
as root would replace the system's /dev/null with a regular file, and opening a FIFO to write blocks until
something reads it: the target's kind is checked (without following a link) before anything runs and again
just before the rename. A link is refused rather than followed: inside a folder someone else can write to
(a report written into a results folder), a planted link would send the output anywhere.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(path: Path) -> str | None:
    """What is at `path` when it is not a regular file (None for a regular file or nothing at all)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (the parent check says why)
        return None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _check_parent(flag: str, path: Path) -> None:
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is not a directory")


def check_output_file(flag: str, path: str | Path) -> None:
    """Refuse an output file that exists and is not a regular file, or lies under something not a folder.

    Raises:
        ValueError: naming the flag, the path and what is there.
    """
    path = Path(path)
    kind = _kind(path)
    if kind is not None:
        raise ValueError(f"{flag} {path} is {kind}; give the path of a regular file to write (or a new one)")
    _check_parent(flag, path)


def check_output_folder(flag: str, path: str | Path, *, link_ok: bool = True) -> None:
    """Refuse an output folder that exists and is not a folder. A link to a folder is the user's choice for
    the folder they name (`link_ok`), never for one inside it, where someone else may have planted it.

    Raises:
        ValueError: naming the flag, the path and what is there.
    """
    path = Path(path)
    if path.is_dir() and (link_ok or not path.is_symlink()):
        return
    kind = _kind(path)
    if kind is not None or path.exists():
        raise ValueError(
            f"{flag} {path} is {kind or 'a regular file'}; give a folder to write into (or a new path)"
        )
    _check_parent(flag, path)


def write_atomically(files: Mapping[Path, str | bytes], *, flag: str = "output") -> None:
    """Write every file to a temporary name beside it, then rename each into place: a failure while writing
    leaves no output half-written and the old files untouched, and a target that is not a regular file
    (or nothing) is refused, never replaced.

    Raises:
        ValueError: for a target that is a link, a folder, a device, a FIFO or a socket.
    """
    for path in files:
        check_output_file(flag, path)
    staged: list[tuple[str, Path]] = []
    umask = os.umask(0o22)
    os.umask(umask)
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((temp, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
                os.fchmod(handle.fileno(), 0o666 & ~umask)  # as open() would have made it, not 0600
        for temp, path in staged:
            check_output_file(flag, path)  # again: something may have appeared there while writing
            os.replace(temp, path)
    finally:
        for temp, _ in staged:
            if os.path.exists(temp):
                os.unlink(temp)
