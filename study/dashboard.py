"""Starting or joining Ray so that the dashboard and `ray status` work, with token authentication kept on.

Ray 2.60 turns token authentication on for a cluster that `ray.init()` starts: it writes a token to
~/.ray/auth_token and sets RAY_AUTH_MODE=token in the starting process only. From another shell the
dashboard page loads (it is public) but its API answers 401, and `ray status` fails, until that shell sets
RAY_AUTH_MODE=token too; joining a cluster by explicit address does not turn it on either, token or not.
So before Ray starts, `configure_auth` sets RAY_AUTH_MODE=token unless the user chose a mode, and makes
sure a token exists that only its owner can read (Ray writes it with the default umask). A local cluster's
dashboard listens on 127.0.0.1 only. The study prints the dashboard URL and what another shell needs.

    python -m study.dashboard            # URL, token check, and `ray status` of the running study
    python -m study.dashboard --study results/slm-tiny   # the optuna-dashboard command of a study

prints the same for the running study's cluster (or `--address`), checks that the dashboard's API
accepts the token, runs `ray status` with the matching environment, and prints the command that opens the
study's Optuna storage in optuna-dashboard.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from study import stale_clusters
from study.errors import run_cli

AUTH_MODE = "RAY_AUTH_MODE"
CLUSTER_FILE = Path.home() / ".cache" / "slm-math-study" / "ray-cluster.json"
"""Where a running study says which cluster it uses, for `python -m study.dashboard`."""


@dataclass
class ClusterInfo:
    """The Ray cluster a study runs on."""

    address: str
    """The GCS address (host:port) other shells and nodes join."""
    dashboard_url: str | None
    """http://host:port of the dashboard, or None when none runs."""
    started_here: bool
    """True when this process started the cluster (it ends with the study)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Total resources of the cluster when the study started (CPU, GPU, memory, ...)."""


def token_path() -> Path:
    """Where Ray looks for the token: $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def configure_auth() -> str:
    """Make this process and the Ray processes it starts agree on token authentication.

    Returns:
        The authentication mode in force: `token`, or what the user set in RAY_AUTH_MODE.
    """
    if AUTH_MODE not in os.environ:
        os.environ[AUTH_MODE] = "token"
        _reload_ray_config()
    mode = os.environ[AUTH_MODE]
    if mode != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return mode
    path = token_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:  # O_EXCL: two studies starting at once must not write two different tokens
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return mode
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate` makes
        _reload_ray_config()
    elif path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(0o600)  # anyone who can read the token can run code on the cluster
    return mode


def _reload_ray_config() -> None:
    """Ray's C++ core caches RAY_AUTH_MODE and the token when `ray` is imported; make it read them again,
    as Ray's own `ray.init()` does when it turns token auth on."""
    if "ray" not in sys.modules:
        return  # read fresh on import
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def read_token() -> str | None:
    """The token this process would send, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = token_path()
    return path.read_text().strip() if path.is_file() else None


def check_reachable(address: str, *, timeout: float = 5.0) -> None:
    """Fail fast, with one line, when nothing listens at `address` (Ray itself would retry for a minute).

    Raises:
        ValueError: if `address` is not host:port or no TCP connection can be made to it.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address must be host:port, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ValueError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


def connect(*, address: str | None, num_cpus: int | None, dashboard: bool) -> ClusterInfo:
    """Join the cluster at `address` (or $RAY_ADDRESS), or start a local one; returns what it is.

    Raises:
        ValueError: for an unreachable cluster or one whose token this machine does not have.
    """
    import ray

    configure_auth()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "auto"):
        check_reachable(address)
    if address is None:  # a study killed with SIGKILL left its cluster's agents behind: end them now
        for line in stale_clusters.end_stale():
            print(line, file=sys.stderr)
    try:
        if address is None:  # "local": never join someone else's `ray start` cluster on this machine
            context = ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
                log_to_driver=False,
            )
        else:
            context = ray.init(address=address, log_to_driver=False)
    except ConnectionError as err:
        if address is None:
            raise
        raise ValueError(f"cannot join the Ray cluster at {address}: {_first_line(err)}") from None
    except Exception as err:  # ray.exceptions.AuthenticationError and friends
        if address is not None and ("authenticat" in str(err).lower() or "token" in str(err).lower()):
            raise ValueError(
                f"the Ray cluster at {address} rejected this machine's token ({_first_line(err)}): "
                f"copy the head node's ~/.ray/auth_token to {token_path()} or set RAY_AUTH_TOKEN"
            ) from None
        raise
    if address is None and context.address_info.get("session_dir"):
        stale_clusters.record(context.address_info["session_dir"])
    url = context.dashboard_url
    info = ClusterInfo(
        address=context.address_info.get("gcs_address")
        or context.address_info.get("address")
        or str(address),
        dashboard_url=f"http://{url}" if url else None,
        started_here=address is None,
        resources=dict(ray.cluster_resources()),
    )
    _write_cluster_file(info)
    return info


