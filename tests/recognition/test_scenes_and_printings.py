"""Several cards in one photo, and the printing among printings that share the art.

A real bundle of synthetic cards, two of which have reprints: card 100 in another frame
(the photo can tell them apart) and card 101 with only its set symbol and collector line
changed (it cannot: the answer must say so). Scenes lay several cards on a table, rotated,
at different sizes, one partly covering another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.common.reference import ReferenceImage
from app.recognition.index.bundle import Bundle
from app.recognition.match.appearance import PrintingOdds, View, pair_evidence, printing_odds
from app.recognition.match.card import recognize
from app.recognition.match.records import Recognition
from app.recognition.match.scene import recognize_all
from app.recognition.match.vote import candidates
from app.recognition.params import PROFILES
from tests.support.cards import built_bundle
from tests.support.synthetic import make_card, make_reprint, photograph, table

PARAMS = PROFILES["default"]
SEEDS = list(range(100, 118))
FRAME_REPRINT = "card-100-frame"  # card 100's art in another frame
FOOTER_REPRINT = "card-101-footer"  # card 101 with another set symbol and collector line


def _ref(card_id: str, seed: int, load: object) -> ReferenceImage:
    return ReferenceImage(
        card_id=card_id,
        face=0,
        name=f"Card {seed}",
        set="rpt" if card_id.endswith(("frame", "footer")) else "syn",
        collector_number=card_id.rsplit("-", 1)[-1],
        illustration_id=f"art-{seed}",
        load=load,  # type: ignore[arg-type]
    )


def _image(card_id: str) -> np.ndarray:
    if card_id == FRAME_REPRINT:
        return make_reprint(100, "frame")
    if card_id == FOOTER_REPRINT:
        return make_reprint(101, "footer")
    return make_card(int(card_id.split("-")[1]))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    refs = [_ref(f"card-{s}", s, lambda s=s: make_card(s)) for s in SEEDS]
    refs.append(_ref(FRAME_REPRINT, 100, lambda: make_reprint(100, "frame")))
    refs.append(_ref(FOOTER_REPRINT, 101, lambda: make_reprint(101, "footer")))
    yield from built_bundle(refs, tmp_path_factory.mktemp("printings") / "run", PARAMS)


def _single(bundle: Bundle, card_id: str, seed: int = 3) -> Recognition:
    photo, _ = photograph(_image(card_id), seed=seed, rotation=8.0, card_height=0.8)
    return recognize(bundle, photo)


def _ids(result: Recognition) -> list[str]:
    assert result.match is not None
    return [result.match.card["id"], *(c.card["id"] for c in result.alternatives)]


# -- the printing --------------------------------------------------------------------------
@pytest.mark.parametrize("card_id", ["card-100", FRAME_REPRINT])
def test_a_reprint_in_another_frame_is_told_apart(bundle: Bundle, card_id: str) -> None:
    result = _single(bundle, card_id)
    assert result.match is not None and result.match.card["id"] == card_id
    assert not result.ambiguous_printing
    other = FRAME_REPRINT if card_id == "card-100" else "card-100"
    rival = next(c for c in result.alternatives if c.card["id"] == other)
    assert rival.same_art and rival.confidence < 0.1
    assert result.match.confidence >= PARAMS.accept


@pytest.mark.parametrize("card_id", ["card-101", FOOTER_REPRINT])
def test_printings_differing_only_by_set_symbol_and_number_are_flagged(
    bundle: Bundle, card_id: str
) -> None:
    """The photo cannot separate them: the answer says so, with both printings on top and
    neither claimed with confidence."""
    result = _single(bundle, card_id)
    assert result.ambiguous_printing
    top_two = set(_ids(result)[:2])
    assert top_two == {"card-101", FOOTER_REPRINT}
    assert result.match is not None and result.match.confidence < PARAMS.printing_sure
    assert result.alternatives[0].ambiguous and result.alternatives[0].same_art


def test_a_card_with_one_printing_is_not_ambiguous(bundle: Bundle) -> None:
    result = _single(bundle, "card-105")
    assert result.match is not None and result.match.card["id"] == "card-105"
    assert not result.ambiguous_printing and result.match.confidence >= PARAMS.accept


# -- several cards -------------------------------------------------------------------------
def _corner_error(found: list[list[float]], truth: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(np.array(found) - truth, axis=1)))


def test_every_card_on_a_table_is_found_once(bundle: Bundle) -> None:
    """Rotated any way, one small (a tenth of the photo's width), one partly covering
    another, two copies of the same card: each physical card once, with its outline."""
    layout = [
        ("card-102", 0.22, 0.30, 0.42, 35.0),
        ("card-103", 0.40, 0.42, 0.40, 90.0),  # covers a corner of 102
        ("card-104", 0.75, 0.30, 0.45, 180.0),
        ("card-106", 0.75, 0.78, 0.19, -20.0),  # small: 245 px wide in a 2400 px photo
        ("card-104", 0.22, 0.78, 0.36, 10.0),  # a second copy of 104
    ]
    photo, placed = table([(_image(cid), x, y, h, r) for cid, x, y, h, r in layout], seed=5)
    scene = recognize_all(bundle, photo)
    found = [r.match.card["id"] for r in scene.cards if r.match]
    assert sorted(found) == sorted(cid for cid, *_ in layout)
    for (card_id, *_), corners in zip(layout, placed, strict=True):
        errors = [
            _corner_error(r.quad, corners) for r in scene.cards
            if r.match and r.match.card["id"] == card_id and r.quad
        ]
        assert min(errors) < 0.06 * 2400, (card_id, errors)
    assert scene.timings_ms["total"] > 0


def test_a_binder_page_of_nine_cards(bundle: Bundle) -> None:
    layout = [(make_card(100 + i), 0.19 + 0.31 * (i % 3), 0.18 + 0.32 * (i // 3), 0.30,
               float((i * 37) % 360)) for i in range(9)]
    photo, _ = table(layout, seed=21, size=(1800, 2400))
    found = [r.match.card["id"] for r in recognize_all(bundle, photo).cards if r.match]
    assert sorted(found) == [f"card-{100 + i}" for i in range(9)]


def test_a_table_of_unknown_cards_finds_nothing(bundle: Bundle) -> None:
    photo, _ = table([(make_card(s), 0.3 + 0.4 * i, 0.5, 0.5, 15.0 * i)
                      for i, s in enumerate((900, 901))], seed=6)
    assert recognize_all(bundle, photo).cards == []


def test_the_card_limit_holds(bundle: Bundle) -> None:
    layout = [(make_card(s), 0.15 + 0.23 * i, 0.5, 0.45, 0.0) for i, s in enumerate(SEEDS[:4])]
    photo, _ = table(layout, seed=7)
    assert len(recognize_all(bundle, photo).cards) == 4
    assert len(recognize_all(bundle, photo, max_cards=2).cards) == 2


def test_the_time_budget_ends_the_search_with_the_cards_found(bundle: Bundle) -> None:
    import time

    layout = [(make_card(s), 0.15 + 0.23 * i, 0.5, 0.45, 0.0) for i, s in enumerate(SEEDS[:4])]
    photo, _ = table(layout, seed=7)
    spent = recognize_all(bundle, photo, deadline=time.perf_counter())
    assert len(spent.cards) == 1 and spent.timings_ms["budget_stop"] == 1
    assert "budget_stop" not in recognize_all(bundle, photo).timings_ms


def test_printings_on_one_table_are_two_cards(bundle: Bundle) -> None:
    """A card and its reprint in another frame side by side: two cards, each its printing
    (IMG_5981's normal and borderless Hauntwoods Shrieker)."""
    layout = [(_image("card-100"), 0.3, 0.5, 0.6, 10.0), (_image(FRAME_REPRINT), 0.72, 0.5,
                                                          0.6, -15.0)]
    photo, _ = table(layout, seed=8)
    scene = recognize_all(bundle, photo)
    assert sorted(r.match.card["id"] for r in scene.cards if r.match) == sorted(
        ["card-100", FRAME_REPRINT]
    )
    assert not any(r.ambiguous_printing for r in scene.cards)


def test_one_card_photo_in_multi_mode_is_one_card(bundle: Bundle, tmp_path: Path) -> None:
    photo, _ = photograph(make_card(107), seed=9, rotation=200.0)
    scene = recognize_all(bundle, photo)
    assert [r.match.card["id"] for r in scene.cards if r.match] == ["card-107"]


# -- the printing decision on its own (printing.py) ----------------------------------------
def _view(photo: np.ndarray, reference: np.ndarray) -> View:
    return View(photo.astype(np.float32), np.ones(photo.shape, bool),
                reference.astype(np.float32))


def _thumbs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reference, one with another frame (large difference), one with a 4x4 spot changed."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (178, 128)).astype(np.float32)
    frame = base.copy()
    frame[:12, :] = 255 - frame[:12, :]
    frame[-12:, :] = 255 - frame[-12:, :]
    spot = base.copy()
    spot[150:154, 100:104] = 255 - spot[150:154, 100:104]
    return base, frame, spot


def test_printing_evidence_looks_where_printings_differ() -> None:
    base, frame, spot = _thumbs()
    valid = np.ones(base.shape, bool)
    photo = base + np.random.default_rng(2).normal(0, 20, base.shape)
    norm = [(x - x.mean()) / x.std() for x in (photo, base, frame, spot)]
    photo_n, base_n, frame_n, spot_n = norm
    # the photo is `base`: strong evidence for it against another frame, both ways round
    assert pair_evidence(base_n, frame_n, [photo_n], valid, PARAMS) > 0.5
    assert pair_evidence(frame_n, base_n, [photo_n], valid, PARAMS) < -0.5
    # 16 differing pixels are below printing_min_px: undecidable, whatever the photo
    assert pair_evidence(base_n, spot_n, [photo_n], valid, PARAMS) == 0.0
    # identical references: nothing to tell
    assert pair_evidence(base_n, base_n, [photo_n], valid, PARAMS) == 0.0
    # each printing is judged at its best alignment: a misaligned photo of `frame` among
    # the alignments does not make `frame` lose to `base`
    shifted = np.roll(frame_n, 3, axis=1)
    assert pair_evidence(frame_n, base_n, [shifted, (frame_n + photo_n) / 2], valid,
                         PARAMS) > 0


def test_a_softer_reference_is_not_evidence() -> None:
    """Two printings differing only in small print (1-pixel strokes), one from a softer
    scan; the photo is blurrier than both. It cannot show the small print, and must not
    prefer the softer reference for being soft (it would without matching the blur)."""
    import cv2

    rng = np.random.default_rng(4)
    card = cv2.GaussianBlur(rng.normal(0, 1, (178, 128)), (0, 0), 3.0)
    card = (128 + 50 * card / card.std()).astype(np.float32)
    a, b = card.copy(), card.copy()
    a[160:170, 10:70] = np.tile([40.0, 220.0], 30)  # the same grey once blurred, ...
    b[160:170, 10:70] = np.tile([[40.0], [220.0]], (5, 60))  # ... other strokes when sharp
    b = cv2.GaussianBlur(b, (0, 0), 0.8)
    photo = cv2.GaussianBlur(a, (0, 0), 2.5)
    odds = printing_odds([_view(photo, a), _view(photo, b)], PARAMS)
    assert odds.ambiguous and abs(odds.probabilities[0] - 0.5) < 0.1, odds


def test_a_glare_over_what_differs_does_not_pick_the_other_printing() -> None:
    """Two printings of one art, one with a dark figure added (Duskmourn's paranormal
    variants); a glare band crosses the figure in the photo. In grey levels the brightened
    figure looks like the other printing's lighter background (a confident wrong printing:
    Reluctant Role Model 289 answered 26 in the rendered-photo benchmark at 500 px); its
    detail does not."""
    import cv2

    rng = np.random.default_rng(5)
    card = cv2.GaussianBlur(rng.normal(0, 1, (178, 128)), (0, 0), 3.0)
    base = np.clip(150 + 40 * card / card.std(), 0, 255).astype(np.float32)
    added = base.copy()
    yy, xx = np.mgrid[0:178, 0:128]
    figure = ((yy - 60) / 22.0) ** 2 + ((xx - 85) / 14.0) ** 2 < 1
    added[figure] = 35 + 25 * (((yy + xx) // 3) % 2)[figure]
    glare = 120 * np.exp(-((xx - 0.6 * yy - 50) ** 2) / (2 * 12.0**2))
    photo = np.clip(added + glare + rng.normal(0, 4, added.shape), 0, 255)
    views = [_view(photo, base), _view(photo, added)]
    plain = printing_odds(views, replace(PARAMS, printing_highpass=0.0))
    assert plain.probabilities[0] > PARAMS.printing_sure  # what grey levels alone answer
    odds = printing_odds(views, PARAMS)
    assert odds.probabilities[1] > PARAMS.printing_sure and not odds.ambiguous, odds


def test_printing_odds_flag_what_cannot_be_told() -> None:
    base, frame, spot = _thumbs()
    photo = base + np.random.default_rng(3).normal(0, 20, base.shape)
    clear = printing_odds([_view(photo, frame), _view(photo, base)], PARAMS)
    assert clear.probabilities[1] > PARAMS.printing_sure and not clear.ambiguous
    both = printing_odds([_view(photo, base), _view(photo, spot), _view(photo, frame)], PARAMS)
    assert both.ambiguous
    assert both.probabilities[0] == pytest.approx(both.probabilities[1], abs=0.1)
    assert both.probabilities[2] < 0.05
    assert sum(both.probabilities) == pytest.approx(1.0)
    assert printing_odds([_view(photo, base)], PARAMS) == PrintingOdds([1.0], False)


def test_another_card_elsewhere_in_the_photo_is_not_a_rival(bundle: Bundle) -> None:
    """Single-card mode on a photo of two cards: the answer keeps its confidence (the other
    card's art matches just as well, but in another part of the photo)."""
    photo, _ = table([(make_card(108), 0.27, 0.5, 0.7, 5.0), (make_card(109), 0.73, 0.5, 0.7,
                                                              -5.0)], seed=12, size=(1600, 1000))
    result = recognize(bundle, photo)
    assert result.match is not None and result.match.card["id"] in {"card-108", "card-109"}
    assert result.match.confidence > 0.9


def test_candidates_rank_cards_by_the_votes_of_all_their_printings(bundle: Bundle) -> None:
    """Reprints split a card's votes: 3 + 4 for card 100's two printings outrank 5 for card
    105, and the card is tried through its most voted printing, once."""
    slot = {bundle.card(s)["id"]: s for s in range(bundle.slot_count)}
    votes = np.zeros(bundle.slot_count)
    votes[slot["card-100"]], votes[slot[FRAME_REPRINT]], votes[slot["card-105"]] = 3, 4, 5
    assert list(candidates(bundle, votes, 5)) == [slot[FRAME_REPRINT], slot["card-105"]]
    assert list(candidates(bundle, votes, 1)) == [slot[FRAME_REPRINT]]
    assert len(candidates(bundle, np.zeros(bundle.slot_count), 5)) == 0
