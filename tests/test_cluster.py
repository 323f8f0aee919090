"""Running on a Ray cluster: cluster.yaml is a valid launcher config, token authentication works out of the
box without opening the cluster, and (slow) a study runs on a two-node cluster started on this machine."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from study import dashboard
from study.dashboard import ClusterInfo, access_lines, check_reachable, configure_auth

REPO = Path(__file__).resolve().parents[1]


# --- cluster.yaml -------------------------------------------------------------------------------------------


def test_cluster_yaml_is_valid_for_rays_launcher():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # Ray's own JSON schema for cluster configs, as written
    validate_config(prepare_config(config))  # and as `ray up` checks it, with the AWS defaults filled in
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0
    assert all(
        w["min_workers"] == 0 and w["max_workers"] >= 1 and w["resources"]["GPU"] >= 1 for w in workers
    )
    assert any("pip install -e ." in command for command in config["setup_commands"])
    start = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in start and "--dashboard-host=127.0.0.1" in start
    assert "python -m study.run" in (REPO / "cluster.yaml").read_text()


# --- token authentication -----------------------------------------------------------------------------------


@pytest.fixture
def auth_env(monkeypatch, tmp_path) -> Path:
    """No RAY_AUTH_* settings and a token path of the test's own (not ~/.ray/auth_token)."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "ray" / "auth_token"))
    monkeypatch.setattr(dashboard, "CLUSTER_FILE", tmp_path / "ray" / "cluster.json")
    return tmp_path / "ray" / "auth_token"


@pytest.fixture
def clean_auth(auth_env, monkeypatch) -> Path:
    """`auth_env`, and Ray's C++ settings left alone (no Ray starts in these tests)."""
    monkeypatch.setattr(dashboard, "_reload_ray_config", lambda: None)
    return auth_env


def test_auth_defaults_to_token_with_a_private_token(clean_auth):
    assert configure_auth() == "token" and os.environ["RAY_AUTH_MODE"] == "token"
    assert len(clean_auth.read_text()) == 64 and clean_auth.stat().st_mode & 0o777 == 0o600
    first = clean_auth.read_text()
    clean_auth.chmod(0o644)
    configure_auth()
    assert clean_auth.read_text() == first and clean_auth.stat().st_mode & 0o777 == 0o600


