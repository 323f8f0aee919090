"""A results storage that refuses writes under a study (issue 19): Ray's uploads leave every file whole or as
it was, the study stops with one line and exit 2, and `--resume` finishes it once there is room again. The
small filesystems are tmpfs mounts in a user and mount namespace of the test's own (`unshare -r -m`)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_tuner import MICRO, REPO, study_env

COPY_UNDER_A_SIZE_LIMIT = """
import resource, signal, sys
import pyarrow.fs
from study.results_storage import whole_file_system

source, target, kind = sys.argv[1:]
filesystem = whole_file_system(target) if kind == "whole" else pyarrow.fs.LocalFileSystem()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    pyarrow.fs.copy_files(source, target, destination_filesystem=filesystem)
except OSError as error:
    print("refused:", error)
"""


@pytest.mark.parametrize(("kind", "kept"), [("local", False), ("whole", True)])
def test_an_upload_the_disk_refuses_leaves_the_file_as_it_was(tmp_path, kind, kept):
    """Ray's copy through pyarrow's own local filesystem leaves a cut file (how a full disk broke --resume);
    through `whole_file_system` the file keeps its last whole version and no temporary file is left."""
    source, target = tmp_path / "staging", tmp_path / "storage"
    source.mkdir(), target.mkdir()
    (source / "experiment_state.json").write_text('{"trial_data": [' + '"x", ' * 5000 + '"x"]}')
    (target / "experiment_state.json").write_text('{"trial_data": []}')  # the last snapshot
    done = subprocess.run(
        [sys.executable, "-c", COPY_UNDER_A_SIZE_LIMIT, str(source), str(target), kind],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "refused:" in done.stdout, done.stdout + done.stderr
    stored = (target / "experiment_state.json").read_text()
    assert (stored == '{"trial_data": []}') == kept, stored[:80]
    assert [p.name for p in target.iterdir()] == ["experiment_state.json"]


def test_whole_files_are_written_and_read_back(tmp_path):
    from study.results_storage import whole_file_system

    filesystem = whole_file_system(str(tmp_path))
    filesystem.create_dir(str(tmp_path / "a" / "b"))
    with filesystem.open_output_stream(str(tmp_path / "a" / "b" / "f.bin")) as stream:
        stream.write(b"1" * 5000)
    filesystem.copy_file(str(tmp_path / "a" / "b" / "f.bin"), str(tmp_path / "g.bin"))
    assert (tmp_path / "g.bin").read_bytes() == b"1" * 5000
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "f.bin", "g.bin"]
    assert whole_file_system("s3://bucket/studies") is None  # an object store writes objects whole itself


def test_a_file_the_disk_refuses_to_create_fails_with_its_own_error_alone(tmp_path, monkeypatch):
    """Found under a read-only storage: the refused file's cleanup raised AttributeError at every upload."""
    import gc

    from study.results_storage import whole_file_system

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(FileNotFoundError):
        whole_file_system(str(tmp_path)).open_output_stream(str(tmp_path / "no-such-folder" / "f"))
    gc.collect()
    assert [u.exc_value for u in unraisable] == []


def _unshare_or_skip() -> None:
    if subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces here (unshare -r -m)")


PROBE = """
mount -t tmpfs -o size=256k tmpfs "$1"
case "$2" in
    full) dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null ;;
    read-only) mount -o remount,ro "$1" ;;
esac
exec "$3" -c 'import sys; from study.results_storage import check_writable; check_writable(sys.argv[1] + "/s")' "$1"
"""


@pytest.mark.parametrize(
    ("damage", "says"),
    [("full", "the storage is full (["), ("read-only", "the storage is read-only (["), ("none", None)],
)
def test_a_write_probe_says_why_the_storage_refuses(tmp_path, damage, says):
    _unshare_or_skip()
    done = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", PROBE, "sh", str(tmp_path), damage, sys.executable],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if says is None:
        assert done.returncode == 0, done.stderr
        return
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"study.errors.StorageWriteError: cannot write the study's results at {tmp_path}/s: "
    )
    assert says in last, last


FILL_DURING_STUDY = r"""
mount -t tmpfs -o size=8m tmpfs "$STORE"
"$@" 2>&1 & study=$!
until ls "$STORE"/full/lora-main/trial_*/checkpoint_* >/dev/null 2>&1; do  # a trial has checkpointed once
    kill -0 $study 2>/dev/null || break
    sleep 0.2
done
case "$DAMAGE" in
    full) dd if=/dev/zero of="$STORE/filler" bs=64k 2>/dev/null ;;
    read-only) mount -o remount,ro "$STORE" ;;
esac
wait $study
echo "study exit $?"
case "$DAMAGE" in
    full) rm "$STORE/filler" ;;
    read-only) mount -o remount,rw "$STORE" ;;
esac
"$@" --resume >"$LOGS/resume.log" 2>&1
echo "resume exit $?"
"""


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "says"), [("full", "full"), ("read-only", "read-only")])
def test_a_study_whose_storage_refuses_writes_stops_with_one_line_and_the_resume_finishes(
    tmp_path, micro_t5_dir, damage, says
):
    """The study's results live on an 8 MiB tmpfs that is filled up, or made read-only, once the trial has
    checkpointed: Ray's next upload (a checkpoint, the experiment state) fails. Before, that was exit 1 after
    a 600-line log ending in Ray's EOFError on a cut error.pkl, and a cut experiment state refused the resume.
    The Optuna database lives elsewhere (its own full disk is tested in test_resume_faults)."""
    _unshare_or_skip()
    store = tmp_path / "store"
    store.mkdir()
    study = [sys.executable, "-m", "study.run", *MICRO, "--model", str(micro_t5_dir), "--storage", str(store)]
    study += ["--method", "lora", "--trials", "1", "--name", "full", "--scheduler", "none"]
    # six epochs leave the trial seconds of reports after its first checkpoint; with three, one full-suite run
    # finished cleanly (exit 0) before the watcher, polling every 0.2 s, had damaged the storage
    study += ["--space", "train/epochs=6", "--space", "train/prompt_style=answer_only"]
    study += ["--optuna-storage", f"sqlite:///{tmp_path}/optuna.db"]
    env = {**study_env(tmp_path), "STORE": str(store), "LOGS": str(tmp_path), "DAMAGE": damage}
    run = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", FILL_DURING_STUDY, "sh", *study],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    resumed = (tmp_path / "resume.log").read_text()
    assert lines[-2:] == ["study exit 2", "resume exit 0"], run.stdout[-3000:] + resumed[-3000:]
    experiment = store / "full" / "lora-main"
    assert lines[-3].startswith(
        f"error: cannot write the study's results at {experiment}: the storage is {says} ("
    )
    assert len(lines) < 200, f"{len(lines)} lines"  # Ray logs the trial's failed upload once, then one line
    assert "best trial of each experiment" in resumed and "lora  " in resumed
    assert not list(store.rglob("*.part"))
