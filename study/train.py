"""Run one configuration without a search, through the same trial code as the study (for debugging).

    python -m study.train --method stacked --preset tiny --set f=relu
    python -m study.train --method lora_cot --preset tiny --set prompt_style=code --set lr=3e-3

Prints each evaluation's metrics as a JSON line while it trains and the final metrics as JSON at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from study.errors import run_cli
from study.outputs import check_output_folder
from study.plugins import add_plugin_argument, preload_plugins
from study.presets import PRESET_NAMES, get_preset
from trainables.data.load import CONFIGS
from trainables.methods import get_strategy, method_names


def build_parser() -> argparse.ArgumentParser:
    methods = "\n".join(f"  {name:<10} {get_strategy(name).description}" for name in method_names())
    parser = argparse.ArgumentParser(
        prog="python -m study.train",
        description="Train and evaluate one configuration of one method (no search, no Ray).",
        epilog=f"methods (the registry's; --plugin adds more):\n{methods}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", required=True, choices=method_names(), help="the fine-tuning method")
    add_plugin_argument(parser)
    parser.add_argument(
        "--preset", default="tiny", choices=PRESET_NAMES, help="model, data and loop defaults"
    )
    parser.add_argument("--config", default="main", choices=CONFIGS, help="GSM8K config")
    parser.add_argument("--model", help="base model: hub name or local path (default: the preset's)")
    parser.add_argument(
        "--data-dir", help="folder with gsm8k/ (and mbpp/) jsonl files; default: the preset's source"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting, e.g. f=relu, lr=1e-3, train/epochs=2, strategy/r=16, max_new_tokens=64 (repeatable)",
    )
    parser.add_argument(
        "--code-dataset",
        choices=("mbpp", "gsm8k-programs", "solution-programs"),
        help="stacked stage 1's data (default: the preset's)",
    )
    for split in ("train", "dev", "test"):
        parser.add_argument(f"--{split}-size", type=int, help=f"{split} records (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="seeds data splits and training")
    parser.add_argument(
        "--out", type=Path, help="folder for progress, checkpoint and generations (default: temp)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    return parser


def main(argv: list[str] | None = None) -> dict:
    preload_plugins(argv)  # first: their methods are valid values of --method
    args = build_parser().parse_args(argv)
    if args.resume and args.out is None:
        raise ValueError("--resume needs --out (the folder of the run to continue)")
    if args.out is not None:
        check_output_folder("--out", args.out)
    from study.prepare import DEFAULT_CACHE, base_trial, parse_overrides, prepare, with_overrides
    from study.results import trial_chance_lines
    from trainables.training.reporting import LocalReporter
    from trainables.trial import TrialConfig, run_trial

    sizes = {f"{split}_size": getattr(args, f"{split}_size") for split in ("train", "dev", "test")}
    preset = get_preset(args.preset)
    preset = dataclasses.replace(
        preset, data={**preset.data, **{k: v for k, v in sizes.items() if v is not None}}
    )
    overrides = parse_overrides(args.overrides)
    # Validate the settings before any data or model is loaded.
    trial_dict = with_overrides(
        base_trial(preset, method=args.method, model="?", data_config=args.config, seed=args.seed), overrides
    )
    TrialConfig.from_dict({**trial_dict, "model": "?"})
    prepared = prepare(
        preset,
        methods=[args.method],
        configs=[trial_dict["data_config"]],
        data_dir=args.data_dir,
        model=args.model,
        seed=args.seed,
        code_dataset=args.code_dataset,
    )
    for note in prepared.notes:
        print(note, file=sys.stderr)
    trial_dict["model"] = overrides.get("model", prepared.models[args.method])
    trial = TrialConfig.from_dict(trial_dict)
    out = args.out or Path(tempfile.mkdtemp(prefix="slm-train-"))
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    reporter = LocalReporter(out, resume=args.resume, echo=log)
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
