"""The update lock: exactly one replica (or process) refreshes the bundle at a time.

Two implementations behind one interface. With Redis (production, several replicas) the lock
is a lease with a TTL that a heartbeat thread extends while the job runs; if the lease is
lost (a long pause, Redis restarted) `still_held()` turns false and the job must stop before
promoting. Without Redis (a bare machine) an `flock` on a file under RESOURCES_DIR does the
same on one host, and the kernel releases it if the process dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import redis
from redis.exceptions import LockError, RedisError

from app.common import metrics
from app.common.settings import Settings

log = logging.getLogger(__name__)

UPDATE_LOCK_NAME = "model_update_lock"

# Names of the locks this process holds now (with a count: two objects may hold two leases
# of differently named locks), for /status ("does this replica hold the update lock?") and
# the mtgscan_update_lock_held gauge.
_held: dict[str, int] = {}
_held_guard = threading.Lock()


def _mark_held(name: str, delta: int) -> None:
    with _held_guard:
        count = _held.get(name, 0) + delta
        if count > 0:
            _held[name] = count
        else:
            _held.pop(name, None)
        if name == UPDATE_LOCK_NAME:
            metrics.UPDATE_LOCK_HELD.set(max(0, count))


def held_here(name: str = UPDATE_LOCK_NAME) -> bool:
    """True while a lock of that name is held by this process (this replica)."""
    with _held_guard:
        return name in _held


class UpdateLock(Protocol):
    name: str
    unavailable: str | None  # why the last acquire() could not even ask (lock service down)

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another holder has it."""
        ...

    def still_held(self) -> bool:
        """True while this holder still owns the lock (check right before promoting)."""
        ...

    def release(self) -> None: ...


class FileLock:
    """An advisory `flock` on a file; blocking or not. Also used for the bootstrap lock."""

    def __init__(self, path: Path, name: str = UPDATE_LOCK_NAME) -> None:
        self.path = path
        self.name = name
        self.unavailable: str | None = None
        self._fd: int | None = None
        self._guard = threading.Lock()

    def acquire(self, blocking: bool = False) -> bool:
        with self._guard:
            if self._fd is not None:
                return False  # one holder per object, even within a process
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            _mark_held(self.name, +1)
            return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        with self._guard:
            if self._fd is None:
                return
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            _mark_held(self.name, -1)


class RedisUpdateLock:
    """A redis-py lock used as a lease, kept alive by a heartbeat thread.

    `thread_local=False` because the heartbeat thread extends a token that the job's thread
    acquired (redis-py #656); `replace_ttl=True` so each beat restores the full TTL.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str = UPDATE_LOCK_NAME,
        ttl_seconds: float = 120.0,
        heartbeat_seconds: float | None = None,
    ) -> None:
        self.name = name
        self.ttl_seconds = ttl_seconds
        self.heartbeat_seconds = heartbeat_seconds or ttl_seconds / 3
        self.unavailable: str | None = None
        self._lock = client.lock(name, timeout=ttl_seconds, thread_local=False)
        self._held = threading.Event()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> bool:
        self.unavailable = None
        try:
            got = bool(self._lock.acquire(blocking=False))
        except RedisError as exc:
            self.unavailable = f"Redis unavailable ({exc})"
            log.warning("update lock %s: %s; not taking it", self.name, self.unavailable)
            return False
        if got:
            _mark_held(self.name, +1)
            self._held.set()
            self._stop.clear()
            self._beat = threading.Thread(
                target=self._heartbeat, name=f"{self.name}-heartbeat", daemon=True
            )
            self._beat.start()
        return got

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._lock.extend(self.ttl_seconds, replace_ttl=True)
            except (LockError, RedisError) as exc:
                log.error("update lock %s lost: %s; the job will not promote", self.name, exc)
                self._held.clear()
                return

    def still_held(self) -> bool:
        if not self._held.is_set():
            return False
        try:
            owned = bool(self._lock.owned())
        except RedisError as exc:
            log.error("update lock %s: cannot confirm ownership (%s)", self.name, exc)
            owned = False
        if not owned:
            self._held.clear()
        return owned

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
            _mark_held(self.name, -1)  # a beat runs exactly while a lease was acquired
        if self._held.is_set():
            self._held.clear()
            try:
                self._lock.release()
            except (LockError, RedisError) as exc:
                log.warning("update lock %s: release failed (%s); it will expire", self.name, exc)


def make_update_lock(settings: Settings, ttl_seconds: float = 120.0) -> UpdateLock:
    """Redis lease when REDIS_HOST is set (several replicas), else a file lock (one host)."""
    if settings.uses_redis:
        client = redis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            db=settings.redis_db,
            password=settings.redis_password or None,
            socket_timeout=5,
            socket_connect_timeout=5,
        )
        return RedisUpdateLock(client, ttl_seconds=ttl_seconds)
    return FileLock(settings.resources_dir / f".{UPDATE_LOCK_NAME}")
