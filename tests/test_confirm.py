"""`python -m study.confirm`: bad input, the settings it recovers from a study, and a tiny end-to-end run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_tuner import REPO, study_env, trial_results

from study.config import DataSettings, ModelSettings, SearchSettings, StudyConfig
from study.confirm import ConfirmConfig, ConfirmResources, main, seeds_for, study_config
from study.study_file import study_record


def _study(tmp_path: Path, **settings) -> Path:
    folder = tmp_path / "results" / "slm-tiny"
    folder.mkdir(parents=True)
    given = {"preset": "tiny", "search/methods": ("lora",), "storage/root": str(tmp_path / "elsewhere")}
    record = study_record(StudyConfig.from_keys({**given, **settings}))
    (folder / "study.json").write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/no-such-study"], "error: no such results folder: "),
        (["{tmp}"], "is not a study folder (no study.json)"),
        (["{study}", "--seeds", "1"], "error: --seeds must be a whole number >= 2"),
        (["{study}", "--seeds", "two"], "error: argument --seeds: invalid int value"),
        (["{study}", "--resume"], "error: nothing to resume: no confirmation runs in "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message, monkeypatch):
    study = _study(tmp_path)
    monkeypatch.setattr("study.confirm.plan", lambda confirm, config: {"seeds": [1, 2], "groups": {}})
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path, study=study) for a in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_the_study_settings_come_from_study_json_and_the_folder_it_is_in(tmp_path):
    settings = {
        "search/seed": 7,
        "data/test_size": 40,
        "resources/num_cpus": 3,
        "resources/cpus_per_trial": 0.5,
    }
    study = _study(tmp_path, **settings)
    config = study_config(ConfirmConfig(results=str(study), resources=ConfirmResources(num_cpus=2)))
    given = (config.preset, config.search.seed, config.data.test_size, config.resources.cpus_per_trial)
    assert given == ("tiny", 7, 40, 0.5)
    assert config.study_path == str(study)  # where the study is now, not the storage it was run with
    assert config.resources.num_cpus == 2  # the command line wins over the study's cluster settings
    assert seeds_for(config, 3) == [8, 9, 10]  # fresh: the search trained every trial with seed 7


def test_a_cluster_setting_the_confirmation_leaves_out_is_the_study_s(tmp_path):
    study = _study(tmp_path, **{"resources/num_cpus": 3, "resources/address": "auto"})
    config = study_config(ConfirmConfig(results=str(study)))
    assert (config.resources.num_cpus, config.resources.address) == (3, "auto")


@pytest.mark.slow
def test_confirm_end_to_end_on_a_tiny_study(tmp_path, finished_lora_study):
    study = tmp_path / "out" / "s"
    shutil.copytree(finished_lora_study / "lora", study)  # confirm runs where the study is now
    command = [
        sys.executable,
        "-m",
        "study.confirm",
        str(study),
        "--seeds",
        "2",
        "--num-cpus",
        "2",
        "--no-dashboard",
    ]

    def confirm(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *extra], cwd=REPO, env=study_env(tmp_path), capture_output=True, text=True, timeout=300
        )

    done = confirm()
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    manifest = json.loads((study / "confirm" / "confirm.json").read_text())
    assert manifest["seeds"] == [1, 2] and list(manifest["groups"]) == [
        "method/main/lora",
        "lora_variants/main/lora",
    ]
    # The method's group and its plain-LoRA variant's group have one best trial: it is re-run once.
    assert len(manifest["experiments"]) == 1
    assert len({group["experiment"] for group in manifest["groups"].values()}) == 1
    experiment = study / "confirm" / manifest["groups"]["method/main/lora"]["experiment"]
    runs = trial_results(experiment)
    assert sorted(rows[-1]["config"]["train/seed"] for rows in runs.values()) == [1, 2]
    source = json.loads(next((study / "lora-main").glob("trial_*/params.json")).read_text())
    for trial, rows in runs.items():
        config = rows[-1]["config"]
        assert {**config, "train/seed": 0} == source  # the best trial, another seed
        assert "test/accuracy" in rows[-1] and rows[-1]["test/n"] == 8  # the whole (tiny) test split
        assert (experiment / trial / "generations_test.jsonl").is_file()
    from ray.tune import ExperimentAnalysis

    frame = ExperimentAnalysis(str(experiment)).dataframe()
    assert sorted(frame["config/train/seed"]) == [1, 2] and frame["test/accuracy"].notna().all()
    assert "method/main/lora" in done.stdout and "search's best" in done.stdout

    again = confirm()
    assert again.returncode == 2 and "pass --resume" in again.stderr
    resumed = confirm("--resume")
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert trial_results(experiment) == runs  # finished runs are not run again


@pytest.mark.slow  # reads GSM8K four times (~10 s each on a loaded 2-core machine)
def test_gsm8k_runs_are_scored_on_the_whole_test_split_with_train_and_dev_unchanged(data_dir, micro_t5_dir):
    from study.confirm_runs import prepare_confirm_inputs
    from study.plan import prepare_inputs

    config = StudyConfig(
        preset="small",
        search=SearchSettings(methods=("lora",)),
        data=DataSettings(dir=str(data_dir), train_size=50, dev_size=10, test_size=20),
        model=ModelSettings(name=str(micro_t5_dir)),
    )
    study = prepare_inputs(config).splits["main"]
    prepared, notes = prepare_confirm_inputs(config)
    splits = prepared.splits["main"]
    assert len(study.test) == 20 and len(splits.test) == 1319  # GSM8K's whole test file
    assert [r.question for r in splits.train] == [r.question for r in study.train]
    assert [r.question for r in splits.dev] == [r.question for r in study.dev]
    assert notes == ["main: the whole test split, 1319 records"]
