"""The real pipeline on synthetic cards: build a bundle, recognise photos, refuse bad bundles."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import h5py
import numpy as np
import pytest

from app.common.reference import ReferenceImage
from app.recognition.features.extraction import configure_threads, extract_features, rootsift
from app.recognition.index.build import build_bundle
from app.recognition.index.bundle import (
    ID_MAP_FILE,
    INDEX_FILE,
    KP_SCALE,
    MANIFEST_FILE,
    STOPWORDS_FILE,
    Bundle,
    BundleError,
    shard_name,
)
from app.recognition.match.card import recognize
from app.recognition.match.explain import why_not
from app.recognition.params import PROFILES, FeatureParams
from tests.support.cards import opened_bundle
from tests.support.synthetic import make_card, photograph

CARD_SEEDS = list(range(100, 116))  # 16 catalogued cards
UNKNOWN_SEEDS = [900, 901]
PARAMS = PROFILES["default"]


def _ref(seed: int) -> ReferenceImage:
    return ReferenceImage(
        card_id=f"card-{seed}",
        face=0,
        name=f"Card {seed}",
        set="syn",
        collector_number=str(seed),
        illustration_id=None,
        load=lambda: make_card(seed),
    )


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(2)
    out = tmp_path_factory.mktemp("bundle") / "run"
    build_bundle([_ref(s) for s in CARD_SEEDS], out, PARAMS, progress=False, workers=2)
    return out


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Iterator[Bundle]:
    yield from opened_bundle(bundle_dir, PARAMS)


def _copy(bundle_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle_dir, target)
    return target


# -- bundle ----------------------------------------------------------------------------------
def test_bundle_layout_and_manifest(bundle: Bundle, bundle_dir: Path) -> None:
    manifest = bundle.manifest
    shards = [shard_name(0)]
    assert {p.name for p in bundle_dir.iterdir()} == {
        INDEX_FILE, STOPWORDS_FILE, ID_MAP_FILE, MANIFEST_FILE, *shards
    }
    assert manifest["shards"] == shards
    assert manifest["counts"]["cards"] == len(CARD_SEEDS) == bundle.card_count
    assert set(manifest["files"]) == {INDEX_FILE, STOPWORDS_FILE, ID_MAP_FILE, *shards}
    assert FeatureParams.from_dict(manifest["params"]) == PARAMS
    assert bundle.version == manifest["version"] and bundle.version.count("-") == 1
    assert manifest["index"]["factory"].startswith("IVF") and "_HNSW32" in (
        manifest["index"]["factory"])
    # frame features are "stop words": at most ref_keep of the rest are indexed per card
    counts = manifest["counts"]
    assert 0 < counts["stop_words"] < counts["candidates"]
    kept = counts["indexed_descriptors"] - counts["padding_vectors"]  # mapped_lists.py
    assert 0 <= counts["padding_vectors"] < 32 * manifest["index"]["nlist"]
    assert kept <= len(CARD_SEEDS) * PARAMS.ref_keep
    assert kept <= counts["candidates"] - counts["stop_words"]
    assert bundle.card(3)["id"] == f"card-{CARD_SEEDS[3]}"
    with h5py.File(bundle_dir / shards[0], "r") as h5:
        assert h5["keypoints"].dtype == np.uint16
        assert h5["kp_offsets"][-1] == kept
        assert h5["thumbs"].dtype == np.uint8  # JPEG bytes
    thumb = bundle.thumbnail(3)
    assert thumb.shape == (PARAMS.thumb_height, PARAMS.thumb_width)


def test_index_ids_name_the_card_and_its_keypoint(bundle: Bundle) -> None:
    """A FAISS id is slot << LOCAL_BITS | local: a reference's own descriptors find that
    card, at the keypoint they were extracted at (this is what verification relies on)."""
    slot = 5
    features = extract_features(make_card(CARD_SEEDS[slot]), PARAMS, role="reference")
    dist, ids = bundle.search(rootsift(features.descriptors), 1)
    mine = Bundle.card_of(ids[:, 0]) == slot
    assert mine.mean() > 0.2  # the kept share, found again
    kept = bundle.keypoints(slot)
    where = kept[Bundle.local_of(ids[mine, 0])]
    error = np.linalg.norm(where - features.keypoints[mine], axis=1)
    assert np.median(error) < 2 / KP_SCALE + 0.5
    assert np.median(dist[mine, 0]) < 0.15  # PQ noise only: the same descriptor


def test_build_refuses_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "stale.txt").write_text("x")
    with pytest.raises(BundleError, match="not empty"):
        build_bundle([_ref(1)], tmp_path, PARAMS, progress=False)


def test_tampered_file_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    data = bytearray((copy / ID_MAP_FILE).read_bytes())
    data[10] ^= 0x01
    (copy / ID_MAP_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        Bundle.open(copy)


def test_missing_file_and_bad_format_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    (copy / INDEX_FILE).unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.open(copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["format_version"] = 999
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format"):
        Bundle.open(copy)


def test_an_extraction_mismatch_is_refused(bundle_dir: Path) -> None:
    """Query features made otherwise than the references' would match nothing."""
    other = dataclasses.replace(PARAMS, sift_contrast=PARAMS.sift_contrast + 0.01)
    with pytest.raises(BundleError, match="sift_contrast"):
        Bundle.open(bundle_dir, expected_params=other)


