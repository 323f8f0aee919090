"""Build once, reuse everywhere: content-addressed cache folders for what is slow to make.

A folder's key is the SHA-256 of the settings its content depends on, written as JSON: whole dataclasses
(`dataclasses.asdict`, nested ones included) minus an explicit list of fields that cannot change the
result. A field nobody thought of is in the key, so forgetting one costs a cache miss (a rebuild), never a
wrong hit. `build_once` builds into a staging folder under a file lock and renames it into place, so the
processes of a node build a folder once and a reader sees all of it or nothing.

The tiny T5 (`training.models`), its pretraining (`training.pretrain`) and stacked LoRA's stage 1
(`methods.stacked`) are cached this way. A file lock needs a local file system, which object storage is not.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any


def settings_key(settings: Mapping[str, Any], *, ignore: Collection[str] = (), length: int = 16) -> str:
    """A hex digest of `settings`: equal settings give equal keys, any other value another key.

    Args:
        settings: name -> a dataclass instance or a JSON value (str, number, bool, None, list, dict; tuples
            and Paths are written as lists and strings). A format version belongs here too.
        ignore: dotted names of fields that cannot change the result, e.g. `"train.eval"` (the field `eval`
            of the dataclass under `train`). Each must name a field, so a renamed field cannot linger here.
        length: hex digits kept.

    Raises:
        ValueError: if a name in `ignore` names no field.
        TypeError: for a value that has no JSON form.
    """
    values = {name: _plain(value) for name, value in settings.items()}
    for dotted in ignore:
        *parents, last = dotted.split(".")
        node = values
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise ValueError(f"cache key: {dotted!r} in the ignored fields names no field of the settings")
        del node[last]
    text = json.dumps(values, sort_keys=True, default=_json_default, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def texts_digest(texts: Iterable[str]) -> str:
    """The SHA-256 of a sequence of texts, each length-prefixed so `['ab']` and `['a', 'b']` differ."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def build_once(path: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """`path` as `build(staging)` writes it: built by the first process to ask, reused by every later one.

    `build` fills the empty folder it is given; that folder is renamed to `path` only when it returns, so
    an error or a crash leaves no half-built cache (a stale staging folder is removed by the next build).
    The lock (`<path>.lock`) makes concurrent callers wait for one build instead of repeating it; should a
    process that took no lock put `path` in place meanwhile, its folder is kept and the own one discarded.

    Returns:
        `path` as a Path.
    """
    path = Path(path)
    if _ready(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if _ready(path):
            return path  # built by the process we waited for
        staging = path.with_name(f".{path.name}.tmp")  # one name: only the lock holder writes it
        shutil.rmtree(staging, ignore_errors=True)  # left by a builder that crashed
        staging.mkdir()
        try:
            build(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.rename(staging, path)  # atomic; fails if a lock-less writer filled `path` meanwhile
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not _ready(path):
                raise
    return path


def _ready(path: Path) -> bool:
    """A cache folder exists only whole (it is renamed into place), so being non-empty means being ready."""
    return path.is_dir() and any(path.iterdir())


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cache key: a {type(value).__name__} has no JSON form; pass a dataclass or plain values")
