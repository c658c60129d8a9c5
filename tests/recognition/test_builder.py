"""Incremental builds: a refresh that changes a few printings reuses the previous release."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from app.common.reference import ReferenceImage
from app.recognition.features.extraction import configure_threads
from app.recognition.features.selection import GRID, preselect
from app.recognition.index.build import build_bundle
from app.recognition.index.bundle import INDEX_FILE, Bundle, sha256_file, shard_name
from app.recognition.index.incremental import build_incremental, incremental_plan
from app.recognition.index.writing import release_version
from app.recognition.match.card import recognize
from app.recognition.match.records import Recognition
from app.recognition.params import PROFILES
from tests.support.synthetic import make_card, photograph

PARAMS = PROFILES["default"]
SEEDS = list(range(100, 114))  # 14 cards: slots 0..13, shards of 4 slots


def _ref(seed: int, number: str | None = None, key: str | None = None) -> ReferenceImage:
    return ReferenceImage(
        card_id=f"card-{seed}", face=0, name=f"Card {seed}", set="syn",
        collector_number=number or str(seed), illustration_id=None,
        load=lambda: make_card(seed), key=key or f"key-{seed}",
    )


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(2)
    out = tmp_path_factory.mktemp("incremental") / "v1"
    build_bundle([_ref(s) for s in SEEDS], out, PARAMS, progress=False, workers=2,
                 shard_slots=4)
    return out


def _id(result: Recognition) -> str | None:
    return result.match.card["id"] if result.match is not None else None


def test_incremental_build_reuses_slots_vectors_and_shards(previous: Path, tmp_path: Path
                                                           ) -> None:
    before = {p.name: sha256_file(p) for p in previous.iterdir()}
    old = Bundle.open(previous)
    old_total, old_kept_101 = old.index.ntotal, len(old.keypoints(1))
    old.close()
    # card 101 (slot 1) is gone, 102 has new metadata for the same image, 200 and 201 are new
    refs = [_ref(s, number="102a" if s == 102 else None) for s in SEEDS if s != 101]
    refs += [_ref(200), _ref(201)]
    assert incremental_plan(previous, [r.key for r in refs], PARAMS, 0.3) is None
    out = tmp_path / "v2"
    manifest = build_incremental(refs, out, PARAMS, previous, progress=False, workers=2)

    counts = manifest["counts"]
    assert (counts["reused_cards"], counts["new_cards"], counts["removed_cards"]) == (13, 2, 1)
    assert counts["slots"] == 16 and counts["cards"] == 15
    assert manifest["parent"] == json.loads((previous / "manifest.json").read_text())["version"]
    # shard 0 lost slot 1, shard 3 gained slots 14-15: rewritten; shards 1 and 2 hard-linked
    assert counts["linked_shards"] == 2
    for number, linked in ((0, False), (1, True), (2, True), (3, False)):
        same = (out / shard_name(number)).stat().st_ino == (
            previous / shard_name(number)).stat().st_ino
        assert same == linked, number
    bundle = Bundle.open(out, expected_params=PARAMS)
    try:
        new_kept = len(bundle.keypoints(14)) + len(bundle.keypoints(15))
        # the gone card's vectors stay (an empty slot) until a full build compacts them; the
        # new ones fill whole blocks of their lists (mapped_lists.py)
        old_padding = json.loads((previous / "manifest.json").read_text())["counts"][
            "padding_vectors"]
        added_padding = counts["padding_vectors"] - old_padding
        assert 0 <= added_padding < 32 * new_kept
        assert bundle.index.ntotal == old_total + new_kept + added_padding
        assert old_kept_101 > 0 and not bundle.alive[1] and bundle.alive[14]
        assert bundle.card(2)["collector_number"] == "102a"  # metadata follows the catalogue
        # a rewritten shard keeps its old slots' colour thumbnails (slot 0), new slots have theirs
        assert all(bundle.color_thumbnail(slot) is not None for slot in (0, 2, 3, 14, 15))
        with pytest.raises(KeyError):
            bundle.card(1)
        for seed, expected in ((200, "card-200"), (201, "card-201"), (105, "card-105"),
                               (113, "card-113"), (101, None)):
            photo, _ = photograph(make_card(seed), seed=seed)
            assert _id(recognize(bundle, photo)) == expected, seed
    finally:
        bundle.close()
    # the previous release is untouched (it may still be served, or rolled back to)
    assert {p.name: sha256_file(p) for p in previous.iterdir()} == before
    assert (out / INDEX_FILE).stat().st_ino != (previous / INDEX_FILE).stat().st_ino


def test_incremental_plan_says_when_a_full_build_is_needed(previous: Path) -> None:
    keys: list[str | None] = [f"key-{s}" for s in SEEDS]
    assert incremental_plan(previous, keys, PARAMS, 0.2) is None
    other = dataclasses.replace(PARAMS, ref_keep=PARAMS.ref_keep - 1)
    assert "ref_keep" in str(incremental_plan(previous, keys, other, 0.2))
    many = keys[:7] + [f"new-{i}" for i in range(7)]
    assert "changed" in str(incremental_plan(previous, many, PARAMS, 0.2))
    assert "image keys" in str(incremental_plan(previous, [*keys, None], PARAMS, 0.2))


def test_a_release_of_an_older_format_is_rebuilt_in_full(previous: Path, tmp_path: Path
                                                          ) -> None:
    """A format 3 release indexed each printing on its own, in lists every process copied:
    extending it would keep both; the next refresh builds format 4 in full."""
    import shutil

    older = tmp_path / "v3"
    shutil.copytree(previous, older)
    manifest = json.loads((older / "manifest.json").read_text())
    manifest["format_version"] = 3
    (older / "manifest.json").write_text(json.dumps(manifest))
    keys: list[str | None] = [f"key-{s}" for s in SEEDS]
    assert "format 3" in str(incremental_plan(older, keys, PARAMS, 0.2))


def test_thumbnails_are_stored_as_webp_and_decode_close_to_the_reference(previous: Path
                                                                         ) -> None:
    """WebP at q80 (gray) / q90 (colour): ~6.6 + 2.8 KB a reference instead of JPEG q90's
    10.6 + 3.5 (docs/design-notes.md); what is decoded stays close to the image it came from."""
    from app.recognition.features.extraction import extract_features
    from app.recognition.index.thumbnails import make_thumbnail

    bundle = Bundle.open(previous)
    try:
        for slot in range(3):
            assert bundle.thumbnail_bytes(slot)[8:12] == b"WEBP"
            assert bundle.color_bytes(slot)[8:12] == b"WEBP"
            source = make_thumbnail(extract_features(make_card(SEEDS[slot]), PARAMS,
                                                     role="reference"), PARAMS)
            error = np.abs(bundle.thumbnail(slot).astype(int) - source.astype(int))
            assert float(np.sqrt(np.mean(error ** 2))) < 6
    finally:
        bundle.close()


def test_parameters_written_before_thumbnail_formats_say_jpeg_and_ask_for_a_rebuild() -> None:
    """A manifest of an older release names one JPEG quality: it reads as what it is, and
    its build fields differ from today's, so the next refresh rebuilds it in full."""
    old = {**PARAMS.to_dict(), "thumb_quality": 90}
    del old["thumb_format"], old["color_quality"]
    read = type(PARAMS).from_dict(old)
    assert (read.thumb_format, read.thumb_quality, read.color_quality) == ("jpg", 90, 90)
    assert {"thumb_format", "thumb_quality"} <= set(read.build_differences(PARAMS))
    assert not read.serving_differences(PARAMS)
    with pytest.raises(ValueError, match="thumb_format"):
        dataclasses.replace(PARAMS, thumb_format="png")