def test_a_users_auth_mode_is_respected(clean_auth, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert configure_auth() == "disabled" and not clean_auth.exists()


def test_access_lines_tell_another_shell_what_it_needs(clean_auth):
    configure_auth()
    lines = access_lines(
        ClusterInfo(address="127.0.0.1:6379", dashboard_url="http://127.0.0.1:8265", started_here=True)
    )
    assert lines[0] == "Ray dashboard: http://127.0.0.1:8265"
    assert str(clean_auth) in lines[1]
    assert "export RAY_AUTH_MODE=token; ray status --address 127.0.0.1:6379" in lines[2]


def test_the_dashboard_command_ignores_a_killed_studys_cluster(clean_auth):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dashboard.CLUSTER_FILE.parent.mkdir(parents=True)
    dashboard.CLUSTER_FILE.write_text(
        json.dumps({"address": "127.0.0.1:1", "dashboard_url": None, "pid": dead.pid})
    )
    with pytest.raises(ValueError, match="no running study found"):
        dashboard.main([])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_address_fails_fast():
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:\d+"):
        check_reachable(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 2


@pytest.mark.slow
def test_the_cli_exits_2_for_an_unreachable_cluster(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")}
    args = [
        "--method",
        "lora",
        "--preset",
        "tiny",
        "--address",
        f"127.0.0.1:{free_port()}",
        "--storage",
        str(tmp_path),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "study.run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1].startswith("error: cannot reach the Ray cluster at 127.0.0.1:")
    )


# --- a real two-node cluster (slow) -------------------------------------------------------------------------


def ray_start(args: list[str], env: dict) -> subprocess.Popen:
    """`ray start ... --block` in its own process group: SIGTERM stops the node and everything it started."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    """Stop a node started by `ray_start`, then anything of its process group that outlived it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == process.pid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for_nodes(address: str, count: int, env: dict, timeout: float = 90) -> str:
    ray = str(Path(sys.executable).parent / "ray")
    deadline = time.monotonic() + timeout
    while True:
        status = subprocess.run(
            [ray, "status", "--address", address], env=env, capture_output=True, text=True
        )
        if status.returncode == 0 and status.stdout.count("node_") >= count:
            return status.stdout
        assert time.monotonic() < deadline, f"cluster did not come up: {status.stdout}{status.stderr}"
        time.sleep(2)


@pytest.mark.slow
def test_a_study_runs_on_both_nodes_of_a_two_node_cluster(tmp_path, micro_t5_dir):
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base_env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", RAY_AUTH_TOKEN_PATH=str(token))
    node_env = {**base_env, "RAY_AUTH_MODE": "token"}  # as cluster.yaml and docs/running.md start nodes
    port, dashboard_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    # The second node stages its files in a temp dir of its own, as on any real cluster: what a trial there
    # writes reaches the study's storage only through Ray's storage API, never through a shared folder.
    second_temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    head = ray_start(
        ["--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"],
        node_env,
    )  # fmt: skip
    second = None
    try:
        wait_for_nodes(address, 1, node_env)
        second = ray_start(
            [f"--address={address}", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={second_temp_dir}"],
            {**node_env, "RAY_TMPDIR": second_temp_dir},
        )
        wait_for_nodes(address, 2, node_env)
        storage = tmp_path / "out"
        study = subprocess.run(
            [sys.executable, "-m", "study.run", "--method", "lora", "--trials", "2", "--max-concurrent", "2",
             "--preset", "tiny", "--train-size", "48", "--dev-size", "8", "--test-size", "8",
             "--space", "train/epochs=1", "--space", "train/eval/metrics=accuracy",
             "--space", "train/eval/max_new_tokens=16", "--space", "train/eval/calculator=false",
             "--model", str(micro_t5_dir), "--address", address, "--storage", str(storage), "--name", "two"],
            cwd=REPO, env=base_env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert study.returncode == 0, study.stdout[-2000:] + study.stderr[-2000:]
        trials = sorted((storage / "two" / "lora-main").glob("trial_*"))
        assert len(trials) == 2
        for trial in trials:
            rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
            assert "test/accuracy" in rows[-1] and (trial / "generations_test.jsonl").is_file()
        nodes = {json.loads((t / "placement.json").read_text())["node_id"] for t in trials}
        assert len(nodes) == 2, "each node has one CPU, so the two concurrent trials ran one on each"
        stored = optuna.load_study(study_name="lora-main", storage=f"sqlite:///{storage}/two/optuna.db")
        for trial in stored.trials:  # the Optuna attribute names the file in storage, wherever it ran
            assert Path(trial.user_attrs["generations_test"]).is_file()
        assert (storage / "two" / "lora-main" / "best_config.json").is_file()

        # The dashboard and `ray status` work from a shell that set nothing, and only with the token.
        url = f"http://127.0.0.1:{dashboard_port}"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{url}/api/version", timeout=10)
        assert denied.value.code == 401
        check = subprocess.run(
            [sys.executable, "-m", "study.dashboard", "--address", address, "--dashboard-url", url],
            cwd=REPO, env=base_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert "dashboard API: HTTP 200 (ok)" in check.stdout and check.stdout.count("node_") >= 2
    finally:
        if second is not None:
            stop(second)
        stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(second_temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_local_clusters_dashboard_and_status_work_from_another_shell(auth_env):
    import ray

    info = dashboard.connect(address=None, num_cpus=1, dashboard=True)
    try:
        assert info.started_here and info.dashboard_url.startswith("http://127.0.0.1:")
        token = auth_env.read_text()
        deadline = time.monotonic() + 60
        while dashboard.dashboard_status(info.dashboard_url, token) != 200:
            assert time.monotonic() < deadline, "the dashboard API never accepted the token"
            time.sleep(1)
        assert dashboard.dashboard_status(info.dashboard_url, None) == 401  # not open without the token
        shell = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # another shell: nothing set
        check = subprocess.run(
            [sys.executable, "-m", "study.dashboard"], cwd=REPO, env={**shell, "HOME": str(auth_env.parent)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert check.returncode != 0 and "no running study found" in check.stderr  # a fresh HOME has none
        for _ in range(20):  # the autoscaler's status appears a few seconds after the cluster starts
            check = subprocess.run(
                [sys.executable, "-m", "study.dashboard", "--address", info.address,
                 "--dashboard-url", info.dashboard_url],
                cwd=REPO, env=shell, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert check.returncode == 0, check.stdout + check.stderr
            assert "dashboard API: HTTP 200 (ok)" in check.stdout
            if "node_" in check.stdout:
                break
            time.sleep(2)
        assert "Active:" in check.stdout and "node_" in check.stdout
    finally:
        ray.shutdown()