def test_a_bundle_of_other_selection_settings_is_served_until_rebuilt(
    bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade that changes which descriptors are kept (the stop-word radius, ref_keep)
    must not leave the service unready while the new bundle is built: the old one is served
    with its own build settings, and says it is stale."""
    other = dataclasses.replace(PARAMS, ref_keep=PARAMS.ref_keep + 1, stop_radius=0.2)
    with caplog.at_level("WARNING", logger="app.recognition.index.bundle"):
        opened = Bundle.open(bundle_dir, expected_params=other)
    try:
        assert opened.stale_fields == ("ref_keep", "stop_radius")
        assert opened.params.ref_keep == PARAMS.ref_keep  # what the bundle holds
        assert opened.params.stop_radius == PARAMS.stop_radius
        assert "the next refresh rebuilds it" in caplog.text
        photo, _ = photograph(make_card(CARD_SEEDS[3]), seed=4, rotation=10.0)
        result = recognize(opened, photo)
        assert result.match is not None and result.match.card["id"] == f"card-{CARD_SEEDS[3]}"
    finally:
        opened.close()


def test_query_time_knobs_come_from_the_service(bundle_dir: Path) -> None:
    """nprobe, voting and decision settings need no rebuild: the bundle is searched with
    the serving profile's values, not the ones recorded at build time."""
    other = dataclasses.replace(PARAMS, nprobe=PARAMS.nprobe + 2, accept=0.7)
    opened = Bundle.open(bundle_dir, expected_params=other)
    try:
        assert opened.params == other
        assert opened._search_params.nprobe == PARAMS.nprobe + 2
    finally:
        opened.close()


def test_params_round_trip() -> None:
    for params in PROFILES.values():
        assert FeatureParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(ValueError, match="unknown"):
        FeatureParams.from_dict({"no_such_knob": 1})


# -- features --------------------------------------------------------------------------------
def test_extraction_is_deterministic_and_keeps_aspect() -> None:
    card = make_card(7)
    a = extract_features(card, PARAMS, role="reference")
    b = extract_features(card, PARAMS, role="reference")
    assert np.array_equal(a.descriptors, b.descriptors)
    assert a.descriptors.dtype == np.uint8 and a.keypoints.dtype == np.float32
    assert max(a.gray.shape) == PARAMS.ref_max_side
    assert a.scale[0] == pytest.approx(a.scale[1], rel=0.01)
    norms = np.linalg.norm(rootsift(a.descriptors), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-3)


# -- recognition -----------------------------------------------------------------------------
PHOTOS = [
    (100, dict()),
    (103, dict(rotation=180)),
    (106, dict(rotation=25, tilt=0.12)),
    (109, dict(blur=1.6)),
    (112, dict(glare=0.7)),
    (115, dict(card_height=0.4, rotation=-90)),
]


@pytest.mark.parametrize(("seed", "kwargs"), PHOTOS)
def test_recognises_perturbed_photos(bundle: Bundle, seed: int, kwargs: dict[str, Any]) -> None:
    photo, corners = photograph(make_card(seed), seed=seed, **kwargs)
    result = recognize(bundle, photo)
    assert result.match is not None, result.alternatives
    assert result.match.card["id"] == f"card-{seed}"
    assert result.match.confidence >= PARAMS.accept
    assert result.quad is not None
    card_height = np.linalg.norm(corners[3] - corners[0])
    assert np.abs(np.array(result.quad) - corners).max() < 0.05 * card_height
    assert {"features", "search", "verify", "total"} <= set(result.timings_ms)


@pytest.mark.parametrize("seed", UNKNOWN_SEEDS)
def test_card_not_in_catalogue_is_no_match(bundle: Bundle, seed: int) -> None:
    photo, _ = photograph(make_card(seed), seed=seed)
    result = recognize(bundle, photo)
    assert result.match is None
    assert all(c.confidence < PARAMS.accept for c in result.alternatives)


def test_quad_scale_maps_to_original_coordinates(bundle: Bundle) -> None:
    photo, corners = photograph(make_card(101), seed=1)
    result = recognize(bundle, photo[::2, ::2].copy(), quad_scale=2.0)
    assert result.match is not None and result.quad is not None
    assert np.abs(np.array(result.quad) - corners).max() < 20


def test_concurrent_recognitions(bundle: Bundle) -> None:
    photos = [(s, photograph(make_card(s), seed=s + 1)[0]) for s in CARD_SEEDS[:6]]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda item: recognize(bundle, item[1]), photos))
    for (seed, _), result in zip(photos, results, strict=True):
        assert result.match is not None and result.match.card["id"] == f"card-{seed}"


