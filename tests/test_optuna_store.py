"""The stored Optuna study, as an Optuna user reads it: states, values, learning curves, links to Ray's
folders, and a database that stays true across a resume from an older snapshot of the searcher. Also the
bad-input paths of --optuna-storage / --mlflow and `python -m study.dashboard --study`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces import define_by_run
from study.config import SearchSettings, StorageSettings, StudyConfig
from study.optuna_store import StorageWriteError, StoredOptunaSearch, storage_failure_in, storage_writes
from study.plan import base_trial
from study.tracking import optuna_location, prepare_studies

optuna.logging.set_verbosity(optuna.logging.WARNING)
REPO = Path(__file__).resolve().parents[1]
FINISHED = {"test/accuracy": 0.4, "test/accuracy_low": 0.3, "test/accuracy_high": 0.5, "test/n": 8}


BASE = base_trial(
    StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",))),
    method="lora",
    model="m",
    data_config="main",
)


def stored_searcher(tmp_path: Path) -> StoredOptunaSearch:
    return StoredOptunaSearch(
        storage_url=f"sqlite:///{tmp_path}/optuna.db",
        study_name="lora-main",
        experiment_path=f"{tmp_path}/lora-main",
        space=define_by_run("lora", BASE),
        metric="dev/accuracy",
        mode="max",
        seed=0,
    )


def load(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="lora-main", storage=f"sqlite:///{tmp_path}/optuna.db")


def by_ray_id(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    ids = [t.user_attrs["ray_trial_id"] for t in study.trials]
    assert len(ids) == len(set(ids)), f"a Ray trial twice in the database: {ids}"
    return {t.user_attrs["ray_trial_id"]: t for t in study.trials}


def test_the_database_holds_pruned_complete_and_failed_trials_as_they_ended(tmp_path):
    search = stored_searcher(tmp_path)
    configs = {trial_id: search.suggest(trial_id) for trial_id in ("stopped", "finished", "crashed")}
    search.on_trial_result("stopped", {"dev/accuracy": 0.1, "training_iteration": 1})
    search.on_trial_complete("stopped", result={"dev/accuracy": 0.2, "training_iteration": 2})
    search.on_trial_result("finished", {"dev/accuracy": 0.3, "training_iteration": 1})
    search.on_trial_result("finished", {"dev/accuracy": float("nan"), "training_iteration": 2})
    last = {"dev/accuracy": 0.5, "training_iteration": 3, **FINISHED}
    search.on_trial_complete("finished", result=last)  # Ray gives the last result to this call only
    search.on_trial_complete("crashed", error=True)

    trials = by_ray_id(load(tmp_path))  # a fresh connection: what another shell or the dashboard sees
    stopped, finished, crashed = trials["stopped"], trials["finished"], trials["crashed"]
    assert (stopped.state, stopped.value, stopped.intermediate_values) == (
        TrialState.PRUNED,
        0.2,
        {1: 0.1, 2: 0.2},
    )
    assert (finished.state, finished.value, finished.intermediate_values) == (
        TrialState.COMPLETE,
        0.5,
        {1: 0.3, 3: 0.5},
    )
    assert (crashed.state, crashed.value) == (TrialState.FAIL, None)
    assert finished.user_attrs["test/accuracy"] == 0.4 and finished.user_attrs["test/n"] == 8
    assert finished.user_attrs["ray_trial_dir"] == f"{tmp_path}/lora-main/trial_finished"
    assert finished.user_attrs["generations_test"].endswith("trial_finished/generations_test.jsonl")
    assert "test/accuracy" not in stopped.user_attrs
    for ray_id, trial in trials.items():  # Ray runs the flat config: the base and what Optuna sampled
        assert configs[ray_id] == {**BASE, **trial.params}


def test_resume_from_an_older_snapshot_leaves_each_trial_once_and_none_running(tmp_path):
    """The driver is SIGKILLed after Ray's last snapshot: the database is ahead of the searcher Ray restores."""
    search = stored_searcher(tmp_path)
    for trial_id in ("a", "b", "c"):
        search.suggest(trial_id)
    search.on_trial_complete("a", result={"dev/accuracy": 0.2, "training_iteration": 1, **FINISHED})
    search.save(str(tmp_path / "searcher-state.pkl"))  # Ray's snapshot
    search.on_trial_result("b", {"dev/accuracy": 0.3, "training_iteration": 1})
    search.on_trial_complete("b", result={"dev/accuracy": 0.3, "training_iteration": 1, **FINISHED})
    search.on_trial_complete("c", error=True)
    lost = search.suggest("d")  # asked after the snapshot: Ray's restored state has no such trial
    del search  # SIGKILL

    import pickle

    restored = pickle.loads(pickle.dumps(stored_searcher(tmp_path)))  # as tuner.pkl is unpickled
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    # Ray re-runs b and c from their checkpoints (it never saw them end) and asks for one more trial;
    # c's one result is its last, which Ray passes to on_trial_complete only.
    restored.on_trial_result("b", {"dev/accuracy": 0.3, "training_iteration": 1})
    for trial_id, value in (("b", 0.3), ("c", 0.1)):
        restored.on_trial_complete(
            trial_id, result={"dev/accuracy": value, "training_iteration": 1, **FINISHED}
        )
    assert restored.suggest("e") == lost  # the Optuna trial asked before the kill, not a new one
    restored.on_trial_complete("e", result={"dev/accuracy": 0.6, "training_iteration": 1, **FINISHED})

    study = load(tmp_path)
    assert len(study.trials) == 5 and not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    # One Optuna trial per Ray trial, except c: its failed run and the run Ray retried it with.
    assert sorted(t.user_attrs["ray_trial_id"] for t in study.trials) == ["a", "b", "c", "c", "e"]
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert trials["b"].state == TrialState.COMPLETE and trials["b"].value == 0.3
    failed, retried = sorted(
        (t for t in study.trials if t.params == trials["c"].params), key=lambda t: t.number
    )
    assert (failed.state, retried.state, retried.value) == (TrialState.FAIL, TrialState.COMPLETE, 0.1)
    assert retried.user_attrs["retry_of"] == failed.number and retried.user_attrs["ray_trial_id"] == "c"


