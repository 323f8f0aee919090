"""The sandboxed child's two stages, run as `python -I -S -c <function source> key=value...`.

Stage 1 (trusted, unconfined, ctypes loaded) forks. Its parent half stays behind as the *watcher*: the
scorer's direct child, it waits for the program and passes its exit status on, and if the scorer dies by any
signal (SIGKILL included) it SIGKILLs the program and its process group: the uid drop in stage 2 clears the
program's own parent-death signal, and the program can cancel any timer of its own. Its child half sets the
rlimits, Landlock and seccomp, then execs stage 2 through `EXEC_FD`, so ctypes (a raw-memory toolkit that
could disarm the hook) is never loaded where the program runs and nothing after the exec can loosen them.

Stage 2 reads the program from a nameless file, imports the modules the program names (trusted code, while
the standard library is still readable: a Python under /root is not readable by `nobody`), drops to the
unprivileged uid, installs the audit hook, says `ready` and runs the program.

The stages see no module globals: they import what they need and take their settings as arguments.
"""

from __future__ import annotations

import functools
import inspect
import textwrap


@functools.cache
def child_sources() -> tuple[str, str]:
    """The two stages' `-c` programs: each function's source, then a call of it."""
    return tuple(textwrap.dedent(inspect.getsource(f)) + f"\n{f.__name__}()\n" for f in (_stage1, _stage2))


