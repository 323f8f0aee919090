"""What the kernel lets a sandboxed program do: the seccomp filter, and the files Landlock lets it read.

Both are computed here, in the trusted scorer, and installed by the child's first stage before it execs the
interpreter that runs the program (`sandbox_stages`), so neither can be changed by program code:
- seccomp (x86_64): no sockets, new processes, signals to others, file-system changes, new programs
  (`execve`; stage 1's own exec goes through `execveat` on a descriptor number the program can never hold),
  leaving the process group, memfds, or executable memory that is not a mapped file (no JIT, no shellcode);
  nothing that acts on another process of the same uid (priority, scheduling, CPU affinity, I/O priority,
  resource limits, memory placement), no `sync` family (disk I/O for the whole machine), no `uname`.
- Landlock: the program may read the interpreter, the shared libraries it maps and the standard-library
  modules in `PREIMPORTABLE` and `encodings` (and their compiled caches): nothing else, so no other native
  extension can be opened either. It may list the standard library's folders, write nothing, connect
  nowhere (ABI 4) and signal nothing outside itself (ABI 6). The list is what a probe interpreter, started
  exactly as stage 2 is, has loaded after importing every `PREIMPORTABLE` module and every codec.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass

PREIMPORTABLE = frozenset(
    "abc array bisect calendar cmath collections collections.abc copy dataclasses datetime decimal enum "
    "fractions functools heapq itertools json math numbers operator random re statistics string "
    "textwrap time typing unicodedata".split()
)
"""Pure-computation modules a program may import: stage 2 imports those it names before the uid drop."""
LAZY_IMPORTS = {"collections": "heapq", "strptime": "_strptime"}  # Counter.most_common, time.strptime
NON_ASCII_IMPORTS = ("unicodedata",)
"""What the compiler imports for a non-ASCII name (it normalises names to NFKC): stage 2 imports it for any
source that is not ASCII, since after the uid drop the standard library may not be readable."""
CODEC_PACKAGE = "encodings"
"""Every standard codec is a module of this package: the Landlock allow-list holds them all, and stage 2
imports those whose names (or aliases) the source writes, a coding cookie's included."""
INTERPRETER_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
"""Isolated (no environment, no user site), no site-packages, no .pyc written, UTF-8 I/O."""
EXEC_FD = 100
"""The descriptor stage 1 execs the interpreter through; above the program's RLIMIT_NOFILE (32)."""

_DENIED_SYSCALLS = {  # x86_64 numbers (asm/unistd_64.h); the kernel answers EPERM
    # network
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53, "accept4": 288,
    # new processes, threads and programs; leaving the process group that is killed as a whole
    "clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "execve": 59, "setsid": 112, "setpgid": 109,
    # other processes: signals, tracing, their memory
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_send_signal": 424, "pidfd_open": 434, "pidfd_getfd": 438, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "process_madvise": 440, "perf_event_open": 298,
    "kcmp": 312, "migrate_pages": 256, "move_pages": 279,
    # other processes of the same uid (every program's, as root; the scorer's, unprivileged): their
    # priority, scheduling and CPU affinity (prlimit64 on another pid is refused below)
    "setpriority": 141, "sched_setparam": 142, "sched_setscheduler": 144, "sched_setaffinity": 203,
    "sched_setattr": 314, "ioprio_set": 251,
    # the whole machine: flushing every disk, and what uname tells (host name, kernel build)
    "sync": 162, "syncfs": 306, "fsync": 74, "fdatasync": 75, "sync_file_range": 277, "uname": 63,
    # changing the file system (open/openat with write flags are refused separately)
    "creat": 85, "openat2": 437, "mknod": 133, "mknodat": 259, "unlink": 87, "unlinkat": 263,
    "rename": 82, "renameat": 264, "renameat2": 316, "mkdir": 83, "mkdirat": 258, "rmdir": 84,
    "link": 86, "linkat": 265, "symlink": 88, "symlinkat": 266, "chmod": 90, "fchmod": 91,
    "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260,
    "truncate": 76, "ftruncate": 77, "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261,
    "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
    "fremovexattr": 199, "name_to_handle_at": 303, "open_by_handle_at": 304,
    # memory that could hold code written by the program
    "memfd_create": 319, "memfd_secret": 447,
    # the system: mounts, namespaces, modules, io_uring (which bypasses seccomp), IPC
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "bpf": 321, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
    "request_key": 249, "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "personality": 135,
    "quotactl": 179, "fanotify_init": 300, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "shmget": 29, "semget": 64, "msgget": 68, "mq_open": 240,
}  # fmt: skip


