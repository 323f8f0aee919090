"""The config tree: one override syntax for flags, files and presets; each value's origin; the study saved
as the file that reruns it (same seed, same sampled trials); --print-config on every command; stage 1
cut by the study's epochs (issue #20)."""

from __future__ import annotations

import json
import warnings

import optuna
import pytest
import yaml

from search_spaces import define_by_run
from study.cli import read_settings_file
from study.config import StudyConfig
from study.plan import plan_experiments, study_overrides
from study.run import parse_config
from study.study_file import print_study, study_tree, write_study_file

optuna.logging.set_verbosity(optuna.logging.WARNING)


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
