"""Exactly one refresh at a time: real processes racing for the real lock; the schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from app import create_app, create_serving_app
from app.common.settings import Settings
from app.pipeline.downloads import params_digest
from app.pipeline.refresh_options import RefreshOptions
from app.recognition.params import DEFAULT
from app.wiring import startup as lifecycle
from app.wiring.scheduler import JOB_ID, make_scheduler, should_schedule
from tests.support import services
from tests.support.environment import REPOSITORY
from tests.support.fake_scryfall import FakeScryfall

RACER = textwrap.dedent(
    """
    import logging, sys, time
    from pathlib import Path
    from app.catalog.access import make_store
    from app.pipeline.refresh import run_refresh
    from app.pipeline.refresh_options import RefreshOptions
    from app.common.settings import Settings

    cfg = {cfg!r}
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
    settings = Settings(resources_dir=Path(cfg["resources"]), scryfall_data_dir=Path(cfg["data"]),
                        scryfall_api_url=cfg["url"])
    lock = None
    if cfg.get("redis_name"):
        import redis
        from app.pipeline.locks import RedisUpdateLock
        client = redis.Redis(host=cfg["redis_host"], port=cfg["redis_port"], db=13)
        lock = RedisUpdateLock(client, name=cfg["redis_name"], ttl_seconds=10)
    options = RefreshOptions(progress=False, api_interval=0, retry_backoff=0.01)
    while time.time() < cfg["go"]:
        time.sleep(0.005)
    result = run_refresh(settings, make_store(settings), options, lock=lock)
    print("RESULT", result.status, result.counts.get("reason"), flush=True)
    """
)


def _prepare_unchanged(root: Path, fake: FakeScryfall) -> None:
    """A served release and a state saying the bulk file is unchanged: the winner's run
    is quick (one /bulk-data call, slowed by the fake), the loser must find the lock taken."""
    release = root / "resources" / "releases" / "20260101T000000Z-aaaa"
    release.mkdir(parents=True)
    (release / "manifest.json").write_text(json.dumps({"counts": {"cards": 1}}))
    os.symlink("releases/20260101T000000Z-aaaa", root / "resources" / "run")
    (root / "data").mkdir()
    state = {"bulk_type": "default_cards", "updated_at": fake.updated_at,
             "params": params_digest(DEFAULT), "release": release.name,
             "selection": RefreshOptions().selection_digest()}
    (root / "data" / "refresh_state.json").write_text(json.dumps(state))


def _race(root: Path, fake: FakeScryfall, **extra: Any) -> list[str]:
    cfg = {"resources": str(root / "resources"), "data": str(root / "data"), "url": fake.url,
           "go": time.time() + 4.5, **extra}
    code = RACER.format(cfg=cfg)
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPOSITORY, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    return [p.communicate(timeout=90)[0] for p in procs]


def _assert_ran_once(outputs: list[str], fake: FakeScryfall) -> None:
    results = sorted(line for out in outputs for line in out.splitlines()
                     if line.startswith("RESULT"))
    assert results == ["RESULT skipped locked", "RESULT skipped unchanged"], outputs
    loser = next(out for out in outputs if "RESULT skipped locked" in out)
    assert "skipped: another replica holds" in loser
    assert fake.count("/bulk-data") == 1  # the job itself ran once


@pytest.mark.slow
def test_two_processes_run_the_job_once_with_the_file_lock(tmp_path: Path) -> None:
    with FakeScryfall() as fake:
        fake.delays["/bulk-data"] = 3.0
        _prepare_unchanged(tmp_path, fake)
        _assert_ran_once(_race(tmp_path, fake), fake)


@pytest.mark.redis
@pytest.mark.slow
def test_two_processes_run_the_job_once_with_the_redis_lock(
    tmp_path: Path, redis_client: Any
) -> None:
    name = redis_client.test_prefix + "model_update_lock"
    with FakeScryfall() as fake:
        fake.delays["/bulk-data"] = 3.0
        _prepare_unchanged(tmp_path, fake)
        outputs = _race(tmp_path, fake, redis_name=name, redis_host=services.REDIS_HOST,
                        redis_port=services.REDIS_PORT)
        _assert_ran_once(outputs, fake)
    assert redis_client.get(name) is None  # released by the winner


def test_scheduler_job_is_single_instance_coalesced_cron_in_utc() -> None:
    settings = Settings(refresh_cron="30 3 * * 1-5")
    scheduler = make_scheduler(settings, lambda: None)
    job = scheduler.get_job(JOB_ID)
    assert job.max_instances == 1
    assert job.coalesce is True
    assert str(job.trigger.timezone) == "UTC"
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert fields["hour"] == "3" and fields["minute"] == "30" and fields["day_of_week"] == "1-5"


def test_scheduler_runs_only_in_a_serving_process() -> None:
    assert should_schedule(Settings(flask_env="production"), is_cli=False)
    assert not should_schedule(Settings(flask_env="production"), is_cli=True)
    assert not should_schedule(Settings(flask_env="production", refresh_enabled=False), False)
    assert not should_schedule(Settings(flask_env="testing"), is_cli=False)


def test_serving_app_starts_and_stops_its_scheduler(base_config: dict[str, str]) -> None:
    built = create_app({**base_config, "FLASK_ENV": "development", "REFRESH_ENABLED": "true"})
    assert "scheduler" not in built.extensions  # building an app starts nothing
    lifecycle.shutdown(built)
    app = create_serving_app(
        {**base_config, "FLASK_ENV": "development", "REFRESH_ENABLED": "true"})
    try:
        scheduler = app.extensions["scheduler"]
        assert scheduler.running and scheduler.get_job(JOB_ID) is not None
    finally:
        lifecycle.shutdown(app)
    assert not scheduler.running
    testing = create_serving_app({**base_config, "REFRESH_ENABLED": "true"})
    assert "scheduler" not in testing.extensions
    lifecycle.shutdown(testing)


def test_redis_down_skips_the_refresh_and_leaves_serving_alone(tmp_path: Path) -> None:
    import redis

    from app.catalog.access import make_store
    from app.pipeline.locks import RedisUpdateLock
    from app.pipeline.refresh import run_refresh

    resources = tmp_path / "resources"
    release = resources / "releases" / "20260101T000000Z-aaaa"
    release.mkdir(parents=True)
    (release / "manifest.json").write_text("{}")
    os.symlink("releases/20260101T000000Z-aaaa", resources / "run")
    settings = Settings(
        resources_dir=resources,
        scryfall_data_dir=tmp_path / "data",
        scryfall_api_url="http://127.0.0.1:9",
    )
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    store = make_store(settings)
    try:
        result = run_refresh(
            settings, store, RefreshOptions(progress=False), lock=RedisUpdateLock(down)
        )
        assert result.status == "skipped"
        assert result.counts["reason"] == "lock unavailable"
        assert "Redis unavailable" in (result.error or "")
        assert os.readlink(resources / "run") == "releases/20260101T000000Z-aaaa"
        assert store.recent_runs(1)[0]["status"] == "skipped"
    finally:
        store.close()
