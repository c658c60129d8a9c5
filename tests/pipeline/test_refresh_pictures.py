"""The nightly refresh with printings that share a picture (recognition/pictures.py), against
the fake Scryfall: a new printing of an indexed picture costs a download and a thumbnail, not
a SIFT extraction nor an index change; a printing whose picture changes moves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app.recognition.index import mapped_lists
from app.recognition.index.bundle import Bundle
from tests.pipeline.test_refresh_pipeline import World
from tests.support import apps
from tests.support.fake_scryfall import FakeScryfall

SEEDS = list(range(1, 13))


def reprint(fake: FakeScryfall, of: dict[str, Any], number: int, set_code: str = "tst"
            ) -> dict[str, Any]:
    """Another printing of `of`'s picture: its own id and collector number, the same
    illustration, frame and image."""
    card = fake.add_card(1000 + number, set_code=set_code)
    card["illustration_id"] = of["illustration_id"]
    card["name"] = of["name"]
    card["collector_number"] = str(number)
    fake.images[f"{card['id']}-0"] = fake.images[f"{of['id']}-0"]
    return card


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with FakeScryfall() as fake:
        for seed in SEEDS:
            fake.add_card(seed)
        reprint(fake, fake.cards[0], 201)
        w = World(fake, tmp_path_factory.mktemp("refresh-pictures"), None)
        try:
            yield w
        finally:
            apps.shutdown(w.app)
            w.store.close()


def _opened(world: World) -> Bundle:
    return Bundle.open(world.settings.run_dir)


def _slot(bundle: Bundle, card_id: str) -> int:
    return next(s for s, e in enumerate(bundle.iter_entries()) if e and e["id"] == card_id)


def test_the_first_refresh_extracts_each_picture_once(world: World) -> None:
    result = world.refresh()
    assert result.status == "succeeded", result.error
    assert result.counts["faces"] == len(SEEDS) + 1
    assert result.counts["extracted"] == len(SEEDS)
    assert result.counts["thumbnails"] == 1
    bundle = _opened(world)
    try:
        first, again = _slot(bundle, world.fake.cards[0]["id"]), _slot(
            bundle, world.fake.cards[-1]["id"])
        assert int(bundle.picture[again]) == first and bundle.kept[again] == 0
    finally:
        bundle.close()


def test_a_new_printing_of_an_indexed_picture_extracts_nothing(world: World) -> None:
    before = _opened(world)
    vectors = before.index.ntotal
    before.close()
    images = world.fake.count("/img/")
    new = reprint(world.fake, world.fake.cards[3], 202, set_code="tdf")
    world.fake.touch()
    result = world.refresh()
    assert result.status == "succeeded", result.error
    assert result.counts["build"] == "incremental"
    assert result.counts["extracted"] == 0, "no SIFT extraction for a known picture"
    assert result.counts["thumbnails"] == 1
    assert world.fake.count("/img/") - images >= 1  # downloaded, for its thumbnail
    after = _opened(world)
    try:
        assert after.index.ntotal == vectors, "the index is unchanged"
        slot = _slot(after, new["id"])
        assert int(after.picture[slot]) == _slot(after, world.fake.cards[3]["id"])
    finally:
        after.close()
    # and a photo of it is answered with the card (its printing among the picture's)
    _, answers = world.served()
    assert answers[0][0] == 200


def test_a_printing_whose_picture_changes_moves(world: World) -> None:
    """The second printing of card 1's picture gets its own illustration (a catalogue fix):
    it leaves the picture and, its image not agreeing with any, is indexed on its own."""
    moved = world.fake.cards[len(SEEDS)]  # reprint of cards[0]
    moved["illustration_id"] = str(uuid.UUID(int=77))
    world.fake.images[f"{moved['id']}-0"] = 77
    moved["image_uris"] = {k: v.replace("?1700000000", "?1700000001")
                           for k, v in moved["image_uris"].items()}
    world.fake.touch()
    result = world.refresh()
    assert result.status == "succeeded", result.error
    assert result.counts["extracted"] == 1
    bundle = _opened(world)
    try:
        slot = _slot(bundle, moved["id"])
        assert int(bundle.picture[slot]) == slot and bundle.kept[slot] > 0
        assert mapped_lists.is_fast_scan(bundle.index)
    finally:
        bundle.close()


def test_a_picture_whose_indexed_printing_is_gone_gets_a_new_reference(world: World) -> None:
    """Card 4's printing is gone; its picture's other printing (202) stays: the refresh
    builds in full, and 202, extracted now, stands for the picture."""
    gone = world.fake.cards[3]
    stays = next(c for c in world.fake.cards if c["collector_number"] == "202")
    world.fake.cards.remove(gone)
    world.fake.touch()
    result = world.refresh()
    assert result.status == "succeeded", result.error
    assert result.counts["build"] == "full"
    assert result.counts["extracted"] == 1  # 202's features; nothing else changed
    bundle = _opened(world)
    try:
        slot = _slot(bundle, stays["id"])
        assert int(bundle.picture[slot]) == slot and bundle.kept[slot] > 0
        assert all(e is None or e["id"] != gone["id"] for e in bundle.iter_entries())
    finally:
        bundle.close()
