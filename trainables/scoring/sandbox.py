"""Run untrusted, model-written Python programs in a locked-down child process, never in this one.

Each program gets fresh interpreters in a new session, with an empty throwaway directory as cwd. Layers:
1. Process: a wall-time limit; the whole process group is SIGKILLed at the timeout and after a normal
   exit. The child also dies with the evaluating process (PR_SET_PDEATHSIG, and an interval timer for
   when the uid drop below clears that).
2. rlimits: address space (memory), CPU, file size (stdout is a file, so a flood ends at the cap), open
   files, no core dumps, RLIMIT_NPROC=1 (no fork, no threads).
3. Identity: when this process is root, the child drops to an unprivileged uid/gid, since root ignores
   RLIMIT_NPROC and file permissions.
4. seccomp (Linux x86_64), with no-new-privileges: the kernel refuses sockets, fork/clone, signals to
   other processes, opening files for writing and every other change to the file system.
5. Audit hook (PEP 578), which the program cannot remove: reading files outside the standard library,
   writing any file, sockets, subprocesses, ctypes and the introspection that could disarm the hook end
   the program at once with `blocked: <event>`.
Stage 1 of the child sets up 1 and 4 through ctypes and then execs stage 2, so ctypes (a raw-memory
toolkit that would let a program disarm the hook) is never loaded where the program runs. Stage 2 imports
the modules a program names from PREIMPORTABLE before the uid drop, so `import fractions` works even where
the standard library is unreadable to the unprivileged user (a Python under /root, for instance).
"""

from __future__ import annotations

import errno
import functools
import inspect
import math
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

SETUP_TIMEOUT_S = 30.0
"""How long the child may take to lock itself down before the sandbox counts as broken."""
PREIMPORTABLE = frozenset(
    "abc array bisect calendar cmath collections collections.abc copy dataclasses datetime decimal enum "
    "fractions functools heapq itertools json math numbers operator random re statistics string "
    "textwrap time typing unicodedata".split()
)
"""Pure-computation modules that stage 2 imports, as trusted code, before the uid drop when named."""
_LAZY_IMPORTS = {"collections": "heapq", "strptime": "_strptime"}  # Counter.most_common, time.strptime
_NOT_IN_NAMES = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() or c in "_.")})
_DENIED_SYSCALLS = {  # x86_64 numbers (asm/unistd_64.h); the kernel answers EPERM
    # network
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53, "accept4": 288,
    # new processes and threads (execve stays: stage 1 needs it; NO_NEW_PRIVS makes it gain nothing)
    "clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "execveat": 322,
    # other processes: signals, tracing, their memory
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "process_madvise": 440, "perf_event_open": 298,
    # changing the file system (open/openat with write flags are refused separately)
    "creat": 85, "openat2": 437, "mknod": 133, "mknodat": 259, "unlink": 87, "unlinkat": 263,
    "rename": 82, "renameat": 264, "renameat2": 316, "mkdir": 83, "mkdirat": 258, "rmdir": 84,
    "link": 86, "linkat": 265, "symlink": 88, "symlinkat": 266, "chmod": 90, "fchmod": 91,
    "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260,
    "truncate": 76, "ftruncate": 77, "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261,
    "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
    "fremovexattr": 199, "name_to_handle_at": 303, "open_by_handle_at": 304,
    # the system: mounts, namespaces, modules, io_uring (which bypasses seccomp), IPC
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "bpf": 321, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
    "request_key": 249, "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "personality": 135,
    "quotactl": 179, "fanotify_init": 300, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "shmget": 29, "semget": 64, "msgget": 68, "mq_open": 240,
}  # fmt: skip


