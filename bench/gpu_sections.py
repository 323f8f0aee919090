"""The sections of `bench/gpu_check.py`: each a function `(result, cap_s) -> skip reason or None`.

A section fills `result` as it goes, so a section stopped at its cap keeps what it had measured. This
module holds the ones that are not measurements of the model (environment, the gpu-marked tests, the
paper-preset projection) and binds the others (`bench/gpu_measure.py`, `bench/gpu_share.py`) to their
arguments.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from trainables.training.models import pick_device, pick_dtype

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("ray", "optuna", "bitsandbytes", "datasets", "evaluate", "rouge_score", "sentence_transformers")
GSM8K_TRAIN, GSM8K_TEST, MBPP_TASKS = 7473, 1319, 974
SEARCH_TRIALS = 50


def pick(prefer: str) -> tuple[torch.device, bool]:
    """The device, and whether the loop autocasts to bf16 there (a GPU with native bf16, as `fit` does)."""
    device = pick_device(prefer)
    return device, pick_dtype(device) == torch.bfloat16


def environment(result: dict, *, device: torch.device) -> None:
    """Versions, the device, and which optional packages are installed and import."""
    import peft
    import transformers

    result.update(
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        transformers=transformers.__version__,
        peft=peft.__version__,
        cpu_count=os.cpu_count(),
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        result.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            bf16_native=torch.cuda.is_bf16_supported(including_emulation=False),
        )
    result["packages"] = {name: _package(name, try_import=name == "bitsandbytes") for name in OPTIONAL}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result["commit"] = commit.stdout.strip() or None


def _package(name: str, *, try_import: bool = False) -> str:
    """`1.2.3`, `missing`, or (with `try_import`) `broken: <why>` when it is installed but does not import.

    Only bitsandbytes is imported to check it (it can lack a CUDA library it can load); importing ray,
    optuna or datasets would cost seconds to learn nothing the version does not say.
    """
    if importlib.util.find_spec(name) is None:
        return "missing"
    if try_import:
        try:
            __import__(name)
        except Exception as error:
            return f"broken: {type(error).__name__}: {str(error).strip()[:200]}"
    try:
        return importlib.metadata.version(name.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def gpu_tests(result: dict, *, workdir: Path, timeout_s: float) -> None:
    """`pytest -m gpu` over the test files that hold gpu-marked tests; each test's outcome."""
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if "pytest.mark.gpu" in path.read_text()
    )
    xml = workdir / "gpu-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", *files, "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, f"--junitxml={xml}"], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
    )
    tests = _junit(xml) if xml.is_file() else []
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    result.update(command=" ".join(command[1:]), returncode=done.returncode, tests=tests)
    result["summary"] = lines[-1] if lines else done.stderr.strip()[-300:]
    for outcome in ("passed", "failed", "skipped"):
        result[outcome] = sum(t["outcome"] == outcome for t in tests)
    if not tests:
        raise RuntimeError(f"pytest ran no gpu test (exit {done.returncode}): {result['summary']}")


def _junit(path: Path) -> list[dict]:
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        row = {"test": f"{case.get('classname', '')}::{case.get('name')}", "outcome": "passed"}
        for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                row.update(outcome=outcome, message=(found.get("message") or "").strip()[:300])
        rows.append(row)
    return rows


