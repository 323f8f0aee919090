"""`python -m study.preflight` and `study.run`'s memory check: measured at the study's shapes, a table and
JSON, and a study that cannot fit refused before anything starts or is written."""

from __future__ import annotations

import dataclasses
import json

import pytest

SMALL = ["--preset", "tiny", "--train-size", "48", "--dev-size", "8", "--test-size", "8"]
SMALL += ["--space", "train/eval/max_new_tokens=8", "--space", "train/batch_size=8"]


def test_preflight_prints_the_table_and_writes_the_same_as_json(micro_t5_dir, tmp_path, capsys):
    from study.preflight import main

    out = tmp_path / "preflight.json"
    main(["--method", "stacked", *SMALL, "--model", str(micro_t5_dir), "--steps", "2", "--json", str(out)])
    table = capsys.readouterr().out
    record = json.loads(out.read_text())
    (stacked,) = record["methods"]
    assert [p["phase"] for p in stacked["probes"]] == ["stage 1", "trial"]  # stage 1 measured, not trained
    trial = stacked["probes"][-1]
    assert trial["batch_size"] == 8 and trial["steps_measured"] == 2 and trial["dev_batches"] >= 1
    assert stacked["peak_mb"] >= max(trial["train_peak_mb"], trial["eval_peak_mb"]) > 0
    assert stacked["fits"] is True and stacked["recommend"].startswith("--max-concurrent ")
    assert stacked["trial_hours"] == pytest.approx(stacked["cost"]["trial_s"] / 3600)
    assert record["study_hours"] > stacked["trial_hours"]  # 50 trials after their stage 1
    # stage 1 trains at its own batch (the tiny preset's stacked:strategy/stage1_batch_size), not the trial's
    assert "| stacked | stage 1 | 32 (32) |" in table and "| stacked | trial | 8 (8) |" in table
    assert "Whole study: 50 trials (stacked-main 50)" in table
    assert "stacked's stage 1 once, shared by its trials" in table


@pytest.mark.parametrize(
    ("method", "trials", "stage1_hours", "searched", "hours"),
    [
        (
            "lora_cot",
            1,
            None,
            [],
            4 * 1.0,
        ),  # --trials 1 still runs one trial per prompt style; once counted 1
        # the trials share one stage 1 (issue #20: once, each trial trained its own)
        ("stacked", 2, 0.5, [], 2 * 1.0 + 0.5),
        # a searched stage-1 setting: a stage 1 before each wave of trials (an upper bound)
        ("stacked", 2, 0.5, ["--set", "strategy/r1=[4,8]"], 2 * (1.0 + 0.5)),
    ],
)
def test_the_whole_studys_hours_count_every_planned_trial_and_its_stage_1(
    method, trials, stage1_hours, searched, hours
):
    from study import preflight
    from study.costs import TrialCost
    from study.plan import plan_experiments
    from study.run import parse_config

    config = parse_config(
        ["--method", method, "--preset", "tiny", "--trials", str(trials), "--max-concurrent", "1", *searched]
    )
    cost = TrialCost(train_s_per_epoch=3600.0, epochs=1, eval_s_dev=0.0, evals=0, eval_s_test=0.0)
    report = preflight.MethodReport(
        method=method,
        probes=[],
        share="",
        share_mb=1.0,
        peak_mb=1.0,
        fits=True,
        recommend="",
        trial_hours=1.0,
        stage1_hours=stage1_hours,
        cost=dataclasses.asdict(cost),
    )
    assert preflight.study_total_hours(config, [report], plan_experiments(config)) == pytest.approx(hours)


def test_preflight_refuses_a_json_path_in_a_missing_folder(tmp_path, capsys):
    from study.preflight import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--method", "lora", "--preset", "tiny", "--json", str(tmp_path / "no" / "such.json")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --json {tmp_path / 'no' / 'such.json'}: folder {tmp_path / 'no'} does not exist"
    ]


