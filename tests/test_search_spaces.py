"""Search spaces: registries agree, every space (and every branch) builds a valid TrialConfig, overrides
narrow a space the way the user wrote them."""

from __future__ import annotations

import pickle
import time

import optuna
import pytest

from search_spaces import (
    apply_space,
    coverage_points,
    define_by_run,
    get_space,
    space_keys,
)
from search_spaces import lora_cot as lora_cot_space
from search_spaces import stacked as stacked_space
from search_spaces.overrides import (
    NarrowedTrial,
    Override,
    parse_override,
    route,
    spec_to_override,
)
from study.config import SearchSettings, StudyConfig, read_settings_file
from study.plan import base_trial
from trainables.methods import STRATEGIES, method_names
from trainables.trial_config import TrialConfig, flat_trial

METHODS = method_names()

optuna.logging.set_verbosity(optuna.logging.WARNING)


def base_for(method: str) -> dict:
    config = StudyConfig(preset="tiny", search=SearchSettings(methods=(method,), seed=3))
    return base_trial(config, method=method, model="some/model", data_config="main")


def ask(method: str, overrides=(), point=None, seed=0) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    if point:
        study.enqueue_trial(point)
    return define_by_run(method, base_for(method), overrides)(study.ask())


def test_every_registered_method_has_a_search_space():
    assert METHODS == ("lora", "lora_cot", "full", "qlora", "stacked")  # the order --method all runs
    for method in METHODS:
        assert callable(get_space(method)), method


@pytest.mark.parametrize("method", METHODS)
def test_every_space_and_branch_builds_a_trial_config(method):
    if method not in STRATEGIES:
        pytest.fail(f"strategy {method!r} is not registered in trainables.methods")
    for point in [None, *coverage_points(method)]:
        flat = ask(method, point=point)
        trial = TrialConfig.from_dict(flat)
        assert trial.method == method and trial.model == "some/model" and trial.train.seed == 3
        for key, value in (point or {}).items():
            assert flat[key] == value


@pytest.mark.parametrize("method", METHODS)
def test_a_space_returns_constants_and_keeps_the_base(method):
    flat = ask(method, seed=1)
    base = base_for(method)
    assert all(isinstance(v, (int, float, str, bool, tuple, type(None))) for v in flat.values())
    assert {k: flat[k] for k in base if k not in space_keys(method, base)} == {
        k: v for k, v in base.items() if k not in space_keys(method, base)
    }
    assert pickle.loads(pickle.dumps(define_by_run(method, base))).func is apply_space


def test_learning_rate_is_sampled_on_a_log_scale():
    study = optuna.create_study()
    define_by_run("lora", base_for("lora"))(trial := study.ask())
    distribution = trial.distributions["train/lr"]
    assert distribution.log and distribution.low < distribution.high


def test_stacked_f_exists_only_on_the_stacked_branch():
    stacked = ask("stacked", point={"strategy/baseline": "stacked", "strategy/f": "tanh"})
    single = ask("stacked", point={"strategy/baseline": "single_lora"})
    assert stacked["strategy/f"] == "tanh" and "strategy/f_space" in stacked
    assert "strategy/f" not in single and "strategy/r2" in single


def test_stacked_trials_leave_stage1_to_the_study():
    # every trial stacks on the study's one stage 1: none of the settings it is made from is sampled
    from search_spaces import searched_keys
    from trainables.methods import get_strategy

    settings = set(get_strategy("stacked").first_stage_settings)
    assert not searched_keys("stacked", {}) & settings
    searched = searched_keys("stacked", {}, [Override("strategy/r1", "choices", choices=(8, 16))])
    assert searched & settings == {"strategy/r1"}


