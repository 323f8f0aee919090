"""The sandbox against the attacks of issue 11: each holds with every layer on, and each kernel layer holds on
its own (the audit hook off, no uid drop: as root only the kernel is left).

The str-subclass trick: a path whose `__repr__` returns a string whose slice's `__radd__` returns None made
the old audit hook's message None, so it allowed the call. `TRICK` defines such a class, `P`, whose every
method the hook might call prints CALLED first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from trainables.scoring import sandbox
from trainables.scoring.sandbox import SandboxLimits, run_program

REPO = Path(__file__).resolve().parents[1]
FAST = SandboxLimits(wall_seconds=2.0)
KERNEL_ONLY = sandbox._Layers(audit_hook=False, drop_privileges=False)
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's layers and /proc are Linux")
needs_landlock = pytest.mark.skipif(
    sandbox.landlock_abi() < 1, reason="this kernel has no Landlock: reads are confined by the hook alone"
)
needs_seccomp = pytest.mark.skipif(sandbox._seccomp_filter() is None, reason="seccomp layer is Linux x86_64")

TRICK = """
class N(str):
    def __radd__(self, other):
        print('CALLED', flush=True)
        return None
class R(str):
    def __getitem__(self, item):
        print('CALLED', flush=True)
        return N('x')
class P(str):
    def __repr__(self):
        print('CALLED', flush=True)
        return R('p')
    def __eq__(self, other):
        print('CALLED', flush=True)
        return str.__eq__(self, other)
    def __hash__(self):
        print('CALLED', flush=True)
        return str.__hash__(self)
    def __fspath__(self):
        print('CALLED', flush=True)
        return str(self)
    def __getattribute__(self, name):
        print('CALLED', flush=True)
        return object.__getattribute__(self, name)