def test_a_study_that_cannot_fit_is_refused_before_anything_starts(micro_t5_dir, tmp_path, capsys):
    from study.run import main

    # 100,000 trials at once leave each a few hundred kB of this machine's RAM: nothing fits that
    args = ["--method", "lora", *SMALL, "--model", str(micro_t5_dir), "--storage", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--max-concurrent", "100000"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    refusal = [line for line in err if line.startswith("lora: needs ")]
    assert len(refusal) == 1 and "RAM / 100000 trials); fits with --max-concurrent " in refusal[0]
    assert err[-1] == (
        "error: 1 method(s) cannot fit their memory share (above); pass the flags that fit, or --no-preflight "
        "to start anyway"
    )
    assert not (tmp_path / "out").exists()  # nothing written, no Ray started


def test_a_batch_too_large_for_its_share_trains_in_smaller_micro_batches(monkeypatch):
    import types

    import study.preflight as preflight
    from study.config import SearchSettings, StudyConfig
    from study.costs import cpu_share
    from study.plan import plan_experiments
    from trainables.training.train_config import TrainConfig

    probe = {
        "phase": "trial", "batch_size": 32, "micro_batch_size": 32, "steps_measured": 1,
        "train_peak_mb": 1800.0, "train_base_mb": 200.0, "s_per_step": 1.0, "steps_per_epoch": 10,
        "epochs": 1, "eval_peak_mb": 900.0, "s_per_eval_batch": 1.0, "dev_batches": 1, "test_batches": 1,
    }  # fmt: skip
    # 1,000 MiB each for two trials: the batch of 32 needs 1,800; 16 would need 1,000, 8 needs 600
    monkeypatch.setattr(preflight, "_share", lambda config, method: (cpu_share(ram_mb=2000, concurrent=2), 2))
    trial = types.SimpleNamespace(train=TrainConfig())

    def report(config, prepared, experiments, steps, log, trials=None):
        return [preflight._report(config, "lora", [dict(probe)], trial)]

    monkeypatch.setattr(preflight, "run_preflight", report)
    lines: list[str] = []
    lora = StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",)))
    caps = preflight.check_memory(lora, None, plan_experiments(lora), log=lines.append)
    assert caps == {"lora": 8}
    table = next(line for line in lines if line.startswith("| method"))
    assert "| lora | trial | 32 (32) | 1,800 | 900 |" in table and "**no**: micro-batch 8" in table
    assert lines[-1].startswith("memory check: lora's trials train in micro-batches of at most 8 (of 32)")

    probe["train_base_mb"] = 950.0  # the model alone nearly fills the share: no micro-batch fits
    with pytest.raises(ValueError, match="1 method"):
        preflight.check_memory(lora, None, plan_experiments(lora), log=lines.append)


@pytest.mark.slow
@pytest.mark.parametrize("started", ["from a terminal", "in the background (SIGINT ignored)"])
def test_ctrl_c_inside_the_memory_checks_native_code_ends_the_study_at_once(started, micro_t5_dir, tmp_path):
    """A backward pass at the paper's shapes holds Python for a minute (the hook stands in for it); a study
    run with `&` from a script inherits SIGINT ignored until Ray Tune's own handler."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_tuner import MICRO_SIZES, REPO, end_process_group, study_env

    from study.preflight import STALL_HOOK_ENV

    args = [sys.executable, "-m", "study.run", *MICRO_SIZES, "--method", "lora", "--trials", "1"]
    args += ["--model", str(micro_t5_dir), "--storage", str(tmp_path / "out")]
    log = tmp_path / "study.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            args,
            cwd=REPO,
            env={**study_env(tmp_path), STALL_HOOK_ENV: "120", "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job has
            preexec_fn=_ignore_sigint if "ignored" in started else None,
        )
    try:
        deadline = time.monotonic() + 300
        while "preflight: measuring lora" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(1.0)  # inside the stall
        sent = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the study still ran 30 s after Ctrl-C")
        waited = time.monotonic() - sent
    finally:
        if process.poll() is None:
            end_process_group(process)
    assert (process.returncode, log.read_text().splitlines()[-1]) == (130, "interrupted")
    assert waited < 10, f"{waited:.1f} s after Ctrl-C"
    assert not (tmp_path / "out").exists()  # nothing written, no Ray started


def _ignore_sigint() -> None:
    """What a shell without job control does to the commands it starts with `&`."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --- a resumed study reuses the first run's check ---------------------------------------------------------


@pytest.fixture
def checked_study(micro_t5_dir, tmp_path, monkeypatch):
    """`check(resume)`: study.run's memory check of a LoRA study in `tmp_path/out/s`, each probe a fake that
    peaks at 1,800 MiB in a 1,000 MiB share (so its trials get a micro-batch cap) and is counted; returns the
    experiments' trial settings after it, its stderr lines and the probes taken so far."""
    import study.preflight as preflight
    import trainables.probe
    from study.costs import cpu_share
    from study.plan import plan_experiments, prepare_inputs
    from study.run import parse_config
    from study.tuner import _memory_check
    from trainables.probe import Probe

    probed: list[str] = []

    def probe_trial(trial, **_):
        probed.append(trial.method)
        batch = trial.train.batch_size
        return [Probe("trial", batch, batch, 1, 1800.0, 200.0, 1.0, 6, 1, 900.0, 1.0, 1, 1)]

    monkeypatch.setattr(trainables.probe, "probe_trial", probe_trial)
    monkeypatch.setattr(preflight, "_share", lambda config, method: (cpu_share(ram_mb=2000, concurrent=2), 2))
    args = ["--method", "lora", *SMALL, "--model", str(micro_t5_dir), "--storage", str(tmp_path / "out")]

    def check(*, resume: bool, change=lambda prepared: None, capsys):
        config = parse_config([*args, "--name", "s", *(["--resume"] if resume else [])])
        experiments = plan_experiments(config)  # planned afresh, as a resumed study.run plans them
        prepared = prepare_inputs(config)
        change(prepared)
        for experiment in experiments:
            experiment.base["model"] = prepared.models[experiment.method]
        capsys.readouterr()
        _memory_check(config, prepared, experiments)
        return [e.base for e in experiments], capsys.readouterr().err.splitlines(), list(probed)

    return check, tmp_path / "out" / "s" / "memory_check.json"


def test_a_resumed_study_reuses_the_first_runs_check_and_gets_the_same_trial_settings(checked_study, capsys):
    check, record = checked_study
    first, _, probed = check(resume=False, capsys=capsys)
    assert probed == ["lora"] and record.is_file()
    assert first[0]["train/max_micro_batch"] < 8  # the cap the check set, in every trial's settings

    resumed, err, probed = check(resume=True, capsys=capsys)
    assert probed == ["lora"]  # nothing measured again
    assert f"memory check: reusing the first run's ({record})" in err
    assert resumed == first
    assert any(
        line.startswith("memory check: lora's trials train in micro-batches of at most") for line in err
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("device", "the device (CPU ({cores} cores) -> NVIDIA H100 80GB HBM3) changed since the first run's"),
        ("data", "the data changed since the first run's"),
        ("model", "lora's measured trial changed since the first run's"),
        ("unreadable", "the first run's record is unreadable (JSONDecodeError: "),
        ("absent", "the first run left no record of it"),
    ],
)
def test_a_resumed_study_measures_again_when_what_the_check_measured_changed(
    checked_study, capsys, monkeypatch, change, why
):
    import os

    import study.preflight as preflight

    check, record = checked_study
    first, _, _ = check(resume=False, capsys=capsys)
    if change == "device":
        monkeypatch.setattr(preflight, "device_name", lambda: "NVIDIA H100 80GB HBM3")
    elif change == "unreadable":
        record.write_text("{")
    elif change == "absent":
        record.unlink()

    def changed(prepared):
        if change == "data":  # the data file changed under the same settings
            prepared.splits["main"].train.pop()
        elif change == "model":  # another base model at the same settings (the tiny preset's, rebuilt)
            prepared.models["lora"] += "-rebuilt"

    resumed, err, probed = check(resume=True, change=changed, capsys=capsys)
    assert probed == ["lora", "lora"]
    (line,) = [line for line in err if line.startswith("memory check: measuring again: ")]
    assert line.startswith(f"memory check: measuring again: {why.format(cores=os.cpu_count())}")
    assert line.endswith(f" ({record})")
    assert [{**b, "model": None} for b in resumed] == [{**b, "model": None} for b in first]  # the same peaks
    _, err, probed = check(resume=True, change=changed, capsys=capsys)  # the record now holds that check
    assert f"memory check: reusing the first run's ({record})" in err and len(probed) == 2
