"""Under Ray: a trial whose worker is SIGKILLed mid-step is retried at half its micro-batch, then fails
alone (Optuna FAIL, the end table, the report) while the study goes on; a reused worker gives back each
trial's memory; Ray's memory monitor's error is passed on as the worker's death it is."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from test_tuner import end_process_group, finish, start_study, trial_results


def test_an_out_of_memory_kill_reaches_ray_tune_as_the_worker_s_death():
    from ray.air.execution._internal.actor_manager import RayActorManager as ActorManager
    from ray.exceptions import OutOfMemoryError, RayActorError

    from study.worker_deaths import tolerate_worker_deaths

    class Task:
        _tracked_actor = None

    kill = OutOfMemoryError("1 worker(s) were killed due to the node running low on memory")
    original = ActorManager._actor_task_failed
    ray_own = getattr(original, "__wrapped__", original)
    with pytest.raises(RuntimeError, match="Caught unexpected exception"):  # Ray's own: the study would end
        ray_own(None, Task(), kill)
    seen = []
    try:
        ActorManager._actor_task_failed = lambda self, task, exception: seen.append(exception)
        tolerate_worker_deaths()
        tolerate_worker_deaths()  # twice: still one wrapper
        ActorManager._actor_task_failed(None, Task(), kill)
    finally:
        ActorManager._actor_task_failed = original
    assert len(seen) == 1 and isinstance(seen[0], RayActorError)
    assert "running low on memory" in str(seen[0])


def _wider_model(micro_t5_dir: Path, out: Path) -> Path:
    """The micro T5's tokenizer on a wider model (~4M parameters): a trial whose memory would show if kept."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    config = T5Config.from_pretrained(micro_t5_dir)
    config.update(
        {"d_model": 256, "d_ff": 1024, "d_kv": 32, "num_heads": 8, "num_layers": 2, "num_decoder_layers": 2}
    )
    T5ForConditionalGeneration(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(micro_t5_dir).save_pretrained(out)
    return out


def _local_trials(ray_tmp: Path, experiment: str, kind: str) -> dict[str, Path]:
    """Trial name -> its folder on this node, where Ray keeps it while the study runs: the worker's working
    folder (`working_dirs`: `placement.json`, `memory.json`, written when the trial writes them) or the
    driver's (`driver_artifacts`: `result.json`, a line per report as the driver gets it). The study's storage
    has a trial's files only from its checkpoints on, so it can show a finished trial as still running."""
    pattern = f"ray/session_*/artifacts/*/{experiment}/{kind}/trial_*"
    return {folder.name: folder for folder in sorted(ray_tmp.glob(pattern))}


def _finished(folder: Path | None) -> bool:
    result = None if folder is None else folder / "result.json"
    return result is not None and result.is_file() and "test/accuracy" in result.read_text()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return None


def _kill_when_running(ray_tmp: Path, experiment: str, *, after: int, timeout: float = 600) -> int:
    """SIGKILL the worker of the first unfinished trial once its first attempt is training, after `after`
    trials have finished; its pid and state are read from the node's own copies of its files."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = _local_trials(ray_tmp, experiment, "driver_artifacts")
        if sum(_finished(folder) for folder in results.values()) >= after:
            for name, working in _local_trials(ray_tmp, experiment, "working_dirs").items():
                state = _read_json(working / "memory.json")
                placement = _read_json(working / "placement.json")
                if _finished(results.get(name)) or not (state and placement):
                    continue
                if state.get("running") and state.get("halvings") == 0:
                    time.sleep(1.0)  # into its steps
                    os.kill(placement["pid"], signal.SIGKILL)
                    return placement["pid"]
        time.sleep(0.2)
    raise AssertionError(f"no trial of {experiment} started training after {after} had finished")


@pytest.mark.slow
def test_a_killed_worker_fails_its_trial_alone_and_a_reused_worker_gives_memory_back(
    tmp_path, micro_t5_dir, monkeypatch
):
    # Ray's own temporary folder for this study alone (a short path: Ray's socket names must fit 107 bytes)
    ray_tmp = Path(tempfile.mkdtemp(prefix="slm-deaths-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(ray_tmp))
    try:
        _killed_worker_study(tmp_path, micro_t5_dir, ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _killed_worker_study(tmp_path: Path, micro_t5_dir: Path, ray_tmp: Path) -> None:
    model = _wider_model(micro_t5_dir, tmp_path / "wider")
    process = start_study(
        [
            "--method", "full", "--trials", "4", "--name", "deaths", "--max-concurrent", "1",
            "--max-failures", "0", "--no-preflight", "--space", "train/epochs=1",
        ],
        tmp_path=tmp_path,
        model=model,
    )  # fmt: skip
    experiment = tmp_path / "out" / "deaths" / "full-main"
    try:  # the last trial: the first three share a worker
        killed = _kill_when_running(ray_tmp, "full-main", after=3)
    except AssertionError:
        end_process_group(process)
        raise
    # no retry (--max-failures 0): the killed trial fails; the retry's halving is tested above
    output = finish(process)

    results = trial_results(experiment)
    finished = {t: rows for t, rows in results.items() if rows and "test/accuracy" in rows[-1]}
    assert len(finished) == 3  # the study went on: every other trial ran to its end
    table = output[output.index("best trial of each experiment") :].splitlines()
    assert table[2].split()[:5] == ["full", "main", "3", "0", "1"]
    import optuna

    study = optuna.load_study(
        study_name="full-main", storage=f"sqlite:///{tmp_path / 'out' / 'deaths' / 'optuna.db'}"
    )
    states = sorted(t.state.name for t in study.trials)
    assert states.count("COMPLETE") == 3 and "FAIL" in states
    from analysis.load import load_results

    report = load_results([tmp_path / "out" / "deaths"]).trials  # what the report lists
    assert sorted(report["status"]) == ["error", "finished", "finished", "finished"], killed

    # The three that finished ran one after another in one reused worker, each starting where the last began.
    last = sorted((rows[-1] for rows in finished.values()), key=lambda r: r["memory/worker_start_mb"])
    pids = {json.loads((experiment / t / "placement.json").read_text())["pid"] for t in finished}
    assert len(pids) == 1, "the finished trials did not share one worker"
    starts = sorted(r["memory/worker_start_mb"] for r in last)
    grown = max(r["memory/peak_mb"] for r in last) - starts[0]
    assert grown > 40, f"a trial adds only {grown:.0f} MiB: too little to see a leak"
    assert starts[-1] - starts[1] < 0.5 * grown, f"the worker kept memory between trials: {starts}"
