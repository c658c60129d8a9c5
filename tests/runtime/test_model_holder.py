"""The model holder: load outside the lock, swap under it, close after the last lease."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.runtime.model import ModelHolder


class FakeBundle:
    """Stands in for a descriptor bundle: records whether it was closed."""

    def __init__(self, path: Path) -> None:
        self.version = path.name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _dirs(tmp_path: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name)
    return paths


def test_lease_is_none_until_loaded(tmp_path: Path) -> None:
    holder = ModelHolder(FakeBundle)
    with holder.lease() as bundle:
        assert bundle is None
    (path,) = _dirs(tmp_path, "v1")
    holder.load(path)
    with holder.lease() as bundle:
        assert bundle is not None and bundle.version == "v1"
    assert holder.state.status == "loaded" and holder.state.version == "v1"


def test_swapped_bundle_closes_after_its_last_request(tmp_path: Path) -> None:
    holder = ModelHolder(FakeBundle)
    v1, v2 = _dirs(tmp_path, "v1", "v2")
    holder.load(v1)
    with holder.lease() as old:
        assert isinstance(old, FakeBundle)
        holder.load(v2)
        assert not old.closed  # still serving the request that took it
        with holder.lease() as new:
            assert new is not None and new.version == "v2"
    assert old.closed


def test_failed_load_keeps_serving_the_old_bundle(tmp_path: Path) -> None:
    def loader(path: Path) -> FakeBundle:
        if path.name == "broken":
            raise ValueError("checksum mismatch")
        return FakeBundle(path)

    holder = ModelHolder(loader)
    good, broken = _dirs(tmp_path, "good", "broken")
    holder.load(good)
    with pytest.raises(ValueError, match="checksum"):
        holder.load(broken)
    with holder.lease() as bundle:
        assert bundle is not None and bundle.version == "good"
    assert holder.state.status == "loaded"
    assert holder.state.history[-1]["event"] == "refused"


def test_loading_the_same_path_twice_is_a_no_op(tmp_path: Path) -> None:
    calls = []

    def loader(path: Path) -> FakeBundle:
        calls.append(path)
        return FakeBundle(path)

    holder = ModelHolder(loader)
    (path,) = _dirs(tmp_path, "v1")
    holder.load(path)
    holder.load(path)
    assert len(calls) == 1


def test_swap_does_not_wait_for_a_slow_load(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_loader(path: Path) -> FakeBundle:
        if path.name == "slow":
            entered.set()
            assert release.wait(10)
        return FakeBundle(path)

    holder = ModelHolder(slow_loader)
    fast, slow = _dirs(tmp_path, "fast", "slow")
    holder.load(fast)
    loader_thread = threading.Thread(target=holder.load, args=(slow,))
    loader_thread.start()
    assert entered.wait(10)
    # While the new bundle loads, requests still get the old one without waiting.
    acquired = holder.model_lock.acquire(timeout=1)
    assert acquired
    holder.model_lock.release()
    with holder.lease() as bundle:
        assert bundle is not None and bundle.version == "fast"
    release.set()
    loader_thread.join(10)
    with holder.lease() as bundle:
        assert bundle is not None and bundle.version == "slow"


def test_unload_closes_when_idle(tmp_path: Path) -> None:
    holder = ModelHolder(FakeBundle)
    (path,) = _dirs(tmp_path, "v1")
    bundle = holder.load(path)
    holder.unload()
    assert isinstance(bundle, FakeBundle) and bundle.closed
    assert not holder.loaded
