"""Shared fixtures: a fresh app per test, and the real PostgreSQL / Redis on loopback.

`make test` sources scripts/test-services.sh first, which starts (or installs) the servers
and exports TEST_POSTGRES_* / TEST_REDIS_*. When a server cannot be reached the tests that
need it are skipped with the reason, and pytest's summary (-ra) lists them.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from app import create_app, create_serving_app
from app.common.settings import Settings
from app.wiring import startup as lifecycle

PG_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
PG_USER = os.environ.get("TEST_POSTGRES_USER", "postgres")
PG_PASSWORD = os.environ.get("TEST_POSTGRES_PASSWORD", "")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))

class _LookupRecorder(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_variables() -> frozenset[str]:
    """Every variable `Settings.from_env` reads, current and old names: found by letting it
    read an empty environment that records the lookups, so a variable or old name added to
    app/common/settings.py is scrubbed without anyone updating a list here."""
    recorder = _LookupRecorder()
    Settings.from_env(recorder)
    return frozenset(recorder.names)


def scrub_settings_environment(environ: MutableMapping[str, str]) -> list[str]:
    """Remove from `environ` every variable the settings read; the names removed, sorted."""
    removed = sorted(settings_variables() & set(environ))
    for name in removed:
        del environ[name]
    return removed


# Variables of the developer's shell must not reach the tests: each app of a test reads the
# process environment under its overrides (PREPARE_ON_START=true exported once made every
# test fail: it disagreed with the isolated BOOTSTRAP_MISSING_BUNDLE=false).
scrub_settings_environment(os.environ)


def isolated_config(base: Path) -> dict[str, str]:
    """Settings for an isolated app: its own resources and data dirs, no refresh schedule, no
    bootstrap downloads or builds (an app that `start`s only loads what a test promoted)."""
    return {
        "FLASK_ENV": "testing",
        "RESOURCES_DIR": str(base / "resources"),
        "SCRYFALL_DATA_DIR": str(base / "data"),
        "BOOTSTRAP_MISSING_BUNDLE": "false",
        "REFRESH_ENABLED": "false",
        "LOG_LEVEL": "warning",
        "SCRYFALL_API_URL": "http://127.0.0.1:9",  # nothing listens: never the real one
    }


# Threads the serving process's background work runs: what `start` begins, `shutdown` ends.
BACKGROUND_THREAD_NAMES = frozenset({"prepare-resources", "bundle-watcher", "APScheduler"})


def background_threads() -> set[threading.Thread]:
    """Live threads of a started app: loading, watcher, schedule, watchdog's observers."""
    from watchdog.utils import BaseThread

    return {
        thread
        for thread in threading.enumerate()
        if thread.name in BACKGROUND_THREAD_NAMES or isinstance(thread, BaseThread)
    }


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


def shutdown(application: Flask) -> None:
    """Stop what an app started, so tests leave no threads or connections behind."""
    lifecycle.shutdown(application)


class LiveServer:
    """A real HTTP server on 127.0.0.1 serving an app from a thread."""

    def __init__(self, application: Flask) -> None:
        self.app = application
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, application, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


# -- PostgreSQL ---------------------------------------------------------------------------
def _pg_connect(dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        password=PG_PASSWORD,
        dbname=dbname,
        connect_timeout=3,
    )


def _missing_service(reason: str) -> None:
    """Skip on a developer's machine without the servers; fail where they are required
    (CI exports TEST_REQUIRE_SERVICES=1: a suite that silently skipped the PostgreSQL and
    Redis halves would pass without testing them)."""
    if os.environ.get("TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> dict[str, Any]:
    try:
        _pg_connect("postgres").close()
    except Exception as exc:
        _missing_service(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}: {exc}".strip())
    return {"host": PG_HOST, "port": PG_PORT, "user": PG_USER, "password": PG_PASSWORD}


@pytest.fixture
def pg_database(pg_server: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A database of its own for one test, dropped afterwards."""
    name = f"mtgscan_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_connect("postgres")
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
        _missing_service(f"Redis not reachable on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    prefix = f"mtgscan-test:{uuid.uuid4().hex[:8]}:"
    client.test_prefix = prefix
    yield client
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


# -- synthetic catalogues and bundles -----------------------------------------------------
def synthetic_card_record(seed: int) -> dict[str, Any]:
    """A Scryfall-shaped record for the synthetic card `seed` (tests/synthetic.py)."""
    return {
        "object": "card",
        "id": f"00000000-0000-4000-8000-{seed:012d}",
        "oracle_id": f"10000000-0000-4000-8000-{seed:012d}",
        "illustration_id": f"20000000-0000-4000-8000-{seed:012d}",
        "name": f"Synthetic Card {seed}",
        "lang": "en",
        "layout": "normal",
        "set": "syn",
        "set_name": "Synthetic Set",
        "collector_number": str(seed),
        "finishes": ["nonfoil", "foil"],
        "prices": {"usd": f"{seed / 100:.2f}", "usd_foil": None, "eur": None, "tix": None},
        "image_uris": {"normal": f"https://img.invalid/{seed}.jpg"},
        "games": ["paper"],
        "digital": False,
        "released_at": "2026-01-01",
    }


def build_synthetic_bundle(seeds: list[int], out_dir: Path) -> dict[str, Any]:
    """Build a real bundle of synthetic cards with the default profile."""
    from app.common.reference import ReferenceImage
    from app.recognition.index.build import build_bundle
    from app.recognition.params import PROFILES
    from tests.synthetic import make_card

    refs = [
        ReferenceImage(
            card_id=record["id"],
            face=0,
            name=record["name"],
            set=record["set"],
            collector_number=record["collector_number"],
            illustration_id=record["illustration_id"],
            load=functools.partial(make_card, seed),
            extra={"set_name": record["set_name"], "finishes": record["finishes"]},
        )
        for seed, record in ((s, synthetic_card_record(s)) for s in seeds)
    ]
    return build_bundle(refs, out_dir, PROFILES["default"], progress=False, workers=2)


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


def serve_bundle(config: dict[str, str], bundle: Path, name: str = "0001-A") -> Flask:
    """Promote `bundle` in the config's RESOURCES_DIR and start an app that serves it (the
    caller shuts it down: it runs a loading thread and a watcher)."""
    from app.pipeline import releases

    resources = Path(config["RESOURCES_DIR"])
    releases.promote(resources, install_release(resources, bundle, name))
    application = create_serving_app(config)
    application.extensions["prepare_thread"].join(timeout=60)
    assert application.extensions["model"].loaded, application.extensions["model"].state
    return application


def install_release(resources: Path, bundle: Path, name: str) -> Path:
    """Copy a built bundle into RESOURCES_DIR/releases/<name> (not yet promoted)."""
    import shutil

    from app.pipeline import releases

    target = releases.releases_dir(resources) / name
    shutil.copytree(bundle, target)
    return target


@pytest.fixture(scope="session")
def reader() -> Iterator[Any]:
    """The collector-line reader as `/infer` loads it (Tesseract; the second engine too)."""
    from app.recognition.collector_line.tesseract import load_reader

    loaded, detail = load_reader()
    if loaded is None:
        pytest.fail(f"the OCR engine must be installed for these tests (make install): {detail}")
    yield loaded
    loaded.close()
