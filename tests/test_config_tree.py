"""The config tree: one override syntax for flags, files and presets; each value's origin; the study saved
as the file that reruns it (same seed, same sampled trials); --print-config on every command; stage 1
cut by the study's epochs (issue #20)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna
import pytest
import yaml

from search_spaces import define_by_run
from study.config import StudyConfig, read_settings_file, study_fields
from study.confirm import ConfirmConfig
from study.plan import plan_experiments, study_overrides
from study.run import build_parser, parse_config
from study.study_file import print_study, record_values, study_record, study_tree, write_study_file

optuna.logging.set_verbosity(optuna.logging.WARNING)
FIXTURES = Path(__file__).parent / "fixtures"


def sampled(config: StudyConfig, n: int = 4) -> dict[str, list[dict]]:
    """The first `n` trial configs TPE samples for each experiment (as `study.tuner` builds it), no training."""
    out = {}
    for experiment in plan_experiments(config):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=config.search.seed, multivariate=True, group=True, constant_liar=True
            )
        study = optuna.create_study(sampler=sampler, direction="maximize")
        for point in experiment.points:
            study.enqueue_trial(point)
        space = define_by_run(experiment.method, experiment.base, experiment.overrides)
        rows = []
        for i in range(n):
            trial = study.ask()
            rows.append(space(trial))
            study.tell(trial, (i * 7 % 5) / 10)
        out[experiment.name] = rows
    return out


def test_each_value_says_where_it_came_from(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("data/dev_size: 20\nstacked:\n  strategy/f: [relu, gelu]\n")
    config = parse_config(
        ["--method", "lora", "--method", "stacked", "--preset", "tiny", "--trials", "3", "--set-file", str(settings),
         "--set", "train/lr=1e-3..5e-3", "--set", "resources/num_cpus=2"]
    )  # fmt: skip
    tree = study_tree(config)
    assert tree["search/trials"] == {"value": 3, "from": "flag"}
    assert tree["resources/num_cpus"] == {"value": 2, "from": "flag"}
    assert tree["data/dev_size"] == {"value": 20, "from": f"file {settings}"}
    assert tree["data/train_size"] == {"value": 2000, "from": "preset tiny"}
    assert tree["scheduler/grace_period"] == {"value": 1, "from": "default"}
    assert tree["stacked:strategy/f"] == {"value": ["relu", "gelu"], "from": f"file {settings}"}
    assert tree["train/lr"] == {"value": "0.001..0.005", "from": "flag"}
    assert tree["train/epochs"] == {"value": 4, "from": "preset tiny"}
    assert "full:train/lr" not in tree and "lora_cot:train/prompt_style" not in tree  # not in this study


@pytest.mark.parametrize(
    ("flag", "setting"),
    [
        (["--trials", "7"], ["--set", "search/trials=7"]),
        (["--num-cpus", "3"], ["--set", "resources/num_cpus=3"]),
        (["--scheduler", "none"], ["--set", "scheduler/name=none"]),
        (["--no-dashboard"], ["--set", "resources/dashboard=false"]),
        (["--train-size", "64"], ["--set", "data/train_size=64"]),
        (["--space", "train/epochs=2"], ["--set", "train/epochs=2"]),
    ],
)
def test_a_flag_and_its_key_are_one_setting(flag, setting):
    base = ["--method", "lora", "--preset", "tiny"]
    assert study_tree(parse_config(base + flag)) == study_tree(parse_config(base + setting))


def test_a_study_file_reruns_the_study_with_flags_still_overriding(tmp_path):
    first = parse_config(
        ["--method", "lora", "--method", "stacked", "--preset", "tiny", "--trials", "4", "--seed", "3",
         "--storage", str(tmp_path), "--name", "first", "--set", "stacked:strategy/f=[relu,gelu,tanh]",
         "--set", "train/warmup_ratio=0..0.05"]
    )  # fmt: skip
    path = write_study_file(first)
    assert path == f"{tmp_path}/first/study.yaml" and not list((tmp_path / "first").glob(".*.tmp"))
    again = parse_config(["--study-file", path, "--name", "again"])
    assert again.storage.name == "again" and again.study_path == f"{tmp_path}/again"
    values = lambda config: {k: v["value"] for k, v in study_tree(config).items() if k != "storage/name"}  # noqa: E731
    assert values(again) == values(first)
    assert study_tree(again)["stacked:strategy/f"]["from"] == f"file {path}"
    assert study_tree(again)["train/epochs"]["from"] == "preset tiny"  # a preset's value stays the preset's
    assert sampled(again) == sampled(first)  # same seed, same sampled trial configurations
    reseeded = parse_config(["--study-file", path, "--name", "again", "--seed", "4"])
    assert study_tree(reseeded)["search/seed"] == {"value": 4, "from": "flag"}
    assert sampled(reseeded) != sampled(first)


def test_the_study_file_is_the_whole_space_and_an_edited_default_is_the_run(tmp_path, capsys):
    first = parse_config(
        ["--method", "lora", "--method", "stacked", "--preset", "paper", "--storage", str(tmp_path), "--name", "p"]
    )  # fmt: skip
    path = write_study_file(first)
    saved = yaml.safe_load(open(path).read())
    # every trial setting of every method: the space's range or choices, the dataclasses' fixed values
    assert saved["lora:strategy/r"] == {"value": [4, 8, 16, 32], "from": "default"}
    assert saved["lora:train/lr"] == {"value": {"low": 1e-4, "high": 3e-3, "log": True}, "from": "default"}
    assert saved["stacked:strategy/f_space"] == {"value": ["weight", "activation"], "from": "default"}
    assert saved["stacked:train/grad_accum"] == {"value": 1, "from": "default"}
    assert saved["lora:train/eval/similarity_model"]["from"] == "default"
    assert "lora:train/seed" not in saved and "stacked:strategy/r" not in saved
    print_study(first)
    assert capsys.readouterr().out == open(path).read()  # --print-config prints the file
    again = parse_config(["--study-file", path, "--name", "again"])
    trial_settings = lambda config: {k: v for k, v in study_tree(config).items() if ":" in k}  # noqa: E731
    assert trial_settings(again) == trial_settings(first)  # the same values, the defaults still the code's
    assert sampled(again) == sampled(first)
    edited = tmp_path / "edited.yaml"
    edited.write_text(open(path).read().replace("[4, 8, 16, 32], from: default", "[64], from: default"))
    config = parse_config(["--study-file", str(edited)])
    assert study_tree(config)["lora:strategy/r"] == {"value": [64], "from": f"file {edited}"}
    assert {row["strategy/r"] for row in sampled(config)["lora-main"]} == {64}
    flagged = parse_config(["--study-file", str(edited), "--set", "strategy/r=[2]"])
    assert study_tree(flagged)["strategy/r"] == {"value": [2], "from": "flag"}  # a flag still overrides
    assert "lora:strategy/r" not in study_tree(flagged)


def test_a_study_file_with_fewer_methods_drops_the_others_settings(tmp_path):
    config = parse_config(
        ["--method", "all", "--preset", "tiny", "--storage", str(tmp_path), "--name", "all"]
    )
    path = write_study_file(config)
    lora = parse_config(["--study-file", path, "--method", "lora"])
    assert lora.search.methods == ("lora",) and "stacked:strategy/f" not in study_tree(lora)
    [experiment] = plan_experiments(lora)
    assert {o.key for o in experiment.overrides} >= {"train/epochs", "strategy/r"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("search/trials: 3\n", "search/trials should be {value: ..., from: ...}"),
        (
            "search/trials: {value: lots, from: flag}\n",
            "--set search/trials: expected a whole number, got 'lots'",
        ),
        ("search/nope: {value: 1, from: flag}\n", "--set search/nope: not a setting of search"),
        ("- 1\n", "expected a mapping of key: spec"),
    ],
)
def test_a_bad_study_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        parse_config(["--study-file", str(path)])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_settings_file_entry_is_read_as_data_only(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("train/lr: !!python/name:os.system\n")
    with pytest.raises(ValueError, match="YAML tag !!python/name:os.system is not accepted"):
        read_settings_file(path)


def test_the_study_s_epochs_cut_stacked_stage_1_unless_it_is_set_itself():
    """Issue #20's rehearsal (`--preset paper --space train/epochs=1`) trains stage 1 for one epoch too."""

    def stage1(*args: str) -> int:
        [stacked] = [o for o in study_overrides(parse_config(["--method", "all", "--preset", "paper", *args]))
                     if o.key == "strategy/stage1_epochs"]  # fmt: skip
        return stacked.value

    assert stage1() == 3  # the paper's
    assert stage1("--space", "train/epochs=1") == 1
    assert stage1("--set", "train/epochs=1..2") == 2
    assert stage1("--set", "train/epochs=1", "--set", "stacked:strategy/stage1_epochs=2") == 2


