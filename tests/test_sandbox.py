"""The sandbox against hostile programs: each attack fails with a clear result and leaves nothing behind.

Most tests go through the public API with every layer on. The `_Layers` tests switch the other layers off
to prove that one layer (uid drop + RLIMIT_NPROC, seccomp, killing the process group) binds on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainables.scoring import sandbox
from trainables.scoring.sandbox import ProgramResult, SandboxError, SandboxLimits, run_program, run_programs

FAST = SandboxLimits(wall_seconds=1.0)
PRINT_PID = "import os; print(os.getpid(), flush=True)\n"
ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's layers and /proc are Linux")
needs_root = pytest.mark.skipif(not ROOT, reason="the uid drop only happens when the tests run as root")
needs_seccomp = pytest.mark.skipif(sandbox._seccomp_filter() is None, reason="seccomp layer is Linux x86_64")


def _stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): state, ppid, pgrp, session, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _alive(pid: int | str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie holds nothing but its pid


def _survivors(*, session: int, timeout: float = 3.0) -> list[int]:
    """Live processes of a session once SIGKILL has had up to `timeout` seconds to land."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [
            int(p) for p in os.listdir("/proc") if p.isdigit() and _alive(p) and int(_stat(p)[3]) == session
        ]
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)


def _run_hostile(program: str, limits: SandboxLimits = FAST) -> ProgramResult:
    """Run `program` after it prints its pid, and check that nothing of its session survives."""
    result = run_program(PRINT_PID + program, limits)
    assert _survivors(session=int(result.stdout.split()[0])) == []
    return result


def test_a_normal_program_runs_and_prints_its_answer():
    result = run_program("a = 48 / 2; b = a + 48; print(b)")
    assert result == ProgramResult(ok=True, stdout="72.0\n", error=None, seconds=result.seconds)
    assert 0 < result.seconds < 2.0


def test_modules_are_importable_even_unprivileged():
    program = (
        "import math, statistics\nfrom fractions import Fraction\nimport datetime as dt\n"
        "from collections import namedtuple\nP = namedtuple('P', 'x y', defaults=[0])\n"
        "print(math.sqrt(16), Fraction(1, 3) * 3, statistics.mean([1, 2, 6]), "
        "dt.datetime.strptime('2024-03-01', '%Y-%m-%d').month, P(1))"
    )
    assert run_program(program).stdout == "4.0 1 3 3 P(x=1, y=0)\n"


def test_unicode_output_is_kept():
    assert run_program("print('72 €, ü')").stdout == "72 €, ü\n"


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("x = 1 / 0", "exit 1: ZeroDivisionError: division by zero"),
        ("print(", "exit 1: SyntaxError: '(' was never closed (<program>, line 1)"),
        ("raise ValueError('no\\nanswer')", "exit 1: ValueError: no answer"),
        ("import sys; sys.exit(3)", "exit 3"),
        ("import sys; sys.exit('bye')", "exit 1: SystemExit: bye"),
        ("import no_such_module", "exit 1: ModuleNotFoundError: No module named 'no_such_module'"),
        ("input()", "exit 1: EOFError: EOF when reading a line"),
    ],
)
def test_a_failing_program_says_why_in_one_line(program, error):
    result = run_program(program, FAST)
    assert (result.ok, result.error) == (False, error)


def test_exit_zero_is_success_and_output_before_a_crash_is_kept():
    assert run_program("print(1); exit(0)").ok
    result = run_program("print(1)\n1 / 0")
    assert (result.ok, result.stdout) == (False, "1\n")


