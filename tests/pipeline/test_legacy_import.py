"""Releases in the older layout (one HDF5 group per card with float16 descriptors and JSON
keypoints, id_map.json as one Scryfall id per descriptor) are converted on import.

The old releases are made here from synthetic cards: features extracted with the profile
that will serve them, written the way the older design stored them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import faiss
import h5py
import numpy as np
import pytest

from app.pipeline.bootstrap import make_release_archive
from app.pipeline.legacy_import import (
    LegacyImportError,
    convert_legacy_release,
    descriptors_to_uint8,
    is_legacy_release,
    iter_json_strings,
)
from app.recognition.features.extraction import extract_features, rootsift
from app.recognition.index.bundle import Bundle
from app.recognition.match.card import recognize
from app.recognition.params import DEFAULT, LEGACY, FeatureParams
from app.wiring import startup as lifecycle
from tests.support import cards
from tests.support.synthetic import make_card, photograph


def _card_id(seed: int) -> str:
    return str(cards.synthetic_card_record(seed)["id"])


def make_old_release(
    out: Path, seeds: list[int], params: FeatureParams, *, as_rootsift: bool,
    frame_scale: float | None = None,
) -> Path:
    """An older-layout release: groups named by Scryfall id, float16 descriptors (raw SIFT or
    RootSIFT), keypoints as JSON text [x, y, size, angle], id_map with one id per descriptor.
    `frame_scale`: keypoints in a frame of that scale, given as `width`/`height` attributes."""
    out.mkdir(parents=True)
    id_map: list[str] = []
    with h5py.File(out / "candidate_features.h5", "w") as h5:
        for seed in seeds:
            features = extract_features(make_card(seed), params, role="reference")
            desc = rootsift(features.descriptors) if as_rootsift else features.descriptors
            group = h5.create_group(_card_id(seed))
            group.create_dataset("descriptors", data=np.asarray(desc, dtype=np.float16))
            factor = frame_scale or 1.0
            points = [[float(x) * factor, float(y) * factor, 3.0, 0.0]
                      for x, y in features.keypoints]
            if frame_scale:
                group.attrs["width"] = features.gray.shape[1] * factor
                group.attrs["height"] = features.gray.shape[0] * factor
            group.create_dataset("keypoints", data=json.dumps(points))
            group.attrs["name"] = f"Synthetic Card {seed}"
            group.attrs["set"] = "syn"
            group.attrs["collector_number"] = str(seed)
            id_map.extend([_card_id(seed)] * len(desc))
    (out / "id_map.json").write_text(json.dumps(id_map))
    faiss.write_index(faiss.IndexFlatL2(128), str(out / "faiss_ivf.index"))  # not reused
    return out


def _recognised(bundle: Bundle, seed: int, photo_seed: int = 1) -> str | None:
    photo, _ = photograph(make_card(seed), seed=photo_seed, card_height=0.8, tilt=0.04)
    match = recognize(bundle, photo).match
    return None if match is None else str(match.card["id"])


def test_rootsift_float16_round_trip_is_close() -> None:
    sift = extract_features(make_card(3), DEFAULT, role="reference").descriptors
    original = rootsift(sift)
    restored = rootsift(descriptors_to_uint8(original.astype(np.float16)))
    cosine = (original * restored).sum(axis=1)
    assert cosine.mean() > 0.999 and cosine.min() > 0.99
    raw = descriptors_to_uint8(sift.astype(np.float16))  # raw SIFT: exact
    assert np.array_equal(raw, sift)
    with pytest.raises(LegacyImportError, match="shape"):
        descriptors_to_uint8(np.zeros((3, 64), np.float16))


def test_id_map_is_read_as_a_stream(tmp_path: Path) -> None:
    ids = [f"id-{i % 7}-\u00e9\\\"x" for i in range(500)]
    path = tmp_path / "id_map.json"
    path.write_text(json.dumps(ids, indent=1))
    assert list(iter_json_strings(path, chunk_size=13)) == ids
    path.write_text(json.dumps(ids)[:-40])
    with pytest.raises(LegacyImportError, match="truncated"):
        list(iter_json_strings(path, chunk_size=64))
    path.write_text('{"a": 1}')
    with pytest.raises(LegacyImportError, match="array"):
        list(iter_json_strings(path))


@pytest.mark.slow
def test_default_profile_conversion_uses_reference_images_for_thumbnails(
    tmp_path: Path,
) -> None:
    seeds = list(range(300, 314))
    # keypoints given in a half-size frame (width/height attributes): rescaled on import
    old = make_old_release(tmp_path / "old", seeds, DEFAULT, as_rootsift=True, frame_scale=0.5)
    assert is_legacy_release(old)
    # without images the photometric profile cannot serve it: refused, with the way out
    with pytest.raises(LegacyImportError, match="RECOGNITION_PROFILE=legacy"):
        convert_legacy_release(old, tmp_path / "refused", DEFAULT)
    by_id = {_card_id(s): s for s in seeds}
    manifest = convert_legacy_release(
        old, tmp_path / "new", DEFAULT, load_image=lambda card_id: make_card(by_id[card_id])
    )
    assert manifest["counts"]["cards"] == len(seeds)
    bundle = Bundle.open(tmp_path / "new", expected_params=DEFAULT)
    try:
        assert bundle.card(0)["id"] == _card_id(seeds[0])
        assert bundle.card(0)["name"] == f"Synthetic Card {seeds[0]}"
        assert bundle.thumbnail(0).any()
        hits = sum(_recognised(bundle, s) == _card_id(s) for s in seeds[:4])
        assert hits >= 3
    finally:
        bundle.close()


@pytest.mark.slow
def test_old_release_archive_is_converted_at_bootstrap_and_served(
    tmp_path: Path, base_config: dict[str, str]
) -> None:
    """RESOURCE_BUNDLE_URL names a tar.gz of an older-layout release (the older design's
    features: the legacy profile); a fresh server converts it, promotes it and answers."""
    from app import create_serving_app
    from tests.support.fake_scryfall import encode_jpeg

    seeds = list(range(400, 525))  # ~100 descriptors each: enough to train IVF256,PQ8
    old = make_old_release(tmp_path / "old-release", seeds, LEGACY, as_rootsift=False)
    archive = make_release_archive(old, tmp_path / "old-release.tar.gz")
    app = create_serving_app({**base_config, "BOOTSTRAP_MISSING_BUNDLE": "true",
                      "RECOGNITION_PROFILE": "legacy",
                      "RESOURCE_BUNDLE_URL": f"file://{archive}"})
    try:
        app.extensions["prepare_thread"].join(timeout=120)
        holder = app.extensions["model"]
        assert holder.loaded, holder.state.detail
        run = Path(base_config["RESOURCES_DIR"]) / "run"
        assert run.is_symlink() and (run / "manifest.json").exists()
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["counts"]["cards"] == len(seeds)
        id_map = [json.loads(line) for line in (run / "id_map.jsonl").read_text().splitlines()]
        assert id_map[5]["id"] == _card_id(seeds[5]) and id_map[5]["set"] == "syn"
        client = app.test_client()
        answers = []
        for seed in seeds[:6:2]:
            photo, _ = photograph(make_card(seed), seed=seed, card_height=0.85, tilt=0.03)
            response = client.post(
                "/infer", data={"roi_image": (io.BytesIO(encode_jpeg(photo)), "p.jpg")})
            body = response.get_json()
            answers.append(response.status_code == 200
                           and body["predicted_card_id"] == _card_id(seed))
        assert sum(answers) >= 2, answers
    finally:
        lifecycle.shutdown(app)


def test_not_an_old_release_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    assert not is_legacy_release(tmp_path / "x")
    with pytest.raises(LegacyImportError, match="older layout"):
        convert_legacy_release(tmp_path / "x", tmp_path / "out", LEGACY)
