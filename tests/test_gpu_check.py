"""`bench/gpu_check.py`: its bad-input handling, `--wheels`, and its quick CPU mode end to end.

The quick run hides ray, optuna, datasets, evaluate and rouge-score (`absent_packages/sitecustomize.py`),
as on the GPU machine the script is written for, so a stray import of one of them fails here first.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
HIDER = Path(__file__).parent / "absent_packages"
GPU_MACHINE_LACKS = ("ray", "optuna", "datasets", "evaluate", "rouge_score", "nltk", "absl")


def run_check(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "--device must be auto, cuda or cpu, got 'tpu'"),
        (["--data-dir", "{tmp}"], "holds no gsm8k/train.jsonl"),
        (["--wheels", "{tmp}"], "holds no .whl file"),
        (["--budget-s", "5"], "--budget-s must be between 30 and 3600, got 5.0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "out"
    done = run_check("--out", str(out), *(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip().removeprefix('error: ')}"]
    assert message in done.stderr and not out.exists()  # nothing written


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "report").write_text("keep me")
    done = run_check("--out", str(tmp_path / "report"))
    assert done.returncode == 2 and "is a regular file; give a folder" in done.stderr
    assert (tmp_path / "report").read_text() == "keep me"


def test_wheels_are_importable_with_their_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [str(ROOT / "bench"), *sys.path])  # restored after the test
    from gpu_check import add_wheels

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "carried_pkg-1.2.3-py3-none-any.whl", "w") as archive:
        archive.writestr("carried_pkg/__init__.py", "VALUE = 42\n")
        archive.writestr(
            "carried_pkg-1.2.3.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: carried-pkg\nVersion: 1.2.3\n",
        )
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert add_wheels(wheels) == ["carried_pkg-1.2.3-py3-none-any.whl"]
    import carried_pkg

    assert carried_pkg.VALUE == 42 and importlib.metadata.version("carried-pkg") == "1.2.3"
    first, rest = os.environ["PYTHONPATH"].split(os.pathsep)
    assert rest == "/elsewhere" and (Path(first) / "carried_pkg" / "__init__.py").is_file()
    sys.modules.pop("carried_pkg")


@pytest.mark.slow  # the whole script on tiny shapes: 1-2 minutes on an idle 2-core CPU
def test_quick_cpu_mode_runs_every_section_without_the_packages_the_gpu_machine_lacks(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HIDER), str(ROOT)]),
        "SLM_ABSENT_PACKAGES": ",".join(GPU_MACHINE_LACKS),
        "OMP_NUM_THREADS": "1",
    }
    # a budget of 20 minutes, not 7.5: the caps scale with it, and a shared 2-core CPU can be 5x slower
    args = ["--out", str(tmp_path), "--device", "cpu", "--quick", "--budget-s", "1200"]
    done = run_check(*args, env=env, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {n: s["status"] for n, s in report["sections"].items()} == dict.fromkeys(
        ["environment", "matmul", "loop", "generation", "gpu_tests", "qlora", "sharing", "projection"], "ok"
    ), json.dumps(report["sections"])
    results = report["results"]
    assert results["environment"]["packages"]["ray"] == "missing"
    assert results["environment"]["packages"]["evaluate"] == "missing"
    assert results["matmul"]["tflops"] > 0 and results["matmul"]["dtype"] == "float32"
    for method in ("lora", "full", "stacked"):
        row = results["loop"]["methods"][method]
        assert row["study_examples_per_s"] > 0 and row["ratio"] > 0 and 0 < row["matmul_share"] < 1
    assert results["generation"]["speedup"] > 0
    assert results["gpu_tests"]["skipped"] == 3 and results["gpu_tests"]["failed"] == 0
    assert set(results["qlora"]["runs"]) == {"LoRA, float base", "QLoRA 8-bit", "QLoRA 4-bit NF4"}
    assert len(results["sharing"]["together_s"]) == 2 and results["sharing"]["throughput_gain"] > 0
    assert set(results["projection"]["methods"]) == {"lora", "full", "stacked", "qlora"}
    page = (tmp_path / "gpu_check.md").read_text()
    for heading in (
        "## Study loop against a plain PyTorch + PEFT loop",
        "## Fractional sharing",
        "## Projected",
    ):
        assert heading in page
    assert "| lora |" in page and "**Quick mode**" in page and "test_loading_on_cuda[4bit] | skipped" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md"]


def test_sections_are_capped_and_one_failure_does_not_stop_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [str(ROOT / "bench"), *sys.path])
    import time

    import gpu_check

    def slow(result, cap):
        result["measured"] = 1  # kept when the cap stops the section
        for _ in range(300):  # 3 s, unless the 0.3 s cap stops it
            time.sleep(0.01)

    def broken(result, cap):
        raise RuntimeError("no GPU kernel image\nsecond line")

    sections = {
        "slow": slow,
        "broken": broken,
        "absent": lambda r, c: "needs bitsandbytes",
        "fine": lambda r, c: None,
    }
    monkeypatch.setattr(gpu_check, "CAPS", {"slow": 0.3, "broken": 5, "absent": 5, "fine": 5})
    monkeypatch.setattr(gpu_check, "RESERVE_S", 0)
    monkeypatch.setattr(gpu_check, "MIN_CAP_S", 0.05)
    report = {"sections": {}, "results": {}}
    writes = []
    config = gpu_check.CheckConfig(out=tmp_path)
    gpu_check.run_sections(config, report, sections, time.monotonic() + 30, lambda: writes.append(1))
    status = {name: (s["status"], s.get("error")) for name, s in report["sections"].items()}
    assert status == {
        "slow": ("timeout", "stopped at its 0 s cap; partial results kept"),
        "broken": ("error", "RuntimeError: no GPU kernel image"),
        "absent": ("skipped", "needs bitsandbytes"),
        "fine": ("ok", None),
    }
    assert report["results"]["slow"] == {"measured": 1} and len(writes) == 4
    assert 0.3 <= report["sections"]["slow"]["seconds"] < 2


def test_markdown_of_a_run_cut_short(tmp_path):
    from bench.gpu_report import render_markdown

    loop = {
        "shape": {"d_model": 512},
        "examples": 960,
        "real_tokens": 1,
        "padded_tokens": 2,
        "bf16_autocast": True,
    }
    row = {"study_examples_per_s": 300.0, "plain_examples_per_s": 310.0, "ratio": 0.968, "ratios": [0.97]}
    row.update(study_tokens_per_s=5e4, tflops=30.0, matmul_share=0.04, peak_memory_mb=900.0)
    loop["methods"] = {"lora": row}
    report = {
        "command": "gpu_check.py --out x",
        "started_utc": "2026-12-01 10:00:00",
        "mode": "full",
        "device": "cuda",
        "bf16": True,
        "budget_s": 450,
        "wheels": [],
        "results": {"loop": loop, "generation": {"examples": 3}},
        "sections": {"loop": {"status": "timeout", "seconds": 150.0, "error": "stopped at its 150 s cap"}},
    }
    page = render_markdown(report)
    assert "| loop | timeout | 150.0 | stopped at its 150 s cap |" in page
    assert "| lora | 300.0 | 310.0 | **0.97x** | 0.97 | 50,000 | 30 | 4.0% | 900 | - |" in page
    assert "(partial figures, not rendered: KeyError" in page  # generation stopped before its figures