class SandboxError(RuntimeError):
    """The sandbox itself could not be started or locked down (never the program's fault)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use."""

    wall_seconds: float = 2.0
    """Wall-clock time for the program, from the end of the sandbox's setup to its exit."""
    memory_mb: int = 256
    """Address-space limit (RLIMIT_AS) in MiB; the interpreter itself needs about 20."""
    max_output_bytes: int = 64 * 1024
    """Cap on stdout; a program that writes more fails with `output over N bytes`."""
    unprivileged_uid: int = 65534
    """When the evaluating process is root, the uid and gid the program runs as (65534: `nobody`)."""

    def __post_init__(self) -> None:
        wall = self.wall_seconds
        if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not 0 < wall <= 3600:
            raise ValueError(f"wall_seconds must be a number in (0, 3600], got {wall!r}")
        ranges = {
            "memory_mb": (32, 1 << 20),
            "max_output_bytes": (1, 1 << 30),
            "unprivileged_uid": (1, 2**32 - 2),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


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
    with tempfile.TemporaryDirectory(prefix="sandbox-") as work, tempfile.TemporaryFile() as out:
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as status:
            with open(os.path.join(work, "program.py"), "wb") as f:
                f.write(data)
            setup_r, setup_w = os.pipe()
            try:
                proc = _start(source, limits, layers, cwd=work, files=(out, err, status), setup_fd=setup_w)
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


def _start(source: str, limits: SandboxLimits, layers: _Layers, *, cwd, files, setup_fd) -> subprocess.Popen:
    out, err, status = files
    seccomp = _seccomp_filter() if layers.seccomp else None
    settings = {
        "setup_fd": setup_fd,
        "status_fd": status.fileno(),
        "parent": os.getpid(),
        "memory": limits.memory_mb << 20,
        "wall": limits.wall_seconds,
        "cpu": math.ceil(limits.wall_seconds) + 1,  # a backstop: the wall-time limit comes first
        "fsize": limits.max_output_bytes + 1,  # one byte over the cap tells "over" from "exactly at"
        "nproc": -1 if layers.max_processes is None else layers.max_processes,
        "uid": limits.unprivileged_uid if layers.drop_privileges and os.geteuid() == 0 else -1,
        "hook": int(layers.audit_hook),
        "seccomp": seccomp.hex() if seccomp else "",
        "preimport": ",".join(_preimports(source)),
    }
    stage1, stage2 = _child_sources()
    argv = [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c"]
    argv += [stage1, stage2] if sys.platform == "linux" else [stage2]
    argv += [f"{key}={value}" for key, value in settings.items()]
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env={},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=(setup_fd, status.fileno()),
            start_new_session=True,  # its own process group, killed as a whole
        )
    except OSError as exc:
        raise SandboxError(f"cannot start {sys.executable!r}: {exc}") from exc


def _preimports(source: str) -> list[str]:
    """The PREIMPORTABLE modules the source names (as words: `math.sqrt` names `math`), and their lazy imports."""
    names = set()
    for word in set(source.translate(_NOT_IN_NAMES).split()):
        parts = word.split(".")
        names.update(parts, (".".join(parts[: i + 1]) for i in range(len(parts))))
    return sorted(names & PREIMPORTABLE | {lazy for name, lazy in _LAZY_IMPORTS.items() if name in names})


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


@functools.cache
def _seccomp_filter() -> bytes | None:
    """A classic-BPF seccomp program refusing `_DENIED_SYSCALLS`; None where unsupported (not x86_64)."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return None
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, ...
    allow, deny, kill = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # (label, code, jump if true, jump if false, k); struct seccomp_data: nr @0, arch @4, args[i] @16+8i
    program = [
        (None, ld, 0, 0, 4),
        (None, jeq, 1, 0, 0xC000003E),  # AUDIT_ARCH_X86_64: any other ABI (int 0x80) is killed
        (None, ret, 0, 0, kill),
        (None, ld, 0, 0, 0),
        (None, jge, "deny", 0, 0x40000000),  # the x32 ABI
        (None, jeq, "open", 0, 2),
        (None, jeq, "openat", 0, 257),
        *((None, jeq, "deny", 0, nr) for nr in sorted(_DENIED_SYSCALLS.values())),
        (None, ret, 0, 0, allow),
        ("open", ld, 0, 0, 24),  # open(path, flags): low word of args[1]
        (None, jset, "deny", "allow", writes),
        ("openat", ld, 0, 0, 32),  # openat(dirfd, path, flags): low word of args[2]
        (None, jset, "deny", "allow", writes),
        ("allow", ret, 0, 0, allow),  # BPF jumps only forward, so the verdicts come last
        ("deny", ret, 0, 0, deny),
    ]
    where = {label: i for i, (label, *_) in enumerate(program) if label}
    code = bytearray()
    for i, (_, op, jt, jf, k) in enumerate(program):
        jt, jf = (where[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        code += struct.pack("=HBBI", op, jt, jf, k)
    return bytes(code)


@functools.cache
def _child_sources() -> tuple[str, str]:
    """The two stages' `-c` programs: each function's source, then a call of it."""
    return tuple(textwrap.dedent(inspect.getsource(f)) + f"\n{f.__name__}()\n" for f in (_stage1, _stage2))


# The two stages run in the child as `python -I -S -c <function source>`: they see no module globals,
# import what they need, and take their settings as `key=value` arguments.


def _stage1() -> None:  # pragma: no cover - runs in the child
    """Process-wide kernel settings that need ctypes, then exec stage 2 (where ctypes never loads)."""
    import ctypes
    import os
    import sys

    stage2, *settings = sys.argv[1:]
    cfg = dict(arg.split("=", 1) for arg in settings)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4

        def prctl(name: str, *args: int) -> None:
            if libc.prctl(*args, *[0] * (5 - len(args))) != 0:
                raise OSError(ctypes.get_errno(), f"prctl {name} failed")

        prctl("PR_SET_NO_NEW_PRIVS", 38, 1)  # needed for seccomp without privileges; exec gains nothing
        prctl("PR_SET_PDEATHSIG", 1, 9)  # SIGKILL when the evaluating process dies
        if os.getppid() != int(cfg["parent"]):
            os._exit(70)  # it died before the line above
        if cfg["seccomp"]:
            code = bytes.fromhex(cfg["seccomp"])
            buffer = ctypes.create_string_buffer(code, len(code))
            # struct sock_fprog {u16 len; (padding); sock_filter *filter} as two words on x86_64
            fprog = (ctypes.c_ulong * 2)(len(code) // 8, ctypes.addressof(buffer))
            prctl("PR_SET_SECCOMP", 22, 2, ctypes.addressof(fprog))  # SECCOMP_MODE_FILTER
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", stage2, *settings])
    except BaseException as exc:
        os.write(int(cfg["setup_fd"]), f"error: {type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
        os._exit(70)


def _stage2() -> None:  # pragma: no cover - runs in the child
    """Limits, the uid drop and the audit hook; then say 'ready' on the setup pipe and run program.py."""
    import _signal
    import builtins
    import os
    import resource
    import sys

    cfg = dict(arg.split("=", 1) for arg in sys.argv[1:])
    setup_fd, status_fd, uid = int(cfg["setup_fd"]), int(cfg["status_fd"]), int(cfg["uid"])
    write, exit_now = os.write, os._exit  # bound now: the program may rebind os.write and os._exit

    def say(fd: int, text: str) -> None:
        try:
            write(fd, (" ".join(text.split())[:300] + "\n").encode("utf-8", "backslashreplace"))
        except Exception:
            pass  # the program closed the file or filled it to the cap

    def make_hook(roots: tuple[str, ...]):
        """The audit hook. It reads only values bound as its defaults here (a program can rebind module
        globals and builtins), calls no Python code, and refuses any change to its own attributes."""
        imports = frozenset(
            "ctypes _ctypes _posixsubprocess subprocess multiprocessing _multiprocessing _posixshmem "
            "socket _socket ssl _ssl pty termios fcntl mmap resource readline _sqlite3 sqlite3 dbm _dbm "
            "_gdbm tkinter _tkinter _xxsubinterpreters _xxinterpchannels _testcapi _testinternalcapi "
            "_testbuffer _testmultiphase _testsinglephase _testimportmultiple _testclinic _ctypes_test".split()
        )
        events = (
            "socket.", "ctypes.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn",
            "os.fork", "os.kill", "os.startfile", "os.chdir", "os.chmod", "os.chown", "os.chflags",
            "os.lchflags", "os.link", "os.symlink", "os.mkdir", "os.remove", "os.rename", "os.rmdir",
            "os.truncate", "os.utime", "os.putenv", "os.unsetenv", "os.setxattr", "os.removexattr",
            "os.getxattr", "os.listxattr", "os.lockf", "shutil.", "pty.", "fcntl.", "mmap.", "sqlite3.",
            "syslog.", "resource.", "signal.pthread_kill", "_thread.start_new_thread", "sys.addaudithook",
            "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions", "gc.get_",
            "code.__new__", "marshal.load", "webbrowser.", "cpython._PySys_ClearAuditHooks",
        )  # fmt: skip
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        dirs, under, function = frozenset(roots), tuple(r + "/" for r in roots), type(make_hook)

        def hook(
            event, args, _imports=imports, _events=events, _writes=writes, _roots=dirs, _under=under,
            _type=type, _str=str, _int=int, _repr=repr, _function=function, _write=write, _exit=exit_now,
            _fd=status_fd, _own_code=None,
        ):  # fmt: skip
            why, path, flags = None, None, 0  # path: a file it reads, or an extension module it loads
            if event == "open" or event == "os.listdir" or event == "os.scandir":
                path, flags = args[0], (args[2] if event == "open" else 0)
                if _type(path) is _int and event == "open" and path in (0, 1, 2):
                    path = None  # stdin, stdout, stderr
                elif path is None:
                    path = "."
            elif event == "import":
                name, path = args[0], args[1]  # path: None, or the shared library of an extension
                if _type(name) is not _str:
                    why = "import of a non-str name"
                elif name.partition(".")[0] in _imports or name.rpartition(".")[2] in _imports:
                    why = "import " + name
            elif event == "object.__setattr__" or event == "object.__delattr__":
                if _type(args[0]) is _function and args[0].__code__ is _own_code:
                    why = event + " on the audit hook"
            elif event.startswith(_events):
                why = event
            if why is None and path is not None:
                if _type(path) is not _str or _type(flags) is not _int or flags & _writes:
                    why = event + " " + _repr(path)[:200]
                elif not (
                    (
                        "/.." not in path
                        and "/site-packages" not in path  # not the stdlib: numpy could rewrite memory
                        and "/dist-packages" not in path
                        and (path in _roots or path.startswith(_under))
                    )
                    # a SyntaxError looks for its line in a file named '<program>' or '<string>': none
                    or (event == "open" and path[:1] == "<" and path[-1:] == ">" and "/" not in path)
                ):
                    why = event + " " + _repr(path)[:200]
            if why is not None:  # end the program now: it could catch an exception
                try:
                    _write(_fd, ("blocked: " + why.replace("\n", " ") + "\n").encode("utf-8", "replace"))
                finally:
                    _exit(86)

        hook.__defaults__ = (*hook.__defaults__[:-1], hook.__code__)  # before it is installed
        return hook

    try:
        with open("program.py", "rb") as f:
            source = f.read()
        cpu, nproc = int(cfg["cpu"]), int(cfg["nproc"])
        limits = {"AS": int(cfg["memory"]), "FSIZE": int(cfg["fsize"]), "NOFILE": 32, "CORE": 0}
        limits.update({"NPROC": nproc} if nproc >= 0 else {})
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
        for name in filter(None, cfg["preimport"].split(",")):
            __import__(name)  # trusted standard-library code, chosen by the parent, while still readable
        roots = tuple(os.path.realpath(p) for p in sys.path)
        # Later imports compile the source: loading a .pyc would call marshal.loads, a blocked event.
        sys.implementation.cache_tag = None
        if uid >= 0:  # root: drop every privilege, or RLIMIT_NPROC and file permissions do not bind
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if os.getresuid() != (uid,) * 3 or os.getresgid() != (uid,) * 3 or os.getgroups():
                raise OSError(f"still uid {os.getresuid()} gid {os.getresgid()} after dropping to {uid}")
        del sys.modules["resource"]  # so that importing it again is an audited, blocked event
        if cfg["hook"] == "1":
            sys.addaudithook(make_hook(roots))
        # SIGALRM (default action: exit) if the parent cannot kill it: the uid drop cleared PDEATHSIG.
        _signal.setitimer(_signal.ITIMER_REAL, float(cfg["wall"]) + 0.1)
    except BaseException as exc:
        say(setup_fd, f"error: {type(exc).__name__}: {exc}")
        exit_now(70)
    say(setup_fd, "ready")
    os.close(setup_fd)

    builtins.exit = builtins.quit = sys.exit  # what `site`, skipped by -S, would have defined
    returncode, status = 0, ""
    try:
        exec(compile(source, "<program>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            returncode = (exc.code or 0) & 0xFF
        else:
            returncode, status = 1, f"exception: SystemExit: {exc.code}"
    except MemoryError:
        returncode, status = 1, "memory limit"
    except BaseException as exc:
        returncode = 1
        try:
            status = f"exception: {type(exc).__name__}: {exc}"
        except BaseException:
            status = f"exception: {type(exc).__name__}"
    for stream in (sys.stdout, sys.__stdout__, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass  # over the file-size cap: the parent sees the size
    if status:
        say(status_fd, status)
    exit_now(returncode)