def test_an_infinite_loop_times_out_quickly_and_its_process_is_gone():
    start = time.perf_counter()
    result = _run_hostile("while True: pass", SandboxLimits(wall_seconds=0.3))
    assert result.error == "timeout after 0.3s" and not result.ok
    assert time.perf_counter() - start < 2.0 and result.seconds < 1.0


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("while True: os.fork()", "blocked: os.fork"),
        ("os.system('sleep 30 &')", "blocked: os.system"),
        ("import subprocess; subprocess.Popen(['sleep', '30'])", "blocked: import subprocess"),
        ("os.posix_spawn('/bin/sleep', ['sleep', '30'], {})", "blocked: os.posix_spawn"),
        ("os.execv('/bin/sleep', ['sleep', '30'])", "blocked: os.exec"),
        ("import multiprocessing", "blocked: import multiprocessing"),
        # Python 3.11 has no audit event for a new thread: the kernel (seccomp, RLIMIT_NPROC) refuses it.
        (
            "import _thread; _thread.start_new_thread(print, ())",
            "exit 1: RuntimeError: can't start new thread",
        ),
        ("os.kill(os.getppid(), 9)", "blocked: os.kill"),
    ],
)
def test_new_processes_and_signals_are_blocked_and_nothing_survives(program, error):
    result = _run_hostile(program)
    assert (result.ok, result.error) == (False, error)


@pytest.mark.parametrize(
    "program",
    ["x = bytearray(10**10)", "chunks = []\nwhile True: chunks.append(bytearray(10**6))"],
)
def test_allocating_without_end_is_a_memory_error(program):
    result = run_program(program, SandboxLimits(wall_seconds=2.0, memory_mb=64))
    assert (result.ok, result.error) == (False, "memory limit")


def test_a_refused_allocation_can_be_caught_by_the_program():
    # Catching MemoryError is the program's business; what matters is that the allocation never happened.
    program = "try:\n    x = bytearray(10**10)\nexcept MemoryError:\n    print('refused')"
    assert run_program(program, SandboxLimits(memory_mb=64)).stdout == "refused\n"


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_writing_a_file_is_blocked_and_creates_nothing(tmp_path, where):
    target = str(tmp_path / "x.txt") if where == "absolute" else "x.txt"
    result = run_program(f"open({target!r}, 'w').write('hi')", FAST)
    assert result.error == f"blocked: open {target!r}"
    assert not (tmp_path / "x.txt").exists()


def test_a_fifo_cannot_be_made_even_though_no_audit_event_covers_it(tmp_path):
    result = run_program(f"import os; os.mkfifo({str(tmp_path / 'fifo')!r})", FAST)
    assert result.error.startswith("exit 1: PermissionError")
    assert not (tmp_path / "fifo").exists()


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("print(open('/etc/passwd').read())", "blocked: open '/etc/passwd'"),
        ("open('/proc/self/environ', 'rb').read()", "blocked: open '/proc/self/environ'"),
        ("print(open('program.py').read())", "blocked: open 'program.py'"),
        ("import os; os.listdir('/')", "blocked: os.listdir '/'"),
        ("import os; os.listdir()", "blocked: os.listdir '.'"),
        ("import os; os.chdir('/')", "blocked: os.chdir"),
        ("import os; os.remove('program.py')", "blocked: os.remove"),
    ],
)
def test_reading_and_changing_the_file_system_is_blocked(program, error):
    assert run_program(program, FAST).error == error


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("import socket; socket.create_connection(('127.0.0.1', 22))", "blocked: import socket"),
        ("s = __import__('_socket').socket(); s.connect(('127.0.0.1', 22))", "blocked: import _socket"),
    ],
)
def test_the_network_is_blocked(program, error):
    assert run_program(program, FAST).error == error


@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("import ctypes; ctypes.CDLL(None).system(b'id')", "blocked: import ctypes"),
        ("__import__('_ctypes')", "blocked: import _ctypes"),
        ("__import__('_posixsubprocess')", "blocked: import _posixsubprocess"),
        (  # a classic escape: find os.system through object's subclasses, without importing anything
            "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
            ".__init__.__globals__['system']('id')",
            "blocked: os.system",
        ),
        ("import gc; gc.get_objects()", "blocked: gc.get_objects"),
        ("import sys; sys.addaudithook(lambda *a: None)", "blocked: sys.addaudithook"),
        ("import sys; sys.settrace(lambda *a: None)", "blocked: sys.settrace"),
        ("(lambda: 0).__code__.replace(co_consts=())", "blocked: code.__new__"),
        (
            "import builtins; builtins.type = lambda x: str\nopen('/etc/passwd')",
            "blocked: open '/etc/passwd'",
        ),
        (
            "try:\n    open('/etc/passwd')\nexcept BaseException:\n    print('escaped')",
            "blocked: open '/etc/passwd'",
        ),
    ],
)
def test_escape_tricks_are_blocked(program, error):
    result = run_program(program, FAST)
    assert (result.error, result.stdout) == (error, "")


