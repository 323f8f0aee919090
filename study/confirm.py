"""Confirmation runs: every compared group's best trial, re-run with N fresh seeds, as ordinary Ray Tune trials.

    python -m study.run --method lora --preset tiny --trials 4          # 1. search
    python -m study.confirm results/slm-tiny --seeds 5                  # 2. confirm
    python -m analysis.report results/slm-tiny --out report/            # 3. report (with significance)

A search's best trial is the maximum of many noisy dev scores, so its test number is optimistic, and one
run per group cannot say whether a gap between two groups is more than seed noise. For each group the
report compares (`analysis.groups`), this takes the configuration of its best trial and runs it again with
the seeds `study seed + 1 ... study seed + N`: a seed changes the initialisation, the data order and the
dropout masks (the trial config's `train/seed`), never the data split, which stays the study's (its own
`seed`, recorded in `study.json`). Each run is scored on the whole test split (all of it for GSM8K files or
the hub; the study's generated test split for the embedded problems, whose size would change the others).

The runs are a grid over the seeds (`tune.grid_search`: no search, no early stopping), one Ray Tune
experiment per distinct best trial, on the study's cluster settings, resources and storage, in
`<study>/confirm/<experiment>/` beside `confirm.json` (which groups each experiment confirms, the seeds, the
search's own numbers). `--resume` continues an interrupted confirmation like `study.run --resume` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from study.config import StudyConfig
from study.errors import OneLineParser, run_cli
from study.results import read_text

CONFIRM_DIR = "confirm"
MANIFEST = "confirm.json"
"""Written in `<study>/confirm/` before any run; `analysis.load` leaves folders beneath it out of the study."""


@dataclass
class ConfirmConfig:
    """One confirmation: which study, how many seeds, and the cluster settings that may differ from its own."""

    results: str
    """The study's folder (`<storage>/<name>`, holding `study.json`), a local path or a URI."""
    seeds: int = 5
    """Fresh training seeds per group (at least 2: one run has no spread)."""
    families: tuple[str, ...] = ()
    """Which families of groups to confirm (`trainables.comparison.families()`: method, and each family a
    method record declares, such as cot and stacked); empty: all. Checked once the study's plugins are loaded."""
    resume: bool = False
    """Continue an interrupted confirmation (finished runs are not run again)."""
    address: str | None = None
    """A Ray cluster to join instead of the study's `address`."""
    num_cpus: int | None = None
    """CPUs of a local cluster instead of the study's."""
    max_concurrent: int | None = None
    """Runs at once per experiment instead of the study's setting."""
    dashboard: bool = True
    """Start the Ray dashboard with a local cluster."""

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 2:
            raise ValueError(
                f"--seeds must be a whole number >= 2 (one run has no spread), got {self.seeds!r}"
            )
        self.families = tuple(dict.fromkeys(self.families))
        for name in ("num_cpus", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        self.results = self.results.rstrip("/")
        if "://" not in self.results:
            path = os.path.abspath(os.path.expanduser(self.results))
            if not os.path.isdir(path):
                raise ValueError(f"no such results folder: {self.results}")
            self.results = path
        if read_text(f"{self.results}/study.json") is None:
            raise ValueError(
                f"{self.results} is not a study folder (no study.json): pass the <storage>/<name> folder "
                "that python -m study.run wrote"
            )

    @property
    def root(self) -> str:
        """`<study>/confirm`."""
        return f"{self.results}/{CONFIRM_DIR}"


def study_config(confirm: ConfirmConfig) -> StudyConfig:
    """The study's settings from its `study.json`, with its storage and name taken from where it is now."""
    record = json.loads(read_text(f"{confirm.results}/study.json"))
    fields = {f.name for f in dataclasses.fields(StudyConfig)} - {"overrides", "resume", "storage", "name"}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in fields}
    storage, _, name = confirm.results.rpartition("/")
    config = StudyConfig(**{**values, "storage": storage or "/", "name": name})
    changes = {
        "address": confirm.address,
        "num_cpus": confirm.num_cpus,
        "max_concurrent": confirm.max_concurrent,
    }
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    config.dashboard = confirm.dashboard
    return config


def seeds_for(config: StudyConfig, n: int) -> list[int]:
    """N training seeds none of the search's trials used (they all trained with the study's seed)."""
    return [config.seed + 1 + i for i in range(n)]