def access_lines(info: ClusterInfo) -> list[str]:
    """What to print so the user can watch the study: dashboard URL and the settings another shell needs."""
    lines = []
    if info.dashboard_url:
        lines.append(f"Ray dashboard: {info.dashboard_url}")
    token = os.environ.get(AUTH_MODE) == "token"
    if token and info.dashboard_url:
        lines.append(f"  sign in with the token in {token_path()} (print it: ray get-auth-token)")
    prefix = "export RAY_AUTH_MODE=token; " if token else ""
    lines.append(f"Cluster status from another shell: {prefix}ray status --address {info.address}")
    lines.append("  (or: python -m study.dashboard)")
    return lines


def _write_cluster_file(info: ClusterInfo) -> None:
    try:
        CLUSTER_FILE.parent.mkdir(parents=True, exist_ok=True)
        CLUSTER_FILE.write_text(json.dumps({**asdict(info), "pid": os.getpid()}))
    except OSError:
        pass  # a convenience for `python -m study.dashboard`; the study runs without it


def note_study(*, optuna_url: str) -> None:
    """Add the running study's Optuna storage to CLUSTER_FILE, so `python -m study.dashboard` can print the
    optuna-dashboard command too."""
    try:
        saved = json.loads(CLUSTER_FILE.read_text())
        if saved.get("pid") == os.getpid():
            CLUSTER_FILE.write_text(json.dumps({**saved, "optuna_url": optuna_url}))
    except (OSError, ValueError):
        pass  # a convenience, as above


def optuna_dashboard_line(url: str) -> str:
    """How to open a study's Optuna storage in optuna-dashboard (the `dashboard` extra installs it)."""
    return f"Optuna dashboard: optuna-dashboard {url}  (then open http://127.0.0.1:8080)"


def stored_optuna_url(study_dir: str) -> str:
    """The Optuna storage of a study folder: its --optuna-storage, else its own `optuna.db`.

    Raises:
        ValueError: if the folder holds no study.
    """
    folder = Path(study_dir).expanduser().resolve()
    record = folder / "study.json"
    if not record.is_file():
        raise ValueError(f"{study_dir} is not a study folder (no study.json)")
    return json.loads(record.read_text()).get("optuna_storage") or f"sqlite:///{folder / 'optuna.db'}"


def forget_cluster() -> None:
    """Remove this process's entry from CLUSTER_FILE (the study is over; its cluster may be gone)."""
    stale_clusters.forget()
    try:
        if json.loads(CLUSTER_FILE.read_text()).get("pid") == os.getpid():
            CLUSTER_FILE.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by that id: cannot tell, assume it is the study
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def dashboard_status(url: str, token: str | None, *, timeout: float = 5.0) -> int:
    """HTTP status of the dashboard's API (`/api/version`) with the token: 200 when access works."""
    request = urllib.request.Request(f"{url.rstrip('/')}/api/version")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def main(argv: list[str] | None = None) -> int:
    """`python -m study.dashboard`: where to watch the running study, and `ray status` that works."""
    parser = argparse.ArgumentParser(prog="python -m study.dashboard", description=main.__doc__)
    parser.add_argument("--address", help="GCS address host:port (default: the running study's)")
    parser.add_argument("--dashboard-url", help="dashboard URL (default: the running study's)")
    parser.add_argument(
        "--study",
        metavar="DIR",
        help="a study folder (<storage>/<name>): print how to open its Optuna studies",
    )
    args = parser.parse_args(argv)
    saved = json.loads(CLUSTER_FILE.read_text()) if CLUSTER_FILE.is_file() else {}
    if saved and not _alive(saved.get("pid")):
        saved = {}  # left behind by a study that was killed
    address = args.address or saved.get("address")
    url = args.dashboard_url or (saved.get("dashboard_url") if not args.address else None)
    optuna_url = stored_optuna_url(args.study) if args.study else saved.get("optuna_url")
    if args.study and not address:
        print(optuna_dashboard_line(optuna_url))  # a finished study: no cluster to ask
        return 0
    if not address:
        raise ValueError(
            "no running study found (start one with python -m study.run), and no --address given"
        )
    mode = configure_auth()
    info = ClusterInfo(address=address, dashboard_url=url, started_here=False)
    print("\n".join(access_lines(info)))
    if optuna_url:
        print(optuna_dashboard_line(optuna_url))
    if url:
        try:
            status = dashboard_status(url, read_token() if mode == "token" else None)
            print(f"dashboard API: HTTP {status}" + (" (ok)" if status == 200 else " (check the token)"))
        except (urllib.error.URLError, OSError) as err:
            print(f"dashboard API: not reachable ({err})")
    env = {**os.environ, AUTH_MODE: mode}
    return subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "status", "--address", address], env=env
    ).returncode


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