def test_loading_ctypes_under_another_route_is_blocked():
    import _ctypes

    program = (
        "import _imp, sys\n"
        f"spec = sys.modules['_frozen_importlib'].ModuleSpec('_ctypes', None, origin={_ctypes.__file__!r})\n"
        "_imp.create_dynamic(spec)"
    )
    assert run_program(program, FAST).error == "blocked: import _ctypes"


def test_extension_modules_from_outside_the_standard_library_are_blocked():
    numpy = pytest.importorskip("numpy")  # numpy arrays over raw addresses could rewrite the hook
    so = next(Path(numpy.__file__).parent.glob("*core/_multiarray_umath*.so"))
    program = (
        "import _imp, sys\n"
        f"spec = sys.modules['_frozen_importlib'].ModuleSpec('_multiarray_umath', None, origin={str(so)!r})\n"
        "_imp.create_dynamic(spec)"
    )
    assert run_program(program, FAST).error == f"blocked: import {str(so)!r}"


def test_printing_megabytes_stops_at_the_output_cap():
    result = run_program("print('x' * 10_000_000)")
    assert result.error == "output over 65536 bytes"
    assert result.stdout == "x" * 65536


def test_printing_forever_stops_at_the_output_cap_not_the_timeout():
    result = run_program("while True: print('spam')", SandboxLimits(wall_seconds=5.0, max_output_bytes=1000))
    assert result.error == "output over 1000 bytes" and result.seconds < 2.0
    assert len(result.stdout) == 1000


def test_output_up_to_the_cap_is_fine():
    limits = SandboxLimits(max_output_bytes=10)
    assert run_program("print('x' * 9)", limits).ok
    assert run_program("print('x' * 10)", limits).error == "output over 10 bytes"


@needs_root
def test_the_program_runs_as_nobody_when_we_are_root():
    result = run_program("import os; print(os.getresuid(), os.getresgid(), os.getgroups())")
    assert result.stdout == "(65534, 65534, 65534) (65534, 65534, 65534) []\n"
    other = run_program("import os; print(os.getuid(), os.getgid())", SandboxLimits(unprivileged_uid=4242))
    assert other.stdout == "4242 4242\n"


def test_uid_drop_and_nproc_alone_stop_a_fork():
    # Audit hook and seccomp off: RLIMIT_NPROC=1 is what refuses, and as root only after the uid drop.
    layers = sandbox._Layers(audit_hook=False, seccomp=False, landlock=False)
    result = sandbox._run_one("import os; os.fork()", FAST, layers)
    assert result.error == "exit 1: BlockingIOError: [Errno 11] Resource temporarily unavailable"