@functools.cache
def seccomp_filter() -> bytes | None:
    """A classic-BPF seccomp program refusing `_DENIED_SYSCALLS` and the rules below; None off x86_64."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return None
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, ...
    allow, deny, kill = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    prot_exec, map_anonymous, at_empty_path = 0x4, 0x20, 0x1000

    def arg(i: int) -> int:  # struct seccomp_data: nr @0, arch @4, args[i] @16+8i (low word first)
        return 16 + 8 * i

    # (label, code, jump if true, jump if false, k)
    program = [
        (None, ld, 0, 0, 4),
        (None, jeq, 1, 0, 0xC000003E),  # AUDIT_ARCH_X86_64: any other ABI (int 0x80) is killed
        (None, ret, 0, 0, kill),
        (None, ld, 0, 0, 0),
        (None, jge, "deny", 0, 0x40000000),  # the x32 ABI
        (None, jeq, "open", 0, 2),
        (None, jeq, "openat", 0, 257),
        (None, jeq, "mmap", 0, 9),
        (None, jeq, "mprotect", 0, 10),
        (None, jeq, "mprotect", 0, 329),  # pkey_mprotect
        (None, jeq, "execveat", 0, 322),
        (None, jeq, "prlimit64", 0, 302),
        *((None, jeq, "deny", 0, nr) for nr in sorted(_DENIED_SYSCALLS.values())),
        (None, ret, 0, 0, allow),
        ("open", ld, 0, 0, arg(1)),  # open(path, flags)
        (None, jset, "deny", "allow", writes),
        ("openat", ld, 0, 0, arg(2)),  # openat(dirfd, path, flags)
        (None, jset, "deny", "allow", writes),
        ("mmap", ld, 0, 0, arg(2)),  # mmap(addr, length, prot, flags, fd, offset): code only from a file
        (None, jset, 0, "allow", prot_exec),
        (None, ld, 0, 0, arg(3)),
        (None, jset, "deny", "allow", map_anonymous),
        ("mprotect", ld, 0, 0, arg(2)),  # mprotect(addr, length, prot): nothing becomes code later
        (None, jset, "deny", "allow", prot_exec),
        ("prlimit64", ld, 0, 0, arg(0)),  # prlimit64(pid, ...): its own limits only (pid 0, as glibc asks)
        (None, jeq, 0, "deny", 0),
        (None, ld, 0, 0, arg(0) + 4),
        (None, jeq, "allow", "deny", 0),
        ("execveat", ld, 0, 0, arg(0)),  # execveat(dirfd, path, argv, envp, flags): stage 1's exec only
        (None, jeq, 0, "deny", EXEC_FD),
        (None, ld, 0, 0, arg(4)),
        (None, jeq, "allow", "deny", at_empty_path),
        ("allow", ret, 0, 0, allow),  # BPF jumps only forward, so the verdicts come last
        ("deny", ret, 0, 0, deny),
    ]
    where = {label: i for i, (label, *_) in enumerate(program) if label}
    code = bytearray()
    for i, (_, op, jt, jf, k) in enumerate(program):
        jt, jf = (where[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        code += struct.pack("=HBBI", op, jt, jf, k)
    return bytes(code)


@dataclass(frozen=True)
class Confinement:
    """What Landlock lets the program read, found by a probe interpreter; empty where there is no Landlock."""

    executable: str
    """The interpreter's real path (no venv symlink: a venv's pyvenv.cfg is not readable)."""
    abi: int
    """The kernel's Landlock ABI version; 0 where it has none (or a container's seccomp hides it)."""
    mapped: tuple[str, ...] = ()
    """Files the interpreter maps (itself, its shared libraries, the locale): read and execute."""
    modules: tuple[str, ...] = ()
    """Module sources and caches of the standard library's PREIMPORTABLE modules and codecs: read."""
    codecs: frozenset[str] = frozenset()
    """The modules of `CODEC_PACKAGE` that import on this machine (`cp1252`, `latin_1`, ...)."""
    folders: tuple[str, ...] = ()
    """The standard library's folders (its `sys.path`): listing names only, beneath each."""


