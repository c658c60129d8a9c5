"""The watcher reloads on promotion (inotify and polling) and refuses bad releases."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.pipeline import releases
from app.runtime.model import ModelHolder
from app.runtime.watcher import BundleWatcher


class ManifestBundle:
    """A stand-in bundle that, like the real one, refuses a release without a valid manifest."""

    def __init__(self, path: Path) -> None:
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("corrupt"):
            raise ValueError("sha256 mismatch for faiss_ivf.index")
        self.version = manifest["version"]

    def close(self) -> None:
        pass


def make_release(resources: Path, version: str, corrupt: bool = False) -> Path:
    release = releases.releases_dir(resources) / version
    release.mkdir(parents=True)
    (release / "manifest.json").write_text(json.dumps({"version": version, "corrupt": corrupt}))
    return release


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


Watched = tuple[ModelHolder[ManifestBundle], Path]  # the holder, and the RESOURCES_DIR watched


@pytest.fixture(params=[False, True], ids=["inotify", "polling"])
def watched(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watched]:
    resources = tmp_path / "resources"
    holder = ModelHolder(ManifestBundle)
    # A long safety interval: only the observer's events can make these tests pass in time.
    watcher = BundleWatcher(holder, resources, polling=request.param, safety_interval=60)
    watcher.start()
    yield holder, resources
    watcher.stop()


def _version(holder: ModelHolder[ManifestBundle]) -> str | None:
    with holder.lease() as bundle:
        return bundle.version if bundle else None


def test_promotion_is_served_within_seconds(watched: Watched) -> None:
    holder, resources = watched
    for version in ("20260101T000000000001Z", "20260101T000000000002Z"):
        releases.promote(resources, make_release(resources, version))

        def serves(expected: str = version) -> bool:
            return _version(holder) == expected

        assert wait_for(serves), f"{version} not served"


def test_rollback_is_noticed_too(watched: Watched) -> None:
    holder, resources = watched
    releases.promote(resources, make_release(resources, "20260101T000000000001Z"))
    releases.promote(resources, make_release(resources, "20260101T000000000002Z"))
    assert wait_for(lambda: _version(holder) == "20260101T000000000002Z")
    releases.rollback(resources)
    assert wait_for(lambda: _version(holder) == "20260101T000000000001Z")


def test_corrupt_promotion_is_refused_and_old_keeps_serving(
    watched: Watched,
) -> None:
    holder, resources = watched
    releases.promote(resources, make_release(resources, "20260101T000000000001Z"))
    assert wait_for(lambda: _version(holder) == "20260101T000000000001Z")
    releases.promote(resources, make_release(resources, "20260101T000000000002Z", corrupt=True))
    assert wait_for(lambda: holder.state.history[-1]["event"] == "refused")
    assert _version(holder) == "20260101T000000000001Z"
    assert holder.state.status == "loaded"