@needs_root
def test_file_permissions_alone_bind_after_the_uid_drop(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    layers = sandbox._Layers(audit_hook=False, seccomp=False, landlock=False)
    result = sandbox._run_one(f"print(open({str(secret)!r}).read())", FAST, layers)
    assert result.error == f"exit 1: PermissionError: [Errno 13] Permission denied: {str(secret)!r}"


@needs_seccomp
@pytest.mark.parametrize(
    ("program", "error"),
    [
        ("import socket; socket.socket()", "PermissionError: [Errno 1] Operation not permitted"),
        ("import os; os.fork()", "PermissionError: [Errno 1] Operation not permitted"),
        (
            "import os; os.chmod('{dir}', 0o777)",
            "PermissionError: [Errno 1] Operation not permitted: '{dir}'",
        ),
        ("import os; os.kill(os.getppid(), 0)", "PermissionError: [Errno 1] Operation not permitted"),
        ("import os; os.mkfifo('{dir}/fifo')", "PermissionError: [Errno 1] Operation not permitted"),
        ("open('{dir}/file', 'w')", "PermissionError: [Errno 1] Operation not permitted: '{dir}/file'"),
        ("open('{dir}/file', 'a')", "PermissionError: [Errno 1] Operation not permitted: '{dir}/file'"),
    ],
)
def test_seccomp_alone_binds_even_as_root(tmp_path, program, error):
    # Audit hook and Landlock off, no uid drop, no RLIMIT_NPROC: as root, only the seccomp filter is left.
    layers = sandbox._Layers(audit_hook=False, drop_privileges=False, max_processes=None, landlock=False)
    result = sandbox._run_one(program.format(dir=tmp_path), FAST, layers)
    assert result.error == "exit 1: " + error.format(dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_seccomp_leaves_reading_and_computing_alone():
    layers = sandbox._Layers(audit_hook=False, drop_privileges=False, landlock=False)
    result = sandbox._run_one(
        "import json\nprint(len(open('/etc/passwd').read()) > 0, json.dumps(6 * 7))", FAST, layers
    )
    assert result.stdout == "True 42\n"


GRANDCHILD = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    if os.fork() == 0:\n"  # a double fork: the grandchild is not our child
    "        time.sleep(60)\n"
    "    os._exit(0)\n"
    "time.sleep(0.1)\n"
    "print(os.getpid(), flush=True)\n"
)


@pytest.mark.parametrize("ending", ["", "while True: pass"], ids=["after-exit", "after-timeout"])
def test_a_background_grandchild_dies_with_the_program(ending):
    # Every layer that stops fork is off, so only killing the process group is left.
    layers = sandbox._Layers(audit_hook=False, seccomp=False, max_processes=None, landlock=False)
    result = sandbox._run_one(GRANDCHILD + ending, SandboxLimits(wall_seconds=0.3), layers)
    assert result.ok == (ending == "")
    assert _survivors(session=int(result.stdout)) == []


def test_the_program_dies_with_the_evaluating_process(tmp_path):
    # A helper process runs a sleeping program (no CPU limit to hit, a wall limit far beyond the test) and
    # is SIGKILLed. The watcher between them (the helper's child, the program's parent) kills the program,
    # root or not (test_sandbox_confinement.py also has it ignore and cancel its own timer).
    code = "from trainables.scoring.sandbox import *; run_program('import time; time.sleep(60)', SandboxLimits(60.0))"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    helper = subprocess.Popen([sys.executable, "-c", code], cwd=Path(sandbox.__file__).parents[2], env=env)
    try:
        deadline, program = time.monotonic() + 10.0, None
        while not (program and _asleep(program)) and time.monotonic() < deadline:
            procs = {p: (_stat(p) or ["", ""])[1] for p in os.listdir("/proc") if p.isdigit()}
            watchers = {p for p, parent in procs.items() if parent == str(helper.pid)}
            pids = [p for p, parent in procs.items() if parent in watchers]
            program = next((int(p) for p in pids if b"def _stage2" in _cmdline(p)), None)
            time.sleep(0.01)
        assert program and _asleep(program), "the helper's program never got to its sleep"
    finally:
        helper.send_signal(signal.SIGKILL)
        helper.wait()
    deadline = time.monotonic() + 3.0
    while _alive(program) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(program)
    assert list(tmp_path.iterdir()) == []  # nameless files only: nothing left for a killed scorer


def _asleep(pid: int) -> bool:
    """Whether the program is past its setup (so past the uid drop when root) and sleeping."""
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except OSError:
        return False
    dropped = not ROOT or status["Uid"].split()[0] == "65534"
    return dropped and status["State"].split()[0] == "S"


def _cmdline(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("n", [10, pytest.param(50, marks=pytest.mark.slow)])
def test_many_programs_run_in_parallel_and_keep_their_order(n):
    programs = [f"print({i} * {i})" for i in range(n)]
    programs[3] = "1 / 0"
    programs[7] = "import os; os.fork()"
    results = run_programs(programs, FAST, max_workers=4)
    assert [r.stdout for r in results] == [f"{i * i}\n" if i not in (3, 7) else "" for i in range(n)]
    assert [r.error for r in results[:8]] == [None] * 3 + [
        "exit 1: ZeroDivisionError: division by zero",
        *[None] * 3,
        "blocked: os.fork",
    ]


def test_run_programs_checks_its_arguments():
    assert run_programs([]) == []
    with pytest.raises(TypeError, match="not a single string"):
        run_programs("print(1)")
    with pytest.raises(TypeError, match=r"sources\[1\] must be a str, got int"):
        run_programs(["print(1)", 2])
    with pytest.raises(ValueError, match="max_workers must be a positive int or None, got 0"):
        run_programs(["print(1)"], max_workers=0)
    with pytest.raises(TypeError, match="source must be a str, got bytes"):
        run_program(b"print(1)")
    with pytest.raises(TypeError, match="limits must be a SandboxLimits, got dict"):
        run_programs(["print(1)"], {"wall_seconds": 1})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wall_seconds", 0),
        ("wall_seconds", float("nan")),
        ("wall_seconds", "2"),
        ("memory_mb", 16),
        ("memory_mb", 256.0),
        ("max_output_bytes", 0),
        ("max_output_bytes", True),
        ("unprivileged_uid", 0),
        ("max_source_bytes", 0),
        ("max_source_bytes", (64 << 20) + 1),  # over a quarter of the default 256 MiB
    ],
)
def test_bad_limits_name_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"{field} must be .*got {value!r}"):
        SandboxLimits(**{field: value})