@functools.cache
def confinement(executable: str) -> Confinement:
    """The allow-list for programs run by `executable`, probed once per scorer process.

    Raises:
        OSError: when the probe interpreter cannot be started or fails (then no program could run either).
    """
    real = os.path.realpath(executable)
    names = sorted(PREIMPORTABLE | set(LAZY_IMPORTS.values()) | set(NON_ASCII_IMPORTS))
    source = textwrap.dedent(inspect.getsource(_probe)) + "\n_probe()\n"
    done = subprocess.run(
        [real, *INTERPRETER_FLAGS, "-c", source, ",".join(names), CODEC_PACKAGE],
        capture_output=True,
        text=True,
        env={},
        cwd="/",
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise OSError(
            f"the sandbox's probe interpreter failed: {(done.stderr.strip() or '?').splitlines()[-1]}"
        )
    found = json.loads(done.stdout)
    return Confinement(
        executable=real,
        abi=max(0, found["abi"]),
        mapped=tuple(found["mapped"]),
        modules=tuple(found["modules"]),
        folders=tuple(found["folders"]),
        codecs=frozenset(found["codecs"]),
    )


@functools.cache
def landlock_ruleset(allowed: Confinement) -> int:
    """A Landlock ruleset fd built once here, in the trusted scorer; each child's stage 1 only restricts
    itself with it (rules are copied into the child's domain then: nothing done to the fd later counts).

    It handles every access right of the kernel's ABI and allows: reading and executing the mapped files,
    reading the modules, listing names beneath the folders. -1 where the kernel has no Landlock.

    Raises:
        OSError: when the kernel refuses the ruleset or a rule.
    """
    if allowed.abi < 1:
        return -1
    import ctypes  # the scorer's own code: the program never runs in this process

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi, word = allowed.abi, ctypes.c_long

    def call(nr: int, *args, what: str) -> int:
        result = libc.syscall(word(nr), *args)
        if result < 0:
            raise OSError(ctypes.get_errno(), f"{what} failed")
        return result

    fs = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)  # REFER, TRUNCATE
    fs |= 1 << 15 if abi >= 5 else 0  # IOCTL_DEV
    # struct landlock_ruleset_attr {u64 handled_access_fs, handled_access_net, scoped}: its size says
    # which fields the kernel reads. Net (ABI 4): TCP bind and connect, none allowed. Scoped (ABI 6):
    # abstract unix sockets and signals to processes outside the domain.
    attr = (ctypes.c_uint64 * 3)(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = call(444, ctypes.byref(attr), word(size), word(0), what="landlock_create_ruleset")

    class PathBeneath(ctypes.Structure):  # struct landlock_path_beneath_attr, packed
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    execute, read_file, read_dir = 1 << 0, 1 << 2, 1 << 3
    for access, paths in (
        (read_file | execute, allowed.mapped),
        (read_file, allowed.modules),
        (read_dir, allowed.folders),
    ):
        for path in paths:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = PathBeneath(access, fd)
                call(
                    445, word(ruleset), word(1), ctypes.byref(rule), word(0), what=f"landlock_add_rule {path}"
                )
            finally:
                os.close(fd)
    return ruleset


@functools.cache
def warn_missing_layers(abi: int, seccomp: bool) -> None:
    """Say once, loudly, which kernel layer this machine lacks and what is then weaker (docs/sandbox.md)."""
    if abi < 1:
        warnings.warn(
            "SANDBOX: this kernel has no Landlock (Linux >= 5.13 with landlock in CONFIG_LSM): generated "
            "programs can read every file their uid can read, and load any native extension it can read; "
            "only the audit hook (a Python-level layer) stops that. See docs/sandbox.md.",
            RuntimeWarning,
            stacklevel=3,
        )
    if not seccomp:
        warnings.warn(
            "SANDBOX: no seccomp filter on this platform (it is built for Linux x86_64): sockets, fork, "
            "signals, writes, exec and executable memory are refused by the audit hook and the uid drop "
            "alone. See docs/sandbox.md.",
            RuntimeWarning,
            stacklevel=3,
        )


def _probe() -> None:  # pragma: no cover - runs in the probe interpreter
    """Import every PREIMPORTABLE module and every codec, then print what the interpreter read and maps, and
    which codecs imported, as JSON."""
    import json
    import os
    import sys

    for name in sys.argv[1].split(","):
        __import__(name)
    package, codecs = __import__(sys.argv[2]), []
    for file in sorted(os.listdir(package.__path__[0])):
        codec = file.removesuffix(".py")
        try:
            if codec != file and codec != "__init__":
                __import__(f"{package.__name__}.{codec}")
                codecs.append(codec)
        except ImportError:  # another platform's (mbcs, oem on Linux)
            pass
    modules = set()
    for module in list(sys.modules.values()):
        for attr in ("__file__", "__cached__"):
            path = getattr(module, attr, None)
            if isinstance(path, str) and os.path.isfile(path):
                modules.add(os.path.realpath(path))
    with open("/proc/self/maps") as maps:
        fields = (line.split(None, 5) for line in maps)
        mapped = {f[5].strip() for f in fields if len(f) == 6 and f[5].startswith("/")}
    mapped = {os.path.realpath(p) for p in mapped if os.path.isfile(p)}
    folders = {os.path.realpath(p) for p in sys.path if os.path.isdir(p)}
    import ctypes  # only now: its own files are not the program's

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1))  # ..._VERSION
    print(
        json.dumps(
            {
                "abi": abi,
                "mapped": sorted(mapped),
                "modules": sorted(modules - mapped),
                "folders": sorted(folders),
                "codecs": sorted(codecs),
            }
        )
    )