def test_an_unprefixed_strategy_setting_reaches_every_method_that_has_it_sampled_or_not():
    """Stacked LoRA's space leaves `target_modules` to the study (its stage 1 owns it): a preset's or a
    user's `strategy/target_modules` must still reach it, not only the methods whose space samples it."""

    def targets(*args: str) -> dict[str, str]:
        experiments = plan_experiments(parse_config(["--method", "all", "--preset", "tiny", *args]))
        return {
            e.method: o.value for e in experiments for o in e.overrides if o.key == "strategy/target_modules"
        }

    assert targets() == dict.fromkeys(("lora", "lora_cot", "qlora", "stacked"), "q,k,v,o,wi,wo")
    assert targets("--set", "strategy/target_modules=q,v")["stacked"] == "q,v"


def test_print_config_prints_the_tree_on_every_command(tmp_path, capsys):
    from study import confirm, run, train

    run.main(["--method", "lora", "--preset", "tiny", "--print-config", "--set", "strategy/r=[2,4]"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["strategy/r"] == {"value": [2, 4], "from": "flag"}
    assert printed["preset"] == {"value": "tiny", "from": "flag"}

    train.main(["--method", "stacked", "--set", "f=relu", "--print-config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["strategy/f"] == {"value": "relu", "from": "flag"}
    assert printed["preset"] == {"value": "tiny", "from": "default"}  # study.train's own default

    study = tmp_path / "slm-tiny"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({"methods": ["lora"], "preset": "tiny", "seed": 2}))
    confirm.main([str(study), "--set", "confirm/seeds=3", "--print-config"])
    out = capsys.readouterr().out
    assert "# confirm/seeds: 3" in out and yaml.safe_load(out)["search/seed"]["value"] == 2


KEYS_AND_FLAGS = {
    "preset": "--preset",
    "search/methods": "--method", "search/trials": "--trials", "search/seed": "--seed",
    "search/metric": "--metric", "search/mode": "--mode",
    "data/configs": "--config", "data/dir": "--data-dir", "data/source": None, "data/train_size": "--train-size",
    "data/dev_size": "--dev-size", "data/test_size": "--test-size", "data/min_steps": None, "data/max_steps": None,
    "data/max_operand": None, "data/code_dataset": "--code-dataset",
    "model/name": "--model", "model/tiny_size": None, "model/pretrain": None,
    "scheduler/name": "--scheduler", "scheduler/grace_period": "--grace-period",
    "scheduler/reduction_factor": "--reduction-factor",
    "resources/max_concurrent": "--max-concurrent", "resources/cpus_per_trial": "--cpus-per-trial",
    "resources/gpus_per_trial": "--gpus-per-trial", "resources/max_failures": "--max-failures",
    "resources/address": "--address", "resources/num_cpus": "--num-cpus", "resources/dashboard": "--dashboard",
    "resources/preflight": "--preflight",
    "storage/root": "--storage", "storage/name": "--name", "storage/optuna": "--optuna-storage",
    "storage/mlflow": "--mlflow", "storage/resume": "--resume",
}  # fmt: skip
"""Every study key and its flag as they were before the tree (the release's `study.yaml` files, README commands
and scripts use them): a renamed field cannot pass silently."""


def test_every_key_is_its_leaf_s_path_and_keys_and_flags_are_unchanged():
    from study.config_tree import leaves

    fields = study_fields()
    assert {key: leaf.flag for key, leaf in fields.items()} == KEYS_AND_FLAGS
    for key, leaf in fields.items():
        assert key == (f"{leaf.section}/{leaf.name}" if leaf.section else leaf.name)  # written once: the path
    confirm = {"confirm/results", "confirm/seeds", "confirm/families", "storage/resume"}
    confirm |= {f"resources/{name}" for name in ("address", "num_cpus", "max_concurrent", "dashboard")}
    assert set(leaves(ConfirmConfig)) == confirm


def test_each_flag_sets_its_key_in_the_generated_parser():
    parser = build_parser()
    flags = {flag: action.dest for action in parser._actions for flag in action.option_strings}
    for key, flag in KEYS_AND_FLAGS.items():
        if flag is None:
            assert not any(dest == key for dest in flags.values()), key  # settable by key only
            continue
        shown = flag if flag in flags else f"--no-{flag.removeprefix('--')}"  # a setting on by default
        assert flags[shown] == key


def test_a_study_file_written_before_the_tree_reruns_unchanged(tmp_path, capsys):
    text = (FIXTURES / "study_written_before_the_tree.yaml").read_text().replace("STORAGE", str(tmp_path))
    path = tmp_path / "x" / "study.yaml"
    path.parent.mkdir()
    path.write_text(text)
    config = parse_config(["--study-file", str(path)])
    given = (config.search.methods, config.search.trials, config.data.train_size)
    assert given == (("lora", "stacked"), 3, 2000)
    assert (config.model.name, config.scheduler.name, config.storage.root) == ("tiny", "none", str(tmp_path))
    print_study(config)
    printed = capsys.readouterr().out
    values = lambda text: {k: v["value"] for k, v in yaml.safe_load(text).items()}  # noqa: E731
    assert values(printed) == values(text)  # the same tree, value for value
    assert printed.splitlines()[:2] == text.splitlines()[:2]


def test_study_json_keeps_the_flat_names_studies_were_recorded_with(tmp_path):
    flags = ["--method", "lora", "--data-dir", str(tmp_path), "--optuna-storage", "sqlite:///o.db"]
    config = parse_config([*flags, "--model", "m"])
    record = study_record(config)
    assert set(record) == {
        "methods", "configs", "trials", "preset", "model", "tiny_size", "pretrain", "data_dir", "data_source",
        "train_size", "dev_size", "test_size", "min_steps", "max_steps", "max_operand", "code_dataset",
        "scheduler", "grace_period", "reduction_factor", "max_concurrent", "cpus_per_trial", "gpus_per_trial",
        "max_failures", "address", "num_cpus", "dashboard", "preflight", "storage", "name", "optuna_storage",
        "mlflow", "resume", "seed", "metric", "mode", "overrides", "preset_overrides", "plugins", "origins",
    }  # fmt: skip
    recorded = (record["data_dir"], record["optuna_storage"], record["model"])
    assert recorded == (str(tmp_path), "sqlite:///o.db", "m")
    assert (record["data_source"], record["scheduler"], record["name"]) == ("local", "asha", "slm-paper")
    assert record_values(json.loads(json.dumps(record)))["data/dir"] == str(tmp_path)  # read back by key


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_a_preset_is_a_settings_file_and_the_same_file_given_as_one_sets_the_same_tree(name):
    """A preset is data: its file given as `--set-file` over the paper preset resolves to the same tree,
    value for value (only where each value came from differs)."""
    from study.config import PRESET_DIR

    common = ["--method", "all", "--name", "s"]
    preset = study_tree(parse_config([*common, "--preset", name]))
    as_file = study_tree(
        parse_config([*common, "--preset", "paper", "--set-file", str(PRESET_DIR / f"{name}.yaml")])
    )
    del preset["preset"], as_file["preset"]
    assert {k: v["value"] for k, v in as_file.items()} == {k: v["value"] for k, v in preset.items()}
    assert any(v["from"] == f"preset {name}" for v in preset.values())
