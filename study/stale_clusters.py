"""A local Ray cluster outlives a driver killed with SIGKILL: the next study on this machine ends it.

Ray's raylet and GCS go with the driver, but its DashboardAgent and RuntimeEnvAgent (about 210 MB) are
orphaned and live on. So a study that starts a local cluster records it (its driver's pid and start time,
and Ray's session folder) under `RECORDS`; the next study that starts one first ends the processes of every
recorded cluster whose driver is gone, and says so. A leftover is a process of this user named `ray::...`
or naming the session folder, that still holds a file of that session open: Ray renames its agents, so the
open log files are what ties them to their session.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

RECORDS = Path.home() / ".cache" / "slm-math-study" / "local-clusters"
"""One `<driver pid>.json` per local cluster a running (or killed) study started."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): tells a live
    driver from a new process that reuses its pid. None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def record(session_dir: str) -> None:
    """Note that this process (the driver) started the local cluster of `session_dir`."""
    try:
        RECORDS.mkdir(parents=True, exist_ok=True)
        entry = {"pid": os.getpid(), "start": _start_time(os.getpid()), "session_dir": session_dir}
        staged = RECORDS / f"{os.getpid()}.json.tmp"
        staged.write_text(json.dumps(entry))
        # whole or absent: a study starting meanwhile (two test workers, two shells) drops a record it
        # cannot read, and this cluster would then go uncleaned after a SIGKILL
        staged.replace(RECORDS / f"{os.getpid()}.json")
    except OSError:
        pass  # without a record only the clean-up after a SIGKILL is lost


def forget() -> None:
    """This driver's cluster ended with it (ray.shutdown): drop its record."""
    (RECORDS / f"{os.getpid()}.json").unlink(missing_ok=True)


def leftovers(session_dir: str) -> list[int]:
    """This user's Ray processes that still hold a file under `session_dir` open."""
    prefix, found = session_dir.rstrip("/") + "/", []
    for name in filter(str.isdigit, os.listdir("/proc")):
        pid = int(name)
        try:
            if pid == os.getpid() or os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if not (cmdline.startswith(b"ray::") or prefix.encode() in cmdline):
                continue
            if any(
                os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix) for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                found.append(pid)
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    return found


def end_stale(*, grace: float = 3.0) -> list[str]:
    """End the leftovers of every recorded local cluster whose driver is gone; one line per cluster ended.

    SIGTERM first, SIGKILL after `grace` seconds for what is still there.
    """
    messages = []
    for path in sorted(RECORDS.glob("*.json")) if RECORDS.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            pid, start, session = int(entry["pid"]), entry["start"], str(entry["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: nothing can be done with it
            continue
        if start is not None and _start_time(pid) == start:
            continue  # its driver still runs: another study's cluster
        found = leftovers(session)
        pids = list(found)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for target in pids:
                try:
                    os.kill(target, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while (pids := [p for p in pids if _running(p)]) and time.monotonic() < deadline:
                time.sleep(0.05)
        path.unlink(missing_ok=True)
        if found:
            messages.append(
                f"ended {len(found)} leftover process(es) of the local Ray cluster of a study whose driver "
                f"(pid {pid}) died: {session}"
            )
    return messages