def test_a_trial_ray_failed_without_telling_the_searcher_is_settled_as_failed(tmp_path):
    """A reused worker that cannot be reset fails its next trial, and Ray never calls on_trial_complete."""
    from types import SimpleNamespace

    from study.optuna_store import settle

    search = stored_searcher(tmp_path)
    for trial_id in ("lost", "stopped", "told", "running"):
        search.suggest(trial_id)
    search.on_trial_complete("told", result={"dev/accuracy": 0.5, "training_iteration": 1, **FINISHED})
    grid = [
        SimpleNamespace(
            path=f"{tmp_path}/lora-main/trial_lost", error=RuntimeError("reset_config"), metrics={}
        ),
        SimpleNamespace(
            path=f"{tmp_path}/lora-main/trial_stopped",
            error=None,
            metrics={"dev/accuracy": 0.2, "training_iteration": 1, "done": True},
        ),
        SimpleNamespace(path=f"{tmp_path}/lora-main/trial_told", error=None, metrics={"done": True}),
        SimpleNamespace(path=f"{tmp_path}/lora-main/trial_running", error=None, metrics={"done": False}),
    ]
    url = f"sqlite:///{tmp_path}/optuna.db"
    assert settle(url, "lora-main", grid, metric="dev/accuracy") == 2
    states = {rid: t.state for rid, t in by_ray_id(load(tmp_path)).items()}
    assert states == {
        "lost": TrialState.FAIL,
        "stopped": TrialState.PRUNED,
        "told": TrialState.COMPLETE,
        "running": TrialState.RUNNING,  # an interrupted study: --resume continues it
    }


