"""The record of the refresh in progress, shared by every process of a host.

A refresh runs in one process, under the update lock, while /readyz and /status may be
answered by another gunicorn worker or replica: what they say must come from disk, not from
a Python global. At start the refresh writes RESOURCES_DIR/refresh-running.json (pid, host,
started_at, reason: "nightly", "flask refresh", "bootstrap: no bundle", "start-up: REFRESH_SETS
changed from rtr to dsk,rtr") next to releases/, atomically (written aside, renamed over), and
removes it at the end, failed or not.

A process killed mid-refresh (OOM, SIGKILL, a container stopped) cannot remove it. So the
file is born locked: its writer holds an `flock` on it for as long as the refresh runs, taken
before the rename makes it visible; the kernel drops that lock when the process dies,
whatever its pid becomes later. A reader that can take the lock, or that finds the record's
pid gone on this host, ignores the record as stale (the next refresh replaces it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUNNING_FILE = "refresh-running.json"


def running_path(resources: Path) -> Path:
    return resources / RUNNING_FILE


class RunningRecord:
    """The record of one refresh, held by the process that runs it (see the module)."""

    def __init__(self, resources: Path, reason: str) -> None:
        self.path = running_path(resources)
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "reason": reason,
        }
        self._fd: int | None = None

    def write(self) -> None:
        """Make the record visible, locked; a failure to write it is logged, never raised
        (the refresh runs all the same: only what /readyz says would be missing)."""
        tmp = self.path.with_name(f".{RUNNING_FILE}.{os.getpid()}.tmp")
        fd = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never waits
            os.write(fd, json.dumps(self.record).encode())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot write %s (/readyz will not show this refresh): %s",
                        self.path, exc)
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            return
        self._fd = fd

    def remove(self) -> None:
        """Remove the record if it is still this one, then drop its lock."""
        if self._fd is None:
            return
        try:
            ours = os.fstat(self._fd).st_ino == self.path.stat().st_ino
            if ours:
                self.path.unlink()
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path, exc)
        finally:
            os.close(self._fd)
            self._fd = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_running(resources: Path) -> dict[str, Any] | None:
    """The record of the refresh running on this host, or None (none, or a stale one: its
    lock is free, or its pid is gone)."""
    try:
        fd = os.open(running_path(resources), os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 65536)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True  # its writer holds it: the refresh runs
        else:
            held = False
    finally:
        os.close(fd)
    try:
        record = json.loads(data)
        pid = int(record["pid"])
    except (ValueError, KeyError, TypeError):
        return None
    if not held or (record.get("host") == socket.gethostname() and not _pid_alive(pid)):
        return None
    return dict(record)


def describe_running(resources: Path, serving: str | None) -> dict[str, Any]:
    """What /readyz and /status say of it: whether a refresh runs, why, since when, and the
    release served meanwhile (`serving`, this process's)."""
    record = read_running(resources)
    if record is None:
        return {"running": False, "reason": None, "started_at": None, "serving": None}
    return {"running": True, "reason": record.get("reason"),
            "started_at": record.get("started_at"), "serving": serving}