def plan(confirm: ConfirmConfig, config: StudyConfig) -> dict[str, Any]:
    """The manifest: each compared group, its best trial and the experiment that re-runs it.

    Raises:
        ValueError: when the study has no finished trial, or a trial's config no longer builds.
    """
    from analysis.groups import compared_groups, slug
    from analysis.load import load_results
    from trainables.comparison import families as all_families
    from trainables.trial import TrialConfig

    known = all_families()  # the study's plugins are loaded by now (`study_config`)
    unknown = [f for f in confirm.families if f not in known]
    if unknown:
        raise ValueError(f"--family must be one of {', '.join(known)}, got {unknown[0]!r}")
    wanted = confirm.families or known
    trials = load_results([confirm.results]).trials
    chosen = compared_groups(trials, metric=config.metric, mode=config.mode)
    chosen = [c for c in chosen if c.group.family in wanted]
    if not chosen:
        families = ", ".join(wanted)
        raise ValueError(f"no finished trial in {confirm.results} of a group to confirm ({families})")
    seeds = seeds_for(config, confirm.seeds)
    groups, experiments = {}, {}
    for item in chosen:
        row = item.trial
        name = slug(row["trial"])
        if name not in experiments:
            params = json.loads(read_text(f"{row['trial_dir']}/params.json"))
            for seed in seeds:
                TrialConfig.from_dict({**params, "train": {**params.get("train", {}), "seed": seed}})
            experiments[name] = {"trial": row["trial"], "method": params["method"], "params": params}
        search = {k: row.get(k) for k in ("test/accuracy", "test/n", config.metric)}
        groups[item.group.id] = {
            **dataclasses.asdict(item.group),
            "experiment": name,
            "trial": row["trial"],
            "trial_dir": row["trial_dir"],
            "search": {k: v for k, v in search.items() if isinstance(v, (int, float))},
        }
    return {
        "study": confirm.results,
        "seeds": seeds,
        "split_seed": config.seed,
        "metric": config.metric,
        "mode": config.mode,
        "groups": groups,
        "experiments": experiments,
    }


def check_existing(confirm: ConfirmConfig, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The saved manifest when resuming; refuses to overwrite, or to resume with other seeds or groups."""
    saved_text = read_text(f"{confirm.root}/{MANIFEST}")
    if saved_text is None:
        if confirm.resume:
            raise ValueError(f"nothing to resume: no confirmation runs in {confirm.root}")
        return None
    if not confirm.resume:
        raise ValueError(f"{confirm.root} already holds confirmation runs: pass --resume to continue them")
    saved = _saved_manifest(f"{confirm.root}/{MANIFEST}", saved_text)
    if saved["seeds"] != manifest["seeds"]:
        raise ValueError(
            f"--resume with --seeds {len(manifest['seeds'])}, but it started with {len(saved['seeds'])}"
        )
    before = {g: v["trial"] for g, v in saved["groups"].items()}
    now = {g: v["trial"] for g, v in manifest["groups"].items()}
    if before != now:
        changed = sorted(g for g in set(before) | set(now) if before.get(g) != now.get(g))
        raise ValueError(
            f"the groups to confirm or their best trials differ from the ones the confirmation started with "
            f"({', '.join(changed)}): resume with the same --family"
        )
    return saved


def _saved_manifest(path: str, text: str) -> dict[str, Any]:
    """The manifest a confirmation started with, refused with one line naming it when it is damaged."""
    try:
        saved = json.loads(text)
        if not isinstance(saved, dict) or not isinstance(saved.get("seeds"), list):
            raise ValueError("no seeds")
        if not isinstance(saved.get("groups"), dict) or not all(
            isinstance(g, dict) and "trial" in g for g in saved["groups"].values()
        ):
            raise ValueError("no groups")
    except (ValueError, RecursionError) as error:
        reason = str(error).splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot resume: the confirmation's manifest {path} is damaged ({reason})") from None
    return saved


def run_confirm(confirm: ConfirmConfig) -> dict[str, Any]:
    """Run (or resume) every confirmation experiment; returns the manifest."""
    from study.dashboard import check_reachable

    config = study_config(confirm)
    if config.address:
        check_reachable(config.address)
    manifest = plan(confirm, config)
    check_existing(confirm, manifest)
    methods = tuple(dict.fromkeys(e["method"] for e in manifest["experiments"].values()))
    configs = tuple(
        dict.fromkeys(e["params"].get("data_config", "main") for e in manifest["experiments"].values())
    )
    config = dataclasses.replace(config, methods=methods, configs=configs)
    from study.confirm_runs import run_experiments  # Ray, torch and the trainables are imported only now

    return run_experiments(confirm, config, manifest)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m study.confirm",
        description="Re-run the best trial of every group a study's report compares with N fresh seeds.",
        epilog="Exit status 2 means bad input (no such study folder, --seeds below 2, an unreachable cluster).",
    )
    parser.add_argument("results", help="the study's folder, <storage>/<name> (holds study.json)")
    parser.add_argument(
        "--seeds", type=int, default=5, help="fresh training seeds per group (default 5, at least 2)"
    )
    parser.add_argument(
        "--family",
        action="append",
        help="confirm only this family of groups: method (methods per config), or one a method declares "
        "(cot: prompt styles; stacked: f and variants; a plugin's own); repeatable (default: all)",
    )
    parser.add_argument("--resume", action="store_true", help="continue interrupted confirmation runs")
    parser.add_argument("--address", help="join this Ray cluster instead of the study's")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: the study's)")
    parser.add_argument("--max-concurrent", type=int, help="runs at once per experiment (default: what fits)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    return parser


def _run(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    confirm = ConfirmConfig(
        results=args.results,
        seeds=args.seeds,
        families=tuple(args.family or ()),
        resume=args.resume,
        address=args.address,
        num_cpus=args.num_cpus,
        max_concurrent=args.max_concurrent,
        dashboard=not args.no_dashboard,
    )
    run_confirm(confirm)


def main(argv: list[str] | None = None) -> None:
    """`python -m study.confirm`: bad input exits 2 with one line."""
    run_cli(lambda: _run(argv))


if __name__ == "__main__":
    main()
