"""GET /status: the served release, catalogue, refresh history shared by replicas, next run,
the update lock, and settings with every secret masked; behind the /infer token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger

from app import create_app
from app.pipeline.locks import make_update_lock
from app.wiring.scheduler import make_scheduler
from tests.support.apps import LiveServer, serve_bundle, shutdown

SECRETS = {
    "POSTGRES_PASSWORD": "pg-pass-1234",
    "REDIS_PASSWORD": "redis-pass-5678",
    "INFER_API_TOKENS": "tok-aaaa,tok-bbbb",
    "RESOURCE_BUNDLE_URL": "https://user:pw-9999@cdn.example/r.tar.gz?X-Sig=sig-0000",
}


def test_status_reports_release_runs_lock_schedule_and_masked_settings(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path]
) -> None:
    import requests

    config = {**base_config, "BOOTSTRAP_MISSING_BUNDLE": "true", "REFRESH_SETS": "rtr,dsk",
              "REFRESH_CRON": "30 3 * * *", **SECRETS}
    # the stores' passwords only matter with their hosts, which these tests leave unset
    app = serve_bundle(config, synthetic_bundles["A"])
    version = app.extensions["model"].state.version
    settings = app.config["SETTINGS"]
    store = app.extensions["catalog"]
    for number in range(4):
        run_id = store.start_run(f"replica-{number}")
        store.finish_run(run_id, "failed" if number == 3 else "succeeded",
                         {"seconds": 1.5, "extracted": number, "cached": 10, "build": "full"},
                         "boom" if number == 3 else None)
    scheduler = make_scheduler(settings, lambda: None)
    scheduler.start()
    app.extensions["scheduler"] = scheduler
    lock = make_update_lock(settings)
    try:
        with LiveServer(app) as server:
            assert requests.get(f"{server.url}/status", timeout=10).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert requests.get(f"{server.url}/status", headers=wrong,
                                timeout=10).status_code == 403
            auth = {"Authorization": "Bearer tok-bbbb"}
            response = requests.get(f"{server.url}/status", headers=auth, timeout=10)
            assert response.status_code == 200
            body: dict[str, Any] = response.json()
            assert lock.acquire()
            try:
                held = requests.get(f"{server.url}/status", headers=auth, timeout=10).json()
            finally:
                lock.release()
    finally:
        shutdown(app)

    for secret in ("pg-pass-1234", "redis-pass-5678", "tok-aaaa", "tok-bbbb", "pw-9999",
                   "sig-0000", "user:"):
        assert secret not in response.text, secret

    release = body["release"]
    assert release["stale_build_fields"] == []  # built with this service's settings
    assert release["status"] == "loaded" and release["version"] == version
    assert release["run_points_at"] == "0001-A"  # the directory's name
    assert release["counts"]["cards"] == 14
    assert 0 <= release["age_s"] < 3600 * 24  # the session's bundle was built today
    assert release["releases"] == ["0001-A"]

    assert body["catalog"] == {"backend": "sqlite", "cards": 0, "error": None}
    runs = body["refresh"]["last_runs"]
    assert [run["host"] for run in runs] == ["replica-3", "replica-2", "replica-1"]
    assert runs[0]["outcome"] == "failed" and runs[0]["error"] == "boom"
    assert runs[1]["images"] == {"extracted": 2, "cached": 10} and runs[1]["build"] == "full"
    assert all(run["duration_s"] is not None and run["duration_s"] >= 0 for run in runs)

    expected = CronTrigger.from_crontab("30 3 * * *", timezone="UTC").get_next_fire_time(
        None, datetime.now(UTC))
    assert expected is not None
    next_run = datetime.fromisoformat(body["refresh"]["next_run_at"])
    assert abs(next_run - expected) < timedelta(seconds=5)

    assert body["update_lock"] == {"name": "model_update_lock", "backend": "file",
                                   "held_by_this_replica": False}
    assert held["update_lock"]["held_by_this_replica"] is True

    shown = body["settings"]
    assert shown["refresh_policy"]["refresh_sets"] == ["dsk", "rtr"]
    assert shown["refresh_policy"]["refresh_cron"] == "30 3 * * *"
    assert shown["refresh_policy"]["resource_bundle_url"] == "https://***@cdn.example/r.tar.gz?***"
    assert shown["stores"]["postgres_password"] == "***"
    assert shown["stores"]["redis_password"] == "***"
    assert shown["auth"]["infer_api_tokens"] == "2 token(s)"
    assert shown["limits"]["max_content_length"] == settings.max_content_length
    assert shown["profile"]["recognition_profile"] == "default"


def test_status_without_a_bundle_or_schedule(client: Any) -> None:
    body = client.get("/status").get_json()
    assert body["release"]["version"] is None and body["release"]["counts"] is None
    assert body["refresh"]["next_run_at"] is None and body["refresh"]["last_runs"] == []


@pytest.mark.postgres
def test_refresh_runs_are_shared_by_replicas_through_postgresql(
    base_config: dict[str, str], pg_database: dict[str, Any], tmp_path: Path
) -> None:
    """Two replicas (own resources, one database): a run recorded by one is in the other's
    /status, and it survives both restarting."""
    db = {"POSTGRES_HOST": pg_database["host"], "POSTGRES_PORT": str(pg_database["port"]),
          "POSTGRES_USER": pg_database["user"], "POSTGRES_PASSWORD": pg_database["password"],
          "POSTGRES_DB": pg_database["dbname"]}
    first = create_app({**base_config, **db})
    try:
        store = first.extensions["catalog"]
        store.migrate()
        run_id = store.start_run("replica-a")
        store.finish_run(run_id, "succeeded", {"seconds": 3.0}, None)
    finally:
        shutdown(first)
    second = create_app({**base_config, **db, "RESOURCES_DIR": str(tmp_path / "other")})
    try:
        body = second.test_client().get("/status").get_json()
    finally:
        shutdown(second)
    assert body["catalog"]["backend"] == "postgresql"
    assert [run["host"] for run in body["refresh"]["last_runs"]] == ["replica-a"]
    assert body["refresh"]["last_runs"][0]["outcome"] == "succeeded"
