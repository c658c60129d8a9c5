"""`flask --app app status | rollback | refresh` through Flask's CLI runner."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.pipeline import releases
from app.pipeline.locks import UPDATE_LOCK_NAME, FileLock
from app.wiring import startup as lifecycle
from tests.support.fake_scryfall import FakeScryfall

OLD, NEW = "20260101T000000Z-aaaa", "20260102T000000Z-bbbb"


def invoke(app: Flask, *args: str) -> Any:
    """Run a command as `flask --app app ...` does: inside the app context (the commands
    are plain click commands; the flask CLI pushes the context for them)."""
    with app.app_context():
        return app.test_cli_runner().invoke(args=list(args))


def _fake_release(resources: Path, name: str, cards: int) -> None:
    release = releases.releases_dir(resources) / name
    release.mkdir(parents=True)
    manifest = {"version": name, "built_at": "2026-01-01T00:00:00+00:00",
                "counts": {"cards": cards, "descriptors": cards * 100}}
    (release / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def resources(base_config: dict[str, str]) -> Path:
    path = Path(base_config["RESOURCES_DIR"])
    _fake_release(path, OLD, 10)
    _fake_release(path, NEW, 12)
    os.symlink(f"releases/{NEW}", path / "run")
    return path


def test_status_prints_the_release_counts_and_last_runs_as_json(
    app: Flask, resources: Path
) -> None:
    store = app.extensions["catalog"]
    run_id = store.start_run("host-a")
    store.finish_run(run_id, "failed", {"faces": 3}, "boom")
    result = invoke(app, "status")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["current_release"] == NEW
    assert info["releases"] == [OLD, NEW]
    assert info["counts"] == {"cards": 12, "descriptors": 1200}
    assert info["catalog"] == {"backend": "sqlite", "cards": 0}
    assert info["last_runs"][0]["status"] == "failed"
    assert info["last_runs"][0]["error"] == "boom"


def test_status_without_any_release(app: Flask) -> None:
    result = invoke(app, "status")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["current_release"] is None and info["releases"] == []


def test_rollback_serves_the_previous_release_then_refuses(
    app: Flask, resources: Path
) -> None:
    result = invoke(app, "rollback")
    assert result.exit_code == 0, result.output
    assert f"now serving {OLD}" in result.output
    assert os.readlink(resources / "run") == f"releases/{OLD}"
    result = invoke(app, "rollback")
    assert result.exit_code == 1
    assert "no older release" in result.output
    assert os.readlink(resources / "run") == f"releases/{OLD}"


def test_rollback_waits_for_no_one_while_a_refresh_holds_the_lock(
    app: Flask, resources: Path
) -> None:
    holder = FileLock(resources / f".{UPDATE_LOCK_NAME}")
    assert holder.acquire()
    try:
        result = invoke(app, "rollback")
    finally:
        holder.release()
    assert result.exit_code == 1 and "holds model_update_lock" in result.output
    assert os.readlink(resources / "run") == f"releases/{NEW}"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace the refresh itself: these tests are about what the command passes it."""
    from app.pipeline.refresh_options import RefreshResult
    from app.wiring import cli

    calls: list[Any] = []

    def fake_run(settings: Any, store: Any, options: Any = None, **kwargs: Any) -> Any:
        calls.append(options)
        return RefreshResult("succeeded", {"faces": 1}, release="v1")

    monkeypatch.setattr(cli, "run_refresh", fake_run)
    return calls


def _app(config: dict[str, str], **extra: str) -> Iterator[Flask]:
    application = create_app({**config, **extra})
    try:
        yield application
    finally:
        lifecycle.shutdown(application)


def test_refresh_takes_the_printings_policy_from_the_settings(
    base_config: dict[str, str], captured: list[Any]
) -> None:
    from app.pipeline.refresh_options import EXCLUDED_LAYOUTS

    for app in _app(base_config, REFRESH_LANGS="ja,en", REFRESH_MIN_HIT_RATE="0.7",
                    REFRESH_EXCLUDED_LAYOUTS="token,emblem"):
        result = invoke(app, "refresh")
        assert result.exit_code == 0, result.output
        assert "refresh succeeded: serving v1" in result.output
        options = captured[-1]
        assert options.langs == ("ja", "en") and options.min_hit_rate == 0.7
        assert options.exclude_layouts == frozenset({"token", "emblem"})
        assert not options.force

        result = invoke(app, "refresh", "--force", "--lang", "any", "--include-layout", "token",
                        "--min-hit-rate", "0.9", "--workers", "2")
        assert result.exit_code == 0, result.output
        options = captured[-1]
        assert options.langs == () and options.min_hit_rate == 0.9 and options.force
        assert options.exclude_layouts == frozenset({"emblem"})
        assert options.image_workers == 2

        result = invoke(app, "refresh", "--min-hit-rate", "2")
        assert result.exit_code == 2 and len(captured) == 2
    for app in _app(base_config, REFRESH_SETS="rtr"):
        assert invoke(app, "refresh").exit_code == 0
        assert captured[-1].sets == ("rtr",)
        result = invoke(app, "refresh", "--set", "IMA", "--set", "dsk,rtr")
        assert result.exit_code == 0, result.output
        assert captured[-1].sets == ("dsk", "ima", "rtr")
        assert invoke(app, "refresh", "--set", "all").exit_code == 0
        assert captured[-1].sets == ()
        result = invoke(app, "refresh", "--set", "r;t")
        assert result.exit_code == 2 and "--set must be a comma-separated list" in result.output
    for app in _app(base_config):
        assert invoke(app, "refresh").exit_code == 0
        assert captured[-1].langs == ("en",) and captured[-1].sets == ()
        assert captured[-1].exclude_layouts == EXCLUDED_LAYOUTS


def test_refresh_for_real_failed_and_skipped(base_config: dict[str, str]) -> None:
    """Against the fake Scryfall: a truncated bulk file fails the run (exit 1, recorded);
    with the lock held by another process the run is skipped (exit 0)."""
    with FakeScryfall() as fake:
        fake.add_card(1)
        fake.truncate_bulk = True
        for app in _app(base_config, SCRYFALL_API_URL=fake.url):
            result = invoke(app, "refresh")
            assert result.exit_code == 1, result.output
            assert "refresh failed" in result.output and "truncated" in result.output
            assert app.extensions["catalog"].recent_runs(1)[0]["status"] == "failed"

            holder = FileLock(Path(base_config["RESOURCES_DIR"]) / f".{UPDATE_LOCK_NAME}")
            assert holder.acquire()
            try:
                result = invoke(app, "refresh")
            finally:
                holder.release()
            assert result.exit_code == 0, result.output
            assert "skipped: another replica holds model_update_lock" in result.output
