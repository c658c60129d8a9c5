"""/readyz and /status say when a refresh is running on the host, and why.

The refresh runs in one process while another answers /readyz (a gunicorn worker, the
`flask refresh` of an operator): what they say comes from the record the refresh keeps in
RESOURCES_DIR for as long as it runs (app/pipeline/running.py). Each test runs a real
refresh against the fake Scryfall server, slowed where it must be seen running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from app import create_serving_app
from app.pipeline.running import RUNNING_FILE
from tests.support.apps import LiveServer, serve_bundle, shutdown
from tests.support.environment import REPOSITORY
from tests.support.fake_scryfall import FakeScryfall

CHOSEN = list(range(1, 17))  # set tst: 16 printings (a bundle needs ~14 to train)
OTHER = list(range(50, 54))  # set tdf
NOT_RUNNING = {"running": False, "reason": None, "started_at": None, "serving": None}


def _wait_for(probe: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll `probe` until it returns something truthy; that value."""
    deadline = time.monotonic() + seconds
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)
    return value


def _running(url: str) -> Callable[[], tuple[int, dict[str, Any]] | None]:
    """A probe of /readyz: (status, body) once its `refresh` says a refresh runs."""

    def probe() -> tuple[int, dict[str, Any]] | None:
        response = requests.get(f"{url}/readyz", timeout=10)
        body: dict[str, Any] = response.json()
        running = body.get("refresh", {}).get("running")
        return (response.status_code, body) if running else None

    return probe


def _status(url: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{url}/status", timeout=10).json()
    return body


@pytest.fixture
def fake() -> Iterator[FakeScryfall]:
    with FakeScryfall() as server:
        for seed in CHOSEN:
            server.add_card(seed, set_code="tst")
        for seed in OTHER:
            server.add_card(seed, set_code="tdf")
        yield server


def _flask_refresh(config: dict[str, str]) -> subprocess.Popen[str]:
    """`flask --app app refresh` in a process of its own, as an operator runs it."""
    env = {**os.environ, **config, "LOG_LEVEL": "info"}
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "refresh"], cwd=REPOSITORY, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.slow
def test_a_refresh_at_start_up_is_shown_with_its_reason_and_the_release_serving_meanwhile(
    base_config: dict[str, str], fake: FakeScryfall
) -> None:
    """The newcomer's case: REFRESH_SETS widened, the service restarted. /readyz answers
    200 (the old release serves) and says a refresh runs, why, and what serves meanwhile;
    /status says the same. The first start's bootstrap refresh is shown too (503 then)."""
    config = {**base_config, "SCRYFALL_API_URL": fake.url, "REFRESH_SETS": "tst",
              "BOOTSTRAP_MISSING_BUNDLE": "true", "REFRESH_ENABLED": "true"}
    fake.delays["/bulk-data"] = 1.5  # long enough to be seen running, every time

    app = create_serving_app(config)  # FLASK_ENV=testing: the preparation, no schedule
    try:
        with LiveServer(app) as server:
            status, body = _wait_for(_running(server.url), 60, "the bootstrap refresh seen")
            assert status == 503 and body["model"]["status"] == "preparing"
            assert body["refresh"]["reason"] == "bootstrap: no bundle"
            assert body["refresh"]["serving"] is None
            app.extensions["prepare_thread"].join(timeout=600)
            ready = requests.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 200
            assert ready.json()["refresh"] == NOT_RUNNING
            first = ready.json()["model"]["version"]
    finally:
        shutdown(app)

    app = create_serving_app({**config, "REFRESH_SETS": "tst,tdf"})
    try:
        with LiveServer(app) as server:
            status, body = _wait_for(_running(server.url), 60, "the start-up refresh seen")
            assert status == 200 and body["ready"] is True
            refresh = body["refresh"]
            assert refresh["reason"] == "start-up: REFRESH_SETS changed from tst to tdf,tst"
            assert refresh["serving"] == first == body["model"]["version"]
            age = datetime.now(UTC) - datetime.fromisoformat(refresh["started_at"])
            assert timedelta(seconds=-5) < age < timedelta(minutes=10)
            shown = _status(server.url)["refresh"]
            assert {key: shown[key] for key in NOT_RUNNING} == refresh
            assert shown["enabled"] is True and "last_runs" in shown

            app.extensions["prepare_thread"].join(timeout=600)
            after = requests.get(f"{server.url}/readyz", timeout=10).json()
            assert after["refresh"] == NOT_RUNNING
            assert after["model"]["version"] != first  # its own release serves now
            assert {key: _status(server.url)["refresh"][key] for key in NOT_RUNNING} \
                == NOT_RUNNING
    finally:
        shutdown(app)
    assert not (Path(config["RESOURCES_DIR"]) / RUNNING_FILE).exists()


@pytest.mark.slow
def test_a_flask_refresh_is_shown_by_the_serving_process_and_its_record_removed_when_it_fails(
    base_config: dict[str, str], fake: FakeScryfall, synthetic_bundles: dict[str, Path]
) -> None:
    """Another process's refresh (an operator's `flask refresh`) is shown by the serving
    one; a refresh that fails (here: Scryfall's file truncated) leaves no record."""
    config = {**base_config, "SCRYFALL_API_URL": fake.url}
    app = serve_bundle(config, synthetic_bundles["A"])
    fake.truncate_bulk = True
    fake.delays["/bulk-data"] = 1.5
    try:
        with LiveServer(app) as server:
            refresh = _flask_refresh(config)
            try:
                status, body = _wait_for(_running(server.url), 60, "the refresh seen")
                assert status == 200
                assert body["refresh"]["reason"] == "flask refresh"
                assert body["refresh"]["serving"] == app.extensions["model"].state.version
                output, _ = refresh.communicate(timeout=300)
            finally:
                refresh.kill()
                refresh.wait()
            assert refresh.returncode == 1, output
            assert "refresh failed" in output and "truncated" in output, output
            assert requests.get(f"{server.url}/readyz", timeout=10).json()["refresh"] \
                == NOT_RUNNING
    finally:
        shutdown(app)
    assert not (Path(config["RESOURCES_DIR"]) / RUNNING_FILE).exists()


@pytest.mark.slow
def test_the_record_of_a_refresh_whose_process_died_is_not_shown(
    base_config: dict[str, str], fake: FakeScryfall, synthetic_bundles: dict[str, Path]
) -> None:
    """A refresh killed mid-run (OOM, SIGKILL) cannot remove its record: its pid is gone,
    its lock with it, and /readyz does not say a refresh runs."""
    config = {**base_config, "SCRYFALL_API_URL": fake.url}
    app = serve_bundle(config, synthetic_bundles["A"])
    fake.delays["/bulk-data"] = 60.0  # the refresh waits there until it is killed
    record = Path(config["RESOURCES_DIR"]) / RUNNING_FILE
    try:
        with LiveServer(app) as server:
            refresh = _flask_refresh(config)
            try:
                _, body = _wait_for(_running(server.url), 60, "the refresh seen")
                assert body["refresh"]["reason"] == "flask refresh"
            finally:
                refresh.send_signal(signal.SIGKILL)
                refresh.communicate(timeout=30)
            left = json.loads(record.read_text())  # left behind, naming the dead process
            assert left["pid"] == refresh.pid and left["reason"] == "flask refresh"
            ready = requests.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 200
            assert ready.json()["refresh"] == NOT_RUNNING
    finally:
        shutdown(app)