def test_a_fresh_experiment_does_not_continue_a_stale_study_but_a_shared_database_is_never_cleared(tmp_path):
    search = stored_searcher(tmp_path)
    search.suggest("left-over")  # a driver killed before Ray saved anything of the experiment
    own = optuna_location(
        StudyConfig(
            search=SearchSettings(methods=("lora",)),
            storage=StorageSettings(root=str(tmp_path.parent), name=tmp_path.name),
        )
    )
    assert own.url == f"sqlite:///{tmp_path}/optuna.db"
    prepare_studies(own, ["lora-main"], restored={"lora-main"})
    assert len(load(tmp_path).trials) == 1  # a restored experiment keeps its study
    shared = optuna_location(
        StudyConfig(
            search=SearchSettings(methods=("lora",)),
            storage=StorageSettings(root=str(tmp_path), optuna=own.url, name="other"),
        )
    )
    with pytest.raises(ValueError, match="already holds an Optuna study 'lora-main': pass --resume"):
        prepare_studies(shared, ["lora-main"], restored=set())
    prepare_studies(own, ["lora-main"], restored=set())
    assert "lora-main" not in {s.study_name for s in optuna.get_all_study_summaries(own.url)}


def test_an_object_store_study_keeps_its_database_beside_the_driver():
    location = optuna_location(
        StudyConfig(
            search=SearchSettings(methods=("lora",)),
            storage=StorageSettings(root="s3://bucket/studies", name="x"),
        )
    )
    assert location.upload_to == "s3://bucket/studies/x/optuna.db"
    assert location.url.startswith("sqlite:///") and "slm-math-study/optuna/x-" in location.url
    assert "uploaded to s3://bucket/studies/x/optuna.db" in location.describe()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"storage/optuna": "study.db"}, "--optuna-storage must be a database URL"),
        ({"storage/mlflow": "mlruns"}, "--mlflow must be a tracking URI starting file:, sqlite:"),
        ({"storage/mlflow": "ftp://host/x"}, "--mlflow must be a tracking URI"),
    ],
)
def test_malformed_tracking_urls_are_refused_by_the_config(changes, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig.from_keys({"search/methods": ("lora",), **changes})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--optuna-storage", "sqlite:///{tmp}/no/such/folder/s.db", "there is no folder"),
        ("--optuna-storage", "notadb://host/x", "cannot open the Optuna storage notadb://host/x"),
        ("--mlflow", "http://127.0.0.1:{port}", "cannot use the MLflow tracking URI http://127.0.0.1:"),
    ],
)
def test_an_unreachable_tracking_url_is_one_line_and_exit_2_before_ray(
    tmp_path, flag, value, message, capsys
):
    if flag == "--mlflow":
        pytest.importorskip("mlflow")
    import ray

    from study.run import main

    args = ["--method", "lora", "--preset", "tiny", "--storage", str(tmp_path / "out"), "--no-dashboard"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, flag, value.format(tmp=tmp_path, port=closed_port())])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not ray.is_initialized() and "Ray dashboard" not in err
    assert not (tmp_path / "out" / "slm-tiny" / "study.json").exists()  # nothing half-written


def test_study_dashboard_prints_the_optuna_dashboard_command_of_a_study(tmp_path, monkeypatch):
    import study.dashboard as dashboard

    monkeypatch.setattr(dashboard, "CLUSTER_FILE", tmp_path / "none.json")  # no running study here
    study = tmp_path / "slm-tiny"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"optuna_storage": None}))
    import contextlib
    import io

    from study.dashboard import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--study", str(study)]) == 0
    assert f"optuna-dashboard sqlite:///{study}/optuna.db" in out.getvalue()
    with pytest.raises(ValueError, match="not a study folder"):
        main(["--study", str(tmp_path)])


@pytest.mark.slow  # starts a web server (a few seconds)
def test_optuna_dashboard_serves_the_stored_study(tmp_path):
    """As a user would: `optuna-dashboard sqlite:///...` on 127.0.0.1, then its HTTP API lists the study."""
    pytest.importorskip("optuna_dashboard")
    search = stored_searcher(tmp_path)
    search.suggest("a")
    search.on_trial_complete("a", result={"dev/accuracy": 0.5, "training_iteration": 1, **FINISHED})
    port = closed_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), f"sqlite:///{tmp_path}/optuna.db"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None:
            assert server.poll() is None, "optuna-dashboard exited"
            assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.loads(response.read())["study_summaries"]
            except OSError:
                time.sleep(0.3)
        (summary,) = studies
        assert summary["study_name"] == "lora-main" and summary["directions"] == ["maximize"]
    finally:
        server.kill()
        server.wait(timeout=10)


