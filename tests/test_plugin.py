"""Adding a method is adding files: IA3, from the two modules docs/adding-a-method.md shows, loaded with
`--plugin`, runs through `study.train` and a one-trial `study.run` (its Ray worker imports it too)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces import space_keys
from study.config import ModelSettings, SearchSettings, StudyConfig
from study.dashboard import ClusterInfo
from study.plan import plan_experiments, trial_resources
from study.run import parse_config
from trainables.methods import STRATEGIES, get_strategy, load_plugins, method_names, register_strategy

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = method_names()
"""The methods in the repository (read before any test loads the plugin)."""


def _doc_files() -> dict[str, str]:
    """The files docs/adding-a-method.md shows: a ```python NAME.py block each."""
    text = (REPO / "docs" / "adding-a-method.md").read_text()
    return dict(re.findall(r"```python (\w+\.py)\n(.*?)```", text, flags=re.DOTALL))


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The doc's plugin on sys.path; afterwards the registry and sys.modules are as before."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, code in _doc_files().items():
        (folder / name).write_text(code)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    STRATEGIES.pop("ia3", None)
    for module in ("ia3_method", "ia3_space"):
        sys.modules.pop(module, None)


def test_the_doc_shows_a_method_and_its_space():
    assert set(_doc_files()) == {"ia3_method.py", "ia3_space.py"}


def test_a_plugin_adds_a_method_to_every_list(plugin):
    assert "ia3" not in method_names()
    config = parse_config(["--plugin", "ia3_method", "--method", "all", "--preset", "tiny"])
    assert config.search.methods == (*BUILT_IN, "ia3") and config.plugins == ("ia3_method",)
    assert get_strategy("ia3").display_name == "IA3"
    # the study finds its space through the record, samples it and builds each trial config
    [experiment] = plan_experiments(StudyConfig(preset="tiny", search=SearchSettings(methods=("ia3",))))
    assert experiment.name == "ia3-main" and experiment.points == []
    assert "strategy/target_modules" in space_keys("ia3", experiment.base)


def test_a_plugin_method_gets_its_record_s_gpu_share(plugin):
    load_plugins(["ia3_method"])
    config = StudyConfig(preset="tiny", search=SearchSettings(methods=("ia3",)))
    cluster = ClusterInfo(
        address="h:1", dashboard_url=None, started_here=False, resources={"CPU": 4, "GPU": 1}
    )
    assert trial_resources(config, "ia3", cluster) == {"cpu": 1.0, "gpu": 0.125}


def test_a_missing_plugin_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "study.run", "--plugin", "no_such_plugin", "--method", "lora"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: --plugin no_such_plugin: cannot import it (No module named 'no_such_plugin')"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "IA3"}, "lower_snake_case"),
        ({"colour": "brown"}, "colour must be #RRGGBB"),
        ({"name": "ia3\n"}, "lower_snake_case"),
        ({"colour": "#aabbcc\n"}, "colour must be #RRGGBB"),
        ({"gpu_share": 0}, "gpu_share must be in (0, 1]"),
        ({"config_cls": dict}, "config_cls must be a dataclass"),
        ({"name": "lora"}, "method 'lora' is registered twice"),
    ],
)
def test_a_bad_record_is_refused_naming_the_field(change, message):
    lora = get_strategy("lora")
    fields = {
        "name": "lora_plus",
        "config_cls": lora.config_cls,
        "apply": lora.apply,
        "display_name": "LoRA+",
        "colour": "#000000",
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        register_strategy(**{**fields, **change})
    assert "lora_plus" not in STRATEGIES and STRATEGIES["lora"] is lora


def test_a_plugin_method_trains_through_study_train(plugin, micro_t5_dir, tmp_path, capsys):
    from study.train import main

    out = tmp_path / "run"
    final = main(
        [
            "--plugin", "ia3_method", "--method", "ia3", "--preset", "tiny", "--model", str(micro_t5_dir),
            "--train-size", "32", "--dev-size", "4", "--test-size", "4", "--out", str(out),
            "--set", "epochs=1", "--set", "max_new_tokens=4", "--set", "metrics=accuracy",
        ]
    )  # fmt: skip
    assert final["test/n"] == 4 and 0 <= final["test/accuracy"] <= 1
    # IA3 trains one vector per targeted layer (k, v: d_model each; wo: its input width), nothing else
    assert 0 < final["params/trainable"] < final["params/total"] / 50
    assert json.loads((out / "final_metrics.json").read_text()) == final


@pytest.mark.slow
def test_a_plugin_method_runs_through_study_confirm_and_report(
    plugin, micro_t5_dir, tmp_path, finished_lora_study
):
    """The doc's IA3 beside LoRA: searched by study.run, re-run by study.confirm, and in analysis.report's
    Table 1, accuracy table and figure, efficiency table and pairwise table, by its display name."""
    from test_tuner import MICRO, study_env

    env = study_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), str(REPO), env.get("PYTHONPATH", "")])

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
            start_new_session=True,
        )  # fmt: skip
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result

    study = tmp_path / "out" / "ia3"
    shutil.copytree(finished_lora_study / "lora", study)  # its LoRA experiment, run with LORA_STUDY's flags
    args = [*MICRO, "--model", str(micro_t5_dir), "--storage", str(tmp_path / "out"), "--name", "ia3"]
    args += ["--plugin", "ia3_method", "--trials", "1", "--space", "train/epochs=1", "--scheduler", "none"]
    searched = run("study.run", *args, "--method", "ia3")  # the same study: its other experiment
    [rows] = [
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in (study / "ia3-main").glob("trial_*/result.json")
    ]
    assert rows[-1]["config"]["method"] == "ia3" and "test/accuracy" in rows[-1]
    table = searched.stdout[searched.stdout.index("best trial of each experiment") :].splitlines()
    assert table[2].split()[:5] == ["ia3", "main", "1", "0", "0"]

    run("study.confirm", str(study), "--seeds", "2", "--num-cpus", "2", "--no-dashboard")
    manifest = json.loads((study / "confirm" / "confirm.json").read_text())
    assert [g for g in manifest["groups"] if g.startswith("method/")] == [
        "method/main/lora",
        "method/main/ia3",
    ]

    run("analysis.report", str(study), "--plugin", "ia3_method", "--out", str(tmp_path / "report"))
    report = tmp_path / "report"
    for name in ("table1_models", "accuracy_per_model", "efficiency"):
        with (report / "tables" / f"{name}.csv").open() as file:
            models = [row["Model"] for row in csv.DictReader(file)]
        assert models[:2] == ["LoRA", "IA3"], name  # the registry's order, the record's display name
    with (report / "tables" / "pairwise.csv").open() as file:
        [pair] = list(csv.DictReader(file))
    assert (pair["group_a"], pair["group_b"]) == ("LoRA", "IA3")
    assert (report / "figures" / "accuracy_per_model.png").stat().st_size > 0
    markdown = (report / "report.md").read_text()
    assert "Data: generated GSM8K-style problems; base model: micro-t5 (local)." in markdown


def test_a_method_carries_its_own_base_model_and_needs_no_preset_edit(monkeypatch):
    """A record moves the study's base model for itself (QLoRA: t5-small -> t5-base); a method registered
    from outside gets its own base and every preset's loop settings without any preset naming it."""
    from study.prepare import base_model_names

    lora = get_strategy("lora")
    fields = {"config_cls": lora.config_cls, "apply": lora.apply, "display_name": "X", "colour": "#000000"}
    monkeypatch.setitem(
        STRATEGIES, "big", type(lora)(name="big", base_models={"t5-small": "t5-3b"}, **fields)
    )
    paper = StudyConfig(preset="paper", search=SearchSettings(methods=("lora", "qlora", "big")))
    assert base_model_names(paper) == {"lora": "t5-small", "qlora": "t5-base", "big": "t5-3b"}
    tiny = StudyConfig(preset="tiny", search=SearchSettings(methods=("lora", "qlora", "big")))
    assert set(base_model_names(tiny).values()) == {"tiny"}  # a base the record does not list is its too
    given = StudyConfig(
        preset="paper", search=SearchSettings(methods=("qlora", "big")), model=ModelSettings(name="t5-large")
    )
    assert base_model_names(given) == {"qlora": "t5-large", "big": "t5-large"}


def test_a_plugin_method_gets_the_preset_s_loop_settings(plugin):
    load_plugins(["ia3_method"])
    [experiment] = plan_experiments(StudyConfig(preset="tiny", search=SearchSettings(methods=("ia3",))))
    fixed = {o.key: o.value for o in experiment.overrides if o.kind == "fixed"}
    assert (fixed["train/epochs"], fixed["train/prompt_style"], fixed["train/eval/max_new_tokens"]) == (
        4,
        "code",
        80,
    )
    assert experiment.max_iterations == 4


def test_a_plugin_method_reaches_every_table_chart_group_and_pair(plugin, tmp_path):
    """Trials of the doc's IA3 beside the built-in methods: it is a row of every table across methods, in
    the registry's order with its display name, a compared group, and a side of the pairwise tests."""
    from test_analysis import test_metrics, trial_params, write_study, write_trial

    from analysis.groups import compared_groups, comparisons
    from analysis.load import load_results
    from analysis.plots import efficiency_figure, plot_accuracy_per_model
    from analysis.tables import build_tables
    from trainables.comparison import method_colour

    load_plugins(["ia3_method"])
    root = tmp_path / "slm-tiny"
    write_study(root)
    write_trial(root / "ia3-main", trial_params("ia3", strategy={}), dev=[0.3, 0.4], test=test_metrics(0.42))
    results = load_results([root])
    tables = build_tables(results.trials)
    for key in ("table1_models", "accuracy_per_model", "efficiency"):
        frame = tables[key].frame
        models = list(dict.fromkeys(frame["Model"]))
        assert "IA3" in models, key
        assert models == [
            get_strategy(m).display_name for m in method_names() if get_strategy(m).display_name in models
        ]
    accuracy = tables["accuracy_per_model"].frame.set_index(["Model", "Config"])
    assert accuracy.loc[("IA3", "main"), "Accuracy %"] == pytest.approx(42.0)
    assert method_colour("ia3") == "#937860"
    groups = compared_groups(results.trials, metric="dev/accuracy", mode="max")
    [ia3] = [c.group for c in groups if c.group.name == "ia3"]
    assert (ia3.id, ia3.label) == ("method/main/ia3", "IA3")
    pairs = {(a.name, b.name) for a, b in comparisons([c.group for c in groups]) if ia3 in (a, b)}
    others = {c.group.name for c in groups if c.group.family == "method" and c.group.config == "main"} - {
        "ia3"
    }
    assert others and pairs == {(m, "ia3") for m in others}  # against every method that ran on main
    assert plot_accuracy_per_model(tables["accuracy_per_model"], tmp_path / "a.png").stat().st_size > 0
    efficiency_figure(results.trials, tables["efficiency"])