def projection(result: dict, results: dict) -> None:
    """The paper preset's cost per method on this device, from the loop, qlora and generation sections.

    A trial trains `epochs` passes over GSM8K train less the dev carve-out, evaluates dev after each and
    test once (T5's own vocabulary has no `<`, so the calculator's second test pass does not run). The
    evaluation time is an upper bound: every sequence is generated to max_new_tokens. ASHA stops most
    trials early, so a search costs less than 50 whole trials.
    """
    from search_spaces import EPOCHS
    from study.config import SearchSettings, StudyConfig
    from study.costs import TrialCost, study_hours
    from trainables.data.load import DataConfig

    # the paper study: its most epochs, DataConfig's dev split (the paper preset keeps both defaults)
    epochs, dev = EPOCHS[1], DataConfig().dev_size
    paper = StudyConfig(preset="paper", search=SearchSettings(methods=("stacked",))).preset_overrides
    [stage1_epochs] = [o.value for o in paper if o.key == "strategy/stage1_epochs"]
    generation = results.get("generation", {})
    if "batched_examples_per_s" not in generation or "methods" not in results.get("loop", {}):
        raise RuntimeError("needs the loop and generation sections' figures, which are missing")
    result.update(
        epochs=epochs,
        train_examples=GSM8K_TRAIN - dev,
        eval_s_per_trial=(epochs * dev + GSM8K_TEST) / generation["batched_examples_per_s"],
        eval_new_tokens=generation["new_tokens"],
        eval_note=f"dev {dev} x {epochs} + test {GSM8K_TEST}, every sequence {generation['new_tokens']} tokens",
    )
    if (
        "batched_bf16_examples_per_s" in generation
    ):  # the study evaluates in fp32; this is what bf16 would take
        result["eval_s_per_trial_bf16"] = (epochs * dev + GSM8K_TEST) / generation[
            "batched_bf16_examples_per_s"
        ]
    speeds = {m: r["study_examples_per_s"] for m, r in results["loop"]["methods"].items()}
    eval_speed = dict.fromkeys(speeds, generation["batched_examples_per_s"])
    qlora = results.get("qlora", {}).get("runs", {})
    if "QLoRA 8-bit" in qlora and "LoRA, float base" in qlora and "lora" in speeds:
        speeds["qlora"] = qlora["QLoRA 8-bit"]["examples_per_s"]
        # T5-base's generation was not timed: scale T5-small's by LoRA's train-speed ratio of the two shapes
        eval_speed["qlora"] = (
            eval_speed["lora"] * qlora["LoRA, float base"]["examples_per_s"] / speeds["lora"]
        )
    result["methods"] = {}
    for method, speed in speeds.items():
        # the same arithmetic as `python -m study.preflight` (study.costs), from these whole-epoch speeds
        cost = TrialCost(
            train_s_per_epoch=(GSM8K_TRAIN - dev) / speed,
            epochs=epochs,
            eval_s_dev=dev / eval_speed[method],
            evals=epochs,
            eval_s_test=GSM8K_TEST / eval_speed[method],
        )
        row = {
            "examples_per_s": speed,
            "s_per_epoch_full_train": GSM8K_TRAIN / speed,
            "trial_train_s": cost.epochs * cost.train_s_per_epoch,
            "trial_eval_s": cost.trial_s - cost.epochs * cost.train_s_per_epoch,
            "gpu_hours_50_trials": study_hours(
                {method: cost}, experiments=[(method, SEARCH_TRIALS)], concurrency={method: 1}
            ),
        }
        if method == "stacked":  # stage 1 trains once per distinct stage-1 setting, not once per trial
            row["stage1_s"] = stage1_epochs * MBPP_TASKS / speed
        result["methods"][method] = row


def qlora_available() -> str | None:
    """None when bitsandbytes imports; else why the qlora section is skipped."""
    state = _package("bitsandbytes", try_import=True)
    if state == "missing":
        return "bitsandbytes is not installed: pass --wheels DIR holding its wheel (see the docstring)"
    return state[len("broken: ") :] if state.startswith("broken") else None


def build_sections(config, *, device: torch.device, bf16: bool, workdir: Path, report: dict) -> dict:
    """The sections in running order, bound to this run's settings."""
    from bench import gpu_measure
    from bench.gpu_share import sharing

    plan = gpu_measure.QUICK_PLAN if config.quick else gpu_measure.GPU_PLAN
    state: dict = {}

    def bench():  # built once, by the first section that needs it (the texts, tokenizer, model shapes)
        if "bench" not in state:
            data = str(config.data_dir) if config.data_dir else None
            state["bench"] = gpu_measure.setup(workdir, plan=plan, device=device, bf16=bf16, data_dir=data)
            report["data"] = state["bench"].data
        return state["bench"]

    def matmul_tflops():
        return report["results"].get("matmul", {}).get("tflops")

    def qlora(result, cap):
        reason = qlora_available()
        return reason if reason else gpu_measure.quantized(result, bench())

    return {
        "environment": lambda result, cap: environment(result, device=device),
        "matmul": lambda result, cap: gpu_measure.matmul_rate(
            result, device=device, n=plan.matmul_size, bf16=bf16
        ),
        "loop": lambda result, cap: gpu_measure.compare_loops(result, bench(), matmul_tflops=matmul_tflops()),
        "generation": lambda result, cap: gpu_measure.generation(result, bench()),
        "gpu_tests": lambda result, cap: gpu_tests(result, workdir=workdir, timeout_s=cap - 1),
        "qlora": qlora,
        "sharing": lambda result, cap: sharing(
            result,
            workdir / "share",
            device=device.type,
            quick=config.quick,
            timeout_s=cap - 1,
            trials=2
            if config.quick
            else 4,  # the same code; four processes' start-up would take 2 CPU cores a minute
        ),
        "projection": lambda result, cap: projection(result, report["results"]),
    }
