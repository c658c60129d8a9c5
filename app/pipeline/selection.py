"""Selecting printings: which card faces of Scryfall's bulk file a refresh indexes.

The printings policy (REFRESH_LANGS, REFRESH_SETS, REFRESH_EXCLUDED_LAYOUTS) is applied to
each card object's `lang`, `set` and `layout`; every face of a chosen printing (its own
`image_uris`, or each of `card_faces[].image_uris`) becomes one reference to index, keyed in
the feature cache by its image URL. Records of every printing are stored all the same
(cheap, and the API answers from them): the policy limits indexing, not the catalogue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.catalog.records import FaceImage, face_images, iter_records
from app.catalog.store import card_row
from app.pipeline.downloads import FeatureCache
from app.pipeline.refresh_options import RefreshError, RefreshOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Face:
    """One card face to index, and its key in the feature cache."""

    image: FaceImage
    key: str


def included(options: RefreshOptions, record: dict[str, Any]) -> bool:
    """Whether the record's faces are indexed. Records of every printing are stored
    all the same (cheap, and the API answers from them): the policy limits indexing."""
    if options.langs and record.get("lang", "en") not in options.langs:
        return False
    if options.sets and str(record.get("set", "")).lower() not in options.sets:
        return False
    return record.get("layout") not in options.exclude_layouts


def select_faces(
    path: Path, base_dir: Path, options: RefreshOptions, counts: dict[str, Any]
) -> list[Face]:
    """Read the bulk file to the end once and choose the faces to index (a truncated or
    malformed file fails here, before anything is written); `counts` gets how many."""
    faces: list[Face] = []
    records = 0
    last_log = time.monotonic()
    try:
        for record in iter_records(path):
            records += 1
            if included(options, record):
                for image in face_images(record, base_dir):
                    faces.append(Face(image, FeatureCache.key(image.uri)))
            if time.monotonic() - last_log > 10:
                log.info("refresh: read %d records", records)
                last_log = time.monotonic()
    except (ValueError, EOFError, OSError) as exc:
        raise RefreshError(f"the bulk file is truncated or malformed: {exc}") from None
    counts["records"] = records
    counts["faces"] = len(faces)
    log.info("refresh: %d records, %d faces to index", records, len(faces))
    return faces


def card_rows(path: Path, base_dir: Path, options: RefreshOptions) -> Iterator[dict[str, Any]]:
    """The `cards` rows of every printing of the bulk file; an indexed one's `image_key`
    names its faces' image URLs (the pipeline's way to tell an unchanged image)."""
    for record in iter_records(path):
        images = face_images(record, base_dir) if included(options, record) else []
        key = "|".join(img.uri for img in images) or None
        yield card_row(record, image_key=key)
