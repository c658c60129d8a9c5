"""REFRESH_SETS: a first start from an empty RESOURCES_DIR indexes only the chosen sets, with
no manual step; widening the list later extracts only the new printings, narrowing it is not
refused as a "catalogue shrunk" accident. Card records of every set are stored regardless."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app import create_serving_app
from app.common.settings import Settings, SettingsError
from app.pipeline.refresh import run_refresh
from tests.support.apps import shutdown
from tests.support.fake_scryfall import FakeScryfall

CHOSEN = list(range(1, 17))  # set tst: 16 printings (a bundle needs ~14 to train)
OTHER = list(range(50, 54))  # set tdf


def _sets_indexed(app: Any) -> list[str]:
    with app.extensions["model"].lease() as bundle:
        assert bundle is not None
        # an incremental build leaves gone printings as empty slots (None)
        return [entry["set"] for entry in bundle.iter_entries() if entry is not None]


def _images_requested(fake: FakeScryfall, cards: list[dict[str, Any]]) -> int:
    ids = {card["id"] for card in cards}
    return sum(1 for path, _ in fake.requests
               if path.startswith("/img/") and path[5:41] in ids)


@pytest.mark.slow
def test_first_start_with_refresh_sets_then_widen_and_narrow(
    base_config: dict[str, str]
) -> None:
    with FakeScryfall() as fake:
        chosen = [fake.add_card(seed, set_code="tst") for seed in CHOSEN]
        other = [fake.add_card(seed, set_code="tdf") for seed in OTHER]
        config = {**base_config, "SCRYFALL_API_URL": fake.url, "REFRESH_SETS": "TST",
                  "BOOTSTRAP_MISSING_BUNDLE": "true", "REFRESH_ENABLED": "true"}
        assert not Path(config["RESOURCES_DIR"]).exists()
        app = create_serving_app(config)  # FLASK_ENV=testing: the preparation, no schedule
        try:
            app.extensions["prepare_thread"].join(timeout=600)
            client = app.test_client()
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.get_json()
            assert _sets_indexed(app) == ["tst"] * len(CHOSEN)
            assert _images_requested(fake, other) == 0  # not even downloaded

            store = app.extensions["catalog"]
            records = store.get_cards([c["id"] for c in chosen + other])
            assert len(records) == len(CHOSEN) + len(OTHER)  # every set's records are kept
            assert all(records[c["id"]]["image_key"] is None for c in other)
            assert all(records[c["id"]]["image_key"] for c in chosen)

            # widen: Scryfall's file has not moved, the new policy alone makes the run
            wider = Settings.from_env({**config, "REFRESH_SETS": "tst,tdf"})
            result = run_refresh(wider, store, on_promoted=app.extensions["model"].load)
            assert result.status == "succeeded", result.summary()
            assert result.counts["extracted"] == len(OTHER)
            assert result.counts["cached"] == len(CHOSEN)
            assert sorted(_sets_indexed(app)) == ["tdf"] * len(OTHER) + ["tst"] * len(CHOSEN)

            # the same policy again: nothing to do
            again = run_refresh(wider, store)
            assert again.status == "skipped" and again.counts["reason"] == "unchanged"

            # narrow back: 16 of 20 printings is under the 90% a shrunk catalogue must keep,
            # but a changed policy is not an accident
            narrow = Settings.from_env(config)
            result = run_refresh(narrow, store, on_promoted=app.extensions["model"].load)
            assert result.status == "succeeded", result.summary()
            assert result.counts["extracted"] == 0
            assert _sets_indexed(app) == ["tst"] * len(CHOSEN)
        finally:
            shutdown(app)


def test_refresh_sets_setting() -> None:
    assert Settings.from_env({}).refresh_sets == ()
    assert Settings.from_env({"REFRESH_SETS": " RTR, dsk,rtr ,"}).refresh_sets == ("dsk", "rtr")
    with pytest.raises(SettingsError, match="REFRESH_SETS must be a comma-separated list of "
                                            "Scryfall set codes"):
        Settings.from_env({"REFRESH_SETS": "rtr;dsk"})


@pytest.mark.slow
def test_a_changed_refresh_sets_is_applied_at_the_next_start(
    base_config: dict[str, str]
) -> None:
    """Widening REFRESH_SETS then restarting rebuilds at start (the old release serving
    meanwhile), not at the next scheduled run; a restart with the same list refreshes
    nothing (Scryfall is not even asked)."""
    with FakeScryfall() as fake:
        for seed in CHOSEN:
            fake.add_card(seed, set_code="tst")
        for seed in OTHER:
            fake.add_card(seed, set_code="tdf")
        config = {**base_config, "SCRYFALL_API_URL": fake.url,
                  "BOOTSTRAP_MISSING_BUNDLE": "true", "REFRESH_ENABLED": "true"}
        starts = (("tst", ["tst"], 1), ("tst,tdf", ["tdf", "tst"], 1),
                  ("tst,tdf", ["tdf", "tst"], 0))
        for sets, indexed, asked in starts:
            before = fake.count("/bulk-data")
            app = create_serving_app({**config, "REFRESH_SETS": sets})
            try:
                app.extensions["prepare_thread"].join(timeout=600)
                assert app.test_client().get("/readyz").status_code == 200
                assert sorted(set(_sets_indexed(app))) == indexed, sets
            finally:
                shutdown(app)
            assert fake.count("/bulk-data") - before == asked, sets