def _stage1() -> None:  # pragma: no cover - runs in the child
    """Fork the watcher; in the child, lock the process down with the kernel and exec stage 2.

    It calls the kernel through `_ctypes` alone: the `ctypes` package costs ~8 ms of CPU to import, more
    than the whole sandbox adds, and every program pays it."""
    import _ctypes
    import _signal
    import os
    import sys

    stage2, *settings = sys.argv[1:]
    cfg = dict(arg.split("=", 1) for arg in settings)
    setup_fd, scorer, ruleset = int(cfg["setup_fd"]), int(cfg["parent"]), int(cfg["landlock_fd"])

    class Word(_ctypes._SimpleCData):  # a C long: every argument and result below
        _type_ = "l"

    class Int(_ctypes._SimpleCData):  # what prctl and setrlimit return (syscall returns a long)
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    class LongFunction(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Word

    class Process:  # what CFuncPtr((name, library)) reads: the dlopen handle of this executable
        _handle = _ctypes.dlopen(None, 0)

    def call(name: str, *args: int, what: str) -> int:
        """libc's `name` on word arguments (ints or addresses); OSError with errno on a result < 0."""
        kind = LongFunction if name == "syscall" else Function
        result = kind((name, Process))(*(Word(a) for a in args))
        if result < 0:
            raise OSError(_ctypes.get_errno(), f"{what} failed")
        return result

    def words(*values: int):
        array = type("Words", (_ctypes.Array,), {"_type_": Word, "_length_": len(values)})(*values)
        return array, _ctypes.addressof(array)  # keep the array alive while its address is in use

    def setrlimit(resource: int, soft: int, hard: int) -> None:
        limit, address = words(soft, hard)  # struct rlimit {rlim_t cur, max}
        call("setrlimit", resource, address, what=f"setrlimit {resource}")

    def prctl(name: str, *args: int) -> None:
        call("prctl", *args, *[0] * (5 - len(args)), what=f"prctl {name}")

    # The scorer's resource module names the limits: resource:soft:hard, the core-dump limit first.
    rlimits = [tuple(map(int, item.split(":"))) for item in cfg["rlimits"].split(",")]

    child = None

    def scorer_died(signum, frame) -> None:  # the watcher's parent-death signal, SIGTERM
        if child is not None:
            os.kill(child, 9)
            os.waitpid(child, 0)
        os.killpg(0, 9)  # anything else in the group, and the watcher itself

    def watch() -> None:
        """The watcher: wait for the program and die as it died (its exit code or its signal)."""
        os.closerange(0, 1 << 20)  # the setup pipe's EOF must come from the program alone
        status = os.waitpid(child, 0)[1]
        code = os.waitstatus_to_exitcode(status)
        if code < 0:  # killed by a signal: die of the same one, so that the scorer sees it
            setrlimit(rlimits[0][0], 0, 0)  # RLIMIT_CORE: no core dump of the watcher
            _signal.signal(-code, _signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)

    try:
        # No new privileges: needed for seccomp and Landlock unprivileged; an exec gains nothing.
        prctl("PR_SET_NO_NEW_PRIVS", 38, 1)
        # The watcher is told of the scorer's death by a catchable signal: it must live to kill the program.
        _signal.signal(_signal.SIGTERM, scorer_died)
        prctl("PR_SET_PDEATHSIG", 1, _signal.SIGTERM)
        if os.getppid() != scorer:
            os._exit(70)  # it died before the line above
        watcher = os.getpid()
        child = os.fork()
        if child:
            watch()
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        prctl("PR_SET_PDEATHSIG", 1, 9)  # the program dies with its watcher (until the uid drop)
        if os.getppid() != watcher:
            os._exit(70)
        exe = os.open(cfg["executable"], os.O_PATH | os.O_CLOEXEC)
        os.dup2(exe, int(cfg["exec_fd"]), inheritable=False)  # before RLIMIT_NOFILE puts it out of reach
        os.close(exe)
        for resource, soft, hard in rlimits:
            setrlimit(resource, soft, hard)
        if ruleset >= 0:  # built once by the scorer (sandbox_policy.landlock_ruleset)
            call("syscall", 446, ruleset, 0, what="landlock_restrict_self")  # same number on every arch
            os.close(ruleset)
        if cfg["seccomp"]:
            code = bytes.fromhex(cfg["seccomp"])
            buffer = type("Filter", (_ctypes.Array,), {"_type_": Word, "_length_": len(code) // 8})
            program = buffer.from_buffer_copy(code)
            # struct sock_fprog {u16 len; (padding); sock_filter *filter} as two words on x86_64
            fprog, address = words(len(code) // 8, _ctypes.addressof(program))
            prctl("PR_SET_SECCOMP", 22, 2, address)  # SECCOMP_MODE_FILTER
        argv = [cfg["executable"], *cfg["flags"].split(), "-c", stage2, *settings]
        os.execve(int(cfg["exec_fd"]), argv, {})  # execveat(EXEC_FD, "", ..., AT_EMPTY_PATH)
    except BaseException as exc:
        os.write(setup_fd, f"error: {type(exc).__name__}: {exc}\n".encode("utf-8", "replace"))
        os._exit(70)


def _stage2() -> None:  # pragma: no cover - runs in the child
    """The preimports, the uid drop and the audit hook; then say 'ready' on the setup pipe and run the program."""
    import _signal
    import builtins
    import os
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
        globals and builtins), and on the program's objects it only asks `type(x) is str` (or int, or
        function): a str subclass, a path-like or anything else is refused before any of its methods (repr,
        ==, hash, slicing, __fspath__) could run. It also refuses any change to its own attributes."""
        imports = frozenset(
            "ctypes _ctypes _posixsubprocess subprocess multiprocessing _multiprocessing _posixshmem "
            "socket _socket ssl _ssl pty termios fcntl mmap resource readline _sqlite3 sqlite3 dbm _dbm "
            "_gdbm tkinter _tkinter _xxsubinterpreters _xxinterpchannels _testcapi _testinternalcapi "
            "_testbuffer _testmultiphase _testsinglephase _testimportmultiple _testclinic _ctypes_test "
            "_cffi_backend cffi".split()
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
            _type=type, _str=str, _int=int, _tuple=tuple, _repr=repr, _function=function, _write=write,
            _exit=exit_now, _fd=status_fd, _own_code=None,
        ):  # fmt: skip
            # `event` is always an exact str (CPython builds it from a C string); `args` a tuple.
            why, path, flags = None, None, 0  # path: a file it reads, or an extension module it loads
            if _type(args) is not _tuple:
                why = event + " with odd arguments"
            elif event == "open" or event == "os.listdir" or event == "os.scandir":
                path, flags = args[0], (args[2] if event == "open" else 0)
                if _type(path) is _int and event == "open" and path in (0, 1, 2):
                    path = None  # stdin, stdout, stderr
                elif path is None:
                    path = "."
                if _type(path) is not _str and path is not None:
                    why, path = event + " of a path that is not a str", None
                elif _type(flags) is not _int:
                    why, path = event + " with flags that are not an int", None
            elif event == "import":
                name, path = args[0], args[1]  # path: None, or the shared library of an extension
                if _type(name) is not _str or (path is not None and _type(path) is not _str):
                    why, path = "import of a name or file that is not a str", None
                elif name.partition(".")[0] in _imports or name.rpartition(".")[2] in _imports:
                    why = "import " + name
            elif event == "object.__setattr__" or event == "object.__delattr__":
                if _type(args[0]) is _function and args[0].__code__ is _own_code:
                    why = event + " on the audit hook"
            elif event.startswith(_events):
                why = event
            if why is None and path is not None:  # here `path` is an exact str and `flags` an int
                if (
                    flags & _writes
                    or not (
                        (
                            "/.." not in path
                            and "/site-packages" not in path  # not the stdlib: numpy could rewrite memory
                            and "/dist-packages" not in path
                            and (path in _roots or path.startswith(_under))
                        )
                        # a SyntaxError looks for its line in a file named '<program>' or '<string>': none
                        or (event == "open" and path[:1] == "<" and path[-1:] == ">" and "/" not in path)
                    )
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
        program_fd = int(cfg["program_fd"])
        chunks = []
        while chunk := os.pread(program_fd, 1 << 20, sum(map(len, chunks))):
            chunks.append(chunk)
        os.close(program_fd)
        source = b"".join(chunks)
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
        if cfg["hook"] == "1":
            sys.addaudithook(make_hook(roots))
        # A timer of its own as well (SIGALRM ends it): the watcher and the scorer do not depend on it.
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