def test_configure_threads() -> None:
    configure_threads(1)
    assert faiss.omp_get_max_threads() == 1
    configure_threads(2)


def test_precomputed_features_are_used_without_loading(tmp_path: Path) -> None:
    """The pipeline's feature cache hands over (features, thumbnail): no image is loaded."""
    from app.recognition.index.thumbnails import make_thumbnail

    def cached(seed: int) -> ReferenceImage:
        features = extract_features(make_card(seed), PARAMS, role="reference")
        ref = _ref(seed)
        ref.load = lambda: (_ for _ in ()).throw(AssertionError("load called"))
        ref.precomputed = lambda: (features, make_thumbnail(features, PARAMS))
        return ref

    manifest = build_bundle([cached(s) for s in CARD_SEEDS], tmp_path / "b", PARAMS,
                            progress=False)
    assert manifest["counts"]["cards"] == len(CARD_SEEDS)
    assert manifest["counts"]["skipped_images"] == 0


def test_coarse_pass_settles_clear_photos_and_negatives_get_the_fine_pass(bundle: Bundle) -> None:
    assert len(PARAMS.query_passes) == 2
    photo, _ = photograph(make_card(104), seed=4)
    assert recognize(bundle, photo).timings_ms["passes"] == 1
    unknown, _ = photograph(make_card(UNKNOWN_SEEDS[0]), seed=5)
    assert recognize(bundle, unknown).timings_ms["passes"] == 2
    small = unknown[:300, :300].copy()  # fits the first pass: nothing more to see
    assert recognize(bundle, small).timings_ms["passes"] == 1


def test_other_printings_of_the_match_are_listed_first(tmp_path: Path) -> None:
    """Two printings of one card (same art, other frame colour): the photographed one wins,
    the other comes first among the alternatives, marked as sharing the art."""
    base = make_card(300)
    other = base.copy()
    other[:, :, 0] = 255 - other[:, :, 0]  # a different "frame": inverted blue channel
    other[int(0.11 * 680) : int(0.56 * 680), int(0.08 * 488) : int(0.92 * 488)] = base[
        int(0.11 * 680) : int(0.56 * 680), int(0.08 * 488) : int(0.92 * 488)
    ]
    refs = [_ref(s) for s in CARD_SEEDS[:10]]
    for card_id, image in (("printing-a", base), ("printing-b", other)):

        def load(image: np.ndarray = image) -> np.ndarray:
            return image

        refs.append(ReferenceImage(card_id, 0, "Twin Card", "syn", card_id[-1], "ill-twin",
                                   load=load))
    build_bundle(refs, tmp_path / "b", PARAMS, progress=False)
    twin = Bundle.open(tmp_path / "b")
    try:
        result = recognize(twin, photograph(base, seed=9)[0])
        assert result.match is not None and result.match.card["id"] == "printing-a"
        assert result.alternatives[0].card["id"] == "printing-b"
        assert result.alternatives[0].same_art
        assert result.alternatives[0].confidence < PARAMS.accept
    finally:
        twin.close()


def test_why_not_tells_the_photographed_card_from_another(bundle: Bundle) -> None:
    """`match.explain.why_not` (what a benchmark prints for a miss): the photographed card's
    reference ranks first by votes and verifies with inliers and a matching art; another
    card's reference ranks lower and does not verify."""
    photo, _ = photograph(make_card(CARD_SEEDS[2]), seed=11, rotation=5)
    slots = {entry["id"]: n for n, entry in enumerate(bundle.iter_entries()) if entry}
    right = why_not(bundle, photo, slots[f"card-{CARD_SEEDS[2]}"])
    other = why_not(bundle, photo, slots[f"card-{CARD_SEEDS[5]}"])
    assert right["kept"] > 0 and right["passes"]
    first = right["passes"][0]
    assert first["rank"] == 1 and first["inliers"] >= PARAMS.min_inliers
    assert first["art_corr"] is not None and first["art_corr"] > 0.5
    assert all(p["rank"] > 1 and p["inliers"] is None for p in other["passes"])
