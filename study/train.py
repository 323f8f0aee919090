"""Run one configuration without a search, through the same trial code as the study (for debugging).

    python -m study.train --method stacked --preset tiny --set f=relu
    python -m study.train --method lora_cot --preset tiny --set prompt_style=code --set lr=3e-3

The settings are the study's (`--set`, `--set-file`, the generated flags; docs/configuration.md), each
trial key given one value; a key the preset searches keeps its dataclass default here. Prints each
evaluation's metrics as a JSON line while it trains and the final metrics as JSON at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from study.cli import add_override_flags, add_setting_flags, parse_settings
from study.config import StudyConfig
from study.errors import OneLineParser, run_cli
from study.outputs import check_output_folder
from trainables.methods import get_strategy, method_names

FLAGS = ("search/methods", "preset", "data/configs", "model/name", "data/dir", "data/code_dataset")
FLAGS += ("data/train_size", "data/dev_size", "data/test_size", "search/seed")
"""The study's flags this command takes (it runs no search and no Ray)."""


def build_parser() -> argparse.ArgumentParser:
    methods = "\n".join(f"  {name:<10} {get_strategy(name).description}" for name in method_names())
    parser = OneLineParser(
        prog="python -m study.train",
        description="Train and evaluate one configuration of one method (no search, no Ray).",
        epilog=f"methods (the registry's; --plugin adds more):\n{methods}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_setting_flags(parser, StudyConfig, names=FLAGS, defaults={"preset": "tiny"})
    add_override_flags(parser, study_file=False)
    parser.add_argument(
        "--out", type=Path, help="folder for progress, checkpoint and generations (default: temp)"
    )
    parser.add_argument(
        "--resume", dest="resume_run", action="store_true", help="continue from the checkpoint in --out"
    )
    return parser


def one_trial(config: StudyConfig) -> dict[str, Any]:
    """The flat trial config of the study's one method and config: the preset's fixed trial settings, then
    the user's (which must be fixed: one configuration).

    Raises:
        ValueError: for a searched value given by the user, or a method or config beyond the first.
    """
    from search_spaces import setting_keys
    from search_spaces.overrides import route
    from study.plan import base_trial, study_overrides

    if len(config.search.methods) != 1 or len(config.data.configs) != 1:
        raise ValueError("study.train runs one configuration: give one --method and one --config")
    [method], [data_config] = config.search.methods, config.data.configs
    settings = route(study_overrides(config), {method: setting_keys(method, {})})[method]
    trial = base_trial(config, method=method, model="?", data_config=data_config)
    for o in settings:
        if o.kind != "fixed":
            if not o.origin.startswith("preset"):
                raise ValueError(
                    f"--set {o.describe()}: study.train runs one configuration; give {o.key} one value"
                )
            continue  # a range the preset searches: the dataclass default stays
        trial[o.key] = o.value
    return trial


def main(argv: list[str] | None = None) -> dict:
    config, args = parse_settings(argv, build_parser(), defaults={"preset": "tiny"}, bare_names=True)
    from trainables.trial_config import TrialConfig

    trial_dict = one_trial(config)
    TrialConfig.from_dict(trial_dict)  # the settings are checked before any data or model is loaded
    if args.print_config:
        from study.study_file import study_yaml

        print(study_yaml(config), end="")
        return {}
    if args.resume_run and args.out is None:
        raise ValueError("--resume needs --out (the folder of the run to continue)")
    if args.out is not None:
        check_output_folder("--out", args.out)
    from study.prepare import DEFAULT_CACHE, prepare
    from study.results import trial_chance_lines
    from trainables.training.reporting import LocalReporter
    from trainables.trial import run_trial

    prepared = prepare(config)
    for note in prepared.notes:
        print(note, file=sys.stderr)
    trial_dict["model"] = prepared.models[config.search.methods[0]]
    trial = TrialConfig.from_dict(trial_dict)
    out = args.out or Path(tempfile.mkdtemp(prefix="slm-train-"))
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    reporter = LocalReporter(out, resume=args.resume_run, echo=log)
    final = run_trial(
        trial,
        splits=prepared.splits,
        reporter=reporter,
        code_records=prepared.code_records,
        cache_dir=DEFAULT_CACHE / "stage1",
        log=log,
    )
    (out / "final_metrics.json").write_text(json.dumps(final, indent=2))
    print(json.dumps(final, indent=2))
    for line in trial_chance_lines(final, str(out), method=trial.method, data_config=trial.data_config):
        print(line, file=sys.stderr)  # the majority answer and last-number baselines; a collapse warning
    print(f"outputs in {out}", file=sys.stderr)
    return final


if __name__ == "__main__":
    run_cli(main)