import os, sys
"""

# (name, the program's hostile line with `{path}` for the target, what it prints when it gets through)
SECRETS = {
    "etc-passwd": "print('LEAK', open({path}('/etc/passwd')).read()[:20])",
    "list-root": "print('LEAK', os.listdir({path}('/')))",
    "list-tmp": "print('LEAK', os.listdir({path}('/tmp')))",
    "scorer-cmdline": "print('LEAK', open({path}('/proc/%d/cmdline' % os.getppid()), 'rb').read()[:40])",
    "scorer-environ": "print('LEAK', open({path}('/proc/%d/environ' % os.getppid()), 'rb').read()[:40])",
    "working-tree": f"print('LEAK', open({{path}}({str(REPO / 'README.md')!r})).read()[:20])",
    "venv": f"print('LEAK', open({{path}}({str(Path(sys.prefix) / 'pyvenv.cfg')!r})).read()[:20])",
}


@pytest.mark.parametrize("name", SECRETS)
def test_a_str_subclass_path_is_refused_without_calling_its_methods(name):
    result = run_program(TRICK + SECRETS[name].format(path="P"), FAST)
    assert not result.ok
    assert "LEAK" not in result.stdout and "CALLED" not in result.stdout
    assert result.error.startswith("blocked: ")


@needs_landlock
@pytest.mark.parametrize("name", SECRETS)
def test_the_kernel_alone_refuses_reading_outside_the_interpreter(name):
    result = sandbox._run_one(TRICK + SECRETS[name].format(path="str"), FAST, KERNEL_ONLY)
    assert "LEAK" not in result.stdout
    assert result.error.startswith("exit 1: PermissionError: [Errno 13] Permission denied")


def _spec_load(origin: str, name: str, *, path: str = "P") -> str:
    return (
        "import _imp\n"
        f"spec = sys.modules['_frozen_importlib'].ModuleSpec({name!r}, None, origin={path}({origin!r}))\n"
        "_imp.create_dynamic(spec)\nprint('LOADED')"
    )


def _extension(module: str) -> str:
    mod = pytest.importorskip(module)
    return mod.__file__


NATIVE = {
    "cffi-backend": lambda: _spec_load(_extension("_cffi_backend"), "_cffi_backend"),
    "numpy-core": lambda: _spec_load(
        str(next(Path(_extension("numpy")).parent.glob("*core/_multiarray_umath*.so"))), "_multiarray_umath"
    ),
    "ctypes": lambda: _spec_load(_extension("_ctypes"), "_ctypes"),
    "testcapi": lambda: _spec_load(_extension("_testcapi"), "_testcapi"),
}


@pytest.mark.parametrize("name", NATIVE)
def test_native_extensions_cannot_be_loaded_through_a_str_subclass(name):
    # (ModuleSpec itself calls methods of P, in the program: no CALLED check here.)
    result = run_program(TRICK + NATIVE[name](), FAST)
    assert (result.ok, "LOADED" in result.stdout) == (False, False)
    assert result.error == "blocked: import of a name or file that is not a str"


@needs_landlock
@pytest.mark.parametrize("name", NATIVE)
def test_the_kernel_alone_refuses_loading_native_code(name):
    result = sandbox._run_one(TRICK + NATIVE[name]().replace("P(", "str("), FAST, KERNEL_ONLY)
    assert "LOADED" not in result.stdout
    assert result.error.startswith("exit 1: ImportError: ") and "Permission denied" in result.error


@needs_seccomp
@pytest.mark.parametrize(
    "program",
    [
        "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC); print('LOADED')",
        "import mmap; m = mmap.mmap(-1, 4096); import ctypes; a = ctypes.addressof(ctypes.c_char.from_buffer(m))\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.mprotect(ctypes.c_void_p(a), 4096, 7) == 0, ctypes.get_errno(); print('LOADED')",
    ],
    ids=["mmap-exec", "mprotect-exec"],
)
def test_seccomp_alone_refuses_executable_memory(program):
    layers = sandbox._Layers(audit_hook=False, drop_privileges=False, landlock=False)
    result = sandbox._run_one(program, FAST, layers)
    assert "LOADED" not in result.stdout
    assert "PermissionError: [Errno 1]" in result.error or "AssertionError: 1" in result.error


@needs_seccomp
@pytest.mark.parametrize(
    "program",
    [
        "os.execv(sys.executable, [sys.executable, '-c', 'print(\"LOADED\")'])",
        "os.execve(os.open(sys.executable, os.O_RDONLY), [sys.executable, '-c', 'print(\"LOADED\")'], {})",
        "os.setsid(); print('LOADED')",
        "os.setpgid(0, 0); print('LOADED')",
    ],
    ids=["execve", "fexecve", "setsid", "setpgid"],
)
def test_seccomp_alone_refuses_a_new_program_or_leaving_the_process_group(program):
    layers = sandbox._Layers(audit_hook=False, drop_privileges=False, landlock=False)
    result = sandbox._run_one("import os, sys\n" + program, FAST, layers)
    assert "LOADED" not in result.stdout
    assert result.error.startswith("exit 1: PermissionError: [Errno 1] Operation not permitted")


def _children(pid: int) -> list[int]:
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if stat[1] == str(pid) and stat[0] != "Z":
            found.append(int(p))
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _is_program(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    asleep = "\nState:\tS" in status
    dropped = os.geteuid() != 0 or "\nUid:\t65534\t" in status
    return b"def _stage2" in cmdline and asleep and dropped


@pytest.mark.parametrize(
    "escape",
    [
        "import _signal; _signal.signal(_signal.SIGALRM, _signal.SIG_IGN)",
        "import _signal; _signal.setitimer(_signal.ITIMER_REAL, 0)",
    ],
    ids=["ignores-sigalrm", "cancels-its-timer"],
)
def test_nothing_outlives_a_scorer_killed_with_sigkill(tmp_path, escape):
    program = f"{escape}\nimport time\ntime.sleep(60)"
    # A wall limit far beyond the test: what ends the program must be the scorer's death, nothing else.
    code = f"from trainables.scoring.sandbox import *; run_program({program!r}, SandboxLimits(60.0))"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    helper = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    try:
        deadline, found = time.monotonic() + 10.0, []
        while not found and time.monotonic() < deadline:
            found = [p for p in _descendants(helper.pid) if _is_program(p)]
            time.sleep(0.01)
        assert found, "the helper's program never got to its sleep"
        tree = _descendants(helper.pid)
    finally:
        helper.send_signal(signal.SIGKILL)
        helper.wait()
    deadline = time.monotonic() + 3.0
    while any(Path(f"/proc/{p}").exists() and _children_state(p) != "Z" for p in tree):
        assert time.monotonic() < deadline, f"still alive after the scorer's SIGKILL: {tree}"
        time.sleep(0.02)
    assert list(tmp_path.iterdir()) == []


def _children_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "Z"


@pytest.fixture
def readable_dir():
    """A folder everyone may read (pytest's own tmp_path is not), as a user's data folder usually is."""
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_program_cannot_read_the_references_of_the_scorer(readable_dir):
    """The attack of issue 11: read the scorer's command line, open its --references, print the answers."""
    references = readable_dir / "refs.jsonl"
    answers = [17, 4242, 93]
    rows = [{"question": f"q{i}", "answer": f"#### {a}"} for i, a in enumerate(answers)]
    references.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cheat = TRICK + (
        "argv = open(P('/proc/%d/cmdline' % os.getppid()), 'rb').read().split(b'\\0')\n"
        "refs = argv[argv.index(b'--references') + 1].decode()\n"
        "import json\n"
        "lines = open(P(refs)).read().splitlines()\n"
        "print(json.loads(lines[{i}])['answer'].split('####')[1].strip())\n"
    )
    predictions = readable_dir / "preds.jsonl"
    programs = [{"prediction": cheat.replace("{i}", str(i))} for i in range(3)]
    predictions.write_text("".join(json.dumps(row) + "\n" for row in programs))
    out = readable_dir / "metrics.json"
    cmd = [sys.executable, "-m", "study.evaluate", "--predictions", str(predictions)]
    cmd += ["--references", str(references), "--style", "code", "--metrics", "accuracy", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert (metrics["accuracy"], metrics["programs_failed"]) == (0.0, 3)


def test_a_kernel_without_landlock_is_said_once_loudly_and_programs_still_run(monkeypatch):
    from trainables.scoring import sandbox_policy

    real = sandbox_policy.confinement(sys.executable)
    monkeypatch.setattr(sandbox, "confinement", lambda _: sandbox_policy.Confinement(real.executable, abi=0))
    sandbox_policy.warn_missing_layers.cache_clear()
    with pytest.warns(RuntimeWarning, match="SANDBOX: this kernel has no Landlock") as caught:
        first, second = run_program("print(6 * 7)"), run_program("print(7 * 6)")
    assert (first.stdout, second.stdout) == ("42\n", "42\n")
    assert len([w for w in caught if "no Landlock" in str(w.message)]) == 1
    with pytest.warns(RuntimeWarning, match="SANDBOX: no seccomp filter"):
        sandbox_policy.warn_missing_layers(7, False)
    sandbox_policy.warn_missing_layers.cache_clear()
