"""Results folders written by an adversary who read the source, for the report's hardening tests.

`write_odd_trial` writes one trial folder of a kind the loader must list as unreadable (issue 19, defect
9); `write_hostile_study` writes a study whose every text value is markup, a script or a `javascript:` URL
(defect 10). Both build on the Ray Tune format of `test_analysis.write_trial`.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_analysis import generation, test_metrics, trial_params, write_trial

ODD_KINDS = {
    "reference_words": "reference",
    "result_list_line": "result.json",
    "generations_list_line": "generations_test.jsonl",
    "train_list": "train",
    "strategy_string": "strategy",
    "epochs_null": "epochs",
    "data_config_unhashable": "data_config",
    "method_unhashable": "method",
    "extracted_unhashable": "extracted",
    "dev_accuracy_dict": "dev/accuracy",
}
"""Each odd kind -> a word the reason the report gives for it must contain."""


def _rewrite_jsonl(path: Path, edit) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(row) + "\n" for row in edit(rows)))


def write_odd_trial(experiment: Path, kind: str) -> Path:
    """One finished trial folder made odd in the way `kind` (an `ODD_KINDS` key) names; its dev accuracy is
    the best of its experiment, so the report would show it if it read it."""
    rows = [generation(True), generation(False), generation(True)]
    if kind == "reference_words":
        rows = [{**row, "reference": "eight", "extracted": str(i)} for i, row in enumerate(rows)]  # spread
    elif kind == "extracted_unhashable":
        rows[0]["extracted"] = ["8"]
    params = trial_params("lora")
    folder = write_trial(experiment, params, dev=[0.2, 0.95], test=test_metrics(0.3, n=3), generations=rows)
    edits = {
        "train_list": lambda p: {**p, "train": [1, 2]},
        "strategy_string": lambda p: {**p, "strategy": "relu"},
        "epochs_null": lambda p: {**p, "train/epochs": None},
        "data_config_unhashable": lambda p: {**p, "data_config": ["main", "socratic"]},
        "method_unhashable": lambda p: {**p, "method": {"name": "lora"}},
    }
    if kind in edits:
        (folder / "params.json").write_text(json.dumps(edits[kind](params)))
    if kind == "result_list_line":
        _rewrite_jsonl(folder / "result.json", lambda reports: [[1, 2], *reports])
    elif kind == "generations_list_line":
        _rewrite_jsonl(folder / "generations_test.jsonl", lambda gens: [*gens[:1], ["a", "list"], *gens[1:]])
    elif kind == "dev_accuracy_dict":
        last = {"dev/accuracy": {"x": 1}}
        _rewrite_jsonl(folder / "result.json", lambda reports: [*reports[:-1], {**reports[-1], **last}])
    return folder


PWN = "document.documentElement.setAttribute('data-pwned','1')"
"""What every payload runs if it ever runs: a mark a browser's DOM keeps."""
SCRIPT = f"<script>{PWN}</script>"
IMG = f'<img src=x onerror="{PWN}">'
SVG = f'\'"><svg onload="{PWN}">'
JS_FOLDER = "javascript:alert(1)"
TEX = "$\\frac{$"
"""Text matplotlib would parse as broken mathtext, in a config name the charts show."""
PAYLOADS = (SCRIPT, IMG, SVG)


def write_hostile_study(root: Path) -> list[Path]:
    """A study whose every text value is markup: a script, an `onerror` image, an attribute break-out, in
    trial ids, configs, settings and generations, and an experiment folder named `javascript:alert(1)`
    (the first segment of a relative link when the report is written into the results folder)."""
    rows = [
        {
            **generation(True),
            "input": f"Question: {SCRIPT} 5 and 3?",
            "prediction": IMG,
            "program_output": SVG,
            "target": "[x](javascript:alert(1))",
        },
        generation(False),
    ]
    folders = []
    for experiment, method in ((root / JS_FOLDER, "lora"), (root / f"full-{IMG}", "full")):
        params = trial_params(
            method, config=f"main{SCRIPT}{TEX}", strategy={"f": SVG}, train={"prompt_style": IMG}
        )
        folder = write_trial(
            experiment, params, dev=[0.2, 0.4], test=test_metrics(0.4, n=2), generations=rows
        )
        _rewrite_jsonl(
            folder / "result.json", lambda reports: [{**r, "trial_id": f"{IMG}{SVG}"} for r in reports]
        )
        folders.append(folder)
    return folders


FORMULAS = ("=cmd|' -C calc'!A0", "+1+cmd|'x'!A0", "-2+3", "@SUM(1+1)", "\t=1+1", "\r=1+1")
"""Text a spreadsheet would run as a formula, one per character OWASP names (=, +, -, @, tab, CR)."""


def write_formula_study(root: Path) -> list[Path]:
    """A study whose texts open with a formula: each experiment's folder (so its trials' labels), data
    config, prompt style and `f`, and each trial's id."""
    folders = []
    for formula in FORMULAS:
        params = trial_params(
            "lora", config=formula, strategy={"f": formula}, train={"prompt_style": formula}
        )
        folder = write_trial(root / f"{formula}lora-main", params, dev=[0.2, 0.4], test=test_metrics(0.4))
        _rewrite_jsonl(
            folder / "result.json", lambda reports, f=formula: [{**r, "trial_id": f} for r in reports]
        )
        folders.append(folder)
    return folders