def test_a_source_that_is_not_utf8_is_a_failed_result():
    result = run_program("print('\ud800')")
    assert not result.ok and result.error.startswith("source is not valid UTF-8")


def test_a_sandbox_that_cannot_lock_down_raises(monkeypatch):
    monkeypatch.setattr(sandbox, "_seccomp_filter", lambda: b"\0" * 8)  # a BPF program without a return
    with pytest.raises(
        SandboxError, match=r"sandbox setup failed: OSError: \[Errno 22\] prctl PR_SET_SECCOMP failed"
    ):
        run_program("print(1)")


def test_a_missing_interpreter_raises(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    with pytest.raises(SandboxError, match="cannot start '/nonexistent/python3'"):
        run_program("print(1)")


def test_waiting_works_without_pidfd(monkeypatch):
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    assert run_program("print(2)").stdout == "2\n"
    assert run_program("while True: pass", SandboxLimits(wall_seconds=0.2)).error == "timeout after 0.2s"


def test_preimports_are_the_listed_modules_the_source_names():
    source = "import math\nfrom collections.abc import Sequence\nx = statistics_like = os.path\ntime.strptime"
    expected = ["_strptime", "abc", "collections", "collections.abc", "heapq", "math", "time"]  # abc: a part
    assert sandbox._preimports(source) == expected


@needs_seccomp
def test_a_program_cannot_change_the_scheduling_of_another_process_of_its_uid():
    # Every program runs as nobody when we are root (as our own uid otherwise), and so may a process
    # outside the sandbox: a sibling program, a daemon. Its nice value, affinity and scheduler stay.
    who = {"user": 65534, "group": 65534} if ROOT else {}
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True, **who)
    try:
        pid = victim.pid

        def seen() -> tuple:
            return os.getpriority(os.PRIO_PROCESS, pid), os.sched_getaffinity(pid), os.sched_getscheduler(pid)

        before = seen()
        target = {max(before[1])} if len(before[1]) > 1 else before[1]
        program = (
            f"import os\npid = {pid}\n"
            "calls = {\n"
            "    'nice': lambda: os.setpriority(os.PRIO_PROCESS, pid, 19),\n"
            f"    'affinity': lambda: os.sched_setaffinity(pid, {target!r}),\n"
            "    'scheduler': lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0)),\n"
            "    'param': lambda: os.sched_setparam(pid, os.sched_param(0)),\n"
            "}\n"
            "for name, call in calls.items():\n"
            "    try:\n"
            "        call()\n"
            "        print(name, 'changed')\n"
            "    except OSError as exc:\n"
            "        print(name, exc.strerror)\n"
        )
        result = run_program(program, FAST)
        assert seen() == before
        assert result.stdout.splitlines() == [
            f"{name} Operation not permitted" for name in ("nice", "affinity", "scheduler", "param")
        ]
    finally:
        victim.kill()
        victim.wait()


@needs_seccomp
@pytest.mark.parametrize(
    "program",
    ["os.fsync(1)", "os.fdatasync(1)", "os.uname()", "os.setpriority(os.PRIO_PROCESS, 0, 5)"],
)
def test_flushing_disks_uname_and_renicing_are_refused(program):
    result = run_program(f"import os\n{program}", FAST)
    assert result.error == "exit 1: PermissionError: [Errno 1] Operation not permitted"


