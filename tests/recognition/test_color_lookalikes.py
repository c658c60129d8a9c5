"""The art check in colour: two cards of one layout whose grey images are nearly the same but
whose colours differ (a red Room and a blue one) are told apart, a tinted photo still passes,
and a bundle built before colour thumbnails is served with the grey check. The real pipeline
on synthetic Room, split and saga cards (tests/support/synthetic.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from app.common import reference
from app.common.reference import ReferenceImage
from app.recognition.features import layout
from app.recognition.index.build import build_bundle
from app.recognition.index.bundle import MANIFEST_FILE, Bundle, read_manifest, sha256_file
from app.recognition.index.incremental import incremental_plan
from app.recognition.match.card import recognize
from app.recognition.params import PROFILES
from tests.support.cards import built_bundle
from tests.support.synthetic import make_layout_card, photograph, recolored, tinted

LAYOUT_NAMES = ("room", "split", "saga")
CATALOGUED = list(range(300, 307))  # seven printings of each layout: its mean is learnt
ALONE = 320  # only its recoloured twin is catalogued
PAIR = 330  # it and its recoloured twin are both catalogued
# The shared layout is indexed (no stop words), as in test_layout_lookalikes.py.
PARAMS = dataclasses.replace(PROFILES["default"], stop_min_cards=0)


def _card(seed: int, kind: str, twin: bool) -> np.ndarray:
    card = make_layout_card(seed, kind)
    return recolored(card) if twin else card


def _ref(seed: int, kind: str, twin: bool = False) -> ReferenceImage:
    return ReferenceImage(
        card_id=f"{kind}-{seed}{'-twin' if twin else ''}", face=0,
        name=f"{kind.title()} {seed}{' Twin' if twin else ''}", set="syn",
        collector_number=str(seed), illustration_id=None,
        load=lambda: _card(seed, kind, twin),
        extra={"layout_key": reference.layout_key({"layout": kind})},
    )


def _refs() -> list[ReferenceImage]:
    refs = [_ref(s, k) for k in LAYOUT_NAMES for s in CATALOGUED]
    refs += [_ref(ALONE, k, twin=True) for k in LAYOUT_NAMES]
    refs += [_ref(PAIR, k, twin=t) for k in LAYOUT_NAMES for t in (False, True)]
    return refs


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    yield from built_bundle(_refs(), tmp_path_factory.mktemp("colors") / "run", PARAMS)


def _photo(card: np.ndarray, seed: int) -> np.ndarray:
    photo, _ = photograph(card, seed=seed, rotation=7, blur=0.7)
    return photo


@pytest.mark.parametrize("kind", LAYOUT_NAMES)
def test_twins_differ_in_colour_only(kind: str) -> None:
    """The premise of the tests below: a twin's grey image is its card's, within a grey
    level on average; its colours are far apart."""
    card = make_layout_card(ALONE, kind)
    twin = recolored(card)
    grey = np.abs(cv2.cvtColor(card, cv2.COLOR_BGR2GRAY).astype(np.int16)
                  - cv2.cvtColor(twin, cv2.COLOR_BGR2GRAY).astype(np.int16))
    assert grey.mean() < 1.0 and np.percentile(grey, 99) <= 10
    assert np.abs(card.astype(np.int16) - twin.astype(np.int16)).mean() > 20


@pytest.mark.parametrize("kind", LAYOUT_NAMES)
def test_a_look_alike_in_other_colours_is_not_answered(bundle: Bundle, kind: str) -> None:
    """The photographed card is not catalogued; its twin, grey for grey the same card, is.
    The grey art check alone answers the twin (at confidence 0.99, measured)."""
    result = recognize(bundle, _photo(make_layout_card(ALONE, kind), ALONE))
    assert result.match is None, (result.match.card["name"], result.match.confidence)


@pytest.mark.parametrize("twin", [False, True])
@pytest.mark.parametrize("kind", LAYOUT_NAMES)
def test_of_two_twins_the_photographed_colours_are_answered(
    bundle: Bundle, kind: str, twin: bool
) -> None:
    """Both twins catalogued: the photo (under a warm cast) is answered with its own."""
    photo = tinted(_photo(_card(PAIR, kind, twin), PAIR + 1))
    result = recognize(bundle, photo)
    assert result.match is not None, [(c.card["name"], c.art_corr) for c in result.alternatives]
    assert result.match.card["id"] == f"{kind}-{PAIR}{'-twin' if twin else ''}"


@pytest.mark.parametrize("gains", [(0.55, 0.9, 1.5), (1.5, 1.0, 0.6)])
@pytest.mark.parametrize("kind", LAYOUT_NAMES)
def test_a_tinted_photo_still_matches_its_colours(bundle: Bundle, kind: str,
                                                  gains: tuple[float, float, float]) -> None:
    """White balance: a strong warm or cool cast multiplies the channels; the colour compared
    is each channel over its mean on the card, its departures correlated, so a tinted photo
    of a catalogued card is answered, its colour correlation as high as untinted (comparing
    chromaticities as they are fails here, checked)."""
    seed = CATALOGUED[2]
    plain = recognize(bundle, _photo(make_layout_card(seed, kind), seed))
    result = recognize(bundle, tinted(_photo(make_layout_card(seed, kind), seed), gains))
    assert result.match is not None and result.match.card["id"] == f"{kind}-{seed}"
    assert plain.match is not None and plain.match.source is not None
    assert result.match.source is not None
    plain_color, color = plain.match.source.color_corr, result.match.source.color_corr
    assert plain_color is not None and color is not None
    assert color > 0.8 and color > plain_color - 0.05


def test_colour_correlation_ignores_white_balance_not_hue() -> None:
    card = cv2.resize(make_layout_card(PAIR, "room"), (64, 89), interpolation=cv2.INTER_AREA)
    valid = np.ones(card.shape[:2], bool)
    reference = layout.blurred(card)
    same = layout.color_correlation(layout.blurred(tinted(card)), reference, valid, None)
    other = layout.color_correlation(layout.blurred(recolored(card)), reference, valid, None)
    assert same is not None and same > 0.95
    assert other is not None and other < -0.5


def _as_format_2(directory: Path) -> None:
    """Rewrite a bundle built without colour thumbnails as the builder wrote it before
    them: format 2, shards without colour datasets, parameters without `color_scale`."""
    manifest = read_manifest(directory)
    for name in manifest["shards"]:
        with h5py.File(directory / name, "a") as h5:
            del h5["colors"], h5["color_offsets"]
    manifest["format_version"] = 2
    del manifest["params"]["color_scale"], manifest["params"]["color_check"]
    del manifest["params"]["color_floor"]
    for name in manifest["files"]:
        manifest["files"][name] = {"sha256": sha256_file(directory / name),
                                   "bytes": (directory / name).stat().st_size}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def test_a_bundle_built_before_colour_thumbnails_is_served_in_grey(tmp_path: Path) -> None:
    """An upgrade must keep answering from the bundle on disk: a format 2 bundle opens, is
    searched with the grey art check, says it is stale, and the next refresh rebuilds it in
    full (an incremental build would mix slots with and without colour)."""
    refs = [_ref(s, "room") for s in CATALOGUED]
    old = tmp_path / "old"
    build_bundle(refs, old, dataclasses.replace(PARAMS, color_scale=0), progress=False)
    _as_format_2(old)
    opened = Bundle.open(old, expected_params=PARAMS)
    try:
        assert "color_scale" in opened.stale_fields
        assert opened.color_thumbnail(0) is None and opened.layout_chroma(0) is None
        seed = CATALOGUED[4]
        result = recognize(opened, _photo(make_layout_card(seed, "room"), seed))
        assert result.match is not None and result.match.card["id"] == f"room-{seed}"
        assert result.match.source is not None and result.match.source.color_corr is None
    finally:
        opened.close()
    keys = [r.key for r in refs]
    assert "color_scale" in str(incremental_plan(old, keys, PARAMS, 0.2))