def test_coverage_has_each_f_then_each_baseline_and_each_style_and_variant():
    stacked = coverage_points("stacked")
    n_f = len(stacked_space.F_CHOICES)
    assert [p.get("strategy/f") for p in stacked[:n_f]] == list(stacked_space.F_CHOICES)
    assert "sin" in stacked_space.F_CHOICES
    baselines = [p["strategy/baseline"] for p in stacked[n_f : n_f + 3]]
    assert baselines == ["linear", "merged_then_lora", "single_lora"]
    assert [p["strategy/variant"] for p in stacked[n_f + 3 :]] == ["lora", "rslora", "loraplus"]
    cot = coverage_points("lora_cot")
    styles = [p["train/prompt_style"] for p in cot[:4]]
    assert styles == ["breakdown", "no_breakdown", "code", "answer_only"]  # longest targets first
    assert sorted(styles) == sorted(lora_cot_space.STYLES)
    variants = ["lora", "rslora", "dora", "pissa", "olora", "loraplus"]
    assert [p["strategy/variant"] for p in cot[4:]] == variants
    assert [p["strategy/variant"] for p in coverage_points("lora")] == variants  # N >= 6 trials try each
    assert [p["strategy/variant"] for p in coverage_points("qlora")] == ["lora", "rslora", "dora", "loraplus"]


def test_a_variant_setting_exists_only_with_its_variant_and_omega_only_with_sin():
    plus = ask("lora", point={"strategy/variant": "loraplus"})
    pissa = ask("lora", point={"strategy/variant": "pissa"})
    dora = ask("lora", point={"strategy/variant": "dora"})
    assert "strategy/loraplus_lr_ratio" in plus and "strategy/pissa_niter" not in plus
    assert "strategy/pissa_niter" in pissa and "strategy/loraplus_lr_ratio" not in pissa
    assert not {"strategy/pissa_niter", "strategy/loraplus_lr_ratio"} & set(dora)
    sin = ask("stacked", point={"strategy/baseline": "stacked", "strategy/f": "sin"})
    relu = ask("stacked", point={"strategy/baseline": "stacked", "strategy/f": "relu"})
    assert 10 <= sin["strategy/omega"] <= 1000 and "strategy/omega" not in relu


def test_overrides_filter_the_coverage_points():
    only = (Override("strategy/f", "choices", choices=("relu", "gelu")),)
    fixed = (Override("strategy/baseline", "fixed", value="stacked"),)
    assert [p.get("strategy/f") for p in coverage_points("stacked", only)] == ["relu", "gelu"] + [None] * 6
    assert len(coverage_points("stacked", fixed)) == len(stacked_space.F_CHOICES) + 3  # + each variant


def test_parse_override_kinds_and_numbers():
    lr = parse_override("train/lr=1e-4..1e-3", methods=METHODS)
    assert (lr.kind, lr.low, lr.high, lr.log, lr.method) == ("range", 1e-4, 1e-3, None, None)
    assert parse_override("stacked:strategy/f=[relu, gelu]", methods=METHODS).choices == ("relu", "gelu")
    assert parse_override("stacked:strategy/f=[relu, gelu]", methods=METHODS).method == "stacked"
    assert parse_override("train/epochs=2", methods=METHODS).value == 2
    assert parse_override("train/lr=3e-4", methods=METHODS).value == 3e-4  # YAML alone would give a string
    assert parse_override("strategy/r=[8, 16]", methods=METHODS).choices == (8, 16)
    mapped = parse_override("train/lr={low: 1e-4, high: 1e-2, log: true}", methods=METHODS)
    assert (mapped.low, mapped.high, mapped.log) == (1e-4, 1e-2, True)
    assert (
        parse_override("train/eval/metrics=accuracy,perplexity", methods=METHODS).value
        == "accuracy,perplexity"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train/lr", "expects [method:]key=spec"),
        ("nope:train/lr=1", "unknown method 'nope'"),
        ("lr=1e-3", "train/<name>, train/eval/<name> or strategy/<name>"),
        ("train/lr=1e-2..1e-4", "low < high"),
        ("train/lr=[]", "empty list"),
        ("train/lr={low: 1}", "a range is"),
        ("train/lr={low: 0, high: 1, log: true}", "log-scale range needs low > 0"),
        ("train/lr=[1, 2", "cannot read"),
    ],
)
def test_bad_overrides_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match="--set") as info:
        parse_override(text, methods=METHODS)
    assert message in str(info.value)


