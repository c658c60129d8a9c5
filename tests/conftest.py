"""Shared fixtures: a fresh app per test, and the real PostgreSQL / Redis on loopback.

`make test` sources scripts/test-services.sh first, which starts (or installs) the servers
and exports TEST_POSTGRES_* / TEST_REDIS_*. When a server cannot be reached the tests that
need it are skipped with the reason, and pytest's summary (-ra) lists them. The helpers
these fixtures and the tests share are in tests/support/.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.support.apps import shutdown
from tests.support.cards import build_synthetic_bundle
from tests.support.environment import (
    background_threads,
    isolated_config,
    scrub_settings_environment,
)
from tests.support.services import (
    PG_HOST,
    PG_PASSWORD,
    PG_PORT,
    PG_USER,
    REDIS_HOST,
    REDIS_PORT,
    missing_service,
    pg_connect,
)

# Variables of the developer's shell must not reach the tests: each app of a test reads the
# process environment under its overrides (PREPARE_ON_START=true exported once made every
# test fail: it disagreed with the isolated BOOTSTRAP_MISSING_BUNDLE=false).
scrub_settings_environment(os.environ)


@pytest.fixture(autouse=True)
def no_leaked_background_threads() -> Iterator[None]:
    """Fail a test that leaves a started app's threads running: each would keep watching a
    deleted temporary directory (and loading into a dead app) through the rest of the suite.
    Threads of wider-scoped fixtures, started before the test, are not its leaks."""
    before = background_threads()
    yield
    deadline = time.monotonic() + 5  # a stopping thread may need a moment to return
    while (leaked := background_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"threads left running (shut the app down): {sorted(t.name for t in leaked)}"


@pytest.fixture
def base_config(tmp_path: Path) -> dict[str, str]:
    return isolated_config(tmp_path)


@pytest.fixture
def app(base_config: dict[str, str]) -> Iterator[Flask]:
    """A built app that starts nothing (no loading, watcher or schedule): create_app's
    contract; tests that need the serving process's background work use serve_bundle or
    create_serving_app, and shut it down."""
    application = create_app(base_config)
    application.extensions["catalog"].migrate()
    yield application
    shutdown(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- PostgreSQL ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> dict[str, Any]:
    try:
        pg_connect("postgres").close()
    except Exception as exc:
        missing_service(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: {exc}".strip())
    return {"host": PG_HOST, "port": PG_PORT, "user": PG_USER, "password": PG_PASSWORD}


@pytest.fixture
def pg_database(pg_server: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A database of its own for one test, dropped afterwards."""
    name = f"mtgscan_test_{uuid.uuid4().hex[:12]}"
    admin = pg_connect("postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {**pg_server, "dbname": name}
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# -- Redis --------------------------------------------------------------------------------
@pytest.fixture
def redis_client() -> Iterator[Any]:
    """A client on a scratch logical database; keys made by the test are removed after."""
    import redis

    class ScratchRedis(redis.Redis):
        test_prefix = ""  # the keys this test may make start with it

    client = ScratchRedis(host=REDIS_HOST, port=REDIS_PORT, db=13, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing_service(f"Redis not reachable on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    prefix = f"mtgscan-test:{uuid.uuid4().hex[:8]}:"
    client.test_prefix = prefix
    yield client
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


# -- synthetic catalogues and bundles -----------------------------------------------------
@pytest.fixture(scope="session")
def synthetic_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two bundles, built once per session: A = cards 100-113, B = cards 106-119.

    IVF-PQ needs ~10k training descriptors, so a bundle has at least 14 synthetic cards.
    """
    base = tmp_path_factory.mktemp("synthetic-bundles")
    built = {}
    for name, seeds in (("A", list(range(100, 114))), ("B", list(range(106, 120)))):
        build_synthetic_bundle(seeds, base / name)
        built[name] = base / name
    return built


@pytest.fixture(scope="session")
def reader() -> Iterator[Any]:
    """The collector-line reader as `/infer` loads it (Tesseract; the second engine too)."""
    from app.recognition.collector_line.tesseract import load_reader

    loaded, detail = load_reader()
    if loaded is None:
        pytest.fail(f"the OCR engine must be installed for these tests (make install): {detail}")
    yield loaded
    loaded.close()
