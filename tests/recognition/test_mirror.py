"""Mirrored photos (front cameras, webcam previews): found through permuted descriptors,
answered with `mirrored: true` and corners in the photo's own pixels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from app.recognition.features.extraction import extract_features, mirror, rootsift
from app.recognition.params import PROFILES
from tests.support.apps import LiveServer, serve_bundle, shutdown
from tests.support.cards import synthetic_card_record as record
from tests.support.environment import isolated_config
from tests.support.synthetic import make_card, photograph, table

PARAMS = PROFILES["default"]


def test_permuted_descriptors_are_those_of_the_mirrored_image() -> None:
    """SIFT of cv2.flip(image, 1) at the mirrored keypoints = the permuted SIFT of the image
    (OpenCV's layout and angle convention; the permutation is derived in features.py)."""
    photo, _ = photograph(make_card(103), seed=5, rotation=20)
    direct = extract_features(photo, PARAMS, role="query")
    flipped = extract_features(cv2.flip(photo, 1), PARAMS, role="query")
    mirrored = mirror(direct)
    assert mirrored.mirrored and not direct.mirrored
    assert np.array_equal(mirrored.gray, cv2.flip(direct.gray, 1))
    gap = np.linalg.norm(mirrored.keypoints[:, None] - flipped.keypoints[None], axis=2)
    nearest = gap.argmin(axis=1)
    same_place = gap[np.arange(len(gap)), nearest] < 0.5
    assert same_place.sum() > 0.3 * len(gap)
    ours, theirs = rootsift(mirrored.descriptors), rootsift(flipped.descriptors)
    permuted = ((ours[same_place] - theirs[nearest[same_place]]) ** 2).sum(axis=1)
    unpermuted = ((rootsift(direct.descriptors)[same_place] - theirs[nearest[same_place]])
                  ** 2).sum(axis=1)
    # several keypoints share a place (one per dominant orientation): the median decides
    assert np.median(permuted) < 0.02 < 0.2 < np.median(unpermuted)
    assert np.array_equal(mirror(mirrored).descriptors, direct.descriptors)  # an involution


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, synthetic_bundles: dict[str, Path]
) -> Iterator[LiveServer]:
    app = serve_bundle(isolated_config(tmp_path_factory.mktemp("mirror")), synthetic_bundles["A"])
    with LiveServer(app) as live:
        yield live
    shutdown(app)


def _post(server: LiveServer, photo: np.ndarray, **form: str) -> requests.Response:
    ok, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return requests.post(f"{server.url}/infer", files={"roi_image": ("p.jpg", jpeg.tobytes())},
                         data=form, timeout=60)


def _unmirrored(corners: np.ndarray, width: int) -> np.ndarray:
    """Corners of a card in a photo, in the pixels of that photo mirrored left-right."""
    flipped = corners.astype(np.float64).copy()
    flipped[:, 0] = (width - 1) - flipped[:, 0]
    return flipped


def test_a_mirrored_photo_is_recognised_with_mirrored_true(server: LiveServer) -> None:
    photo, corners = photograph(make_card(105), seed=7, rotation=8, blur=0.6, glare=0.3)
    direct = _post(server, photo)
    assert direct.status_code == 200 and direct.json()["mirrored"] is False
    flipped = _post(server, cv2.flip(photo, 1))
    assert flipped.status_code == 200, flipped.text
    answer = flipped.json()
    assert answer["predicted_card_id"] == record(105)["id"] and answer["mirrored"] is True
    # the corners of the card as printed (its top-left first), in the uploaded photo's pixels
    expected = _unmirrored(corners, photo.shape[1])
    assert np.abs(np.array(answer["quad"]) - expected).max() < 8, (answer["quad"], expected)


def test_a_mirrored_table_answers_every_card_mirrored(server: LiveServer) -> None:
    photo, placed = table([(make_card(101), 0.28, 0.5, 0.55, 5),
                           (make_card(110), 0.72, 0.5, 0.55, -10)], seed=3)
    response = _post(server, cv2.flip(photo, 1), multi="true")
    assert response.status_code == 200, response.text
    cards = {c["predicted_card_id"]: c for c in response.json()["cards"]}
    assert set(cards) == {record(101)["id"], record(110)["id"]}
    for seed, corners in zip((101, 110), placed, strict=True):
        card = cards[record(seed)["id"]]
        assert card["mirrored"] is True
        expected = _unmirrored(corners, photo.shape[1])
        assert np.abs(np.array(card["quad"]) - expected).max() < 12
    as_taken = _post(server, photo, multi="true").json()["cards"]
    assert [c["mirrored"] for c in as_taken] == [False, False]