def test_the_report_takes_search_history_and_importance_from_the_stored_study(tmp_path):
    from analysis.diagnostics import diagnose
    from analysis.load import load_results

    study_dir = tmp_path / "slm-tiny"
    search = stored_searcher(study_dir)
    search._experiment_path = f"{study_dir}/lora-main"
    search._ot_study.set_user_attr("ray_experiment", search._experiment_path)
    for number, trial_id in enumerate(["t0", "t1", "t2", "t3", "t4"]):
        config = search.suggest(trial_id)
        value = 0.1 * (number + 1)
        rows = [{"dev/accuracy": value / 2, "dev/perplexity": 2.0, "training_iteration": 1}]
        if number != 1:  # t1: ASHA stopped it after one evaluation
            rows.append(
                {"dev/accuracy": value, "dev/perplexity": 2 - value, "training_iteration": 2, **FINISHED}
            )
        for row in rows:
            search.on_trial_result(trial_id, row)
        search.on_trial_complete(trial_id, result=rows[-1])
        folder = study_dir / "lora-main" / f"trial_{trial_id}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps(config))
        started = 1_800_000_000 - 100 * number  # the later the trial, the earlier its clock says it started
        lines = [{**r, "trial_id": trial_id, "timestamp": started + r["training_iteration"]} for r in rows]
        (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))

    (diagnostics,) = diagnose(load_results([study_dir]).trials, metric="dev/accuracy", mode="max")
    history = diagnostics.history
    assert history["optuna_number"].tolist() == [0, 1, 2, 3, 4]  # Optuna's order, not the clocks'
    assert history["trial"].tolist() == [f"lora-main/trial_t{i}" for i in range(5)]
    assert history["optuna_state"].tolist()[:2] == ["COMPLETE", "PRUNED"]
    assert history["value"].tolist() == pytest.approx([0.1, 0.1, 0.3, 0.4, 0.5])  # t1 pruned at 0.2 / 2
    assert diagnostics.reason == "" and set(diagnostics.importances) <= set(load(study_dir).best_trial.params)
    other = diagnose(load_results([study_dir]).trials, metric="dev/perplexity", mode="min")
    assert "optuna_number" not in other[0].history  # the study searched dev/accuracy: rebuilt from folders


def test_the_driver_side_database_is_uploaded_with_the_results_and_fetched_again_on_resume(tmp_path):
    from study.tracking import OptunaLocation, download, upload

    search = stored_searcher(tmp_path / "driver")
    search.suggest("a")
    # An object store is a pyarrow filesystem; a second local folder stands in for it here.
    location = OptunaLocation(
        url=f"sqlite:///{tmp_path}/driver/optuna.db", upload_to=f"{tmp_path}/store/optuna.db"
    )
    upload(location)
    (tmp_path / "driver" / "optuna.db").unlink()  # --resume on a machine without the local copy
    download(location)
    assert len(load(tmp_path / "driver").trials) == 1


def test_study_dashboard_of_a_running_study_prints_its_optuna_dashboard_command(
    tmp_path, monkeypatch, capsys
):
    import os
    from types import SimpleNamespace

    import study.dashboard as dashboard

    monkeypatch.setattr(dashboard, "CLUSTER_FILE", tmp_path / "ray-cluster.json")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setattr(
        dashboard.subprocess, "run", lambda *a, **k: SimpleNamespace(returncode=0)
    )  # ray status
    dashboard.CLUSTER_FILE.write_text(json.dumps({"address": "127.0.0.1:6379", "pid": os.getpid()}))
    dashboard.note_study(optuna_url="sqlite:////r/slm-tiny/optuna.db")  # what run_study does after connecting
    assert dashboard.main([]) == 0
    out = capsys.readouterr().out
    assert "ray status --address 127.0.0.1:6379" in out
    assert "Optuna dashboard: optuna-dashboard sqlite:////r/slm-tiny/optuna.db" in out


