"""The update lock, both implementations: one holder at a time, and a lost lease is noticed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.common.settings import Settings
from app.pipeline.locks import FileLock, RedisUpdateLock, make_update_lock


def test_file_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    first = FileLock(tmp_path / "lock")
    second = FileLock(tmp_path / "lock")
    assert first.acquire()
    assert not second.acquire()
    assert first.still_held()
    first.release()
    assert second.acquire()
    second.release()


def test_file_lock_excludes_another_process(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "lock")
    assert lock.acquire()
    code = (
        "import sys; from pathlib import Path; from app.pipeline.locks import FileLock; "
        f"sys.exit(0 if FileLock(Path({str(tmp_path / 'lock')!r})).acquire() else 7)"
    )
    held = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert held.returncode == 7
    lock.release()
    free = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert free.returncode == 0


def test_file_lock_is_released_when_the_holder_dies(tmp_path: Path) -> None:
    code = (
        "import os; from pathlib import Path; from app.pipeline.locks import FileLock; "
        f"assert FileLock(Path({str(tmp_path / 'lock')!r})).acquire(); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)
    lock = FileLock(tmp_path / "lock")
    assert lock.acquire()
    lock.release()


def test_without_redis_host_the_update_lock_is_a_file_lock(tmp_path: Path) -> None:
    lock = make_update_lock(Settings(resources_dir=tmp_path))
    assert isinstance(lock, FileLock)


@pytest.mark.redis
def test_redis_lock_single_holder_and_release(redis_client: Any) -> None:
    name = redis_client.test_prefix + "model_update_lock"
    first = RedisUpdateLock(redis_client, name=name, ttl_seconds=5)
    second = RedisUpdateLock(redis_client, name=name, ttl_seconds=5)
    assert first.acquire()
    assert not second.acquire()
    assert first.still_held()
    first.release()
    assert second.acquire()
    second.release()
    assert redis_client.get(name) is None


@pytest.mark.redis
def test_redis_heartbeat_keeps_the_lease_past_its_ttl(redis_client: Any) -> None:
    name = redis_client.test_prefix + "model_update_lock"
    lock = RedisUpdateLock(redis_client, name=name, ttl_seconds=1.0, heartbeat_seconds=0.2)
    assert lock.acquire()
    time.sleep(2.5)  # more than twice the TTL: only the heartbeat keeps it
    assert lock.still_held()
    assert not RedisUpdateLock(redis_client, name=name, ttl_seconds=1).acquire()
    lock.release()


@pytest.mark.redis
def test_redis_lost_lease_is_noticed(redis_client: Any) -> None:
    name = redis_client.test_prefix + "model_update_lock"
    lock = RedisUpdateLock(redis_client, name=name, ttl_seconds=30)
    assert lock.acquire()
    redis_client.delete(name)  # the lease is gone (expired, Redis restarted...)
    assert not lock.still_held()
    lock.release()  # must not raise


def test_redis_down_means_not_acquired() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    assert not RedisUpdateLock(client, name="unreachable").acquire()
