"""The search machinery: Optuna learns which trials ASHA stopped, experiments are planned and checked before
Ray starts, resources follow the method, results are summarised. The `slow` tests run tiny studies."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import ray
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from search_spaces import define_by_run
from search_spaces.overrides import spec_to_override
from study.config import (
    DataSettings,
    ResourceSettings,
    SchedulerSettings,
    SearchSettings,
    StorageSettings,
    StudyConfig,
)
from study.dashboard import ClusterInfo
from study.plan import base_trial, concurrency, plan_experiments, prepare_inputs, trial_resources
from study.results import format_table, read_text, summarize, write_json, write_text
from study.study_file import study_record
from study.tuner import _check_resume
from trainables import trial as _trial  # noqa: F401  (torch imported at collection: tests time their own work)
from trainables.methods import method_names

optuna.logging.set_verbosity(optuna.logging.WARNING)
CPU_ONLY = ClusterInfo(address="127.0.0.1:1", dashboard_url=None, started_here=True, resources={"CPU": 2.0})


def searcher(cls=OptunaSearch):
    config = StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",)))
    base = base_trial(config, method="lora", model="m", data_config="main")
    return cls(space=define_by_run("lora", base), metric="dev/accuracy", mode="max", seed=0)


def states(search) -> list:
    return [(t.state, t.value) for t in search._ot_study.trials]


def test_rays_own_searcher_would_call_a_stopped_trial_complete():
    search = searcher(OptunaSearch)
    search.suggest("stopped")
    search.on_trial_complete("stopped", result={"dev/accuracy": 0.2, "training_iteration": 2})
    assert states(search) == [
        (optuna.trial.TrialState.COMPLETE, 0.2)
    ]  # why StoredOptunaSearch tells PRUNED (tests/test_optuna_store.py)


def test_plan_raises_trials_to_cover_the_groups_and_sets_asha_max_t():
    config = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora", "lora_cot"), trials=2),
        overrides=(spec_to_override("train/epochs", "1..2"), spec_to_override("train/evals_per_epoch", 2)),
    )
    lora, cot = plan_experiments(config)
    assert (lora.name, lora.trials, lora.points, lora.max_iterations) == ("lora-main", 2, [], 4)
    assert (cot.trials, len(cot.points)) == (4, 4)  # answer_only is a style too (issue 10)
    assert cot.base["train/seed"] == 0 and cot.base["model"] == "<model>"


def test_the_readme_study_keeps_its_twelve_trials_and_a_variants_study_tries_each_variant():
    readme = plan_experiments(
        StudyConfig(preset="tiny", search=SearchSettings(methods=method_names(), trials=2))
    )
    assert {e.name: e.trials for e in readme} == {
        "lora-main": 2, "lora_cot-main": 4, "full-main": 2, "qlora-main": 2, "stacked-main": 2,
    }  # fmt: skip
    variants = spec_to_override("strategy/variant", ["lora", "rslora", "dora", "pissa", "olora", "loraplus"])
    (lora,) = plan_experiments(
        StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",), trials=2), overrides=(variants,))
    )
    assert lora.trials == 6 and [p["strategy/variant"] for p in lora.points] == list(variants.choices)
    sin = spec_to_override("strategy/f", ["identity", "sin"], method="stacked")
    (stacked,) = plan_experiments(
        StudyConfig(preset="tiny", search=SearchSettings(methods=("stacked",), trials=2), overrides=(sin,))
    )
    assert [p["strategy/f"] for p in stacked.points] == ["identity", "sin"]


def test_asha_gets_the_studys_grace_period_and_reduction_factor():
    from study.run import parse_config
    from study.tuner import asha_scheduler

    config = parse_config(
        # the tiny preset runs without ASHA by default (issue 10): ask for it
        ["--method", "lora", "--preset", "tiny", "--scheduler", "asha", "--grace-period", "2"]
        + ["--reduction-factor", "3"]
    )
    (experiment,) = plan_experiments(config)
    scheduler = asha_scheduler(config, experiment)
    rungs = [milestone for milestone, _ in scheduler._brackets[0]._rungs]  # ASHA keeps only its rungs
    assert (experiment.max_iterations, rungs, scheduler._reduction_factor) == (4, [2], 3.0)
    assert asha_scheduler(parse_config(["--method", "lora", "--scheduler", "none"]), experiment) is None


def test_plan_rejects_an_override_the_trial_config_rejects():
    config = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora",)),
        overrides=(spec_to_override("strategy/r", 0),),
    )
    with pytest.raises(ValueError, match="method lora: LoRA rank r must be >= 1"):
        plan_experiments(config)
    bad_choice = spec_to_override("strategy/f", ["relu", "nope"], method="stacked")
    with pytest.raises(ValueError, match="method stacked: unknown stacked LoRA f 'nope'"):
        plan_experiments(
            StudyConfig(
                preset="tiny", search=SearchSettings(methods=("lora", "stacked")), overrides=(bad_choice,)
            )
        )
    too_wide = spec_to_override("train/warmup_ratio", "0.0..1.5")
    # any value above 1 that a sampled (or pinned) trial meets first: LoRA's variant branches sample too
    with pytest.raises(ValueError, match=r"method lora: warmup_ratio must be in \[0, 1\), got 1\.\d*"):
        # small: no preset narrowing, so the first sampled trial is not the one that fails
        plan_experiments(
            StudyConfig(preset="small", search=SearchSettings(methods=("lora",)), overrides=(too_wide,))
        )
    config = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("full",)),
        overrides=(spec_to_override("strategy/rank", 4),),
    )
    with pytest.raises(ValueError, match="unknown setting.*rank.*'full'"):
        plan_experiments(config)


@pytest.mark.parametrize(
    ("method", "key", "spec", "message"),
    [
        # no coverage point survives f=[nope]: the stacked branch must still be built (and refused)
        ("stacked", "strategy/f", ["nope"], "method stacked: unknown stacked LoRA f 'nope'"),
        ("stacked", "strategy/f", "nope", "method stacked: unknown stacked LoRA f 'nope'"),
        ("lora", "train/lr", "abc", "method lora: train/lr must be a number, got 'abc'"),
        ("stacked", "strategy/r2", "[8, x]", "method stacked: strategy/r2 must be a whole number, got 'x'"),
    ],
)
def test_plan_refuses_a_bad_value_on_any_branch_before_ray_starts(method, key, spec, message):
    config = StudyConfig(
        preset="tiny", search=SearchSettings(methods=(method,)), overrides=(spec_to_override(key, spec),)
    )
    with pytest.raises(ValueError, match=message):
        plan_experiments(config)


def test_missing_data_stops_before_ray_with_the_tiny_alternative(tmp_path):
    config = StudyConfig(
        search=SearchSettings(methods=("lora",)),
        data=DataSettings(dir=str(tmp_path)),
        storage=StorageSettings(root=str(tmp_path / "out")),
    )
    with pytest.raises(ValueError, match=r"no GSM8K files in .*--preset tiny"):
        prepare_inputs(config)
    assert not ray.is_initialized()


def test_a_missing_model_names_itself_and_the_tiny_preset(data_dir, tmp_path):
    config = StudyConfig(
        search=SearchSettings(methods=("lora",)),
        data=DataSettings(dir=str(data_dir), train_size=50, dev_size=10, test_size=10),
        storage=StorageSettings(root=str(tmp_path)),
    )
    with pytest.raises(ValueError, match=r"'t5-small' could not be loaded.*--preset tiny"):
        prepare_inputs(config)
    assert not ray.is_initialized()


def test_resources_follow_the_method_and_the_cluster():
    gpu_cluster = ClusterInfo(
        address="h:1", dashboard_url=None, started_here=False, resources={"CPU": 8, "GPU": 2}
    )
    config = StudyConfig(search=SearchSettings(methods=("lora",)))
    assert trial_resources(config, "lora", CPU_ONLY) == {"cpu": 1.0, "gpu": 0.0}
    assert trial_resources(config, "lora", gpu_cluster) == {"cpu": 1.0, "gpu": 0.25}
    assert trial_resources(config, "full", gpu_cluster) == {"cpu": 1.0, "gpu": 0.5}
    assert concurrency(config, {"cpu": 1.0, "gpu": 0.25}, gpu_cluster) == 8
    assert concurrency(config, {"cpu": 1.0, "gpu": 0.5}, gpu_cluster) == 4
    assert concurrency(config, {"cpu": 1.0, "gpu": 0.0}, CPU_ONLY) == 2
    assert (
        concurrency(
            StudyConfig(
                search=SearchSettings(methods=("lora",)), resources=ResourceSettings(max_concurrent=1)
            ),
            {"cpu": 1.0, "gpu": 0.0},
            CPU_ONLY,
        )
        == 1
    )
    with pytest.raises(ValueError, match="--gpus-per-trial 0.5 but this machine has no GPU"):
        trial_resources(
            StudyConfig(
                search=SearchSettings(methods=("lora",)), resources=ResourceSettings(gpus_per_trial=0.5)
            ),
            "lora",
            CPU_ONLY,
        )
    autoscaling = ClusterInfo(address="h:1", dashboard_url=None, started_here=False, resources={"CPU": 2})
    assert (
        trial_resources(
            StudyConfig(
                search=SearchSettings(methods=("lora",)), resources=ResourceSettings(gpus_per_trial=0.5)
            ),
            "lora",
            autoscaling,
        )["gpu"]
        == 0.5
    )


def test_qlora_without_gpu_or_cpu_quantisation_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if bitsandbytes could not be imported
    with pytest.raises(ValueError, match="qlora needs a GPU"):
        trial_resources(StudyConfig(search=SearchSettings(methods=("qlora",))), "qlora", CPU_ONLY)


def test_an_existing_study_needs_resume_and_the_same_settings(tmp_path):
    config = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora",)),
        storage=StorageSettings(root=str(tmp_path), name="s"),
    )
    (experiment,) = plan_experiments(config)
    with pytest.raises(ValueError, match="nothing to resume"):
        _check_resume(
            StudyConfig(
                preset="tiny",
                search=SearchSettings(methods=("lora",)),
                storage=StorageSettings(root=str(tmp_path), name="s", resume=True),
            ),
            [],
        )
    (tmp_path / "s" / "lora-main").mkdir(parents=True)
    # a whole tuner.pkl, as Ray writes it (an empty one is damaged state)
    (tmp_path / "s" / "lora-main" / "tuner.pkl").write_bytes(pickle.dumps({"_tune_config": None}))
    write_json(f"{tmp_path}/s/study.json", study_record(config))
    with pytest.raises(ValueError, match="already holds lora-main: pass --resume"):
        _check_resume(config, [experiment])
    resume = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora",), seed=1),
        storage=StorageSettings(root=str(tmp_path), name="s", resume=True),
    )
    with pytest.raises(ValueError, match="differ from the study's: seed: 0 -> 1"):
        _check_resume(resume, [experiment])
    more = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora",), trials=9),
        storage=StorageSettings(root=str(tmp_path), name="s", resume=True),
    )
    with pytest.raises(ValueError, match="trials: 50 -> 9"):
        _check_resume(more, [experiment])
    gentler = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora",)),
        scheduler=SchedulerSettings(grace_period=2),
        storage=StorageSettings(root=str(tmp_path), name="s", resume=True),
    )
    with pytest.raises(ValueError, match="grace_period: 1 -> 2"):  # Ray restores the old scheduler
        _check_resume(gentler, [experiment])
    same = StudyConfig(
        preset="tiny",
        search=SearchSettings(methods=("lora",)),
        storage=StorageSettings(root=str(tmp_path), name="s", resume=True),
    )
    assert _check_resume(same, [experiment]) == set()  # started, never snapshotted by Ray: starts over
    state = {"trial_data": [], "runner_data": {}, "stats": {}}
    (tmp_path / "s" / "lora-main" / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    for snapshot in ("searcher-state-2026-01-01_00-00-00.pkl", "search_gen_state-2026-01-01_00-00-00.json"):
        (tmp_path / "s" / "lora-main" / snapshot).write_bytes(pickle.dumps({}))  # saved with the state
    assert _check_resume(same, [experiment]) == {"lora-main"}


def result(trial_id, metrics, *, error=None, config=None):
    return SimpleNamespace(
        metrics={"trial_id": trial_id, **metrics},
        error=error,
        config=config or {},
        path=f"/r/{trial_id}",
        checkpoint=None,
    )


def test_summary_picks_the_best_finished_trial_and_counts_the_rest():
    done = {"test/accuracy": 0.3, "test/accuracy_low": 0.2, "test/accuracy_high": 0.4}
    grid = [
        result("a", {"dev/accuracy": 0.9}),  # stopped early: best dev, but no test metrics
        result("b", {"dev/accuracy": 0.5, **done}, config={"strategy": {"f": "relu"}}),  # restored: nested
        result("c", {"dev/accuracy": 0.4, **done}),
        result("d", {}, error=RuntimeError("boom")),
    ]
    summary = summarize(grid, method="stacked", data_config="main", metric="dev/accuracy", mode="max")
    assert (summary.finished, summary.stopped, summary.failed) == (2, 1, 1)
    assert summary.best["trial_id"] == "b" and summary.best["config"] == {"strategy/f": "relu"}
    assert summary.groups == {"stacked": "f=relu", "stacked_variants": "lora"}  # plain LoRA in stage 2
    low = summarize(grid, method="stacked", data_config="main", metric="dev/accuracy", mode="min")
    assert low.best["trial_id"] == "c"
    table = format_table([summary], metric="dev/accuracy").splitlines()
    assert table[0].split()[:6] == ["method", "config", "finished", "stopped", "failed", "dev/accuracy"]
    assert table[1].split()[:6] == ["stacked", "main", "2", "1", "1", "0.5"]
    assert "0.300 [0.200, 0.400]" in table[1] and "b stacked=f=relu" in table[1]


def test_results_go_to_a_folder_or_a_uri(tmp_path):
    write_text(f"{tmp_path}/a/b.txt", "local")
    write_json(f"file://{tmp_path}/c/d.json", {"x": 1})
    assert read_text(f"{tmp_path}/a/b.txt") == "local"
    assert json.loads(Path(tmp_path, "c", "d.json").read_text()) == {"x": 1}
    assert read_text(f"{tmp_path}/missing.json") is None


# --- end to end: tiny studies under Ray on the CPU (slow) -------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
MICRO_SIZES = (
    "--preset", "tiny", "--train-size", "48", "--dev-size", "8", "--test-size", "8", "--num-cpus", "2",
    "--no-dashboard", "--space", "train/eval/metrics=accuracy,perplexity",
    "--space", "train/eval/max_new_tokens=16",
    "--space", "train/eval/calculator=false", "--space", "train/batch_size=16",
)  # fmt: skip
"""The smallest settings a study runs with: ~50 training records, short generations, two CPUs."""
MICRO = (*MICRO_SIZES, "--no-preflight")
"""`MICRO_SIZES` without the memory check: it measures a step of each method in the driver before Ray
starts (6-40 s a study here). The every-method study keeps it (`start_study(..., memory_check=True)`), so a
study still runs it end to end once, for every method; tests/test_preflight.py checks what it decides."""
LORA_STUDY = ["--method", "lora", "--trials", "1", "--name", "lora", "--space", "train/epochs=1"]
LORA_STUDY += ["--scheduler", "none"]
"""One LoRA trial of one epoch: the study `finished_lora_study` (conftest.py) runs once for the tests that
start from a finished study (confirm, resume, adding a plugin method's experiment)."""
EVERY_METHOD = [
    "--method", "all", "--config", "main", "--trials", "1", "--name", "e2e", "--max-concurrent", "2",
    "--space", "train/epochs=1", "--space", "stacked:strategy/f=[relu]",
    "--space", "stacked:strategy/baseline=[stacked,linear]",
]  # fmt: skip
"""Every method, one trial each (lora_cot's raised to cover its four prompt styles): the study
`every_method_study` (conftest.py) runs once for the end-to-end tests of study.run and of the report."""


def study_env(tmp_path: Path) -> dict:
    """Offline hub, and a token of the test's own instead of ~/.ray/auth_token."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {
        **env,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token"),
        # This checkout's code even for a driver started in another folder (and its Ray workers).
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    }


def start_study(args, *, tmp_path: Path, model: Path, cwd: Path = REPO, memory_check: bool = False):
    import subprocess

    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "study.run",
            *(MICRO_SIZES if memory_check else MICRO),
            "--model",
            str(model),
            "--storage",
            str(tmp_path / "out"),
            *args,
        ],
        cwd=cwd,
        env=study_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so the test can end exactly what it started
    )


def finish(process, timeout: float = 900) -> str:  # minutes on a shared, loaded 2-core machine
    import subprocess

    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_process_group(process)  # the study and its Ray processes, not left running after the test
        raise
    assert process.returncode == 0, output[-3000:]
    return output


def trial_results(experiment: Path) -> dict[str, list[dict]]:
    """Trial folder -> its result.json rows."""
    return {
        path.parent.name: [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(experiment.glob("trial_*/result.json"))
    }


@pytest.mark.slow
def test_tiny_study_end_to_end(every_method_study, micro_t5_dir):
    study, output = every_method_study
    experiment = study / "lora_cot-main"
    results = trial_results(experiment)
    styles = sorted(rows[-1]["config"]["train/prompt_style"] for rows in results.values())
    assert styles == ["answer_only", "breakdown", "code", "no_breakdown"]  # --trials 1 raised to cover 4
    for trial, rows in results.items():
        assert "test/accuracy" in rows[-1] and "dev/accuracy" in rows[-1]
        assert {"test/distinct_answers", "test/top_answer_share", "train/examples_seen"} <= set(rows[-1])
        assert (experiment / trial / "generations_test.jsonl").is_file()
        assert json.loads((experiment / trial / "placement.json").read_text())["node_id"]
    best = json.loads((experiment / "best_config.json").read_text())
    from trainables.trial_config import TrialConfig

    assert TrialConfig.from_dict(best["config"]).method == "lora_cot"
    best_configs = json.loads((study / "best_configs.json").read_text())
    assert [b["trial_id"] for b in best_configs if b["method"] == "lora_cot"] == [best["trial_id"]]
    table = output[output.index("best trial of each experiment") :].splitlines()
    assert table[1].split()[:5] == ["method", "config", "finished", "stopped", "failed"]
    assert table[2].split()[:5] == ["lora", "main", "1", "0", "0"]
    assert [row.split()[:5] for row in table if row.startswith("lora_cot ")] == [
        ["lora_cot", "main", "4", "0", "0"]
    ]
    assert any(line.startswith("chance: always ") for line in table)  # the same test problems
    assert "| Trial name" in output and "prompt_style" in output  # Ray's progress table with the groups
    checked = [line.split()[2] for line in output.splitlines() if line.startswith("memory check: ")]
    assert checked == list(method_names()), output[:3000]  # the one test study that runs the memory check
    import yaml

    from study.run import parse_config

    saved = yaml.safe_load((study / "study.yaml").read_text())  # the resolved tree, the file that reruns it
    assert saved["train/epochs"] == {"value": 1, "from": "flag"} and saved["search/trials"]["value"] == 1
    rerun = parse_config(["--study-file", str(study / "study.yaml"), "--name", "again"])
    assert (rerun.search.methods, rerun.search.trials, rerun.model.name) == (
        tuple(method_names()),
        1,
        str(micro_t5_dir),
    )


def statuses(experiment: Path) -> dict[str, str]:
    """Trial id -> status in the experiment state Ray saved last (what a resume starts from)."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # caught mid-write
        return {}
    trials = [json.loads(trial) for trial, _ in data["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def end_process_group(process) -> None:
    """SIGKILL the study's driver, then whatever of its own process group outlives it (its Ray processes)."""
    import os
    import signal
    import time

    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(int(p.name)) == process.pid]
        if not left:
            return
        time.sleep(0.5)
    for path in left:
        try:
            os.kill(int(path.name), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_runs_each_trial_once(tmp_path, micro_t5_dir):
    import time

    args = ["--method", "lora", "--trials", "3", "--max-concurrent", "1", "--name", "resume"]
    args += ["--space", "train/epochs=2", "--scheduler", "none"]
    process = start_study(args, tmp_path=tmp_path, model=micro_t5_dir)
    experiment = tmp_path / "out" / "resume" / "lora-main"
    deadline = time.monotonic() + 240
    while list(statuses(experiment).values()).count("TERMINATED") < 1:
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)
    end_process_group(process)
    before = trial_results(experiment)
    finished = {t for t, s in statuses(experiment).items() if s == "TERMINATED"}
    assert 1 <= len(finished) < 3, "the driver must be killed in the middle of the study"

    output = finish(start_study([*args, "--resume"], tmp_path=tmp_path, model=micro_t5_dir))
    after = trial_results(experiment)
    study = optuna.load_study(study_name="lora-main", storage=f"sqlite:///{tmp_path}/out/resume/optuna.db")
    ray_ids = sorted(t.user_attrs["ray_trial_id"] for t in study.trials)
    assert ray_ids == sorted(t.removeprefix("trial_") for t in after)  # each trial once, no orphan
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}  # none left RUNNING
    assert len(after) == 3 and set(statuses(experiment).values()) == {"TERMINATED"}
    for trial, rows in after.items():
        assert [r["training_iteration"] for r in rows] == [1, 2], trial  # every result, each once
        assert "test/accuracy" in rows[-1]
        if trial.removeprefix("trial_") in finished:
            assert rows == before[trial]  # a finished trial is not run again
    table = output[output.index("best trial of each experiment") :].splitlines()
    assert table[2].split()[:5] == ["lora", "main", "3", "0", "0"]  # chance rows and warnings follow it


def tensorboard_scalars(trial_dir: Path) -> dict[str, dict[int, float]]:
    """Tag -> {step: value} from a trial's TensorBoard event files (TFRecord framing, tensorboardX's protos)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for path in trial_dir.glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])  # after length and its CRC
            offset += 12 + length + 4  # the record and its CRC
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.mark.slow
def test_asha_study_as_optuna_mlflow_and_tensorboard_users_see_it(tmp_path, micro_t5_dir):
    """ASHA stops some stacked trials; Optuna's own tools, MLflow's client and the event files agree with Ray."""
    mlflow = pytest.importorskip("mlflow")
    from ray.tune import ExperimentAnalysis

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--method", "stacked", "--trials", "8", "--name", "asha", "--metric", "dev/perplexity"]
    args += ["--mlflow", tracking, "--scheduler", "asha"]  # the tiny preset's default is none
    args += [
        "--space",
        "strategy/f=[identity,relu,leaky_relu,gelu,tanh,silu]",  # the tiny preset searches two
        "--space",
        "train/epochs=1",
        "--space",
        "train/evals_per_epoch=2",
        "--space",
        "strategy/baseline=stacked",
    ]
    # From tmp_path: MLflow puts a SQLite store's artifacts in ./mlruns of the driver's folder.
    output = finish(start_study(args, tmp_path=tmp_path, model=micro_t5_dir, cwd=tmp_path))
    experiment = tmp_path / "out" / "asha" / "stacked-main"
    results = trial_results(experiment)
    stopped = {t.removeprefix("trial_") for t, rows in results.items() if "test/accuracy" not in rows[-1]}
    assert len(results) == 8 and 1 <= len(stopped) < 8, statuses(experiment)
    assert all(len(results[f"trial_{t}"]) == 1 for t in stopped)  # stopped at the first rung
    fs = {rows[-1]["config"]["strategy/f"] for rows in results.values()}
    assert fs == {"identity", "relu", "leaky_relu", "gelu", "tanh", "silu"}  # every f covered
    expected = ["stacked", "main", str(8 - len(stopped)), str(len(stopped)), "0"]
    table = output[output.index("best trial of each experiment") :].splitlines()
    assert table[2].split()[:5] == expected  # the chance rows and any warning follow the experiment's row
    assert f"sqlite:///{tmp_path}/out/asha/optuna.db" in output and "optuna-dashboard sqlite:///" in output

    # Optuna, as a user opens it: one trial per Ray trial, in the state Ray's ExperimentAnalysis gives.
    study = optuna.load_study(study_name="stacked-main", storage=f"sqlite:///{tmp_path}/out/asha/optuna.db")
    analysis = ExperimentAnalysis(str(experiment))
    ray_trials = {t.trial_id: t for t in analysis.trials}
    optuna_trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert len(study.trials) == len(ray_trials) == 8 and optuna_trials.keys() == ray_trials.keys()
    for trial_id, trial in optuna_trials.items():
        rows = results[f"trial_{trial_id}"]
        assert ray_trials[trial_id].status == "TERMINATED"
        assert trial.state == (TrialState.PRUNED if trial_id in stopped else TrialState.COMPLETE)
        assert trial.value == rows[-1]["dev/perplexity"]
        assert trial.intermediate_values == {r["training_iteration"]: r["dev/perplexity"] for r in rows}
        assert trial.params["strategy/f"] == rows[-1]["config"]["strategy/f"]
        assert Path(trial.user_attrs["ray_trial_dir"]) == experiment / f"trial_{trial_id}"
        if trial_id not in stopped:
            assert trial.user_attrs["test/accuracy"] == rows[-1]["test/accuracy"]
            assert Path(trial.user_attrs["generations_test"]).is_file()
    importances = optuna.importance.get_param_importances(study)
    assert "train/lr" in importances and abs(sum(importances.values()) - 1) < 1e-6

    # MLflow: one experiment, one run per trial with its parameters, metrics and generations file.
    mlflow.set_tracking_uri(tracking)
    try:
        runs = mlflow.search_runs(experiment_names=["asha/stacked-main"], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)  # (the default again, for other tests in this process)
    runs = {run.data.tags["ray_trial_id"]: run for run in runs}
    assert runs.keys() == ray_trials.keys()
    client = mlflow.tracking.MlflowClient(tracking)
    for trial_id, run in runs.items():
        rows = results[f"trial_{trial_id}"]
        assert run.data.params["strategy/f"] == rows[-1]["config"]["strategy/f"]
        history = client.get_metric_history(run.info.run_id, "dev/perplexity")
        assert [(m.step, m.value) for m in history] == [
            (r["training_iteration"], r["dev/perplexity"]) for r in rows
        ]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert ("generations_test.jsonl" in artifacts) == (trial_id not in stopped)
        assert run.info.status == "FINISHED"

    # TensorBoard: Ray's event files hold the dev metrics of every evaluation.
    for trial_id in ray_trials:
        rows = results[f"trial_{trial_id}"]
        scalars = tensorboard_scalars(experiment / f"trial_{trial_id}")
        expected = {r["training_iteration"]: r["dev/perplexity"] for r in rows}
        assert scalars["ray/tune/dev/perplexity"] == pytest.approx(expected), trial_id


def test_the_tiny_presets_narrowing_applies_and_a_users_space_replaces_it():
    (lora,) = plan_experiments(StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",))))
    by_key = {o.key: o for o in lora.overrides}
    assert by_key["strategy/r"].value == 4 and by_key["train/epochs"].value == 4
    assert (by_key["train/lr"].low, by_key["train/lr"].high) == (4e-3, 1e-2)  # not full fine-tuning's
    assert "strategy/r2" not in by_key  # stacked's key, and stacked is not in this study
    user = (spec_to_override("strategy/r", [16]), spec_to_override("train/lr", "1e-4..1e-3", method="lora"))
    (lora,) = plan_experiments(
        StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",)), overrides=user)
    )
    by_key = {o.key: o for o in lora.overrides}
    assert by_key["strategy/r"].choices == (16,) and (by_key["train/lr"].low, by_key["train/lr"].high) == (
        1e-4,
        1e-3,
    )
    (small,) = plan_experiments(StudyConfig(preset="small", search=SearchSettings(methods=("lora",))))
    assert {o.key for o in small.overrides} == {
        "train/epochs", "train/max_input_tokens", "train/max_target_tokens", "train/eval/batch_size",
        "train/eval/max_new_tokens",
    }  # fmt: skip
    assert (small.overrides[0].low, small.overrides[0].high, small.max_iterations) == (1, 2, 2)


def test_a_dev_metric_the_preset_skips_on_dev_is_computed_when_the_search_needs_it():
    def dev_metrics(**settings) -> str:
        (lora,) = plan_experiments(
            StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",), **settings))
        )
        return {o.key: o.value for o in lora.overrides}["train/eval/metrics"]

    assert dev_metrics() == "accuracy"  # the tiny preset: accuracy alone on dev
    assert dev_metrics(metric="dev/perplexity") == "accuracy,perplexity"
