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
from typing import Any, ClassVar

from study.cli import add_setting_flags, given_flags
from study.config import StudyConfig
from study.config_tree import field_value, leaves, section, setting, tree_values
from study.errors import OneLineParser, run_cli
from study.results import read_text
from study.study_file import record_values

CONFIRM_DIR = "confirm"
MANIFEST = "confirm.json"
"""Written in `<study>/confirm/` before any run; `analysis.load` leaves folders beneath it out of the study."""


@dataclass
class ConfirmResources:
    """`resources/...` of a confirmation: its cluster, where it differs from the study's."""

    address: str | None = setting(help="join this Ray cluster instead of the study's")
    num_cpus: int | None = setting(help="CPUs of the local Ray cluster (default: the study's)")
    max_concurrent: int | None = setting(help="runs at once per experiment (default: what fits)")
    dashboard: bool = setting(True, help="start the Ray dashboard with a local cluster")

    def __post_init__(self) -> None:
        for name in ("num_cpus", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


@dataclass
class ConfirmStorage:
    """`storage/...` of a confirmation (its results are the study's folder)."""

    resume: bool = setting(False, help="continue interrupted confirmation runs")


@dataclass
class ConfirmConfig:
    """One confirmation: which study, how many seeds, and the cluster settings that may differ from its own
    (each a key of the one override syntax: `--seeds 5` is `--set confirm/seeds=5`)."""

    KEY_PREFIX: ClassVar[str] = "confirm/"
    """A setting of the confirmation itself is `confirm/<name>`."""

    results: str = setting(flag=None, help="the study's folder, <storage>/<name>")
    seeds: int = setting(5, help="fresh training seeds per group (at least 2)")
    families: tuple[str, ...] = setting(
        (), flag="--family", metavar="FAMILY",
        help="confirm only these families of groups: method (methods per config), or one a method declares "
        "(cot: prompt styles; stacked: f and variants; a plugin's own); default: all",
    )  # fmt: skip
    resources: ConfirmResources = section(ConfirmResources)
    storage: ConfirmStorage = section(ConfirmStorage)

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 2:
            raise ValueError(
                f"--seeds must be a whole number >= 2 (one run has no spread), got {self.seeds!r}"
            )
        self.families = tuple(dict.fromkeys(self.families))
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
    """The study's settings from its `study.json`, with its storage and name taken from where it is now and
    the confirmation's cluster settings over its own."""
    record = json.loads(read_text(f"{confirm.results}/study.json"))
    values = record_values(record)
    for key in ("storage/resume", "storage/root", "storage/name"):
        values.pop(key, None)
    storage, _, name = confirm.results.rpartition("/")
    values |= {"storage/root": storage or "/", "storage/name": name}
    cluster = {
        key: leaf.get(confirm) for key, leaf in leaves(ConfirmConfig).items() if leaf.section == "resources"
    }
    # the same keys in both trees: the confirmation's cluster over the study's, where it gives one
    values |= {key: value for key, value in cluster.items() if value is not None}
    values = {key: value for key, value in values.items() if value is not None}
    return StudyConfig.from_keys(values, plugins=tuple(record.get("plugins") or ()))


def seeds_for(config: StudyConfig, n: int) -> list[int]:
    """N training seeds none of the search's trials used (they all trained with the study's seed)."""
    return [config.search.seed + 1 + i for i in range(n)]


def plan(confirm: ConfirmConfig, config: StudyConfig) -> dict[str, Any]:
    """The manifest: each compared group, its best trial and the experiment that re-runs it.

    Raises:
        ValueError: when the study has no finished trial, or a trial's config no longer builds.
    """
    from analysis.groups import compared_groups, slug
    from analysis.load import load_results
    from trainables.comparison import families as all_families
    from trainables.trial_config import TrialConfig, flat_trial

    known = all_families()  # the study's plugins are loaded by now (`study_config`)
    unknown = [f for f in confirm.families if f not in known]
    if unknown:
        raise ValueError(f"--family must be one of {', '.join(known)}, got {unknown[0]!r}")
    wanted = confirm.families or known
    trials = load_results([confirm.results]).trials
    chosen = compared_groups(trials, metric=config.search.metric, mode=config.search.mode)
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
            params = flat_trial(json.loads(read_text(f"{row['trial_dir']}/params.json")))
            for seed in seeds:
                TrialConfig.from_dict({**params, "train/seed": seed})
            experiments[name] = {"trial": row["trial"], "method": params["method"], "params": params}
        search = {k: row.get(k) for k in ("test/accuracy", "test/n", config.search.metric)}
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
        "split_seed": config.search.seed,
        "metric": config.search.metric,
        "mode": config.search.mode,
        "groups": groups,
        "experiments": experiments,
    }


