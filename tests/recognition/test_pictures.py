"""One reference per picture (app/recognition/index/pictures.py), on real bundles of synthetic
cards.

Card 101 is printed three times with one picture (its own collector line each: the real
catalogue's twins); card 102 twice with one `illustration_id`, in the 2015 and the 2003
frame (two pictures); card 103's record says it shares card 104's picture but its image
does not (a catalogue error). Cards 110-121 are singles.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from app.common import reference
from app.common.reference import ReferenceImage
from app.recognition.collector_line.settle import settle
from app.recognition.collector_line.tesseract import Reader
from app.recognition.decode.uploads import Photo, decode
from app.recognition.index import pictures
from app.recognition.index.bundle import Bundle
from app.recognition.match.card import recognize
from app.recognition.params import PROFILES
from tests.support.cards import built_bundle
from tests.support.synthetic import draw_collector_line, make_card, make_reprint, photograph

PARAMS = PROFILES["default"]

# card id -> (seed of the art, set, collector number, frame, illustration_id)
PRINTINGS: dict[str, tuple[int, str, str, str, str]] = {
    **{f"card-{s}": (s, "syn", str(s - 80), "2015", f"art-{s}") for s in range(110, 122)},
    "card-101": (101, "syn", "21", "2015", "art-101"),
    "card-101-b": (101, "tw1", "145", "2015", "art-101"),
    "card-101-c": (101, "tw2", "38", "2015", "art-101"),
    "card-102": (102, "syn", "22", "2015", "art-102"),
    "card-102-old": (102, "old", "9", "2003", "art-102"),
    "card-104": (104, "syn", "24", "2015", "art-104"),
    "card-103": (103, "syn", "23", "2015", "art-104"),  # says art-104, shows its own art
}
TWINS = ["card-101", "card-101-b", "card-101-c"]


def card_image(card_id: str) -> np.ndarray:
    seed, set_code, number, frame, _ = PRINTINGS[card_id]
    base = make_reprint(seed, "frame") if frame == "2003" else make_card(seed)
    return draw_collector_line(base, number, set_code, lang="EN")


def record(card_id: str) -> dict[str, Any]:
    seed, set_code, number, frame, illustration = PRINTINGS[card_id]
    extra: dict[str, Any] = {"frame": frame, "lang": "en", "finishes": ["nonfoil"],
                             "rarity": "common", "border_color": "black",
                             "illustration_id": illustration, "face": 0}
    extra["picture"] = reference.picture_key(extra)
    return extra


def _ref(card_id: str) -> ReferenceImage:
    extra = record(card_id)
    seed = PRINTINGS[card_id][0]
    return ReferenceImage(
        card_id=card_id, face=0, name=f"Card {seed}", set=PRINTINGS[card_id][1],
        collector_number=PRINTINGS[card_id][2], illustration_id=extra["illustration_id"],
        load=lambda: card_image(card_id), extra=extra,
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    yield from built_bundle([_ref(card_id) for card_id in PRINTINGS],
                            tmp_path_factory.mktemp("pictures") / "run", PARAMS)


def slot_of(bundle: Bundle, card_id: str) -> int:
    return next(s for s, e in enumerate(bundle.iter_entries()) if e and e["id"] == card_id)


def test_printings_of_one_picture_share_one_indexed_reference(bundle: Bundle) -> None:
    slots = [slot_of(bundle, c) for c in TWINS]
    reference = int(bundle.picture[slots[0]])
    assert reference == slots[0], "the picture's first printing is its reference"
    assert [int(bundle.picture[s]) for s in slots] == [reference] * 3
    assert bundle.kept[reference] > 0
    assert [int(bundle.kept[s]) for s in slots[1:]] == [0, 0], "indexed once"
    indexed = int(bundle.kept.sum()) + int(bundle.manifest["counts"]["padding_vectors"])
    assert bundle.index.ntotal == indexed, "no vector of the other printings in the index"
    assert bundle.manifest["counts"]["references"] == len(PRINTINGS) - 2
    assert bundle.picture_printings(slots[2]) == slots
    # each keeps what the printing decision needs: its own thumbnail
    assert len({bundle.thumbnail_bytes(s) for s in slots}) == 3


@pytest.mark.parametrize("card_id", TWINS)
def test_each_printing_of_a_shared_picture_is_answered_by_its_own_line(
    bundle: Bundle, reader: Reader, card_id: str
) -> None:
    photo, _ = photograph(card_image(card_id), seed=5, size=(1200, 1600), card_height=0.8,
                          rotation=4.0, tilt=0.04)
    ok, encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    data = encoded.tobytes()
    decoded = decode(data, max_side=PARAMS.query_max_side)
    result = recognize(bundle, decoded.image, quad_scale=decoded.reduction)
    assert result.match is not None and result.match.card["name"] == "Card 101"
    # every printing of the picture was weighed, not only the one the index holds
    assert {c.card["id"] for c in [result.match, *result.alternatives] if c.same_art} >= set(
        TWINS)
    evidence = settle(bundle, result, Photo(data, decoded, 50_000_000), reader)
    assert result.match.card["id"] == card_id
    assert not result.ambiguous_printing
    assert evidence.source == "collector_line"


def test_one_illustration_in_two_frames_stays_two_references(bundle: Bundle) -> None:
    new, old = slot_of(bundle, "card-102"), slot_of(bundle, "card-102-old")
    assert record("card-102")["picture"] != record("card-102-old")["picture"]
    assert int(bundle.picture[new]) == new and int(bundle.picture[old]) == old
    assert bundle.kept[new] > 0 and bundle.kept[old] > 0


def test_a_catalogue_error_does_not_merge_two_pictures(bundle: Bundle) -> None:
    """Card 103's record names card 104's picture; its image disagrees: its own reference,
    and a photo of it is answered as card 103."""
    assert record("card-103")["picture"] == record("card-104")["picture"]
    slot = slot_of(bundle, "card-103")
    assert int(bundle.picture[slot]) == slot and bundle.kept[slot] > 0
    assert bundle.manifest["counts"]["picture_disagreements"] == 1
    photo, _ = photograph(card_image("card-103"), seed=7)
    result = recognize(bundle, photo)
    assert result.match is not None and result.match.card["id"] == "card-103"


def test_agreement_tells_one_picture_from_another() -> None:
    def thumb(card: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(card, cv2.COLOR_BGR2GRAY)
        return cv2.resize(gray, (PARAMS.thumb_width, PARAMS.thumb_height),
                          interpolation=cv2.INTER_AREA)

    same = pictures.correlation(pictures.signature(thumb(card_image("card-101"))),
                                pictures.signature(thumb(card_image("card-101-b"))))
    other = pictures.correlation(pictures.signature(thumb(card_image("card-103"))),
                                 pictures.signature(thumb(card_image("card-104"))))
    assert same >= pictures.AGREE_MIN > other


def test_the_manifest_counts_what_was_shared(bundle: Bundle) -> None:
    counts = json.loads((Path(bundle.directory) / "manifest.json").read_text())["counts"]
    assert counts["shared_pictures"] == 2  # card-101-b and card-101-c
    assert counts["cards"] == len(PRINTINGS)
