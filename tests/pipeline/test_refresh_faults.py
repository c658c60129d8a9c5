"""A refresh killed (SIGKILL) mid-run or mid-promotion: the previous release keeps serving,
the records stay as they were, and the next run recovers (stale staging and unpromoted
releases removed, the lock free again: at once for the file lock, after the TTL in Redis).

The killed refresh is a real process against the fake Scryfall. To kill it at an exact point
the child script can park itself (print `HANG <where>`, then sleep) right after the bundle
was built and validated in staging, or right after the release was stored, before `promote`.
The first test kills without any hook, as soon as the build starts writing into staging.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.catalog.access import make_store
from app.common.settings import Settings
from app.pipeline import releases
from app.pipeline.locks import UPDATE_LOCK_NAME, FileLock, UpdateLock
from app.pipeline.refresh import run_refresh
from app.pipeline.refresh_options import RefreshResult
from app.pipeline.validation import perturb
from tests.support import services
from tests.support.environment import REPOSITORY
from tests.support.fake_scryfall import FAST_REFRESH, FakeScryfall, card_image, encode_jpeg

SEEDS = list(range(1, 17))
OPTIONS = dataclasses.replace(FAST_REFRESH, validation_sample=8, max_missing_fraction=0.05)

CHILD = textwrap.dedent(
    """
    import logging, sys, time
    from dataclasses import replace
    from pathlib import Path
    from app.catalog.access import make_store
    from app.pipeline import refresh, releases
    from app.pipeline.refresh_options import RefreshOptions
    from app.common.settings import Settings

    cfg = {cfg!r}
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")

    def park(where):
        print("HANG", where, flush=True)
        time.sleep(600)

    if cfg["hang"] == "validated":
        validate = refresh.validate
        def _validate(*args, **kwargs):
            validate(*args, **kwargs)
            park("validated")
        refresh.validate = _validate
    elif cfg["hang"] == "stored":
        releases.promote = lambda resources, release: park("stored " + release.name)

    settings = Settings(resources_dir=Path(cfg["resources"]), scryfall_data_dir=Path(cfg["data"]),
                        scryfall_api_url=cfg["url"])
    lock = None
    if cfg.get("redis_name"):
        import redis
        from app.pipeline.locks import RedisUpdateLock
        client = redis.Redis(host=cfg["redis_host"], port=cfg["redis_port"], db=13)
        lock = RedisUpdateLock(client, name=cfg["redis_name"], ttl_seconds=cfg["ttl"])
    options = RefreshOptions(progress=False, api_interval=0, retry_backoff=0.01,
                             retry_max_wait=0.05, validation_sample=8)
    result = refresh.run_refresh(settings, make_store(settings), options, lock=lock)
    print("RESULT", result.status, result.error, flush=True)
    """
)


@dataclass
class Base:
    fake: FakeScryfall
    root: Path  # resources/ and data/ after one successful refresh
    release: str


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    """One real refresh (module-scoped): each test copies its resources, cache and catalogue."""
    root = tmp_path_factory.mktemp("faults-base")
    with FakeScryfall() as fake:
        for seed in SEEDS:
            fake.add_card(seed)
        settings = _settings(root, fake)
        store = make_store(settings)
        try:
            result = run_refresh(settings, store, OPTIONS)
        finally:
            store.close()
        assert result.status == "succeeded", result.error
        assert result.release is not None
        yield Base(fake, root, result.release)


def _settings(root: Path, fake: FakeScryfall) -> Settings:
    return Settings(resources_dir=root / "resources", scryfall_data_dir=root / "data",
                    scryfall_api_url=fake.url)


class World:
    """A copy of the base deployment, and a new upstream bulk file to refresh from."""

    def __init__(self, base: Base, root: Path, price: str) -> None:
        self.base = base
        self.fake = base.fake
        self.root = root
        shutil.copytree(base.root / "resources", root / "resources", symlinks=True)
        shutil.copytree(base.root / "data", root / "data")
        self.settings = _settings(root, self.fake)
        self.resources = self.settings.resources_dir
        self.store = make_store(self.settings)
        # upstream moved on: a new bulk file with a changed price (visible if written)
        self.fake.cards[0]["prices"]["usd"] = price
        self.fake.touch(f"2026-09-01T00:00:00.000+00:00/{root.name}")
        self.cards_before = self.cards()
        self.runs_before = len(self.store.recent_runs(100))

    def close(self) -> None:
        self.store.close()

    def cards(self) -> dict[str, dict[str, Any]]:
        rows = self.store.get_cards([c["id"] for c in self.fake.cards])
        for row in rows.values():
            row.pop("updated_at", None)
        return rows

    def start_child(self, hang: str = "none", **extra: Any) -> tuple[subprocess.Popen[str], Path]:
        cfg = {"resources": str(self.resources), "data": str(self.root / "data"),
               "url": self.fake.url, "hang": hang, **extra}
        out = self.root / "child.log"
        env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
        with out.open("w") as log_file:
            proc = subprocess.Popen([sys.executable, "-c", CHILD.format(cfg=cfg)], cwd=REPOSITORY,
                                    env=env, text=True, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        return proc, out

    def refresh(self, lock: UpdateLock | None = None) -> RefreshResult:
        return run_refresh(self.settings, self.store, OPTIONS, lock=lock)

    def assert_previous_release_serves(self) -> None:
        """`run` unchanged, the bundle opens and recognises, the records are as before."""
        from app.recognition.index.bundle import Bundle
        from app.recognition.match.card import recognize

        current = releases.current_release(self.resources)
        assert current is not None and current.name == self.base.release
        assert os.readlink(self.settings.run_dir) == f"releases/{self.base.release}"
        bundle = Bundle.open(self.settings.run_dir)
        try:
            photo = perturb(card_image(self._seed_image(3)), np.random.default_rng(3))
            match = recognize(bundle, photo).match
            assert match is not None and match.card["id"] == self.fake.cards[2]["id"]
        finally:
            bundle.close()
        assert self.cards() == self.cards_before

    def _seed_image(self, seed: int) -> int:
        return self.fake.images[f"{self.fake.cards[seed - 1]['id']}-0"]

    def assert_recovered(self, result: RefreshResult, *, interrupted: int = 1) -> None:
        """The next run promoted a new release; nothing of the killed run is left."""
        assert result.status == "succeeded", result.error
        assert result.release is not None and result.release != self.base.release
        assert [p.name for p in releases.list_releases(self.resources)] == [
            self.base.release, result.release]
        assert os.readlink(self.settings.run_dir) == f"releases/{result.release}"
        assert not any(releases.staging_dir(self.resources).iterdir())
        assert not list(self.resources.glob(".run-*"))
        assert self.cards()[self.fake.cards[0]["id"]]["prices"]["usd"] == (
            self.fake.cards[0]["prices"]["usd"])
        runs = self.store.recent_runs(100)
        new = runs[: len(runs) - self.runs_before]  # newest first
        assert new[0]["status"] == "succeeded"
        killed = [r for r in new if r["status"] == "failed"]
        assert len(killed) == interrupted
        assert all("interrupted" in (r["error"] or "") for r in killed)


@pytest.fixture
def world(base: Base, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    price = f"{abs(hash(request.node.name)) % 9000 / 100 + 10:.2f}"
    w = World(base, tmp_path, price)
    try:
        yield w
    finally:
        w.close()


def _wait_for(predicate: Any, proc: subprocess.Popen[str], out: Path, what: str,
              timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the refresh ended before {what}:\n{out.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"timed out waiting for {what}:\n{out.read_text()}")
        time.sleep(0.01)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def _staged(resources: Path) -> list[Path]:
    staging = releases.staging_dir(resources)
    return list(staging.iterdir()) if staging.exists() else []


@pytest.mark.slow
def test_kill_during_the_build_file_lock(world: World) -> None:
    """SIGKILL as soon as the bundle is being written into staging, no hook in the child."""
    proc, out = world.start_child()
    _wait_for(lambda: any(p.is_dir() for p in _staged(world.resources)), proc, out,
              "the build started in staging")
    _kill(proc)
    assert _staged(world.resources), "the killed build left nothing to clean up?"
    world.assert_previous_release_serves()
    # the kernel released the flock with the process: taking it now works
    probe = FileLock(world.resources / f".{UPDATE_LOCK_NAME}")
    assert probe.acquire()
    probe.release()

    # a server started on this deployment serves the previous release
    from app import create_app
    from app.wiring import startup as lifecycle

    app = create_app({"FLASK_ENV": "testing", "RESOURCES_DIR": str(world.resources),
                      "SCRYFALL_DATA_DIR": str(world.root / "data"),
                      "SCRYFALL_API_URL": world.fake.url, "BOOTSTRAP_MISSING_BUNDLE": "false",
                      "REFRESH_ENABLED": "false", "LOG_LEVEL": "warning"})
    try:
        app.extensions["model"].load(world.settings.run_dir)
        photo = encode_jpeg(perturb(card_image(world._seed_image(5)), np.random.default_rng(5)))
        response = app.test_client().post(
            "/infer", data={"roi_image": (io.BytesIO(photo), "p.jpg")})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["predicted_card_id"] == world.fake.cards[4]["id"]
        assert body["index_version"] == world.base.release
    finally:
        lifecycle.shutdown(app)

    world.assert_recovered(world.refresh())


@pytest.mark.slow
def test_kill_between_storing_and_promoting_the_release(world: World) -> None:
    """Killed after the release was moved into releases/ (records written), before `run`
    switched: `run` is unchanged and the next run removes the never-served release."""
    proc, out = world.start_child(hang="stored")
    _wait_for(lambda: "HANG stored" in out.read_text(), proc, out, "the release was stored")
    _kill(proc)
    orphan = out.read_text().split("HANG stored ", 1)[1].split()[0]
    assert sorted(p.name for p in releases.list_releases(world.resources)) == sorted(
        [world.base.release, orphan])
    current = releases.current_release(world.resources)
    assert current is not None and current.name == world.base.release
    from app.recognition.index.bundle import Bundle

    Bundle.open(world.settings.run_dir).close()
    Bundle.open(world.resources / "releases" / orphan).close()  # complete, just never served

    # a release is named by the second it was made and its content: a refresh within the
    # orphan's second, of the same catalogue, would make a release of the orphan's name
    time.sleep(1.1)
    result = world.refresh()
    world.assert_recovered(result)
    assert not (world.resources / "releases" / orphan).exists()
    # rollback goes back to the release served before, not to the interrupted one
    assert releases.rollback(world.resources).name == world.base.release


@pytest.mark.redis
@pytest.mark.slow
def test_kill_while_holding_the_redis_lease(world: World, redis_client: Any) -> None:
    """The dead holder's lease blocks the next run until its TTL (2 s) runs out."""
    from app.pipeline.locks import RedisUpdateLock

    name = redis_client.test_prefix + UPDATE_LOCK_NAME
    proc, out = world.start_child(hang="validated", redis_name=name, ttl=2.0,
                                  redis_host=services.REDIS_HOST,
                                  redis_port=services.REDIS_PORT)
    _wait_for(lambda: "HANG validated" in out.read_text(), proc, out,
              "the bundle was built and validated")
    _kill(proc)
    assert redis_client.get(name) is not None  # the dead holder's lease is still alive
    staged = _staged(world.resources)
    assert staged

    skipped = world.refresh(lock=RedisUpdateLock(redis_client, name=name, ttl_seconds=2.0))
    assert skipped.status == "skipped" and skipped.counts["reason"] == "locked"
    assert _staged(world.resources) == staged  # not ours to clean while the lease is alive
    world.assert_previous_release_serves()

    deadline = time.monotonic() + 5
    while redis_client.get(name) is not None:
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.05)
    result = world.refresh(lock=RedisUpdateLock(redis_client, name=name, ttl_seconds=2.0))
    world.assert_recovered(result)
    assert redis_client.get(name) is None


