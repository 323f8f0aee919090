"""Run untrusted, model-written Python programs in a locked-down child process, never in this one.

Each program runs in fresh interpreters in a new session (process group), with `/` as its cwd, its source in
a nameless file and its outputs in nameless files: it leaves no file behind, however the scorer ends.
Layers, from the kernel up (docs/sandbox.md says what each stops, how it is tested, and what is weaker
where the kernel lacks one):
1. Landlock (Linux >= 5.13): the program can read the interpreter, its shared libraries and the
   standard-library modules in PREIMPORTABLE, and nothing else: no references, predictions, working tree,
   virtualenv, /etc, /proc or home directory, and no other native extension. It writes nothing and
   connects nowhere. The files are found by a probe interpreter once per scorer process (`sandbox_policy`).
2. seccomp (Linux x86_64), with no-new-privileges: no sockets, fork/clone, exec, signals to other
   processes, leaving the process group, file-system changes, memfds or anonymous executable memory, and
   nothing that changes another process's priority, scheduling, affinity or limits; no sync, no uname.
3. rlimits: address space (memory), CPU, file size (stdout is a file, so a flood ends at the cap), open
   files, no core dumps, RLIMIT_NPROC=1.
4. Identity: when this process is root, the program drops to an unprivileged uid/gid.
5. Process lifetime: a wall-time limit, after which the whole process group is SIGKILLed (also after a
   normal exit); and a watcher process between the scorer and the program that SIGKILLs the program's
   group when the scorer dies by any signal, SIGKILL included (the uid drop clears the parent-death signal,
   and a program can cancel its own timer).
6. Audit hook (PEP 578), which the program cannot remove: reading files outside the standard library,
   writing any file, sockets, subprocesses, ctypes and the introspection that could disarm the hook end
   the program at once with `blocked: <event>`. It never calls the program's code: any argument that is not
   exactly a str (or int) is refused.
The child's stage 1 sets up 1, 2, 3 and 5 through ctypes and execs stage 2, so ctypes is never loaded
where the program runs (`sandbox_stages`).
"""

from __future__ import annotations

import functools
import math
import os
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from encodings import normalize_encoding
from encodings.aliases import aliases as _CODEC_ALIASES

from trainables.scoring.sandbox_policy import (
    CODEC_PACKAGE,
    EXEC_FD,
    INTERPRETER_FLAGS,
    LAZY_IMPORTS,
    NON_ASCII_IMPORTS,
    PREIMPORTABLE,
    Confinement,
    confinement,
    landlock_ruleset,
    seccomp_filter,
    warn_missing_layers,
)
from trainables.scoring.sandbox_stages import child_sources

SETUP_TIMEOUT_S = 30.0
"""How long the child may take to lock itself down before the sandbox counts as broken."""
_NOT_IN_NAMES = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c in "_.")})
_CODEC_NAME = re.compile(r"[\w.-]+")
"""A codec's name as a program writes it (`'cp1252'`, `"latin-1"`) or a coding cookie does (PEP 263)."""
_seccomp_filter = seccomp_filter  # one name the tests can replace


