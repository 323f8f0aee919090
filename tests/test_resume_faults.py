"""`--resume` over damaged or lost records (issue 19): Ray's experiment state cut in half or deleted, a garbage
searcher state, a deleted Optuna database. Each stops with one line naming the damaged file and exit 2 before
Ray starts (Ray itself would start the experiment over on every resume, or hang), and nothing is created in
the lost file's place. The fast tests build the damaged folders by hand; one slow test damages a real study."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from test_optuna_store import FINISHED, stored_searcher
from test_tuner import LORA_STUDY, MICRO, REPO, end_process_group, start_study, study_env

from study.config import SearchSettings, StorageSettings, StudyConfig
from study.stored_experiment import check_saved_state
from study.tracking import optuna_location, prepare_studies


def saved_experiment(study: Path) -> Path:
    """An experiment folder as Ray leaves it after a snapshot, beside an Optuna study with one finished trial."""
    search = stored_searcher(study)
    search.suggest("a")
    search.on_trial_complete("a", result={"dev/accuracy": 0.2, "training_iteration": 1, **FINISHED})
    experiment = study / "lora-main"
    experiment.mkdir()
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"_tune_config": None}))
    state = {"trial_data": [], "runner_data": {}, "stats": {}}
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    search.save(str(experiment / "searcher-state-2026-01-01_00-00-00.pkl"))
    (experiment / "search_gen_state-2026-01-01_00-00-00.json").write_bytes(pickle.dumps({"counter": 1}))
    return experiment


def test_a_whole_snapshot_passes_and_a_damaged_one_is_named(tmp_path):
    experiment = saved_experiment(tmp_path)
    check_saved_state(str(experiment))
    state = experiment / "experiment_state-2026-01-01_00-00-00.json"
    text = state.read_text()
    state.write_text(text[: len(text) // 2])  # cut in half by a full disk or a killed copy
    with pytest.raises(ValueError, match=f"^cannot resume: Ray's experiment state {state} is damaged"):
        check_saved_state(str(experiment))
    state.write_text(text)
    searcher = experiment / "searcher-state-2026-01-01_00-00-00.pkl"
    searcher.write_bytes(b"\x80\x05garbage" * 50)
    with pytest.raises(ValueError, match=f"^cannot resume: Ray's searcher state {searcher} is damaged"):
        check_saved_state(str(experiment))
    searcher.unlink()
    with pytest.raises(ValueError, match=r"searcher state \(searcher-state-\*\.pkl\) is missing from"):
        check_saved_state(str(experiment))


def test_an_older_snapshot_is_not_what_ray_resumes_from(tmp_path):
    experiment = saved_experiment(tmp_path)
    (experiment / "experiment_state-2025-01-01_00-00-00.json").write_text("{")  # superseded
    check_saved_state(str(experiment))


def test_a_deleted_experiment_state_never_drops_the_finished_trials(tmp_path):
    saved_experiment(tmp_path)
    own = optuna_location(
        StudyConfig(
            search=SearchSettings(methods=("lora",)),
            storage=StorageSettings(root=str(tmp_path.parent), name=tmp_path.name),
        )
    )
    with pytest.raises(ValueError, match=r"experiment_state-\*\.json\) is missing from .*1 finished trials"):
        prepare_studies(own, ["lora-main"], restored=set(), study_path=str(tmp_path))
    assert len(optuna.load_study(study_name="lora-main", storage=own.url).trials) == 1  # not deleted


def test_a_deleted_optuna_database_is_named_and_not_recreated(tmp_path):
    saved_experiment(tmp_path)
    (tmp_path / "optuna.db").unlink()
    own = optuna_location(
        StudyConfig(
            search=SearchSettings(methods=("lora",)),
            storage=StorageSettings(root=str(tmp_path.parent), name=tmp_path.name),
        )
    )
    with pytest.raises(
        ValueError, match=f"^cannot resume: the Optuna database {tmp_path}/optuna.db is missing"
    ):
        prepare_studies(own, ["lora-main"], restored={"lora-main"}, study_path=str(tmp_path))
    assert not (tmp_path / "optuna.db").exists()


def test_a_database_without_the_experiments_study_is_named(tmp_path):
    saved_experiment(tmp_path)
    own = optuna_location(
        StudyConfig(
            search=SearchSettings(methods=("lora",)),
            storage=StorageSettings(root=str(tmp_path.parent), name=tmp_path.name),
        )
    )
    with pytest.raises(ValueError, match="holds no Optuna study 'lora_cot-main'"):
        prepare_studies(own, ["lora_cot-main"], restored={"lora_cot-main"}, study_path=str(tmp_path))


def damage_state(experiment: Path) -> str:
    state = max(experiment.glob("experiment_state-*.json"))
    state.write_text(state.read_text()[:200])
    return str(state)


def delete_state(experiment: Path) -> str:
    for state in experiment.glob("experiment_state-*.json"):
        state.unlink()
    return "experiment_state-*.json) is missing from"


def garble_searcher(experiment: Path) -> str:
    searcher = max(experiment.glob("searcher-state-*.pkl"))
    searcher.write_bytes(b"\x80\x04not a pickle at all" * 40)
    return str(searcher)


def delete_database(experiment: Path) -> str:
    (experiment.parent / "optuna.db").unlink()
    return f"the Optuna database {experiment.parent / 'optuna.db'} is missing"


@pytest.mark.slow
def test_resume_over_each_damaged_record_is_one_line_and_exit_2(tmp_path, micro_t5_dir, finished_lora_study):
    whole = finished_lora_study  # LORA_STUDY, finished (shared: each damage is done to a copy)
    for damage in (damage_state, delete_state, garble_searcher, delete_database):
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        shutil.copytree(whole, tmp_path / "out")
        named = damage(tmp_path / "out" / "lora" / "lora-main")
        process = start_study([*LORA_STUDY, "--resume"], tmp_path=tmp_path, model=micro_t5_dir)
        try:
            output, _ = process.communicate(timeout=240)  # Ray would start it over, or hang
        except subprocess.TimeoutExpired:
            end_process_group(process)
            pytest.fail(f"{damage.__name__}: --resume did not stop")
        last = output.strip().splitlines()[-1]
        assert process.returncode == 2, f"{damage.__name__}: {output[-2000:]}"
        assert last.startswith("error: cannot resume") and named in last, last
        assert "Traceback" not in output
        assert (tmp_path / "out" / "lora" / "optuna.db").exists() == (damage is not delete_database)


FILL_DURING_STUDY = r"""
mount -t tmpfs -o size=4m tmpfs "$OPTUNA_DIR"
"$@" 2>&1 & study=$!
until ls "$STUDY_DIR"/lora-main/trial_*/checkpoint_* >/dev/null 2>&1; do  # a trial has reported once
    kill -0 $study 2>/dev/null || break
    sleep 0.2