def test_interrupted_switch_and_unpromoted_markers_are_cleaned(tmp_path: Path) -> None:
    """Leftovers of a promotion killed between its two steps, without a subprocess."""
    resources = tmp_path / "resources"
    for name in ("20260101T000000Z-a", "20260102T000000Z-b", "20260103T000000Z-c"):
        built = tmp_path / name
        built.mkdir()
        (built / "manifest.json").write_text(json.dumps({"version": name}))
        releases.store_release(resources, built, name, pending=not name.endswith("b"))
    releases.promote(resources, resources / "releases" / "20260101T000000Z-a")
    # b: stored on purpose without serving (not pending): kept. c: pending, never promoted
    os.symlink("releases/20260102T000000Z-b", resources / ".run-12345-20260102T000000Z-b")
    releases.clean_staging(resources)
    assert [p.name for p in releases.list_releases(resources)] == [
        "20260101T000000Z-a", "20260102T000000Z-b"]
    assert os.readlink(resources / "run") == "releases/20260101T000000Z-a"
    assert not list(resources.glob(".run-*"))
    assert not list(releases.staging_dir(resources).iterdir())


def test_the_served_release_is_never_removed_as_unpromoted(tmp_path: Path) -> None:
    """Killed after the switch but before the marker was removed: the release is served."""
    resources = tmp_path / "resources"
    built = tmp_path / "v1"
    built.mkdir()
    release = releases.store_release(resources, built, "20260101T000000Z-a")
    os.symlink("releases/20260101T000000Z-a", resources / "run")  # the switch happened
    releases.clean_staging(resources)
    assert release.is_dir() and releases.current_release(resources) == release.resolve()
    assert not list(releases.staging_dir(resources).iterdir())