class SandboxError(OSError):
    """The sandbox itself could not be started or locked down (never the program's fault).

    An OSError, like a missing model, so the CLIs report it in one line."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use."""

    wall_seconds: float = 2.0
    """Wall-clock time for the program, from the end of the sandbox's setup to its exit."""
    memory_mb: int = 256
    """Address-space limit (RLIMIT_AS) in MiB; the interpreter itself needs about 20."""
    max_output_bytes: int = 64 * 1024
    """Cap on stdout; a program that writes more fails with `output over N bytes`."""
    max_source_bytes: int = 1 << 20
    """Longer programs (UTF-8) fail with `source over N bytes`, unrun: reading one into the sandbox's
    memory limit would fail its setup. At most a quarter of `memory_mb`."""
    unprivileged_uid: int = 65534
    """When the evaluating process is root, the uid and gid the program runs as (65534: `nobody`)."""

    def __post_init__(self) -> None:
        wall = self.wall_seconds
        if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not 0 < wall <= 3600:
            raise ValueError(f"wall_seconds must be a number in (0, 3600], got {wall!r}")
        ranges = {
            "memory_mb": (32, 1 << 20),
            "max_output_bytes": (1, 1 << 30),
            "max_source_bytes": (1, 1 << 30),
            "unprivileged_uid": (1, 2**32 - 2),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
        if self.max_source_bytes > self.memory_mb << 18:  # stage 2 holds the source twice while reading it
            raise ValueError(
                f"max_source_bytes must be at most a quarter of memory_mb ({self.memory_mb << 18} bytes), "
                f"got {self.max_source_bytes!r}"
            )


@dataclass(frozen=True)
class ProgramResult:
    """What became of one program."""

    ok: bool
    """True when the program exited 0 within all limits."""
    stdout: str
    """What it printed, truncated at `max_output_bytes` (undecodable bytes replaced)."""
    error: str | None
    """One line saying why it failed, e.g. `timeout after 2.0s`, `blocked: os.fork`; None when ok."""
    seconds: float
    """Wall time the program ran, not counting the sandbox's setup."""


@dataclass(frozen=True)
class _Layers:
    """Which defences are on: all of them, except in tests proving that one layer binds on its own."""

    audit_hook: bool = True
    seccomp: bool = True
    landlock: bool = True
    drop_privileges: bool = True
    max_processes: int | None = 1


def run_program(source: str, limits: SandboxLimits | None = None) -> ProgramResult:
    """Run one untrusted Python program in the sandbox.

    Args:
        source: the program text; it is compiled and run as `__main__` in the child.
        limits: the limits it runs under (default `SandboxLimits()`).

    Returns:
        A `ProgramResult`: a misbehaving program is a failed result, never an exception here.

    Raises:
        TypeError: `source` is not a str, or `limits` not a SandboxLimits.
        SandboxError: the sandbox could not be set up on this machine.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    return _run_one(source, _checked(limits))


def run_programs(
    sources: Sequence[str], limits: SandboxLimits | None = None, max_workers: int | None = None
) -> list[ProgramResult]:
    """Run many programs in parallel sandboxes; the results keep the order of `sources`.

    Args:
        sources: the program texts.
        limits: the limits each program runs under (default `SandboxLimits()`).
        max_workers: programs running at once (default: the CPUs this process may use).

    Raises:
        TypeError: `sources` is a single string or holds a non-string; `limits` is no SandboxLimits.
        ValueError: `max_workers` is not a positive int.
        SandboxError: the sandbox could not be set up on this machine.
    """
    limits = _checked(limits)
    if isinstance(sources, (str, bytes)):
        raise TypeError("sources must be a sequence of programs, not a single string")
    sources = list(sources)
    for i, source in enumerate(sources):
        if not isinstance(source, str):
            raise TypeError(f"sources[{i}] must be a str, got {type(source).__name__}")
    bad_workers = isinstance(max_workers, bool) or not isinstance(max_workers, (int, type(None)))
    if bad_workers or (max_workers is not None and max_workers < 1):
        raise ValueError(f"max_workers must be a positive int or None, got {max_workers!r}")
    if not sources:
        return []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # A worker thread only waits on its child, with the GIL released: threads are enough.
    with ThreadPoolExecutor(max_workers=min(max_workers or cpus, len(sources))) as pool:
        return list(pool.map(functools.partial(_run_one, limits=limits), sources))


def landlock_abi() -> int:
    """The Landlock ABI the sandbox confines programs with here; 0 where the kernel has none."""
    try:
        return confinement(sys.executable).abi
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def _checked(limits: SandboxLimits | None) -> SandboxLimits:
    if limits is None:
        return SandboxLimits()
    if not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits must be a SandboxLimits, got {type(limits).__name__}")
    return limits


def _run_one(source: str, limits: SandboxLimits, layers: _Layers = _Layers()) -> ProgramResult:
    try:
        data = source.encode("utf-8")
    except UnicodeEncodeError as exc:
        return ProgramResult(
            ok=False, stdout="", error=f"source is not valid UTF-8: {exc.reason}", seconds=0.0
        )
    if len(data) > limits.max_source_bytes:
        return ProgramResult(
            ok=False, stdout="", error=f"source over {limits.max_source_bytes} bytes", seconds=0.0
        )
    # Nameless files (O_TMPFILE): nothing is left on disk, even when this process is SIGKILLed.
    with tempfile.TemporaryFile() as program, tempfile.TemporaryFile() as out:
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as status:
            program.write(data)
            program.flush()
            setup_r, setup_w = os.pipe()
            try:
                proc = _start(source, limits, layers, files=(program, out, err, status), setup_fd=setup_w)
            finally:
                os.close(setup_w)  # the child holds the only write end now: EOF when it closes it
            try:
                setup = _read_setup(setup_r)
                start = time.perf_counter()
                exited = setup == "ready" and _wait_for_exit(proc.pid, limits.wall_seconds)
                seconds = time.perf_counter() - start
            finally:
                _kill_group(proc.pid)  # the leader is not reaped yet, so its group id cannot be reused
                proc.wait()
                os.close(setup_r)
            if setup != "ready":
                detail = setup.removeprefix("error: ") or _tail(err) or f"exit {proc.returncode}"
                raise SandboxError(f"sandbox setup failed: {detail}")
            error = _failure(proc.returncode, exited=exited, limits=limits, out=out, err=err, status=status)
        out.seek(0)
        stdout = out.read(limits.max_output_bytes).decode("utf-8", "replace")
    return ProgramResult(ok=error is None, stdout=stdout, error=error, seconds=seconds)


def _confinement(layers: _Layers) -> Confinement:
    """The Landlock allow-list of this interpreter (probed once), or none when the layer is off."""
    try:
        found = confinement(sys.executable)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"cannot start {sys.executable!r}: {exc}") from exc
    warn_missing_layers(found.abi, _seccomp_filter() is not None)
    return found if layers.landlock else Confinement(executable=found.executable, abi=0)


def _start(source: str, limits: SandboxLimits, layers: _Layers, *, files, setup_fd) -> subprocess.Popen:
    program, out, err, status = files
    seccomp = _seccomp_filter() if layers.seccomp else None
    allowed = _confinement(layers)
    try:
        ruleset = landlock_ruleset(allowed)
    except OSError as exc:
        raise SandboxError(f"cannot build the Landlock ruleset: {exc}") from exc
    settings = {
        "setup_fd": setup_fd,
        "status_fd": status.fileno(),
        "program_fd": program.fileno(),
        "parent": os.getpid(),
        "executable": allowed.executable,
        "exec_fd": EXEC_FD,
        "flags": " ".join(INTERPRETER_FLAGS),
        "rlimits": _rlimits(limits, layers),
        "wall": limits.wall_seconds,
        "uid": limits.unprivileged_uid if layers.drop_privileges and os.geteuid() == 0 else -1,
        "hook": int(layers.audit_hook),
        "seccomp": seccomp.hex() if seccomp else "",
        "landlock_fd": ruleset,
        "preimport": ",".join(_preimports(source, codecs=allowed.codecs)),
    }
    stage1, stage2 = child_sources()
    argv = [sys.executable, *INTERPRETER_FLAGS, "-c", stage1, stage2]
    argv += [f"{key}={value}" for key, value in settings.items()]
    try:
        return subprocess.Popen(
            argv,
            cwd="/",
            env={},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=(setup_fd, status.fileno(), program.fileno(), *([ruleset] if ruleset >= 0 else [])),
            start_new_session=True,  # its own process group, killed as a whole
        )
    except OSError as exc:
        raise SandboxError(f"cannot start {sys.executable!r}: {exc}") from exc


def _rlimits(limits: SandboxLimits, layers: _Layers) -> str:
    """`resource:soft:hard,...` for stage 1, RLIMIT_CORE first (the watcher needs its number too)."""
    cpu = math.ceil(limits.wall_seconds) + 1  # a backstop: the wall-time limit comes first
    values = [
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_AS, limits.memory_mb << 20, limits.memory_mb << 20),
        # one byte over the cap tells "over" from "exactly at"
        (resource.RLIMIT_FSIZE, limits.max_output_bytes + 1, limits.max_output_bytes + 1),
        (resource.RLIMIT_NOFILE, 32, 32),  # below EXEC_FD
        (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU, then SIGKILL
    ]
    if layers.max_processes is not None:
        values.append((resource.RLIMIT_NPROC, layers.max_processes, layers.max_processes))
    return ",".join(f"{r}:{soft}:{hard}" for r, soft, hard in values)


def _preimports(source: str, *, codecs: frozenset[str] = frozenset()) -> list[str]:
    """What stage 2 imports before the uid drop: the PREIMPORTABLE modules the source names (as words:
    `math.sqrt` names `math`) and their lazy imports, what the compiler needs for non-ASCII names, and the
    `codecs` (modules of CODEC_PACKAGE) whose names or aliases it writes."""
    names = set()
    for word in set(source.translate(_NOT_IN_NAMES).split()):
        parts = word.split(".")
        names.update(parts, (".".join(parts[: i + 1]) for i in range(len(parts))))
    wanted = names & PREIMPORTABLE | {lazy for name, lazy in LAZY_IMPORTS.items() if name in names}
    if not source.isascii():
        wanted.update(NON_ASCII_IMPORTS)
    if codecs:
        wanted.update(f"{CODEC_PACKAGE}.{codec}" for codec in _codecs_named(source) & codecs)
    return sorted(wanted)


def _codecs_named(source: str) -> set[str]:
    """The codec modules that the names in `source` resolve to, as `encodings.search_function` resolves them."""
    found = set()
    for name in set(_CODEC_NAME.findall(source)):
        normal = normalize_encoding(name.lower())
        found.add(_CODEC_ALIASES.get(normal) or _CODEC_ALIASES.get(normal.replace(".", "_")) or normal)
    return found


def _read_setup(fd: int) -> str:
    """The child's one setup line: 'ready' once locked down, or 'error: ...'; '' if it died first."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    data = b""
    while not data.endswith(b"\n") and len(data) < 4096:
        if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            return f"error: setup took over {SETUP_TIMEOUT_S}s"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether the child exited within `timeout` seconds. It is left unreaped either way."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll without reaping
        deadline = time.monotonic() + timeout
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(file, limit: int = 1024) -> str:
    """The last non-empty line among the last `limit` bytes of a file, cut to 200 characters."""
    file.seek(max(0, file.seek(0, os.SEEK_END) - limit))
    lines = file.read(limit).decode("utf-8", "replace").splitlines()
    return next((line.strip()[:200] for line in reversed(lines) if line.strip()), "")


def _failure(returncode: int, *, exited: bool, limits: SandboxLimits, out, err, status) -> str | None:
    """Why the program failed, or None when it did not. Its own status line can only make it fail."""
    said = _tail(status)
    if not exited or returncode == -signal.SIGALRM:  # the child's own timer, should the parent be late
        return f"timeout after {float(limits.wall_seconds)}s"
    if out.seek(0, os.SEEK_END) > limits.max_output_bytes:
        return f"output over {limits.max_output_bytes} bytes"
    if said.startswith("blocked: ") or said == "memory limit":
        return said
    if returncode == 0:
        return None
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return "cpu time limit" if name == "SIGXCPU" else f"killed by {name}"
    if said.startswith("exception: "):
        return f"exit {returncode}: {said.removeprefix('exception: ')}"
    detail = _tail(err)
    return f"exit {returncode}: {detail}" if detail else f"exit {returncode}"