def test_a_narrowed_range_keeps_the_spaces_log_scale():
    study = optuna.create_study()
    trial = study.ask()
    config = apply_space(
        trial, method="lora", base=base_for("lora"), overrides=(spec_to_override("train/lr", "1e-4..2e-4"),)
    )
    distribution = trial.distributions["train/lr"]
    assert distribution.log and (distribution.low, distribution.high) == (1e-4, 2e-4)
    assert 1e-4 <= config["train/lr"] <= 2e-4


def test_fixed_overrides_and_new_keys_land_in_the_config_not_in_the_search():
    overrides = (
        spec_to_override("train/epochs", 1),
        spec_to_override("train/max_grad_norm", 0.5),
        spec_to_override("train/weight_decay", [0.0, 0.01]),
    )
    trial = optuna.create_study().ask()
    config = apply_space(trial, method="lora", base=base_for("lora"), overrides=overrides)
    assert config["train/epochs"] == 1 and "train/epochs" not in trial.params
    assert config["train/max_grad_norm"] == 0.5
    assert config["train/weight_decay"] in (0.0, 0.01) and "train/weight_decay" in trial.params


def test_a_conditional_constant_applies_only_on_its_branch():
    overrides = (spec_to_override("strategy/f", "gelu"),)
    linear = ask("stacked", overrides, point={"strategy/baseline": "linear"})
    stacked = ask("stacked", overrides, point={"strategy/baseline": "stacked"})
    assert "strategy/f" not in linear and stacked["strategy/f"] == "gelu"


def test_a_range_on_a_categorical_is_refused():
    trial = NarrowedTrial(optuna.create_study().ask(), {"strategy/r": spec_to_override("strategy/r", "4..8")})
    with pytest.raises(ValueError, match="give a list or one value"):
        trial.suggest_categorical("strategy/r", (4, 8, 16))


def test_route_sends_an_unprefixed_key_to_the_spaces_that_sample_it():
    keys = {m: space_keys(m, base_for(m)) for m in METHODS}
    routed = route(
        [spec_to_override("strategy/f", ["relu"]), spec_to_override("train/lr", "1e-4..1e-3")], keys
    )
    assert [o.key for o in routed["stacked"]] == ["strategy/f", "train/lr"]
    assert [o.key for o in routed["lora"]] == ["train/lr"]
    mine = spec_to_override("train/lr", 1e-3, method="full")
    assert (
        routed["full"][0].kind == "range"
        and route([spec_to_override("train/lr", "1e-4..1e-3"), mine], keys)["full"][0] is mine
    )
    with pytest.raises(ValueError, match="given twice"):
        route([spec_to_override("train/lr", 1), spec_to_override("train/lr", 2)], keys)
    with pytest.raises(ValueError, match="not in this study"):
        route([spec_to_override("train/lr", 1, method="qlora")], {"lora": keys["lora"]})