def test_the_folder_of_a_trial_started_after_the_last_snapshot_goes_when_its_optuna_trial_moves(tmp_path):
    """A trial started (and checkpointed) after Ray's last snapshot, then the driver killed: Ray's restored
    state never knew it, so its folder would stay beside the Ray trial its Optuna trial moves to."""
    import pickle

    search = stored_searcher(tmp_path)
    search.suggest("a")
    search.save(str(tmp_path / "searcher-state.pkl"))  # Ray's last snapshot
    lost = search.suggest("b")
    for trial_id in ("a", "b"):
        checkpoint = tmp_path / "lora-main" / f"trial_{trial_id}" / "checkpoint_000000"
        checkpoint.mkdir(parents=True)
        (checkpoint / "trainable.pt").write_bytes(b"weights")
    del search  # SIGKILL

    restored = pickle.loads(pickle.dumps(stored_searcher(tmp_path)))
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    assert restored.suggest("c") == lost  # the Optuna trial moves to Ray's new trial c
    assert not (tmp_path / "lora-main" / "trial_b").exists()
    assert (tmp_path / "lora-main" / "trial_a" / "checkpoint_000000" / "trainable.pt").is_file()
    assert by_ray_id(load(tmp_path)).keys() == {"a", "c"}


REFUSED_WRITE = r"""
import pickle, sys
from pathlib import Path

from test_optuna_store import FINISHED, load, stored_searcher
from study.errors import run_cli

folder = Path(sys.argv[1])
search = stored_searcher(folder)
search.suggest("a")
search.save(str(folder / "searcher-state.pkl"))  # Ray's last snapshot
with open(folder / "filler", "wb") as filler:  # the disk fills up
    try:
        while True:
            filler.write(bytes(65536))
            filler.flush()
    except OSError:
        pass
result = {"dev/accuracy": 0.2, "training_iteration": 1, **FINISHED}
try:
    run_cli(lambda: search.on_trial_complete("a", result=result))  # what Ray's loop calls
except SystemExit as stop:
    print("exit", stop.code, flush=True)
(folder / "filler").unlink()
restored = pickle.loads(pickle.dumps(stored_searcher(folder)))  # --resume, once there is room again
restored.restore(str(folder / "searcher-state.pkl"))
restored.on_trial_complete("a", result=result)
print("resumed", [t.state.name for t in load(folder).trials], flush=True)
"""


def test_a_full_storage_is_one_line_and_exit_2_and_the_resume_works(tmp_path):
    """In a mount namespace of its own (no privileges needed where user namespaces are allowed), the study's
    folder is a 1 MiB tmpfs, filled up before Ray's loop tells Optuna that a trial ended."""
    folder = tmp_path / "storage"
    folder.mkdir()
    if subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces here (unshare -r -m)")
    run = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", f'mount -t tmpfs -o size=1m tmpfs {folder} && exec "$@"', "sh",
         sys.executable, "-c", REFUSED_WRITE, str(folder)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO}/tests{os.pathsep}{REPO}"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    [line] = run.stderr.strip().splitlines()  # one line: no traceback, no Optuna log
    assert line.startswith(
        f"error: cannot write the Optuna study at sqlite:///{folder}/optuna.db: the storage is full ("
    )
    assert run.stdout.splitlines() == ["exit 2", "resumed ['COMPLETE']"]


def test_a_read_only_storage_says_so(tmp_path):
    stored_searcher(tmp_path)
    read_only = f"sqlite:///file:{tmp_path}/optuna.db?mode=ro&uri=true"
    storage = optuna.storages.RDBStorage(read_only)
    study_id = storage.get_study_id_from_name("lora-main")
    with pytest.raises(
        StorageWriteError, match="^cannot write the Optuna study at .*: the storage is read-only \\("
    ):
        with storage_writes(read_only):
            storage.set_study_user_attr(study_id, "note", "a write")


def test_a_storage_failure_is_found_behind_the_error_rays_loop_raises():
    from ray.tune.error import TuneError

    failure = StorageWriteError("cannot write the Optuna study at sqlite:///x.db: the storage is full (...)")
    try:
        try:
            raise failure
        except StorageWriteError:
            raise TuneError("Traceback (most recent call last): ...")  # noqa: B904 - as tune_controller does
    except TuneError as raised:
        assert storage_failure_in(raised) is failure
    assert storage_failure_in(ValueError("bad")) is None