def check_existing(confirm: ConfirmConfig, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The saved manifest when resuming; refuses to overwrite, or to resume with other seeds or groups."""
    saved_text = read_text(f"{confirm.root}/{MANIFEST}")
    if saved_text is None:
        if confirm.storage.resume:
            raise ValueError(f"nothing to resume: no confirmation runs in {confirm.root}")
        return None
    if not confirm.storage.resume:
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
    if config.resources.address:
        check_reachable(config.resources.address)
    manifest = plan(confirm, config)
    check_existing(confirm, manifest)
    methods = tuple(dict.fromkeys(e["method"] for e in manifest["experiments"].values()))
    configs = tuple(
        dict.fromkeys(e["params"].get("data_config", "main") for e in manifest["experiments"].values())
    )
    search = dataclasses.replace(config.search, methods=methods)
    config = dataclasses.replace(
        config, search=search, data=dataclasses.replace(config.data, configs=configs)
    )
    from study.confirm_runs import run_experiments  # Ray, torch and the trainables are imported only now

    return run_experiments(confirm, config, manifest)


def build_parser() -> argparse.ArgumentParser:
    """The flags, generated from `ConfirmConfig`'s fields (`study.cli`)."""
    parser = OneLineParser(
        prog="python -m study.confirm",
        description="Re-run the best trial of every group a study's report compares with N fresh seeds.",
        epilog="Exit status 2 means bad input (no such study folder, --seeds below 2, an unreachable cluster).",
    )
    parser.add_argument("results", help="the study's folder, <storage>/<name> (holds study.json)")
    add_setting_flags(parser, ConfirmConfig)
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help=CONFIRM_SET_HELP
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config tree as YAML and exit"
    )
    return parser


CONFIRM_SET_HELP = "a setting in the one override syntax: confirm/seeds=3, resources/num_cpus=2 (repeatable)"


def parse_confirm(argv: list[str] | None) -> tuple[ConfirmConfig, argparse.Namespace]:
    """Command-line arguments -> a `ConfirmConfig` (flags over `--set`, both over the defaults)."""
    args = build_parser().parse_args(argv)
    fields = leaves(ConfirmConfig)
    values: dict[str, Any] = {}
    for text in args.settings:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or key not in fields or key == "confirm/results":
            known = ", ".join(k for k in fields if k != "confirm/results")
            raise ValueError(f"--set {key if sep else text}: not a confirmation setting; known: {known}")
        values[key] = field_value(fields[key].field, key, raw)
    values |= given_flags(args, ConfirmConfig)
    return ConfirmConfig(**tree_values(ConfirmConfig, {**values, "confirm/results": args.results})), args


def _run(argv: list[str] | None) -> None:
    confirm, args = parse_confirm(argv)
    if args.print_config:
        from study.study_file import study_yaml

        lines = [f"{key}: {leaf.get(confirm)!r}" for key, leaf in leaves(ConfirmConfig).items()]
        print("# The confirmation's settings, then the resolved tree of the study it confirms.")
        print("\n".join(f"# {line}" for line in lines))
        print(study_yaml(study_config(confirm)), end="")
        return
    run_confirm(confirm)


def main(argv: list[str] | None = None) -> None:
    """`python -m study.confirm`: bad input exits 2 with one line."""
    run_cli(lambda: _run(argv))


if __name__ == "__main__":
    main()