def test_a_reference_describes_only_the_keypoints_the_selection_keeps() -> None:
    """Extraction chooses among a reference's keypoints before describing them: the same
    keypoints and descriptors as describing all 4,000 and choosing after, a tenth of the
    descriptors computed; choosing again keeps them in order (a feature cache holds either)."""
    from app.recognition.features.extraction import _sift_once, extract_features, prepare_gray
    from app.recognition.features.selection import spread

    card = make_card(7)
    features = extract_features(card, PARAMS, role="reference")
    gray = prepare_gray(card, PARAMS, "reference")
    xy, descriptors, sizes, responses = _sift_once(gray, PARAMS.ref_nfeatures, PARAMS)
    assert len(xy) > 2 * PARAMS.ref_candidates
    chosen = spread(xy, sizes, responses, gray.shape, PARAMS.ref_candidates)
    assert len(features.descriptors) == PARAMS.ref_candidates
    assert np.array_equal(features.keypoints, xy[chosen])
    assert np.array_equal(features.descriptors, descriptors[chosen])
    again = preselect(features, PARAMS.ref_candidates)
    assert np.array_equal(again, np.arange(PARAMS.ref_candidates))


def test_preselect_spreads_over_the_card() -> None:
    from app.recognition.features.extraction import extract_features

    features = extract_features(make_card(7), PARAMS, role="reference")
    chosen = preselect(features, 96)
    assert len(chosen) == 96 and len(set(chosen.tolist())) == 96
    height, width = features.gray.shape
    xy = features.keypoints[chosen]
    cells = set(zip((xy[:, 0] * GRID[0] // width).astype(int),
                    (xy[:, 1] * GRID[1] // height).astype(int), strict=True))
    assert features.responses is not None  # extract_features always sets them
    top = np.argsort(-features.responses)[:96]  # plain contrast order bunches up
    top_cells = set(zip((features.keypoints[top, 0] * GRID[0] // width).astype(int),
                        (features.keypoints[top, 1] * GRID[1] // height).astype(int),
                        strict=True))
    assert len(cells) > len(top_cells)
    assert len(preselect(features, 10_000)) == len(features.keypoints)


def test_release_names_sort_by_build_time_within_one_second() -> None:
    """Releases are ordered by name (promotion refuses an older one, rollback takes the one
    before): a release built half a second after another sorts after it whatever the digests
    (to the second, the later one was refused as older when its digest sorted first)."""
    first = datetime(2026, 12, 7, 19, 2, 14, 100_000, tzinfo=UTC)
    later = datetime(2026, 12, 7, 19, 2, 14, 600_000, tzinfo=UTC)
    assert release_version(later, "0adc56636e") > release_version(first, "23d2ea0cda")
    assert release_version(first, "ff") < release_version(first + timedelta(seconds=1), "00")
