"""Before a study spends its budget: what each method's trial costs, and whether it fits its memory share.

    python -m study.preflight --method all --preset paper --model DIR --data-dir ../shared/data
    python -m study.preflight --method stacked --gpus-per-trial 0.25 --json preflight.json

It takes `study.run`'s own flags. For each method (and stacked LoRA's stage 1) it builds the real model,
trains a few steps at the largest batch the search can sample on the longest examples, and generates one
evaluation batch of the longest dev inputs to max_new_tokens, on the device the study would use
(`trainables.probe`); then prints the peaks, the seconds, whether a trial fits its share (a GPU's share,
or on a CPU the machine's RAM over the concurrent trials), the share or concurrency that would, and the
projected hours of a trial, of stage 1 and of the study (`study.costs`). `study.run` runs the same memory
check with one step before it starts any trial (`check_memory`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.config import StudyConfig
from study.costs import (
    Share,
    TrialCost,
    cpu_share,
    gpu_share,
    micro_batch_that_fits,
    recommend,
    study_hours,
)
from study.errors import interruptible, run_cli

DEFAULT_STEPS = 3
CHECK_STEPS = 1
"""`study.run`'s check takes one step per method: the peak, not the time, is what it decides by."""
STALL_HOOK_ENV = "SLM_TESTING_CHECK_STALL_S"
"""Testing hook: before measuring each method the check holds the main thread this many seconds in one
native call that Python cannot interrupt, as a backward pass at the paper's shapes on a CPU does."""


@dataclass
class MethodReport:
    """One method's measurements and what follows from them."""

    method: str
    probes: list[dict[str, Any]]
    """`trainables.probe.Probe` as dicts: the trial's phase last, a first stage's before it."""
    share: str
    """The memory share a trial of it gets, in words."""
    share_mb: float
    peak_mb: float
    """The largest peak of all its phases (training and evaluation)."""
    fits: bool
    recommend: str
    """The share or concurrency at which it fits (flags to pass)."""
    micro_batch: int | None = None
    """The largest micro-batch whose peak (reckoned from the measured one) fits the share: the batch
    itself when it fits, None when not even 1 would."""
    trial_hours: float | None = None
    stage1_hours: float | None = None
    measured: str = ""
    """What was measured, and what extrapolated from it."""
    cost: dict[str, Any] = field(default_factory=dict)


def _share(config: StudyConfig, method: str) -> tuple[Share, int]:
    """The memory share of one trial of `method` on this machine, and the CPU slots for trials."""
    import psutil
    import torch

    from trainables.methods import get_strategy

    cpus = config.resources.num_cpus or os.cpu_count() or 1
    slots = max(1, math.floor(cpus / (config.resources.cpus_per_trial or 1.0) + 1e-9))
    if torch.cuda.is_available():
        fraction = config.resources.gpus_per_trial or get_strategy(method).gpu_share
        total = torch.cuda.get_device_properties(0).total_memory / 2**20
        return gpu_share(gpu_mb=total, fraction=fraction), slots
    concurrent = config.resources.max_concurrent or slots
    return cpu_share(ram_mb=psutil.virtual_memory().total / 2**20, concurrent=concurrent), slots


def measured_trials(config: StudyConfig, experiments: Sequence, models: dict[str, str]) -> dict[str, Any]:
    """Method -> the `TrialConfig` to measure: the largest batch and the most epochs the search can sample,
    and of the prompt styles it covers, the one with the longest texts."""
    import optuna

    from search_spaces import coverage_points, define_by_run
    from study.plan import largest
    from trainables.trial_config import TrialConfig

    trials = {}
    for experiment in experiments:
        if experiment.method in trials:
            continue  # the configs of a method share its shapes; the longest texts of all are measured
        base, overrides = {**experiment.base, "model": models[experiment.method]}, experiment.overrides
        batch = largest(experiment.method, "train/batch_size", base, overrides)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=config.search.seed))
        points = coverage_points(experiment.method, overrides)
        if points:
            study.enqueue_trial(max(points, key=lambda p: _STYLE_LENGTH.get(p.get("train/prompt_style"), 0)))
        flat = define_by_run(experiment.method, base, overrides)(study.ask())
        flat["train/batch_size"] = batch
        flat["train/epochs"] = largest(experiment.method, "train/epochs", base, overrides)
        trials[experiment.method] = TrialConfig.from_dict(flat)
    return trials