done
dd if=/dev/zero of="$OPTUNA_DIR/filler" bs=64k 2>/dev/null  # until the disk is full
wait $study
echo "study exit $?"
rm "$OPTUNA_DIR/filler"
"$@" --resume >"$STUDY_DIR.resume.log" 2>&1
echo "resume exit $?"
"""


@pytest.mark.slow
def test_a_storage_that_fills_up_under_a_study_is_one_line_and_exit_2_and_the_resume_finishes(
    tmp_path, micro_t5_dir
):
    """The Optuna database lives on a 4 MiB tmpfs (in a user and mount namespace of the test's own) that is
    filled up once the trial has reported: Optuna's next write fails inside Ray's loop. (Answer-only: the
    code sandbox cannot drop to its own uid inside a user namespace that maps one uid.)"""
    if subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces here (unshare -r -m)")
    optuna_dir = tmp_path / "optuna"
    optuna_dir.mkdir()
    study = [sys.executable, "-m", "study.run", *MICRO, "--model", str(micro_t5_dir)]
    study += ["--storage", str(tmp_path / "out"), "--method", "lora", "--trials", "1", "--name", "full"]
    study += ["--space", "train/epochs=2", "--space", "train/prompt_style=answer_only", "--scheduler", "none"]
    study += ["--optuna-storage", f"sqlite:///{optuna_dir}/optuna.db"]
    env = {**study_env(tmp_path), "OPTUNA_DIR": str(optuna_dir), "STUDY_DIR": str(tmp_path / "out" / "full")}
    run = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", FILL_DURING_STUDY, "sh", *study],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    resumed = (tmp_path / "out" / "full.resume.log").read_text()
    assert lines[-2:] == ["study exit 2", "resume exit 0"], run.stdout[-3000:] + resumed[-3000:]
    assert lines[-3].startswith(
        f"error: cannot write the Optuna study at sqlite:///{optuna_dir}/optuna.db: the storage is full ("
    )
    assert [line for line in lines if line.startswith("error:")] == [lines[-3]]
    assert "Traceback" not in run.stdout