@pytest.mark.parametrize(
    ("program", "printed"),
    [
        ("é = 72\nprint(é)", "72"),
        ("ﬁve = 5\nprint(five)", "5"),  # NFKC: the ligature is `fi`
        ("# -*- coding: latin-1 -*-\nprint(72)", "72"),
        ("print(len('é€'.encode('cp1252')))", "2"),
        ("print(b'\\x80'.decode('windows-1252'))", "€"),
        ("print('é'.encode('Latin-1'))", "b'\\xe9'"),
        ("print(len('x'.encode('utf-16-le')))", "2"),
        ("print('日本'.encode('shift_jis').hex())", "93fa967b"),  # a native codec module
        ("import codecs\nprint(codecs.encode('abc', 'rot13'))", "nop"),
        ("import codecs\nprint(codecs.encode(b'hi', 'base64'))", "b'aGk=\\n'"),
    ],
)
def test_non_ascii_names_and_any_standard_codec_run(program, printed):
    result = run_program(program, FAST)
    assert (result.error, result.stdout) == (None, printed + "\n")


def test_a_source_too_large_to_read_is_a_failed_result_not_a_broken_sandbox():
    # 40 MiB under a 64 MiB memory limit failed the sandbox's setup (as 130 MiB under 256 MiB did).
    limits = SandboxLimits(wall_seconds=1.0, memory_mb=64, max_source_bytes=16 << 20)
    huge = "x = 1\n" + "#" * (40 << 20) + "\nprint(x)"
    results = run_programs(["print(1)", huge, "print(3)"], limits)
    assert [(r.ok, r.stdout, r.error) for r in results] == [
        (True, "1\n", None),
        (False, "", f"source over {16 << 20} bytes"),
        (True, "3\n", None),
    ]


def test_a_broken_sandbox_is_one_line_and_exit_2_from_the_scoring_command(monkeypatch, tmp_path, capsys):
    from study.evaluate import main

    refs, preds = tmp_path / "refs.jsonl", tmp_path / "preds.jsonl"
    refs.write_text('{"question": "q", "answer": "#### 1"}\n')
    preds.write_text('{"prediction": "print(1)"}\n')
    monkeypatch.setattr(sandbox, "_seccomp_filter", lambda: b"\0" * 8)  # a BPF program without a return
    with pytest.raises(SystemExit) as exit_:
        main(
            ["--predictions", str(preds), "--references", str(refs), "--out", str(tmp_path / "m.json")]
            + ["--style", "code", "--metrics", "accuracy"]
        )
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: sandbox setup failed: OSError: [Errno 22] prctl PR_SET_SECCOMP failed"
    ]


def test_preimports_cover_non_ascii_names_and_the_codecs_a_source_writes():
    codecs = sandbox._confinement(sandbox._Layers()).codecs
    assert {"cp1252", "latin_1", "shift_jis", "utf_16_le"} <= codecs
    source = "# coding: latin-1\nprint('é'.encode('Windows-1252'), 'x'.encode('utf-16-le'))"
    assert sandbox._preimports(source, codecs=codecs) == [
        "encodings.cp1252",
        "encodings.latin_1",
        "encodings.utf_16_le",
        "unicodedata",
    ]


@needs_seccomp
def test_seccomp_alone_lets_a_program_read_its_own_limits_but_not_set_another_process(tmp_path):
    # Audit hook (which blocks `resource`), Landlock and the uid drop off: as root, only seccomp refuses.
    layers = sandbox._Layers(audit_hook=False, drop_privileges=False, landlock=False)
    program = (
        "import os, resource\n"
        "print(resource.prlimit(0, resource.RLIMIT_CORE))\n"
        "resource.prlimit(os.getppid(), resource.RLIMIT_CORE, (0, 0))\n"
    )
    result = sandbox._run_one(program, FAST, layers)
    assert (result.stdout, result.error) == (
        "(0, 0)\n",
        "exit 1: PermissionError: [Errno 1] Operation not permitted",
    )