_STYLE_LENGTH = {"breakdown": 3, "no_breakdown": 2, "code": 1, "answer_only": 0}
"""Prompt styles by the length of their targets: the longest is the one whose memory is measured."""


def run_preflight(
    config: StudyConfig,
    prepared,
    experiments: Sequence,
    *,
    steps: int = DEFAULT_STEPS,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    trials: Mapping[str, Any] | None = None,
) -> list[MethodReport]:
    """Measure every method of `config` (its planned `experiments`) on this machine's device; a
    `MethodReport` each. `trials`: method -> the trial to measure (default: `measured_trials`)."""
    from trainables.probe import probe_trial

    reports = []
    splits = list(prepared.splits.values())
    trials = trials or measured_trials(config, experiments, prepared.models)
    with interruptible():  # Ctrl-C within a second, even inside a minute-long backward pass
        for method, trial in trials.items():
            log(f"preflight: measuring {method} (batch {trial.train.batch_size}, {steps} step(s))")
            _testing_stall()
            probes = probe_trial(
                trial, splits=splits, code_records=prepared.code_records, steps=steps, log=log
            )
            reports.append(_report(config, method, [dataclasses.asdict(p) for p in probes], trial))
    return reports


def _testing_stall() -> None:
    """`SLM_TESTING_CHECK_STALL_S`: wait in torch's native code, with the GIL released and deaf to signals."""
    seconds = os.environ.get(STALL_HOOK_ENV)
    if not seconds:
        return
    import threading

    import torch

    done = torch.futures.Future()
    timer = threading.Timer(float(seconds), done.set_result, args=(None,))
    timer.daemon = True
    timer.start()
    done.wait()


def _report(config: StudyConfig, method: str, probes: list[dict], trial) -> MethodReport:
    share, slots = _share(config, method)
    peak = max(max(p["train_peak_mb"], p["eval_peak_mb"] or 0.0) for p in probes)
    report = MethodReport(
        method=method,
        probes=probes,
        share=share.describe,
        share_mb=share.mb,
        peak_mb=peak,
        fits=share.fits(peak),
        recommend=recommend(peak, share, cpu_slots=slots),
    )
    fitting = [
        micro_batch_that_fits(
            peak_mb=max(p["train_peak_mb"], p["eval_peak_mb"] or 0.0),
            base_mb=p["train_base_mb"],
            batch=p["micro_batch_size"],
            share=share,
        )
        for p in probes
    ]
    report.micro_batch = None if None in fitting else min(fitting)
    main, stages = probes[-1], probes[:-1]
    if main["s_per_eval_batch"] is not None:
        cost = TrialCost(
            train_s_per_epoch=main["steps_per_epoch"] * main["s_per_step"],
            epochs=main["epochs"],
            eval_s_dev=main["dev_batches"] * main["s_per_eval_batch"],
            evals=main["epochs"] * trial.train.evals_per_epoch,
            eval_s_test=main["test_batches"] * main["s_per_eval_batch"],
        )
        report.cost = dataclasses.asdict(cost) | {"trial_s": cost.trial_s}
        report.trial_hours = cost.trial_s / 3600
    if stages:
        report.stage1_hours = sum(s["steps_per_epoch"] * s["epochs"] * s["s_per_step"] for s in stages) / 3600
    report.measured = "; ".join(
        f"{p['phase']}: {p['steps_measured']} of {p['steps_per_epoch'] * p['epochs']} steps"
        + (
            f", 1 of {p['dev_batches']} dev + {p['test_batches']} test eval batches"
            if p["dev_batches"]
            else ""
        )
        for p in probes
    )
    return report


def first_stages_shared(experiments: Sequence) -> dict[str, bool]:
    """Method -> whether its trials share one first stage: none of its experiments searches a setting the
    first stage is made from (`Strategy.first_stage_settings`), so it trains once, and its trials wait for it.
    Only methods with a first stage are keys."""
    from search_spaces import searched_keys
    from trainables.methods import get_strategy

    shared: dict[str, bool] = {}
    for e in experiments:
        settings = set(get_strategy(e.method).first_stage_settings)
        if settings:
            searched = searched_keys(e.method, e.base, e.overrides) & settings
            shared[e.method] = shared.get(e.method, True) and not searched
    return shared