def test_a_settings_file_holds_keys_for_every_method_or_for_one(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text(
        "train/lr: 1e-4..1e-3\nsearch/trials: 3\nstacked:\n  strategy/f: [relu, gelu]\n  strategy/r2: 16\n"
    )
    entries = read_settings_file(path)
    assert [name for name, _, _ in entries] == [
        "train/lr", "search/trials", "stacked:strategy/f", "stacked:strategy/r2"
    ]  # fmt: skip
    trial = [spec_to_override(k.split(":")[-1], v).kind for k, v, _ in entries if k != "search/trials"]
    assert trial == ["range", "choices", "fixed"]
    path.write_text("lr: 1\n")
    with pytest.raises(ValueError, match="neither a method"):
        read_settings_file(path)
    with pytest.raises(ValueError, match="no such file"):
        read_settings_file(tmp_path / "missing.yaml")


def alias_bomb() -> str:
    """A 342-byte "billion laughs": nine levels of aliases, each repeating the one above nine times."""
    levels = "".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    return 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + levels


def test_an_alias_bomb_fails_fast_with_one_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 400
    started = time.perf_counter()
    with pytest.raises(ValueError, match="once its aliases are expanded") as info:
        read_settings_file(path)
    assert time.perf_counter() - started < 1.0
    assert "\n" not in str(info.value) and len(str(info.value)) < 200 + len(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train/lr: !!python/name:os.system", "YAML tag !!python/name:os.system is not accepted"),
        ("train/lr: !!python/object/apply:os.system [id]", "is not accepted"),
        ("train/lr: !custom 1", "YAML tag !custom is not accepted"),
        ("train/lr: &a [1, *a]", "a recursive alias"),
        ("base: &b {train/lr: 1}\nstacked: {<<: *b}", "merge keys"),
        ("train/lr: " + "[" * 2000 + "]" * 2000, "cannot read it as YAML"),
        ("train/lr: [1, 2\n", "cannot read it as YAML"),
        ("train/lr: 'x'\n" * 6000, "larger than 64 KiB"),
    ],
)
def test_a_space_file_holds_plain_data_or_is_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="--set-file") as info:
        read_settings_file(path)
    assert message in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.parametrize(
    "spec",
    ["!!python/name:os.system", "[!!python/name:os.system ]", "{low: !!python/name:os.system, high: 1}"],
)
def test_a_tag_in_a_space_value_is_refused_in_one_line(spec):
    with pytest.raises(ValueError, match=r"--set train/lr: the YAML tag !!python/name:os.system is not"):
        parse_override(f"train/lr={spec}", methods=METHODS)


def test_a_big_value_is_shown_short_in_the_error():
    spec = "[" + ", ".join(["[" + ", ".join(["1"] * 90) + "]"] * 90) + "]"
    with pytest.raises(ValueError, match="--set train/lr") as info:
        parse_override(f"train/lr={{low: {spec}, high: 1, steps: 3}}", methods=METHODS)
    assert len(str(info.value)) < 200


def test_an_old_nested_config_and_its_flat_form_give_the_same_trial_config():
    """Results and Ray experiment states written before the flat trial config hold it nested."""
    nested = {
        "method": "lora",
        "model": "m",
        "data_config": "socratic",
        "train": {"lr": 1e-3, "seed": 3, "eval": {"max_new_tokens": 8, "metrics": "accuracy"}},
        "strategy": {"r": 4, "target_modules": "q,v"},
    }
    flat = {
        "method": "lora",
        "model": "m",
        "data_config": "socratic",
        "train/lr": 1e-3,
        "train/seed": 3,
        "train/eval/max_new_tokens": 8,
        "train/eval/metrics": "accuracy",
        "strategy/r": 4,
        "strategy/target_modules": "q,v",
    }
    assert flat_trial(nested) == flat and flat_trial(flat) == flat
    trial = TrialConfig.from_dict(flat)
    assert TrialConfig.from_dict(nested) == trial
    assert (trial.train.lr, trial.train.eval.max_new_tokens, trial.strategy.r) == (1e-3, 8, 4)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "lora", "model": "m", "optimizer/lr": 1}, "unknown trial setting(s): optimizer/lr"),
        ({"method": "lora", "model": "m", "train/eval/x/y": 1}, "unknown trial setting(s): train/eval/x/y"),
        ({"method": "lora", "model": "m", "train/lr": "fast"}, "train/lr must be a number, got 'fast'"),
        ({"method": "lora", "model": "m", "train/eval/batch_size": 0.5}, "train/eval/batch_size must be a"),
        ({"method": "lora", "model": "m", "strategy/rank": 4}, "unknown setting(s) rank for method 'lora'"),
        ({"model": "m", "train/lr": 1e-3}, "a trial config needs method"),
    ],
)
def test_a_bad_flat_setting_is_named_by_its_key(config, message):
    with pytest.raises(ValueError) as error:
        TrialConfig.from_dict(config)
    assert message in str(error.value)