def test_a_failing_tidy_up_after_the_switch_keeps_the_new_release_served(tmp_path: Path) -> None:
    """After the rename, promotion tidies up (fsync, pending marker, pruning). A failure
    there must not be reported as a failed promotion: the refresh would then delete, as
    unpromoted, the release `run` already points to."""
    from app.pipeline.refresh import _Job
    from app.pipeline.refresh_options import RefreshOptions
    from app.recognition.params import DEFAULT

    resources = tmp_path / "resources"
    built = tmp_path / "v1"
    built.mkdir()
    release = releases.store_release(resources, built, "20260101T000000Z-a", pending=True)
    marker = releases._pending_marker(resources, release.name)
    marker.unlink()
    marker.mkdir()  # a marker that cannot be unlinked: the tidy-up fails (IsADirectoryError)
    releases.promote(resources, release)  # does not raise: the switch happened
    assert releases.current_release(resources) == release.resolve()

    # and a job that believes it did not promote never deletes what is served
    settings = Settings(resources_dir=resources, scryfall_data_dir=tmp_path / "data")
    store = make_store(settings)  # not used: the cleanup touches files only
    job = _Job(settings, store, RefreshOptions(), DEFAULT, FileLock(tmp_path / "lock"))
    job.stored_release = release
    job.cleanup()
    assert release.is_dir() and releases.current_release(resources) == release.resolve()


