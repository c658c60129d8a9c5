"""Reading local Scryfall catalogue files and choosing the images to index."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from app.catalog import records
from app.catalog.records import catalog_images, face_images, iter_records, reference_images

NORMAL = {
    "id": "00000000-0000-0000-0000-000000000001",
    "name": "Mind Stone",
    "set": "ima",
    "set_name": "Iconic Masters",
    "collector_number": "219",
    "illustration_id": "ill-1",
    "games": ["paper", "mtgo"],
    "digital": False,
    "image_status": "highres_scan",
    "image_uris": {"small": "refs/ms_small.jpg", "normal": "refs/ms.jpg", "large": "refs/ms_l.jpg"},
}
DOUBLE_FACED = {
    "id": "00000000-0000-0000-0000-000000000002",
    "name": "Delver of Secrets // Insectile Aberration",
    "set": "isd",
    "collector_number": "51",
    "layout": "transform",
    "games": ["paper"],
    "card_faces": [
        {"name": "Delver of Secrets", "illustration_id": "ill-front",
         "image_uris": {"normal": "file:///cards/delver_front.jpg"}},
        {"name": "Insectile Aberration", "illustration_id": "ill-back",
         "image_uris": {"normal": "https://cards.example/delver_back.jpg"}},
    ],
}
ADVENTURE = {
    "id": "00000000-0000-0000-0000-000000000003",
    "name": "Bonecrusher Giant // Stomp",
    "set": "eld",
    "collector_number": "115",
    "layout": "adventure",
    "games": ["paper"],
    "image_uris": {"normal": "refs/bonecrusher.jpg"},
    "card_faces": [{"name": "Bonecrusher Giant"}, {"name": "Stomp"}],
}
DIGITAL = {**NORMAL, "id": "digital", "digital": True}
ARENA_ONLY = {**NORMAL, "id": "arena", "games": ["arena"]}
PLACEHOLDER = {**NORMAL, "id": "placeholder", "image_status": "placeholder"}
ALL: list[dict[str, Any]] = [NORMAL, DOUBLE_FACED, ADVENTURE, DIGITAL, ARENA_ONLY, PLACEHOLDER]


def _write_jsonl(path: Path, rows: list[dict[str, Any]], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows) + "\n"
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_plain_and_gzip(tmp_path: Path) -> None:
    for gz in (False, True):
        path = _write_jsonl(tmp_path / f"cards{gz}.jsonl", ALL, gz)
        assert [r["id"] for r in iter_records(path)] == [r["id"] for r in ALL]


def test_json_array_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "default-cards.json"
    path.write_text("\n [\n" + ",\n".join(json.dumps(r, indent=2) for r in ALL) + "\n]\n")
    # tiny chunks: objects straddle chunk boundaries
    original = records._iter_array
    monkeypatch.setattr(records, "_iter_array", lambda fh: original(fh, chunk=7))
    assert [r["id"] for r in iter_records(path)] == [r["id"] for r in ALL]
    gz = tmp_path / "default-cards.json.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert len(list(iter_records(gz))) == len(ALL)


@pytest.mark.parametrize(("layout", "count"), [("jsonl", 200_000), ("array", 50_000)])
def test_bulk_file_is_read_in_constant_memory(tmp_path: Path, layout: str, count: int) -> None:
    """200,000 records (~130 MB of JSON, a slice of Scryfall's 500 MB bulk file): the
    reader's peak Python allocation stays a few MB, whatever the file size. Holding the
    lines (the old `(first, *fh)`) peaked at over 100 MB here."""
    import tracemalloc

    record = {**NORMAL, "oracle_text": "x" * 300}
    path = tmp_path / f"bulk.{layout}.gz"
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        if layout == "array":
            fh.write("[\n")
        for i in range(count):
            line = json.dumps({**record, "id": str(i)})
            fh.write(line + (",\n" if layout == "array" and i < count - 1 else "\n"))
        if layout == "array":
            fh.write("]\n")
    tracemalloc.start()
    try:
        seen = 0
        for _ in iter_records(path):
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_truncated_array_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("[" + json.dumps(NORMAL) + ', {"id": "x", "na')
    with pytest.raises(ValueError, match="truncated"):
        list(iter_records(path))


def test_normal_card_one_image_relative_path(tmp_path: Path) -> None:
    (image,) = face_images(NORMAL, tmp_path)
    assert image.face == 0 and image.name == "Mind Stone" and image.set_name == "Iconic Masters"
    assert image.uri == str(tmp_path / "refs" / "ms_l.jpg")  # "large" preferred
    assert image.illustration_id == "ill-1"


def test_double_faced_card_one_image_per_face(tmp_path: Path) -> None:
    front, back = face_images(DOUBLE_FACED, tmp_path)
    assert (front.face, back.face) == (0, 1)
    assert (front.name, back.name) == ("Delver of Secrets", "Insectile Aberration")
    assert front.uri == "/cards/delver_front.jpg"  # file: URL
    assert back.uri == "https://cards.example/delver_back.jpg"
    assert (front.illustration_id, back.illustration_id) == ("ill-front", "ill-back")
    assert front.card_id == back.card_id == DOUBLE_FACED["id"]


def test_adventure_card_has_one_image(tmp_path: Path) -> None:
    (image,) = face_images(ADVENTURE, tmp_path)
    assert image.face == 0 and image.name == "Bonecrusher Giant // Stomp"


def test_digital_and_placeholder_records_are_skipped(tmp_path: Path) -> None:
    for record in (DIGITAL, ARENA_ONLY, PLACEHOLDER):
        assert face_images(record, tmp_path) == []
    path = _write_jsonl(tmp_path / "cards.jsonl", ALL)
    assert [i.card_id for i in catalog_images(path)] == [
        NORMAL["id"], DOUBLE_FACED["id"], DOUBLE_FACED["id"], ADVENTURE["id"]
    ]


def test_reference_images_load_local_files(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    picture = np.full((70, 50, 3), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "refs" / "ms_l.jpg"), picture)
    path = _write_jsonl(tmp_path / "cards.jsonl", [NORMAL, ADVENTURE])
    refs = reference_images(path)
    first = next(refs)
    assert first.card_id == NORMAL["id"] and first.extra["set_name"] == "Iconic Masters"
    assert first.load().shape == (70, 50, 3)
    second = next(refs)
    with pytest.raises(FileNotFoundError):
        second.load()  # file is missing: the builder skips it and counts it
    (tmp_path / "refs" / "bonecrusher.jpg").write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="cannot decode"):
        second.load()