def study_total_hours(
    config: StudyConfig, reports: Sequence[MethodReport], experiments: Sequence
) -> float | None:
    """Hours of the whole study: every experiment's trials (as many as the plan runs: `--trials`, or more
    where a method's coverage points need more) at the concurrency its share allows, and each method's first
    stage: once where its trials share it (`first_stages_shared`), else before every wave of trials (an
    upper bound: trials that sample the same first-stage settings share it)."""
    if any(r.trial_hours is None for r in reports):
        return None
    costs = {r.method: TrialCost(**{k: r.cost[k] for k in TrialCost.__dataclass_fields__}) for r in reports}
    concurrency = {r.method: _share(config, r.method)[0].concurrent for r in reports}
    stage1 = {r.method: r.stage1_hours or 0.0 for r in reports}
    planned = [(e.method, e.trials) for e in experiments]
    shared = first_stages_shared(experiments)
    first = sum(stage1[m] for m, one in shared.items() if one)
    first += sum(
        math.ceil(n / max(1, concurrency[m])) * stage1[m] for m, n in planned if not shared.get(m, True)
    )
    return study_hours(costs, experiments=planned, concurrency=concurrency) + first


def render_table(
    config: StudyConfig, reports: Sequence[MethodReport], experiments: Sequence, *, device: str
) -> str:
    """The preflight table (Markdown), its notes and the study's total."""
    header = (
        "| method | phase | batch (micro) | train peak MiB | eval peak MiB | s / step | s / eval batch | "
    )
    header += "share | fits | recommended | trial h | stage 1 h |"
    lines = [header, "|" + "---|" * 12]
    for r in reports:
        for p in r.probes:
            main = p is r.probes[-1]
            lines.append(
                f"| {r.method} | {p['phase']} | {p['batch_size']} ({p['micro_batch_size']}) | "
                f"{p['train_peak_mb']:,.0f} | {_num(p['eval_peak_mb'], ',.0f')} | {p['s_per_step']:.2f} | "
                f"{_num(p['s_per_eval_batch'], '.2f')} | {r.share if main else ''} | "
                f"{_verdict(r) if main else ''} | {r.recommend if main else ''} | "
                f"{_num(r.trial_hours, '.2f') if main else ''} | "
                f"{_num(p['steps_per_epoch'] * p['epochs'] * p['s_per_step'] / 3600, '.2f') if not main else ''} |"
            )
    total = study_total_hours(config, reports, experiments)
    lines += [
        "",
        f"Device: {device}. Measured: {'; '.join(f'{r.method}: {r.measured}' for r in reports)}. Hours are "
        "extrapolated from those steps (on the longest examples, so upper bounds) and evaluation batches "
        "(every sequence generated to max_new_tokens); no early stopping is counted.",
    ]
    if total is not None:
        each = ", ".join(f"{e.name} {e.trials}" for e in experiments)
        first = "".join(
            f"; {m}'s stage 1 "
            + ("once, shared by its trials" if one else "before each wave (it is searched)")
            for m, one in first_stages_shared(experiments).items()
        )
        lines.append(
            f"Whole study: {sum(e.trials for e in experiments)} trials ({each}), at the concurrency each share "
            f"allows{first}: {total:.1f} hours."
        )
    return "\n".join(lines)


def _verdict(report: MethodReport) -> str:
    if report.fits:
        return "yes"
    return f"**no**: micro-batch {report.micro_batch}" if report.micro_batch else "**no**"


