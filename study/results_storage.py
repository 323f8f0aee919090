"""The study's results storage when it refuses writes (full, read-only): files kept whole, one line, exit 2.

Ray uploads a trial's checkpoints from its worker and the experiment's state from the driver by copying each
file in place (`pyarrow.fs.copy_files`). On a local disk that fills up, the copy stops half-way: the storage
keeps a cut `experiment_state-*.json` that no `--resume` can read, and a cut `error.pkl` on which Ray's own
`ResultGrid` ends the study with a traceback, after logging one for each failed upload every few seconds.

- `whole_file_system`: the local storage as a pyarrow filesystem (Ray's public `storage_filesystem`) that
  writes each file under a temporary name beside it and renames it only when it is complete, so a failed
  write leaves the file as it was: the last whole snapshot, which `--resume` continues from.
- `check_writable`: a write tried into the experiment's folder, a `StorageWriteError` (one line, exit 2) when
  the storage refuses it; `study.storage_watch` tries it from Ray's loop.

Object stores (`s3://`, `gs://`) write each object whole already, and are not probed.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pyarrow
import pyarrow.fs

from study.errors import storage_write_error

PROBE_BYTES = 64 * 1024
"""What a probe writes: about what the smallest file Ray uploads takes on a disk."""


def is_local(storage_path: str) -> bool:
    """Whether the storage is a local (or mounted) folder rather than an object store."""
    return "://" not in storage_path or storage_path.startswith("file://")


class _WholeFile:
    """A file written under a temporary name and renamed over `path` on a clean close, removed otherwise."""

    def __init__(self, path: str) -> None:
        self.closed, self._failed, self.mode = True, False, "wb"  # until the staged file exists
        folder, name = os.path.split(path)
        self._path, self._staged = path, os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.part")
        fd = os.open(self._staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        self._file = os.fdopen(fd, "wb")
        self.closed = False

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except BaseException:
            self._give_up()
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except BaseException:
            self._give_up()
            raise

    def _give_up(self) -> None:
        """Remove the staged file now: pyarrow's copy drops a stream whose write failed without closing it."""
        self._failed = True
        self.close()

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def __del__(self) -> None:
        if not self.closed:  # dropped unclosed, unfinished
            self._give_up()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()  # flushes: a full disk may refuse only now
            if not self._failed:
                os.replace(self._staged, self._path)  # the last version is replaced at once, by a whole file
                return
        except BaseException:
            if not self._failed:  # after a failed write the caller has its error already
                _remove(self._staged)
                raise
        _remove(self._staged)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class WholeFileHandler(pyarrow.fs.FileSystemHandler):
    """pyarrow's local filesystem, but every file it writes appears whole or not at all (`_WholeFile`)."""

    def __init__(self) -> None:
        self._local = pyarrow.fs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WholeFileHandler)

    def __hash__(self) -> int:
        return hash(WholeFileHandler)

    def get_type_name(self) -> str:
        return "local-whole-files"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths):
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("the study never empties a filesystem's root")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._local.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)

    def open_input_stream(self, path: str):
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata):
        return pyarrow.PythonFile(_WholeFile(path), mode="w")

    def open_append_stream(self, path: str, metadata):
        return self._local.open_append_stream(path)


def whole_file_system(storage_path: str) -> pyarrow.fs.FileSystem | None:
    """The filesystem Ray should upload to `storage_path` through (its `storage_filesystem`): files written
    whole on a local disk; None (Ray's own) for an object store."""
    return pyarrow.fs.PyFileSystem(WholeFileHandler()) if is_local(storage_path) else None


def check_writable(folder: str) -> None:
    """Write and remove a probe file in `folder` (created if missing).

    Raises:
        StorageWriteError: one line saying the storage is full, read-only or refused the write.
    """
    probe = os.path.join(folder, f".write-check-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb") as file:
            file.write(b"\0" * PROBE_BYTES)
    except OSError as error:
        raise storage_write_error(folder, error, what="the study's results") from None
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def restore_tuner(path: str, trainable: Any):
    """Ray's `Tuner.restore` of the experiment at `path`, its unfinished and errored trials resumed, uploading
    through `whole_file_system`."""
    from ray import tune

    return tune.Tuner.restore(
        path,
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=True,
        storage_filesystem=whole_file_system(path),
    )
