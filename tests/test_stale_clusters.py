"""A local Ray cluster left behind by a driver killed with SIGKILL is ended by the next study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study import stale_clusters

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="finds leftovers through /proc")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def records(tmp_path, monkeypatch):
    monkeypatch.setattr(stale_clusters, "RECORDS", tmp_path / "records")
    return tmp_path / "records"


def _fake_agent(session: Path, name: str = "ray::FakeAgent") -> subprocess.Popen:
    """A process named like a Ray agent, holding a log file of `session` open, as Ray's agents do."""
    (session / "logs").mkdir(parents=True, exist_ok=True)
    log = session / "logs" / "agent.out"
    return subprocess.Popen(["bash", "-c", f"exec -a {name} sleep 60 3>>{log}"])


def _write(records: Path, pid: int, start: str | None, session: Path) -> Path:
    records.mkdir(parents=True, exist_ok=True)
    path = records / f"{pid}.json"
    path.write_text(json.dumps({"pid": pid, "start": start, "session_dir": str(session)}))
    return path


def _wait_gone(proc: subprocess.Popen, timeout: float = 5.0) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_the_agents_of_a_dead_driver_are_ended_and_said_so(records, tmp_path):
    session = tmp_path / "session_dead"
    agent, bystander = _fake_agent(session), _fake_agent(tmp_path / "session_other")
    try:
        time.sleep(0.2)  # bash has exec'ed sleep with the log open
        driver = subprocess.Popen(["true"])
        driver.wait()
        record = _write(records, driver.pid, "1", session)
        messages = stale_clusters.end_stale(grace=1.0)
        assert _wait_gone(agent)
        assert len(messages) == 1 and f"(pid {driver.pid}) died: {session}" in messages[0]
        assert messages[0].startswith("ended 1 leftover process(es) of the local Ray cluster")
        assert not record.exists() and bystander.poll() is None  # another session's process is left alone
    finally:
        for proc in (agent, bystander):
            proc.kill()
            proc.wait()


def test_the_cluster_of_a_live_driver_is_left_alone(records, tmp_path):
    session = tmp_path / "session_live"
    agent = _fake_agent(session)
    try:
        time.sleep(0.2)
        record = _write(records, os.getpid(), stale_clusters._start_time(os.getpid()), session)
        assert stale_clusters.end_stale(grace=0.5) == []
        assert agent.poll() is None and record.exists()
        stale_clusters.forget()
        assert not record.exists()
    finally:
        agent.kill()
        agent.wait()


def test_a_record_is_written_whole_and_another_start_leaves_a_live_drivers_record(records):
    stale_clusters.record("/tmp/ray/session_of_this_driver")  # as a study's driver does after ray.init
    assert [p.name for p in records.iterdir()] == [f"{os.getpid()}.json"]  # nothing half-written beside it
    assert stale_clusters.end_stale(grace=0.5) == []  # another study starting now (an xdist worker's)
    assert json.loads((records / f"{os.getpid()}.json").read_text())["session_dir"].endswith("this_driver")
    stale_clusters.forget()


def test_an_unreadable_record_is_dropped(records):
    records.mkdir()
    (records / "1.json").write_text("{not json")
    assert stale_clusters.end_stale() == [] and list(records.iterdir()) == []


@pytest.mark.slow
def test_a_sigkilled_study_drivers_ray_agents_are_ended_by_the_next_start(tmp_path, monkeypatch):
    """The real thing: a driver starts a local cluster through study.dashboard.connect and is SIGKILLed."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(stale_clusters, "RECORDS", home / ".cache" / "slm-math-study" / "local-clusters")
    code = (
        "from study.dashboard import connect; import time\n"
        "connect(address=None, num_cpus=1, dashboard=False); print('up', flush=True); time.sleep(600)"
    )
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "up"
        (entry,) = [json.loads(p.read_text()) for p in stale_clusters.RECORDS.glob("*.json")]
        deadline = time.monotonic() + 60
        while not (agents := stale_clusters.leftovers(entry["session_dir"])) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert agents, "Ray started no agent holding its session's files"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    time.sleep(3.0)
    alive = stale_clusters.leftovers(entry["session_dir"])
    assert alive, "nothing outlived the driver: the bug this test guards against is gone from Ray itself"
    messages = stale_clusters.end_stale()
    assert len(messages) == 1 and stale_clusters.leftovers(entry["session_dir"]) == []