def device_name() -> str:
    """The device trials would use here, in words."""
    from trainables.training.models import pick_device

    device = pick_device()
    if device.type == "cpu":
        return f"CPU ({os.cpu_count()} cores)"
    import torch

    return torch.cuda.get_device_name(device)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def check_memory(
    config: StudyConfig,
    prepared,
    experiments: Sequence,
    *,
    log: Callable[[str], None] | None = None,
    saved: str | None = None,
) -> dict[str, int]:
    """`study.run`'s check: one step and one evaluation batch per method. A method whose largest batch
    would not fit its share trains in smaller micro-batches with more accumulation (the same experiment);
    one that would not fit even at a micro-batch of 1 gets a line naming the share that would, and the
    study does not start. Returns method -> the micro-batch cap its trials take (`train/max_micro_batch`).

    `saved`: where the study keeps the check (`study.saved_check`): written after a check that passed, and
    with `--resume` its measurements reused when what they measured is unchanged.

    Raises:
        ValueError: when any method cannot fit.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    name = device_name()
    reports, keys = _checked(config, prepared, experiments, saved=saved, device=name, log=log)
    log(render_table(config, reports, experiments, device=name))
    caps = {}
    for r in reports:
        first = f"; its stage 1 first: up to {r.stage1_hours:.2f} h" if r.stage1_hours else ""
        verdict = "fits" if r.fits else "does NOT fit"
        log(
            f"memory check: {r.method} peaks at {r.peak_mb:,.0f} MiB, {verdict} {r.share} ({r.share_mb:,.0f} MiB){first}"
        )
        batch = r.probes[-1]["micro_batch_size"]
        if not r.fits and r.micro_batch is not None:
            caps[r.method] = r.micro_batch
            log(
                f"memory check: {r.method}'s trials train in micro-batches of at most {r.micro_batch} (of "
                f"{batch}), accumulating gradients: the same effective batch and schedule ({r.recommend} "
                "would fit the whole batch)"
            )
    refused = [r for r in reports if r.micro_batch is None]
    for r in refused:
        print(
            f"{r.method}: needs {r.peak_mb:,.0f} MiB, its share is {r.share_mb:,.0f} MiB ({r.share}); fits with "
            f"{r.recommend}",
            file=sys.stderr,
        )
    if refused:
        raise ValueError(
            f"{len(refused)} method(s) cannot fit their memory share (above); pass the flags that fit, or "
            "--no-preflight to start anyway"
        )
    if saved is not None and keys is not None:
        from study.saved_check import save_check

        save_check(saved, keys, reports)
    return caps


def _checked(
    config: StudyConfig, prepared, experiments: Sequence, *, saved: str | None, device: str, log
) -> tuple[list[MethodReport], dict[str, Any] | None]:
    """The check's reports: with --resume the first run's measurements at `saved` under this run's memory
    share, when they measured what this run would; else measured here. With the keys to save them under
    (None when reused, or when the study keeps no record)."""
    trials = keys = None
    if saved is not None:
        from study.saved_check import measured_keys, saved_probes

        trials = measured_trials(config, experiments, prepared.models)
        keys = measured_keys(prepared, trials, device=device, steps=CHECK_STEPS)
        if config.storage.resume:
            probes, why = saved_probes(saved, keys)
            if probes is not None:
                log(f"memory check: reusing the first run's ({saved})")
                return [_report(config, m, probes[m], trial) for m, trial in trials.items()], None
            log(f"memory check: measuring again: {why} ({saved})")
    if device.startswith("CPU"):
        log(
            f"memory check on the {device}: one step of each method (minutes at the paper's shapes; --no-preflight skips)"
        )
    return run_preflight(config, prepared, experiments, steps=CHECK_STEPS, log=log, trials=trials), keys


def _build_parser():
    from study.run import build_parser

    parser = build_parser()
    parser.prog = "python -m study.preflight"
    parser.description = "Measure each method's memory and time at the study's real shapes before running it."
    own = parser.add_argument_group("preflight")
    own.add_argument("--json", metavar="FILE", help="also write the table's figures as JSON")
    own.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"training steps measured per phase (default {DEFAULT_STEPS})",
    )
    return parser


def _main(argv: list[str] | None) -> None:
    from study.run import parse_study_args

    config, args = parse_study_args(argv, parser=_build_parser())
    if args.print_config:
        from study.study_file import print_study

        print_study(config)
        return
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    out = Path(args.json).expanduser() if args.json else None
    if out is not None and not out.parent.is_dir():
        raise ValueError(f"--json {args.json}: folder {out.parent} does not exist")
    from study.plan import plan_experiments, prepare_inputs

    experiments = plan_experiments(config)  # every trial setting checked before data, torch or a model load
    prepared = prepare_inputs(config)
    name = device_name()
    if name.startswith("CPU"):
        print("preflight: no GPU, measuring on the CPU (slowly; the figures are this CPU's)", file=sys.stderr)
    reports = run_preflight(config, prepared, experiments, steps=args.steps)
    print(render_table(config, reports, experiments, device=name))
    if out is not None:
        record = {
            "device": name,
            "command": " ".join(["python -m study.preflight", *(argv if argv is not None else sys.argv[1:])]),
            "methods": [dataclasses.asdict(r) for r in reports],
            "study_hours": study_total_hours(config, reports, experiments),
        }
        staging = out.with_name(f".{out.name}.tmp")
        staging.write_text(json.dumps(record, indent=2) + "\n")
        staging.replace(out)
    if not all(r.fits for r in reports):
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """The `python -m study.preflight` entry point: bad input exits 2 with one line."""
    run_cli(lambda: _main(argv))


if __name__ == "__main__":
    main()
