"""The nightly refresh end to end against the fake Scryfall, PostgreSQL when reachable.

One catalogue story, in order (module-scoped, because each bundle build costs seconds):
first run (JSONL; a double-faced card, excluded layouts/languages/digital, a missing image),
an unchanged `updated_at`, failed runs that must change nothing (truncated gzip, too small,
refused validation), then a second real run in the legacy format with two new cards.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask

from app import create_app, create_serving_app
from app.catalog.access import make_store
from app.catalog.store import CatalogStore
from app.common.settings import Settings
from app.pipeline import releases
from app.pipeline.refresh import run_refresh
from app.pipeline.refresh_options import RefreshResult
from app.pipeline.validation import perturb
from app.recognition.index.bundle import Bundle
from tests.support import apps, services
from tests.support.fake_scryfall import FAST_REFRESH, FakeScryfall, card_image, encode_jpeg

OPTIONS = FAST_REFRESH
NORMAL_SEEDS = list(range(1, 17))
DFC_SEED = 40
MISSING_SEED = 16


class World:
    def __init__(self, fake: FakeScryfall, root: Path, db: dict[str, Any] | None) -> None:
        self.fake = fake
        self.root = root
        env = {
            "FLASK_ENV": "testing",
            "RESOURCES_DIR": str(root / "resources"),
            "SCRYFALL_DATA_DIR": str(root / "data"),
            "SCRYFALL_API_URL": fake.url,
            "BOOTSTRAP_MISSING_BUNDLE": "false",
            "REFRESH_ENABLED": "false",
            "LOG_LEVEL": "warning",
        }
        if db is not None:
            env.update(
                POSTGRES_HOST=db["host"],
                POSTGRES_PORT=str(db["port"]),
                POSTGRES_USER=db["user"],
                POSTGRES_PASSWORD=db["password"],
                POSTGRES_DB=db["dbname"],
            )
        self.env = env
        self.settings = Settings.from_env(env)
        self.store: CatalogStore = make_store(self.settings)
        self.app: Flask = create_app(env)
        self.last: RefreshResult | None = None

    def refresh(self, **changes: Any) -> RefreshResult:
        result = run_refresh(
            self.settings,
            self.store,
            replace(OPTIONS, **changes),
            on_promoted=lambda run: self.app.extensions["model"].load(run),
        )
        self.last = result
        return result

    def all_cards(self) -> dict[str, dict[str, Any]]:
        ids = [c["id"] for c in self.fake.cards] + [str(i) for i in range(3)]
        rows = self.store.get_cards(ids)
        for row in rows.values():
            row.pop("updated_at")
        return rows

    def served(self) -> tuple[str | None, list[Any]]:
        """The run/ target and the /infer answers for a few photos."""
        run = releases.current_release(self.settings.resources_dir)
        answers = []
        client = self.app.test_client()
        rng = np.random.default_rng(5)
        for seed in (1, 5, DFC_SEED * 1000 + 8):
            photo = encode_jpeg(perturb(card_image(seed), rng))
            response = client.post("/infer", data={"roi_image": (io.BytesIO(photo), "p.jpg")})
            body = response.get_json()
            body.pop("timings_ms", None)
            answers.append((response.status_code, body))
        return (run.name if run else None), answers


def _make_db(name: str) -> dict[str, Any] | None:
    try:
        admin = services.pg_connect("postgres")
    except Exception:
        return None
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return {"host": services.PG_HOST, "port": services.PG_PORT, "user": services.PG_USER,
            "password": services.PG_PASSWORD, "dbname": name}


def _drop_db(name: str) -> None:
    admin = services.pg_connect("postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    name = f"mtgscan_test_refresh_{os.getpid()}"
    db = _make_db(name)
    with FakeScryfall() as fake:
        for seed in NORMAL_SEEDS:
            fake.add_card(seed)
        fake.add_card(DFC_SEED, layout="transform", faces=2, set_code="tdf")
        fake.add_card(20, layout="token", set_code="tok")
        fake.add_card(21, layout="art_series")
        fake.add_card(22, lang="ja")
        fake.add_card(23, digital=True)
        fake.missing_images.add(f"{fake.cards[NORMAL_SEEDS.index(MISSING_SEED)]['id']}-0")
        w = World(fake, tmp_path_factory.mktemp("refresh"), db)
        try:
            yield w
        finally:
            apps.shutdown(w.app)
            w.store.close()
            if db is not None:
                _drop_db(name)


@pytest.fixture(scope="module")
def first(world: World) -> RefreshResult:
    return world.refresh()


def test_first_run_indexes_the_right_faces_and_promotes(world: World, first: RefreshResult) -> None:
    assert first.status == "succeeded", first.error
    counts = first.counts
    # 16 normal + 2 faces of the transform card; token, art series, Japanese, digital excluded
    assert counts["faces"] == 18
    assert counts["missing"] == 1
    assert counts["extracted"] == 17
    assert counts["bundle"]["cards"] == 17
    assert counts["validation"]["hit_rate"] >= OPTIONS.min_hit_rate
    assert counts["sets"] == 3 and world.fake.count("/sets") == 2
    run = world.settings.run_dir
    assert run.is_symlink() and not os.path.isabs(os.readlink(run))
    id_map = [json.loads(line) for line in (run / "id_map.jsonl").read_text().splitlines()]
    dfc = world.fake.cards[len(NORMAL_SEEDS)]
    assert sorted(e["face"] for e in id_map if e["id"] == dfc["id"]) == [0, 1]
    excluded = {c["id"] for c in world.fake.cards[-4:]}
    assert not excluded & {e["id"] for e in id_map}
    # every card record is written (the API answers from them), indexed or not
    cards = world.all_cards()
    assert set(cards) == {c["id"] for c in world.fake.cards}
    assert cards[dfc["id"]]["image_key"].count("|") == 1
    assert world.store.get_cards([excluded.pop()])  # records kept for excluded printings
    runs = world.store.recent_runs(1)
    assert runs[0]["status"] == "succeeded" and runs[0]["counts"]["extracted"] == 17
    # built from the feature cache, with every reference's colour (the art check's)
    built = Bundle.open(run)
    try:
        assert all(built.color_thumbnail(slot) is not None for slot in range(built.slot_count))
    finally:
        built.close()
    # the served app answers with the new bundle (loaded through on_promoted)
    _, answers = world.served()
    assert answers[0][0] == 200
    assert answers[0][1]["predicted_card_id"] == world.fake.cards[0]["id"]
    assert answers[0][1]["set_name"] == "Test Set" and answers[0][1]["prices"]["usd"] == "0.10"
    assert answers[2][0] == 200 and answers[2][1]["predicted_card_id"] == dfc["id"]
    assert answers[2][1]["face"] == 1


def test_unchanged_updated_at_does_no_work(world: World, first: RefreshResult) -> None:
    downloads, images = world.fake.count("/file/"), world.fake.count("/img/")
    result = world.refresh()
    assert result.status == "skipped" and result.counts["reason"] == "unchanged"
    assert world.fake.count("/file/") == downloads and world.fake.count("/img/") == images
    assert world.store.recent_runs(1)[0]["status"] == "skipped"


def _assert_unchanged(world: World, before: tuple[Any, ...]) -> None:
    run_before, cards_before, served_before, releases_before = before
    current = releases.current_release(world.settings.resources_dir)
    assert current is not None and current.name == run_before
    assert world.all_cards() == cards_before
    assert world.served() == served_before
    assert releases.list_releases(world.settings.resources_dir) == releases_before
    assert not any(releases.staging_dir(world.settings.resources_dir).iterdir())


def _snapshot(world: World) -> tuple[Any, ...]:
    served = world.served()
    return (
        served[0],
        world.all_cards(),
        served,
        releases.list_releases(world.settings.resources_dir),
    )


def test_failed_runs_leave_run_records_and_answers_as_before(
    world: World, first: RefreshResult, caplog: pytest.LogCaptureFixture
) -> None:
    fake = world.fake
    before = _snapshot(world)
    # new data upstream: a changed price and one new card, so a partial write would show
    fake.cards[0]["prices"]["usd"] = "99.00"
    fake.add_card(60)
    fake.touch("2026-08-02T09:00:00.000+00:00")

    fake.truncate_bulk = True
    result = world.refresh()
    assert result.status == "failed" and "truncated" in (result.error or "")
    fake.truncate_bulk = False
    _assert_unchanged(world, before)
    last = world.store.recent_runs(1)[0]
    assert last["status"] == "failed" and "truncated" in last["error"]

    # upstream's file much smaller than the current release (same printings policy):
    # refused before any image work
    full = fake.cards
    fake.cards = full[:3]
    result = world.refresh()
    fake.cards = full
    assert result.status == "failed" and "below 90%" in (result.error or "")
    _assert_unchanged(world, before)

    # a validation that cannot pass: built, validated, refused; nothing promoted or written
    with caplog.at_level(logging.INFO, logger="app.pipeline"):
        result = world.refresh(min_hit_rate=1.01)
    assert result.status == "failed" and "validation hit rate" in (result.error or "")
    assert 8 <= result.counts["validation"]["sample"] <= 10  # a sampled face may be missing
    _assert_unchanged(world, before)

    # too many missing images
    fake.missing_images.update(f"{c['id']}-0" for c in fake.cards[:4])
    result = world.refresh(force=True)
    assert result.status == "failed" and "missing or unreadable" in (result.error or "")
    _assert_unchanged(world, before)

    # undo: the story continues from the first catalogue
    fake.missing_images = {f"{fake.cards[NORMAL_SEEDS.index(MISSING_SEED)]['id']}-0"}
    fake.cards.pop()
    fake.cards[0]["prices"]["usd"] = "0.10"


def test_second_run_two_new_cards_legacy_format_extracts_only_those(
    world: World, first: RefreshResult
) -> None:
    fake = world.fake
    fake.bulk_format = "legacy"
    fake.add_card(70)
    fake.add_card(71)
    fake.touch("2026-08-03T09:00:00.000+00:00")
    previous = releases.current_release(world.settings.resources_dir)
    result = world.refresh()
    assert result.status == "succeeded", result.error
    assert result.counts["extracted"] == 2  # really counted at extraction
    assert result.counts["bundle"]["cards"] == 19
    # 2 of 17 printings new: the served release is extended, not rebuilt
    assert result.counts["build"] == "incremental"
    assert result.counts["bundle"]["reused_cards"] == 17
    assert result.counts["bundle"]["new_cards"] == 2
    current = releases.current_release(world.settings.resources_dir)
    assert current is not None and previous is not None and current.name > previous.name
    assert world.store.get_cards([fake.cards[-1]["id"]])
    status, body = world.served()[1][0]
    assert status == 200
    client = world.app.test_client()
    photo = encode_jpeg(perturb(card_image(71), np.random.default_rng(1)))
    response = client.post("/infer", data={"roi_image": (io.BytesIO(photo), "p.jpg")})
    assert response.status_code == 200
    assert response.get_json()["predicted_card_id"] == fake.cards[-1]["id"]
    fake.bulk_format = "jsonl"


def test_perturbation_changes_the_image_but_keeps_it_recognisable() -> None:
    image = card_image(3)
    warped = perturb(image, np.random.default_rng(0))
    assert warped.shape[0] > image.shape[0] and warped.dtype == np.uint8
    assert cv2.absdiff(cv2.resize(warped, image.shape[1::-1]), image).mean() > 5


def test_bootstrap_installs_a_verified_release_archive(
    world: World, first: RefreshResult, tmp_path: Path
) -> None:
    from app.pipeline.bootstrap import BootstrapError, install_release_archive, make_release_archive
    from app.wiring import startup as lifecycle

    current = releases.current_release(world.settings.resources_dir)
    assert current is not None
    archive = make_release_archive(current, tmp_path / "release.tar.gz")

    # a tampered archive is refused and nothing is promoted
    import tarfile

    bad_dir = tmp_path / "bad"
    with tarfile.open(archive) as tar:
        tar.extractall(bad_dir, filter="data")
    id_map = next(bad_dir.rglob("id_map.jsonl"))
    id_map.write_text(id_map.read_text().replace("Synthetic", "Synthetik"))
    bad = make_release_archive(id_map.parent, tmp_path / "bad.tar.gz")
    fresh = Settings.from_env({**world.env, "RESOURCES_DIR": str(tmp_path / "res-bad")})
    with pytest.raises(BootstrapError, match="checksum"):
        install_release_archive(fresh, f"file://{bad}")
    assert not fresh.run_dir.exists()

    # a fresh server with RESOURCE_BUNDLE_URL prepares itself from the archive at start-up
    env = {
        **world.env,
        "RESOURCES_DIR": str(tmp_path / "res"),
        "BOOTSTRAP_MISSING_BUNDLE": "true",
        "RESOURCE_BUNDLE_URL": f"file://{archive}",
    }
    app = create_serving_app(env)
    try:
        app.extensions["prepare_thread"].join(timeout=60)
        holder = app.extensions["model"]
        assert holder.loaded, holder.state.detail
        assert holder.state.version == current.name
        assert (tmp_path / "res" / "run").is_symlink()
    finally:
        lifecycle.shutdown(app)


def test_console_progress_and_a_truncated_first_download(tmp_path: Path) -> None:
    """With progress bars on (as on the console) a failed first run leaves nothing behind."""
    with FakeScryfall() as fake:
        fake.add_card(1)
        fake.truncate_bulk = True
        settings = Settings(resources_dir=tmp_path / "res", scryfall_data_dir=tmp_path / "data",
                            scryfall_api_url=fake.url)
        store = make_store(settings)
        try:
            result = run_refresh(settings, store, replace(OPTIONS, progress=True))
            assert result.status == "failed" and "truncated" in (result.error or "")
            assert not settings.run_dir.exists()
            assert not list((tmp_path / "data" / "bulk").iterdir())
            assert store.count_cards() == 0
            assert store.recent_runs(1)[0]["status"] == "failed"
        finally:
            store.close()
