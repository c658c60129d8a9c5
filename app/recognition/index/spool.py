"""Step 1 of a build: prepare each reference and spool what the bundle keeps of it.

Each reference's features are extracted (or taken from the feature cache) and its best
`ref_candidates` descriptors (`selection.preselect`) are appended, with its keypoints and
encoded thumbnails, to append-only spool files in the bundle's directory, so that a
build of 100k printings never holds every card's candidates in RAM; training, the stop-word
pass and the shard writer read them back by card ranges. `Pictures` decides which printings are
extracted: one reference per picture (`pictures.py`), the picture's other printings spooled
with their thumbnails only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from app.common.progress import Progress
from app.common.reference import ReferenceImage
from app.recognition.features.extraction import extract_features
from app.recognition.features.selection import preselect
from app.recognition.index import pictures
from app.recognition.index.thumbnails import (
    encode_thumbnail,
    make_color_thumbnail,
    make_thumbnail,
)
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)


# -- one reference -------------------------------------------------------------------------
@dataclass
class _Card:
    """What the build keeps of one reference: candidates (best first) and its thumbnails,
    encoded (`encode_thumbnail`)."""

    entry: dict[str, Any]
    descriptors: np.ndarray  # uint8 [n,128]
    keypoints: np.ndarray  # float32 [n,2]
    ref_size: tuple[float, float]
    thumb_image: bytes
    color_image: bytes = b""  # the colour thumbnail (none: the art check compares grey only)
    thumb: np.ndarray | None = field(default=None, repr=False)  # gray, to compare pictures
    picture: int = -1  # slot of the reference standing for its picture (-1: itself)


def _prepare(ref: ReferenceImage, params: FeatureParams, describe: bool = True
             ) -> _Card | None:
    """What the bundle keeps of one reference; `describe=False`: its thumbnails only (a
    printing of a picture another printing stands for in the index, `pictures.py`)."""
    try:
        if ref.precomputed is not None:
            features, thumb = ref.precomputed()
        else:
            features = extract_features(ref.load(), params, role="reference",
                                        describe=describe)
            thumb = make_thumbnail(features, params)
    except Exception as exc:  # a broken image must not sink a nightly build of 90k cards
        log.warning("skipping %s face %d: %s", ref.card_id, ref.face, exc)
        return None
    chosen = (preselect(features, params.ref_candidates) if describe
              else np.zeros(0, np.int64))
    encoded = encode_thumbnail(thumb, params, params.thumb_quality)
    if encoded is None:
        log.warning("skipping %s face %d: thumbnail not encodable", ref.card_id, ref.face)
        return None
    color = make_color_thumbnail(features, params)
    color_encoded = (encode_thumbnail(color, params, params.color_quality)
                     if color is not None else None)
    height, width = features.gray.shape[:2]
    return _Card(
        entry=ref.id_entry(),
        descriptors=features.descriptors[chosen],
        keypoints=features.keypoints[chosen],
        ref_size=(float(width), float(height)),
        thumb_image=encoded,
        color_image=color_encoded or b"",
        thumb=thumb,
    )


def _ordered_map(
    func: Callable[[ReferenceImage], Any], items: Iterable[ReferenceImage], workers: int
) -> Iterator[tuple[ReferenceImage, Any]]:
    """Like Executor.map but bounded (does not submit the whole catalogue up front)."""
    if workers <= 1:
        for item in items:
            yield item, func(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[tuple[ReferenceImage, Any]] = []
        for item in items:
            pending.append((item, pool.submit(func, item)))
            if len(pending) >= workers * 4:
                head, future = pending.pop(0)
                yield head, future.result()
        for head, future in pending:
            yield head, future.result()


class Spool:
    """Candidates of every card in append-only files; read back by card ranges with plain
    reads (not a memory map, whose touched pages would count as the build process's memory)."""

    def __init__(self, directory: Path, first_slot: int = 0) -> None:
        self.first_slot = first_slot  # the bundle slot of the spool's first card
        self.desc_path = directory / ".candidates.spool"
        self.kp_path = directory / ".keypoints.spool"
        self.thumb_path = directory / ".thumbs.spool"
        self.color_path = directory / ".colors.spool"
        self._paths = (self.desc_path, self.kp_path, self.thumb_path, self.color_path)
        self._files: list[BinaryIO] = [p.open("wb") for p in self._paths]
        self.counts: list[int] = []
        self.thumb_sizes: list[int] = []
        self.color_sizes: list[int] = []
        self.entries: list[dict[str, Any]] = []
        self.ref_sizes: list[tuple[float, float]] = []
        self.pictures: list[int] = []  # slot of each card's picture reference

    def append(self, card: _Card) -> int:
        """Spool one card; its bundle slot."""
        desc, kp, thumbs, colors = self._files
        desc.write(np.ascontiguousarray(card.descriptors, np.uint8).tobytes())
        kp.write(np.ascontiguousarray(card.keypoints, np.float32).tobytes())
        thumbs.write(card.thumb_image)
        colors.write(card.color_image)
        self.counts.append(len(card.descriptors))
        self.thumb_sizes.append(len(card.thumb_image))
        self.color_sizes.append(len(card.color_image))
        self.entries.append(card.entry)
        self.ref_sizes.append(card.ref_size)
        slot = self.first_slot + len(self.counts) - 1
        self.pictures.append(slot if card.picture < 0 else card.picture)
        return slot

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.thumb_offsets = np.concatenate([[0], np.cumsum(self.thumb_sizes)]).astype(np.int64)
        self.color_offsets = np.concatenate([[0], np.cumsum(self.color_sizes)]).astype(np.int64)

    def descriptors(self, first: int, last: int) -> np.ndarray:
        """Candidates of cards [first, last) as uint8 [n,128]."""
        start, stop = int(self.offsets[first]), int(self.offsets[last])
        return np.fromfile(self.desc_path, np.uint8, (stop - start) * 128, offset=start * 128
                           ).reshape(-1, 128)

    def keypoints(self, first: int, last: int) -> np.ndarray:
        start, stop = int(self.offsets[first]), int(self.offsets[last])
        return np.fromfile(self.kp_path, np.float32, (stop - start) * 2, offset=start * 8
                           ).reshape(-1, 2)

    def thumbs(self, first: int, last: int) -> tuple[bytes, np.ndarray]:
        return self._blobs(self.thumb_path, self.thumb_offsets, first, last)

    def colors(self, first: int, last: int) -> tuple[bytes, np.ndarray]:
        return self._blobs(self.color_path, self.color_offsets, first, last)

    @staticmethod
    def _blobs(path: Path, offsets: np.ndarray, first: int, last: int
               ) -> tuple[bytes, np.ndarray]:
        start, stop = int(offsets[first]), int(offsets[last])
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read(stop - start)
        return data, offsets[first : last + 1] - start

    def remove(self) -> None:
        for fh in self._files:
            fh.close()
        for path in self._paths:
            path.unlink(missing_ok=True)


class Pictures:
    """Spools references and the printings that share their picture (`pictures.py`): each
    picture's first printing is extracted and indexed; its other printings are prepared
    without SIFT and point at it when their images agree, else are extracted as references
    of their own. `known` maps picture keys to (slot, signature) of references already
    in the bundle (an incremental build): `pictures.signature`s are kept for pictures with
    several printings only (~2 KB each)."""

    def __init__(self, params: FeatureParams, spool: Spool, workers: int, progress: Progress,
                 known: dict[str, tuple[int, np.ndarray]] | None = None) -> None:
        self.params = params
        self.spool = spool
        self.workers = workers
        self.progress = progress
        self.references: dict[str, tuple[int, np.ndarray]] = dict(known or {})
        self.skipped = 0
        self.shared = 0  # printings spooled without features of their own
        self.disagreed = 0  # printings whose catalogue picture their image contradicted
        self.undescribed_strays = 0  # ... of which the cache held thumbnails only
        self._wanted: set[str | None] = set()

    def add(self, refs: list[ReferenceImage]) -> None:
        firsts, others = pictures.split(refs, picture_of)
        self._wanted = {picture_of(r) for r in others}
        news = [r for r in firsts if picture_of(r) not in self.references]
        others += [r for r in firsts if picture_of(r) in self.references]
        self._spool(news, describe=True)
        strays: list[ReferenceImage] = []
        for ref, card in self._prepared(others, describe=False):
            known = self.references.get(picture_of(ref) or "")
            if known is None or card.thumb is None or not pictures.agree(
                    pictures.signature(card.thumb), known[1]):
                if known is not None:
                    self.disagreed += 1
                    log.info("%s face %d: its image differs from its picture's reference "
                             "(slot %d); indexed on its own", ref.card_id, ref.face, known[0])
                strays.append(ref)
                continue
            card.picture = known[0]
            self.spool.append(card)
            self.shared += 1
        self._spool(strays, describe=True, register=False)

    def _spool(self, refs: list[ReferenceImage], *, describe: bool, register: bool = True
               ) -> None:
        for ref, card in self._prepared(refs, describe):
            if describe and not len(card.descriptors):
                self.undescribed_strays += not register
                log.warning("%s face %d: no features to index (an image without detail, or "
                            "a cache entry of thumbnails only)", ref.card_id, ref.face)
            slot = self.spool.append(card)
            key = picture_of(ref)
            if (register and key is not None and key in self._wanted
                    and key not in self.references and card.thumb is not None):
                self.references[key] = (slot, pictures.signature(card.thumb))

    def _prepared(self, refs: list[ReferenceImage], describe: bool
                  ) -> Iterator[tuple[ReferenceImage, _Card]]:
        for ref, card in _ordered_map(lambda r: _prepare(r, self.params, describe), refs,
                                      self.workers):
            self.progress.update(1)
            if card is None:
                self.skipped += 1
                continue
            yield ref, card


def picture_of(ref: ReferenceImage) -> str | None:
    """The reference's picture key (`pictures.py`), None when the catalogue gives none."""
    key = ref.extra.get("picture")
    return str(key) if key else None


def described(spool: Spool) -> np.ndarray:
    """Spool rows of the cards with descriptors: the references of their pictures (the
    other printings of a picture have none, and must not thin the samples)."""
    return np.flatnonzero(np.asarray(spool.counts, np.int64) > 0)

