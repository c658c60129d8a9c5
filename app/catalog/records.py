"""Read a local Scryfall catalogue file and choose the images to index for each card.

Accepts gzip or plain files holding JSON Lines or one JSON array (Scryfall's bulk format),
streamed record by record so a 500 MB bulk file never sits in memory whole.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from app.common import reference
from app.common.reference import ReferenceImage

IMAGE_SIZES = ("large", "normal", "png", "border_crop")  # preference order for references
SKIP_IMAGE_STATUS = {"missing", "placeholder"}


@dataclass(frozen=True)
class FaceImage:
    """One image to index: a card, or one face of a double-faced card."""

    card_id: str
    face: int
    name: str
    set: str
    set_name: str
    collector_number: str
    illustration_id: str | None
    uri: str  # absolute local path, or an http(s) URL for the pipeline to download
    # what the collector line shows and the answer's finish needs (frame, lang, rarity,
    # finishes), copied into the bundle's id map with `set_name`
    printing: tuple[tuple[str, Any], ...] = ()
    layout_key: str = ""  # what its frame looks like (common.reference.layout_key)
    picture: str | None = None  # the picture it shows (common.reference.picture_key)

    def reference(
        self,
        load: Callable[[], np.ndarray],
        precomputed: Callable[[], Any] | None = None,
        key: str | None = None,
    ) -> ReferenceImage:
        """This face as a ReferenceImage for `build_bundle` (local file and pipeline alike)."""
        return ReferenceImage(
            card_id=self.card_id,
            face=self.face,
            name=self.name,
            set=self.set,
            collector_number=self.collector_number,
            illustration_id=self.illustration_id,
            load=load,
            extra={"set_name": self.set_name, "layout_key": self.layout_key,
                   "picture": self.picture, **dict(self.printing)},
            precomputed=precomputed,
            key=key,
        )


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield card objects from JSON Lines or a JSON array (gzip or plain), streaming."""
    with _open_text(Path(path)) as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
        if head == "[":
            yield from _iter_array(fh)
        elif head:
            # one line at a time: `(first, *fh)` would read the whole file into a tuple
            for line in itertools.chain((head + fh.readline(),), fh):
                if line.strip():
                    yield json.loads(line)


def _iter_array(fh: IO[str], chunk: int = 1 << 16) -> Iterator[dict[str, Any]]:
    """Elements of a JSON array whose '[' was consumed, decoded one by one."""
    decoder = json.JSONDecoder()
    buf = ""
    eof = False
    while True:
        buf = buf.lstrip().removeprefix(",").lstrip()
        if buf.startswith("]"):
            return
        try:
            obj, end = decoder.raw_decode(buf)
        except json.JSONDecodeError:
            if eof:
                raise ValueError("the JSON array is truncated or malformed") from None
            more = fh.read(chunk)
            eof = not more
            buf += more
            continue
        if end == len(buf) and not eof:  # a number/literal could continue in the next chunk
            more = fh.read(chunk)
            if more:
                eof = False
                buf += more
                continue
        yield obj
        buf = buf[end:]


def resolve_uri(uri: str, base_dir: Path) -> str:
    """`file:` URLs and relative paths become absolute paths; http(s) URLs stay as they are."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return uri
    if parsed.scheme == "file":
        return str(Path(unquote(parsed.path)))
    path = Path(uri)
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def is_indexable(record: dict[str, Any]) -> bool:
    """Paper cards with a real image: no digital-only printings, no placeholders."""
    if record.get("digital"):
        return False
    games = record.get("games")
    if games is not None and "paper" not in games:
        return False
    return record.get("image_status") not in SKIP_IMAGE_STATUS


def _pick(image_uris: dict[str, str] | None) -> str | None:
    if not image_uris:
        return None
    return next((image_uris[s] for s in IMAGE_SIZES if image_uris.get(s)), None)


def face_images(record: dict[str, Any], base_dir: Path) -> list[FaceImage]:
    """Images to index for one record: the top-level image (normal, split, adventure, flip
    cards show one image), else one per face that has its own (double-faced cards)."""
    if not is_indexable(record):
        return []
    faces: list[tuple[int, dict[str, Any], str]] = []
    top = _pick(record.get("image_uris"))
    if top:
        faces.append((0, record, top))
    else:
        for i, face in enumerate(record.get("card_faces") or []):
            uri = _pick(face.get("image_uris"))
            if uri:
                faces.append((i, face, uri))
    images = []
    for i, source, uri in faces:
        merged = {**record, **source}
        layout_key = reference.layout_key(merged)
        images.append(FaceImage(
            card_id=record["id"],
            face=i,
            name=source.get("name") or record.get("name", ""),
            set=record.get("set", ""),
            set_name=record.get("set_name", ""),
            collector_number=str(record.get("collector_number", "")),
            illustration_id=source.get("illustration_id") or record.get("illustration_id"),
            uri=resolve_uri(uri, base_dir),
            printing=printing_facts(record),
            layout_key=layout_key,
            picture=reference.picture_key({**merged, "face": i, "layout_key": layout_key}),
        ))
    return images


PRINTING_FIELDS = (
    "frame", "border_color", "frame_effects", "lang", "rarity", "finishes", "released_at"
)


def printing_facts(record: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The record's fields that tell printings of one art apart on the card itself (the
    collector line's place follows `frame`; it prints `rarity`'s letter, `lang` and a foil
    mark among `finishes`; `frame`, `border_color` and `frame_effects` say whether two
    printings look alike), as a hashable tuple of (field, value) for the fields present."""
    return tuple(
        (name, tuple(record[name]) if isinstance(record[name], list) else record[name])
        for name in PRINTING_FIELDS
        if record.get(name) is not None
    )


def catalog_images(path: Path) -> Iterator[FaceImage]:
    """Every image to index in a local catalogue file; relative paths resolve next to it."""
    base_dir = Path(path).resolve().parent
    for record in iter_records(path):
        yield from face_images(record, base_dir)


def _read_local(path: str) -> np.ndarray:
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode {path}")
    return image


def reference_images(path: Path) -> Iterator[ReferenceImage]:
    """Local catalogue -> ReferenceImage for `build_bundle` (images read lazily, by path)."""
    for img in catalog_images(path):
        if img.uri.startswith(("http://", "https://")):
            raise ValueError(f"{img.card_id}: remote image {img.uri}; download it first")
        yield img.reference(functools.partial(_read_local, img.uri))