@pytest.mark.parametrize("version", ["../../escape", "..", "a/../../b", "/abs", ""])
def test_an_archive_naming_a_release_outside_resources_is_refused(
    tmp_path: Path, synthetic_bundles: dict[str, Path], version: str
) -> None:
    """The manifest's version names releases/<version>: a path there would unpack the
    archive's tree outside RESOURCES_DIR before anything checked it."""
    from app.pipeline.bootstrap import BootstrapError, install_release_archive, make_release_archive

    bundle = tmp_path / "bundle"
    shutil.copytree(synthetic_bundles["A"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["version"] = version
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    archive = make_release_archive(bundle, tmp_path / "release.tar.gz")
    resources = tmp_path / "deep" / "er" / "resources"
    settings = Settings(resources_dir=resources, scryfall_data_dir=tmp_path / "data")
    with pytest.raises(BootstrapError, match="not a plain name"):
        install_release_archive(settings, f"file://{archive}")
    assert not (tmp_path / "deep" / "escape").exists() and not (tmp_path / "escape").exists()
    assert releases.current_release(resources) is None
    with pytest.raises(releases.ReleaseError, match="plain name"):
        releases.store_release(resources, bundle, version or "..")


def test_signed_bundle_urls_are_masked_in_errors(tmp_path: Path) -> None:
    """RESOURCE_BUNDLE_URL may carry a signed token (query) or credentials: bootstrap
    errors end up in logs and in the unauthenticated /readyz."""
    import socket

    from app.common.settings import mask_url
    from app.pipeline.bootstrap import BootstrapError, install_release_archive

    assert mask_url("https://u:pw@cdn.example:8443/r/x.tar.gz?X-Amz-Signature=s3cr3t#f") == (
        "https://***@cdn.example:8443/r/x.tar.gz?***")
    assert mask_url("https://cdn.example/r/x.tar.gz") == "https://cdn.example/r/x.tar.gz"
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"https://user:pa55word@127.0.0.1:{port}/release.tar.gz?token=s3cr3t"
    settings = Settings(resources_dir=tmp_path / "res", scryfall_data_dir=tmp_path / "data")
    with pytest.raises(BootstrapError) as caught:
        install_release_archive(settings, url)
    message = str(caught.value)
    assert "s3cr3t" not in message and "pa55word" not in message and "user" not in message
    assert f"127.0.0.1:{port}/release.tar.gz?***" in message


def test_archives_need_a_digest_over_plain_http_and_a_bounded_size(
    tmp_path: Path, synthetic_bundles: dict[str, Path]
) -> None:
    import hashlib

    from app.pipeline.bootstrap import BootstrapError, install_release_archive, make_release_archive

    archive = make_release_archive(synthetic_bundles["A"], tmp_path / "release.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    settings = Settings(resources_dir=tmp_path / "res", scryfall_data_dir=tmp_path / "data")
    # plain http without a digest: refused before any byte is fetched
    with pytest.raises(BootstrapError, match="plain http"):
        install_release_archive(settings, "http://127.0.0.1:9/release.tar.gz")
    with pytest.raises(BootstrapError, match="sha256=<64"):
        install_release_archive(settings, f"file://{archive}#sha256=abc")
    wrong = "0" * 64
    with pytest.raises(BootstrapError, match="is not the"):
        install_release_archive(settings, f"file://{archive}#sha256={wrong}")
    with pytest.raises(BootstrapError, match="byte cap"):
        install_release_archive(settings, f"file://{archive}#sha256={digest}",
                                max_unpacked_bytes=1000)
    assert releases.current_release(settings.resources_dir) is None
    release = install_release_archive(settings, f"file://{archive}#sha256={digest}")
    assert releases.current_release(settings.resources_dir) == release.resolve()
