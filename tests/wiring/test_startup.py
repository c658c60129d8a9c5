"""Start-up: the bundle in RESOURCES_DIR/run is always loaded and promotions always watched;
BOOTSTRAP_MISSING_BUNDLE (formerly PREPARE_ON_START) only decides whether a missing bundle is
downloaded or built. Each app is served by a real HTTP server on 127.0.0.1, as in production.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import requests

from app import create_app, create_serving_app
from app.common.settings import Settings, SettingsError
from app.pipeline import releases
from tests.support.apps import LiveServer, install_release, shutdown
from tests.support.cards import synthetic_card_record
from tests.support.fake_scryfall import FakeScryfall
from tests.support.synthetic import make_card, photograph


def _photo(seed: int) -> bytes:
    image, _ = photograph(make_card(seed), seed=seed, rotation=5)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)


def _infer(url: str, seed: int) -> tuple[int, str | None]:
    response = requests.post(
        f"{url}/infer", files={"roi_image": ("photo.jpg", _photo(seed), "image/jpeg")}, timeout=30
    )
    return response.status_code, response.json().get("predicted_card_id")


def _version(bundle: Path) -> str:
    version: str = json.loads((bundle / "manifest.json").read_text())["version"]
    return version


@pytest.mark.parametrize("variable", ["BOOTSTRAP_MISSING_BUNDLE", "PREPARE_ON_START"])
def test_with_bootstrap_off_the_bundle_in_run_is_served_and_promotions_picked_up(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path], variable: str
) -> None:
    config = {key: value for key, value in base_config.items()
              if key != "BOOTSTRAP_MISSING_BUNDLE"}
    config[variable] = "false"
    resources = Path(config["RESOURCES_DIR"])
    releases.promote(resources, install_release(resources, synthetic_bundles["A"], "0001-A"))
    app = create_serving_app(config)
    try:
        with LiveServer(app) as server:
            _wait(lambda: requests.get(f"{server.url}/readyz", timeout=5).status_code == 200,
                  30, "/readyz 200")
            assert _infer(server.url, 100) == (200, synthetic_card_record(100)["id"])

            # a promotion while running (card 116 is only in B) is loaded by the watcher
            releases.promote(resources,
                             install_release(resources, synthetic_bundles["B"], "0002-B"))
            version_b = _version(synthetic_bundles["B"])
            _wait(lambda: requests.get(f"{server.url}/", timeout=5).json()["index_version"]
                  == version_b, 10, "the promoted release served")
            assert _infer(server.url, 116) == (200, synthetic_card_record(116)["id"])
            assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    finally:
        shutdown(app)


@pytest.mark.parametrize("bootstrap", [False, True])
@pytest.mark.parametrize("source", ["archive", "refresh"])
def test_with_bootstrap_off_a_missing_bundle_is_not_obtained_but_awaited(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path], bootstrap: bool,
    source: str,
) -> None:
    """Off: nothing is downloaded or built, /readyz says what to do, and a bundle promoted
    later is served. On (the control): the same start-up does reach out for one."""
    resources = Path(base_config["RESOURCES_DIR"])
    with FakeScryfall() as fake:  # serves an empty catalogue, and 404 for the archive
        config = {
            **base_config,
            "BOOTSTRAP_MISSING_BUNDLE": str(bootstrap).lower(),
            "SCRYFALL_API_URL": fake.url,
            "REFRESH_ENABLED": "true",  # FLASK_ENV=testing: no schedule, only the bootstrap
        }
        if source == "archive":
            config["RESOURCE_BUNDLE_URL"] = f"{fake.url}/file/release.tar.gz#sha256={'0' * 64}"
        app = create_serving_app(config)
        try:
            with LiveServer(app) as server:
                _wait(lambda: requests.get(f"{server.url}/readyz", timeout=5).json()["model"]
                      ["status"] not in ("starting", "preparing"), 60, "start-up settled")
                ready = requests.get(f"{server.url}/readyz", timeout=5)
                assert ready.status_code == 503
                reason = ready.json()["reason"]
                if bootstrap:
                    assert fake.requests, "the control: bootstrap reaches the fake server"
                    assert "bootstrap:" in reason
                    return
                assert fake.requests == []
                assert not resources.exists() or not any(resources.iterdir())
                assert ready.json()["model"]["status"] == "missing"
                assert "BOOTSTRAP_MISSING_BUNDLE=false" in reason
                assert "flask --app app build-index" in reason
                assert "`flask --app app refresh`" in reason

                # an operator builds one (here: promotes it): the watcher serves it
                releases.promote(
                    resources, install_release(resources, synthetic_bundles["A"], "0001-A"))
                _wait(lambda: requests.get(f"{server.url}/readyz", timeout=5).status_code
                      == 200, 10, "/readyz 200 after the promotion")
                assert _infer(server.url, 100) == (200, synthetic_card_record(100)["id"])
                assert fake.requests == []
        finally:
            shutdown(app)


def test_create_app_alone_starts_nothing(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path]
) -> None:
    """Tests, tools and `flask` commands build apps with create_app: no thread, no loading,
    and /readyz says how a serving process starts."""
    resources = Path(base_config["RESOURCES_DIR"])
    releases.promote(resources, install_release(resources, synthetic_bundles["A"], "0001-A"))
    app = create_app(base_config)
    try:
        assert not {"prepare_thread", "watcher", "scheduler"} & set(app.extensions)
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        assert "create_serving_app" in ready.get_json()["reason"]
    finally:
        shutdown(app)


def test_the_old_name_still_works_with_a_deprecation_line(
    base_config: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    assert not Settings.from_env({"PREPARE_ON_START": "false"}).bootstrap_missing_bundle
    assert Settings.from_env({}).bootstrap_missing_bundle
    same = {"PREPARE_ON_START": "false", "BOOTSTRAP_MISSING_BUNDLE": "false"}
    assert not Settings.from_env(same).bootstrap_missing_bundle
    with pytest.raises(SettingsError, match="PREPARE_ON_START is the old name"):
        Settings.from_env({"PREPARE_ON_START": "false", "BOOTSTRAP_MISSING_BUNDLE": "true"})
    with pytest.raises(SettingsError, match="PREPARE_ON_START must be true or false"):
        Settings.from_env({"PREPARE_ON_START": "maybe"})
    assert "deprecations" not in Settings.from_env(same).public_dict()

    config = {key: value for key, value in base_config.items()
              if key != "BOOTSTRAP_MISSING_BUNDLE"}
    with caplog.at_level(logging.WARNING, logger="app"):
        app = create_app({**config, "PREPARE_ON_START": "false"})
    shutdown(app)
    lines = [r.getMessage() for r in caplog.records if "PREPARE_ON_START" in r.getMessage()]
    assert len(lines) == 1 and "deprecated" in lines[0]
    assert "BOOTSTRAP_MISSING_BUNDLE" in lines[0]
    caplog.clear()
    shutdown(create_app(base_config))
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_with_bootstrap_off_a_refused_bundle_in_run_is_reported_as_such(
    base_config: dict[str, str]
) -> None:
    """A bundle is there but cannot be served: /readyz says so (with why), not 'missing'."""
    resources = Path(base_config["RESOURCES_DIR"])
    broken = releases.releases_dir(resources) / "0001-broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{}")
    releases.promote(resources, broken)
    app = create_serving_app(base_config)
    try:
        client = app.test_client()
        _wait(lambda: client.get("/readyz").get_json()["model"]["status"]
              not in ("starting", "preparing"), 30, "start-up settled")
        body = client.get("/readyz").get_json()
        assert body["model"]["status"] == "failed"
        assert "cannot be served" in body["reason"] and "refused" in body["reason"]
        assert "BOOTSTRAP_MISSING_BUNDLE=false" in body["reason"]
    finally:
        shutdown(app)


@pytest.mark.parametrize("max_delay", ["1", "0"])
def test_a_failed_bootstrap_is_retried_and_shown_in_readyz(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path], tmp_path: Path,
    max_delay: str,
) -> None:
    """The release host answers 503 once, then the archive: the service says in /readyz
    which attempt failed and when the next one is, and gets ready without a restart.
    BOOTSTRAP_RETRY_MAX_DELAY=0 (the control) tries once and stays unready."""
    import hashlib

    from app.pipeline.bootstrap import make_release_archive

    archive = make_release_archive(synthetic_bundles["A"], tmp_path / "release.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with FakeScryfall() as fake:
        fake.files["release.tar.gz"] = archive.read_bytes()
        fake.queue_failures("/file/release.tar.gz", [503])
        config = {**base_config, "BOOTSTRAP_MISSING_BUNDLE": "true",
                  "RESOURCE_BUNDLE_URL": f"{fake.url}/file/release.tar.gz#sha256={digest}",
                  "BOOTSTRAP_RETRY_MAX_DELAY": max_delay}
        app = create_serving_app(config)
        try:
            with LiveServer(app) as server:
                reasons: list[str] = []

                def settled() -> bool:
                    ready = requests.get(f"{server.url}/readyz", timeout=5)
                    reasons.append(str(ready.json()["reason"]))
                    status = ready.json()["model"]["status"]
                    return ready.status_code == 200 or (max_delay == "0" and status == "failed")

                _wait(settled, 30, "ready again after the failed attempt")
                failed = [reason for reason in reasons if "HTTP 503" in reason]
                assert failed, reasons
                if max_delay == "0":
                    time.sleep(2)  # no second attempt comes
                    assert fake.count("/file/release.tar.gz") == 1
                    ready = requests.get(f"{server.url}/readyz", timeout=5)
                    assert ready.status_code == 503 and "retried" not in ready.json()["reason"]
                    return
                assert "attempt 1, next in 1 s" in failed[0]
                assert "retried by itself" in failed[0]
                assert fake.count("/file/release.tar.gz") == 2
                assert _infer(server.url, 100) == (200, synthetic_card_record(100)["id"])
        finally:
            shutdown(app)
