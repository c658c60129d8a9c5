"""Build a descriptor bundle (format in `bundle.py`): in full, or incrementally from the
release before it.

Full build, streamed so that 100k printings fit in a few GB of RAM:
 1. extract (or take from the feature cache) each reference's features; keep its best
    `ref_candidates` descriptors (`selection.preselect`) in a spool file on disk;
 2. train the index on a sample of cards: the coarse centroids by two-level k-means (cost
    grows with sqrt(nlist), not nlist), then the PQ codebooks;
 3. stop words: a scratch copy of the trained index holds the candidates of a random sample
    of cards; each card's candidates near-duplicated in >= stop_min_cards other sampled cards
    are dropped, the first `ref_keep` others are indexed with id `slot << LOCAL_BITS | local`.
    One coarse assignment per vector serves both the scratch search and the add;
 4. write the index, the stop-word sample, per-card shards, the id map, then the manifest.

Incremental build (a nightly refresh that changes a few % of the printings): the trained
index of the previous release is reused; printings whose image key is unchanged keep their
slot, their indexed vectors and their shard (hard-linked when no slot of it changed); gone
printings leave an empty slot (their vectors stay, ignored, until a full build); new ones are
appended. Only new images are extracted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import faiss
import h5py
import numpy as np

from app.common.progress import Progress
from app.common.reference import ReferenceImage
from app.recognition.features.extraction import Features, extract_features, rootsift
from app.recognition.features.selection import preselect
from app.recognition.index import mapped_lists, pictures
from app.recognition.index.bundle import (
    FORMAT_VERSION,
    ID_MAP_FILE,
    INDEX_FILE,
    KP_SCALE,
    LOCAL_BITS,
    MANIFEST_FILE,
    SHARD_SLOTS,
    STOPWORDS_FILE,
    Bundle,
    BundleError,
    IdMap,
    manifest_params,
    name_hash,
    read_manifest,
    sha256_file,
    shard_name,
)
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)

_CARDS_PER_CHUNK = 256  # cards per block through FAISS in the stop-word/add pass


def make_thumbnail(features: Features, params: FeatureParams) -> np.ndarray:
    """The reference's equalised gray image at the fixed thumbnail size (photometric check)."""
    return cv2.resize(
        features.gray, (params.thumb_width, params.thumb_height), interpolation=cv2.INTER_AREA
    )


def make_color_thumbnail(features: Features, params: FeatureParams) -> np.ndarray | None:
    """The reference in colour (BGR) at 1/`color_scale` of the thumbnail's size, for the art
    check's colour (layout.py); None without colour (a gray image, `color_scale` 0)."""
    if not params.color_scale or features.color is None:
        return None
    size = color_size(params)
    if features.color.shape[:2] == (size[1], size[0]):
        return features.color
    out: np.ndarray = cv2.resize(features.color, size, interpolation=cv2.INTER_AREA)
    return out


_QUALITY_FLAG = {"jpg": cv2.IMWRITE_JPEG_QUALITY, "webp": cv2.IMWRITE_WEBP_QUALITY}


def encode_thumbnail(image: np.ndarray, params: FeatureParams, quality: int) -> bytes | None:
    """A thumbnail as the bundle stores it (`params.thumb_format`; the reader's
    `cv2.imdecode` tells the formats apart, so shards of either kind mix). None when the
    encoder refuses it."""
    fmt = params.thumb_format
    ok, data = cv2.imencode(f".{fmt}", image, [_QUALITY_FLAG[fmt], quality])
    return data.tobytes() if ok else None


def color_size(params: FeatureParams) -> tuple[int, int]:
    """(width, height) of the colour thumbnail."""
    scale = max(1, params.color_scale)
    return max(1, round(params.thumb_width / scale)), max(1, round(params.thumb_height / scale))


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


class _Spool:
    """Candidates of every card in append-only files; read back by card ranges with plain
    reads (not a memory map, whose touched pages would count as the builder's memory)."""

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


class _Pictures:
    """Spools references and the printings that share their picture (`pictures.py`): each
    picture's first printing is extracted and indexed; its other printings are prepared
    without SIFT and point at it when their images agree, else are extracted as references
    of their own. `known` maps picture keys to (slot, signature) of references already
    in the bundle (an incremental build): `pictures.signature`s are kept for pictures with
    several printings only (~2 KB each)."""

    def __init__(self, params: FeatureParams, spool: _Spool, workers: int, progress: Progress,
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
        firsts, others = pictures.split(refs, _picture_of)
        self._wanted = {_picture_of(r) for r in others}
        news = [r for r in firsts if _picture_of(r) not in self.references]
        others += [r for r in firsts if _picture_of(r) in self.references]
        self._spool(news, describe=True)
        strays: list[ReferenceImage] = []
        for ref, card in self._prepared(others, describe=False):
            known = self.references.get(_picture_of(ref) or "")
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
            key = _picture_of(ref)
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


def _picture_of(ref: ReferenceImage) -> str | None:
    key = ref.extra.get("picture")
    return str(key) if key else None


# -- training --------------------------------------------------------------------------------
def choose_nlist(n: int, params: FeatureParams) -> int:
    """A power of two near 4*sqrt(N) (FAISS's guideline is 4-16*sqrt(N); the low end, since
    each photo searches ~1500 vectors), at least 39 vectors per list."""
    nlist = params.nlist or 1 << max(4, round(np.log2(max(1.0, 4 * np.sqrt(n)))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    return nlist


def _factory(nlist: int, params: FeatureParams) -> str:
    coarse = f"IVF{nlist}_HNSW32" if params.coarse == "hnsw" else f"IVF{nlist}"
    codes = f"PQ{params.pq_m}x4fs" if params.pq_nbits == 4 else f"PQ{params.pq_m}x{params.pq_nbits}"
    return f"{coarse},{codes}"


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], k, niter=12, seed=seed, max_points_per_centroid=256,
                      spherical=False)
    km.train(x)
    return np.asarray(km.centroids, np.float32)


def _coarse_centroids(x: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """k-means with nlist centroids. Above 1024, two levels (sqrt(nlist) clusters, then each
    split in proportion to its size): k-means costs points x centroids, so a flat 16k-way
    k-means on 650k points would take longer than indexing 100k cards."""
    if nlist <= 1024:
        return _kmeans(x, nlist, seed)
    first = int(np.sqrt(nlist))
    top = _kmeans(x, first, seed)
    _, assign = faiss.knn(x, top, 1)
    assign = assign.ravel()
    sizes = np.bincount(assign, minlength=first)
    shares = np.cumsum(sizes) * nlist // max(1, int(sizes.sum()))
    split = np.diff(np.concatenate([[0], shares]))
    parts = []
    for cluster in range(first):
        members = x[assign == cluster]
        want = int(split[cluster])
        if want <= 0:
            continue
        if len(members) <= want:  # too few points: keep them (and pad with the parent)
            pad = np.repeat(top[cluster : cluster + 1], want - len(members), axis=0)
            parts.append(np.vstack([members, pad]) if len(members) else pad)
        else:
            parts.append(_kmeans(members, want, seed + cluster + 1))
    return np.vstack(parts)[:nlist].astype(np.float32)


def _sample_cards(cards: np.ndarray, sample: int, seed: int) -> np.ndarray:
    """A random sample of `cards` (spool rows), in order; all of them when `sample` is 0."""
    rng = np.random.default_rng(seed)
    if sample <= 0 or sample >= len(cards):
        return cards
    return np.sort(rng.choice(cards, size=sample, replace=False))


def _described(spool: _Spool) -> np.ndarray:
    """Spool rows of the cards with descriptors: the references of their pictures (the
    other printings of a picture have none, and must not thin the samples)."""
    return np.flatnonzero(np.asarray(spool.counts, np.int64) > 0)


def _train(spool: _Spool, params: FeatureParams, seed: int) -> Any:
    described = _described(spool)
    cards = len(described)
    total = int(spool.offsets[-1])
    nlist = choose_nlist(min(total, cards * params.ref_keep), params)
    want = max(nlist * params.train_per_list, 40 * (1 << params.pq_nbits) * 4)
    # whole cards, chosen at random, until the sample is large enough (contiguous reads)
    per_card = max(1, total // max(1, cards))
    order = _sample_cards(described, min(cards, want // per_card + 1), seed)
    x = np.concatenate([rootsift(spool.descriptors(int(c), int(c) + 1)) for c in order])
    if len(x) < 40 * (1 << params.pq_nbits):
        raise BundleError(f"only {len(x)} descriptors: too few to train IVF-PQ")
    index: Any = faiss.index_factory(128, _factory(nlist, params))  # already downcast
    if isinstance(index, faiss.IndexIVFPQ):
        # polysemous training (a code permutation for Hamming filtering, never used here)
        # took 95% of the training time
        index.do_polysemous_training = False  # type: ignore[attr-defined]
    index.by_residual = params.pq_residual
    index.cp.niter = 12
    index.pq.cp.niter = 10
    centroids = _coarse_centroids(x, nlist, seed)
    quantizer = faiss.downcast_index(index.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efConstruction = 40
    quantizer.add(centroids)
    index.train(x[: max(65536, 40 * (1 << params.pq_nbits))])  # the PQ (quantizer is set)
    return index


# -- stop words and kept descriptors -------------------------------------------------------
def _scratch(index: Any, spool: _Spool, params: FeatureParams, seed: int, progress: bool
             ) -> Any:
    """The trained index holding the candidates of a sample of cards, id = card row."""
    if params.stop_min_cards <= 0:
        return None
    scratch = faiss.clone_index(index)
    # references only: a picture's other printings hold no descriptors (pictures.py), so
    # a picture counts once however many printings show it
    sample = _sample_cards(_described(spool), params.stop_sample_cards, seed + 1)
    with Progress("stop-word sample", total=len(sample), unit="card", enabled=progress) as bar:
        for card in sample:
            desc = spool.descriptors(int(card), int(card) + 1)
            if len(desc):
                scratch.add_with_ids(rootsift(desc), np.full(len(desc), card, np.int64))
            bar.update(1)
    return scratch


def _assign(index: Any, x: np.ndarray, params: FeatureParams, probes: int
            ) -> tuple[np.ndarray, np.ndarray]:
    quantizer = faiss.downcast_index(index.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(params.hnsw_ef, probes)
    dist, lists = quantizer.search(x, probes)
    return dist, lists


def _stop_flags(
    scratch: Any,
    x: np.ndarray,
    owners: np.ndarray,
    coarse: tuple[np.ndarray, np.ndarray],
    params: FeatureParams,
) -> np.ndarray:
    """True where a descriptor has near-duplicates in >= stop_min_cards other sampled cards."""
    if scratch is None or len(x) == 0:
        return np.zeros(len(x), bool)
    k = max(8, 2 * params.stop_min_cards + 2)
    dist, lists = coarse
    scratch.nprobe = lists.shape[1]  # the build's own copy: no other thread searches it
    d, ids = scratch.search_preassigned(x, k, lists, dist)
    near = (ids >= 0) & (d < params.stop_radius)
    cards = np.where(near, ids, -1)
    cards[cards == owners[:, None]] = -1  # the descriptor's own card
    cards.sort(axis=1)
    distinct = cards >= 0
    distinct[:, 1:] &= cards[:, 1:] != cards[:, :-1]
    flags: np.ndarray = distinct.sum(axis=1) >= params.stop_min_cards
    return flags


def _keep(counts: np.ndarray, stop: np.ndarray, limit: int) -> np.ndarray:
    """Mask of the first `limit` non-stop candidates of each card (candidates come best
    first); `counts` are the cards' candidate counts, in order."""
    keep = ~stop
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.cumsum(keep) - 1
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    before = np.concatenate([[0], np.cumsum(keep)])[starts]  # kept ones before each card
    rank = rank - before[owner]
    mask: np.ndarray = keep & (rank < limit)
    return mask


def _index_cards(
    index: Any,
    scratch: Any,
    descriptors: np.ndarray,
    counts: np.ndarray,
    rows: np.ndarray,
    slots: np.ndarray,
    params: FeatureParams,
) -> tuple[np.ndarray, int]:
    """Stop-word test and add for a block of cards; returns (kept mask, stop-word count).
    `rows` are the cards' rows in the scratch sample's numbering (for their own-card test),
    `slots` their slots in the bundle."""
    x = rootsift(descriptors)
    owners = np.repeat(rows, counts)
    probes = max(1, params.nprobe // 4) if scratch is not None else 1
    coarse = _assign(index, x, params, probes)
    stop = _stop_flags(scratch, x, owners, coarse, params)
    keep = _keep(counts, stop, min(params.ref_keep, 1 << LOCAL_BITS))
    local = np.cumsum(keep) - 1
    starts = np.concatenate([[0], np.cumsum(keep)])[np.concatenate([[0], np.cumsum(counts)[:-1]]
                                                                   ).astype(np.int64)]
    local = local - np.repeat(starts, counts)
    ids = (np.repeat(slots, counts).astype(np.int64) << LOCAL_BITS) | local
    chosen = np.flatnonzero(keep)
    if len(chosen):
        # add_with_ids assigns the lists again: IVF's add_core with precomputed lists writes
        # unpacked codes into fast-scan's blocked lists (garbage distances, measured)
        index.add_with_ids(np.ascontiguousarray(x[chosen]), ids[chosen])
    return keep, int(stop.sum())


@dataclass
class _Kept:
    """What a shard keeps of one indexed card."""

    keypoints: np.ndarray  # float32 [n,2], in `local` order
    thumb: bytes
    ref_size: tuple[float, float]
    entry: dict[str, Any]
    color: bytes = b""
    picture: int = -1  # slot of its picture's reference


def _index_spool(
    index: Any, scratch: Any, spool: _Spool, params: FeatureParams, first_slot: int,
    in_sample: bool, stats: dict[str, int],
) -> Iterator[_Kept]:
    """Index every card of the spool (slots from `first_slot`), block by block; yield what
    its shard keeps. `in_sample`: the spool's cards are the ones the stop-word sample was
    drawn from (a card must not count its own descriptors as near-duplicates)."""
    cards = len(spool.counts)
    for first in range(0, cards, _CARDS_PER_CHUNK):
        last = min(cards, first + _CARDS_PER_CHUNK)
        counts = np.asarray(spool.counts[first:last], np.int64)
        rows = np.arange(first, last) if in_sample else np.full(last - first, -1)
        keep, stops = _index_cards(index, scratch, spool.descriptors(first, last), counts,
                                   rows, np.arange(first, last) + first_slot, params)
        stats["stop_words"] += stops
        kps = spool.keypoints(first, last)
        thumbs, offsets = spool.thumbs(first, last)
        colors, color_offsets = spool.colors(first, last)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for i in range(last - first):
            a, b = int(bounds[i]), int(bounds[i + 1])
            yield _Kept(kps[a:b][keep[a:b]], thumbs[int(offsets[i]) : int(offsets[i + 1])],
                        spool.ref_sizes[first + i], spool.entries[first + i],
                        colors[int(color_offsets[i]) : int(color_offsets[i + 1])],
                        spool.pictures[first + i])


# -- shards ----------------------------------------------------------------------------------
class _ShardWriter:
    """Accumulates the per-card data of one shard, then writes it as an h5 file."""

    def __init__(self) -> None:
        self.keypoints: list[np.ndarray] = []
        self.thumbs: list[bytes] = []
        self.colors: list[bytes] = []
        self.ref_size: list[tuple[float, float]] = []
        self.names: list[int] = []
        self.pictures: list[int] = []

    def add(self, keypoints: np.ndarray, thumb: bytes, ref_size: tuple[float, float],
            name: str | None, color: bytes = b"", picture: int = -1) -> None:
        fixed = np.clip(np.rint(keypoints * KP_SCALE), 0, 65535).astype(np.uint16)
        self.keypoints.append(fixed.reshape(-1, 2))
        self.thumbs.append(thumb)
        self.colors.append(color)
        self.ref_size.append(ref_size)
        self.names.append(name_hash(name) if name is not None else -1)
        self.pictures.append(picture)

    def add_kept(self, kept: _Kept) -> None:
        self.add(kept.keypoints, kept.thumb, kept.ref_size, kept.entry["name"], kept.color,
                 kept.picture)

    def add_empty(self) -> None:
        self.add(np.zeros((0, 2), np.float32), b"", (0.0, 0.0), None)

    def __len__(self) -> int:
        return len(self.ref_size)

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        counts = [len(k) for k in self.keypoints]
        sizes = [len(t) for t in self.thumbs]
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("kp_offsets", data=np.concatenate([[0], np.cumsum(counts)])
                              .astype(np.int64))
            h5.create_dataset("keypoints", data=np.concatenate(self.keypoints)
                              if self.keypoints else np.zeros((0, 2), np.uint16))
            h5.create_dataset("thumb_offsets", data=np.concatenate([[0], np.cumsum(sizes)])
                              .astype(np.int64))
            h5.create_dataset("thumbs", data=np.frombuffer(b"".join(self.thumbs), np.uint8))
            colors = [len(c) for c in self.colors]
            h5.create_dataset("color_offsets", data=np.concatenate([[0], np.cumsum(colors)])
                              .astype(np.int64))
            h5.create_dataset("colors", data=np.frombuffer(b"".join(self.colors), np.uint8))
            h5.create_dataset("ref_size", data=np.asarray(self.ref_size, np.float32)
                              .reshape(-1, 2))
            h5.create_dataset("name_hash", data=np.asarray(self.names, np.int64))
            h5.create_dataset("picture", data=np.asarray(self.pictures, np.int64))
        os.replace(tmp, path)


# -- writing -----------------------------------------------------------------------------------
def _write_index(index: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def _write_id_map(path: Path, entries: list[dict[str, Any] | None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def _finish(
    out_dir: Path,
    params: FeatureParams,
    index: Any,
    entries: list[dict[str, Any] | None],
    shard_count: int,
    shard_slots: int,
    counts: dict[str, Any],
    timings: dict[str, float],
    started: float,
    parent: str | None,
) -> dict[str, Any]:
    _write_id_map(out_dir / ID_MAP_FILE, entries)
    names: list[str] = [INDEX_FILE, ID_MAP_FILE]
    names += [shard_name(i) for i in range(shard_count)]
    if (out_dir / STOPWORDS_FILE).exists():
        names.append(STOPWORDS_FILE)
    files: dict[str, dict[str, Any]] = {
        name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size}
        for name in names
    }
    built_at = datetime.now(UTC)
    short = hashlib.sha256("".join(str(f["sha256"]) for f in files.values()).encode()
                           ).hexdigest()
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": f"{built_at:%Y%m%dT%H%M%SZ}-{short[:10]}",
        "built_at": built_at.isoformat(),
        "build_seconds": round(time.perf_counter() - started, 2),
        "extract_seconds": round(timings.get("extract", 0.0), 2),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "parent": parent,
        "params": params.to_dict(),
        "index": {
            "type": type(index).__name__,
            "factory": _factory(int(index.nlist), params),
            "nlist": int(index.nlist),
            "pq_m": params.pq_m,
            "pq_nbits": params.pq_nbits,
            "by_residual": params.pq_residual,
        },
        "counts": {
            "cards": sum(1 for e in entries if e is not None),
            "slots": len(entries),
            # vectors in the index: the descriptors kept, and `padding_vectors` copies of
            # some of them that fill the lists' last blocks (mapped_lists.py)
            "indexed_descriptors": int(index.ntotal),
            **counts,
        },
        "shard_slots": shard_slots,
        "shards": [shard_name(i) for i in range(shard_count)],
        "files": files,
    }
    tmp = out_dir / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST_FILE)
    return manifest


def _fresh_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"{out_dir} is not empty; a bundle is built into a fresh directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


# -- full build --------------------------------------------------------------------------------
def build_bundle(
    refs: Iterable[ReferenceImage],
    out_dir: Path,
    params: FeatureParams,
    *,
    progress: bool = True,
    workers: int = 1,
    seed: int = 0,
    total: int | None = None,
    shard_slots: int = SHARD_SLOTS,
) -> dict[str, Any]:
    """Extract, index and write a bundle into `out_dir` (absent or empty); returns the manifest.
    FAISS uses `workers` OpenMP threads in this (the calling) thread only: OpenMP's thread
    count is per calling thread, so request threads serving meanwhile keep theirs."""
    with _omp_threads(workers):
        return _build_full(refs, out_dir, params, progress=progress, workers=workers, seed=seed,
                           total=total, shard_slots=shard_slots)


@contextlib.contextmanager
def _omp_threads(count: int) -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, count))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _build_full(
    refs: Iterable[ReferenceImage],
    out_dir: Path,
    params: FeatureParams,
    *,
    progress: bool,
    workers: int,
    seed: int,
    total: int | None,
    shard_slots: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    out_dir = _fresh_dir(out_dir)
    timings: dict[str, float] = {}
    spool = _Spool(out_dir)
    refs = list(refs)
    try:
        with Progress("extracting", total=len(refs), unit="img", enabled=progress) as bar:
            shared = _Pictures(params, spool, workers, bar)
            shared.add(refs)
        skipped = shared.skipped
        spool.close()
        timings["extract"] = time.perf_counter() - started
        cards = len(spool.counts)
        if not cards:
            raise BundleError("no reference image could be read; nothing to index")
        log.info("build: %d references, %d candidate descriptors; training", cards,
                 int(spool.offsets[-1]))
        clock = time.perf_counter()
        index = _train(spool, params, seed)
        timings["train"] = time.perf_counter() - clock
        clock = time.perf_counter()
        log.info("build: index %s trained in %.0f s; stop-word sample next",
                 _factory(int(index.nlist), params), timings["train"])
        scratch = _scratch(index, spool, params, seed, progress)
        if scratch is not None:
            _write_index(scratch, out_dir / STOPWORDS_FILE)
        timings["stop_sample"] = time.perf_counter() - clock
        clock = time.perf_counter()
        stats = {"stop_words": 0}
        shard = _ShardWriter()
        shard_count = 0
        with Progress("indexing", total=cards, unit="card", enabled=progress) as bar:
            for kept in _index_spool(index, scratch, spool, params, 0, True, stats):
                shard.add_kept(kept)
                if len(shard) == shard_slots:
                    shard.write(out_dir / shard_name(shard_count))
                    shard_count += 1
                    shard = _ShardWriter()
                bar.update(1)
        if len(shard) or shard_count == 0:
            shard.write(out_dir / shard_name(shard_count))
            shard_count += 1
        timings["index"] = time.perf_counter() - clock
        log.info("build: %d vectors indexed; writing the index and checksums", index.ntotal)
        padding = mapped_lists.to_mapped(index)
        _write_index(index, out_dir / INDEX_FILE)
        entries: list[dict[str, Any] | None] = list(spool.entries)
        counts_out = {
            "candidates": int(spool.offsets[-1]),
            "stop_words": stats["stop_words"],
            "skipped_images": skipped,
            "reused_cards": 0,
            "new_cards": cards,
            "references": len(_described(spool)),
            "padding_vectors": padding,
            "shared_pictures": shared.shared,
            "picture_disagreements": shared.disagreed,
        }
    finally:
        spool.remove()
    return _finish(out_dir, params, index, entries, shard_count, shard_slots, counts_out,
                   timings, started, None)


# -- incremental build -------------------------------------------------------------------------
def incremental_plan(previous: Path, keys: list[str | None], params: FeatureParams,
                     max_changed: float) -> str | None:
    """Why `previous` cannot be extended to the catalogue of `keys` (None when it can)."""
    try:
        manifest = read_manifest(previous)
    except BundleError as exc:
        return str(exc)
    try:
        old = manifest_params(manifest)
    except (KeyError, ValueError, TypeError):
        return "unreadable parameters"
    differ = old.build_differences(params)
    if differ:
        return f"parameters changed ({', '.join(differ)})"
    if manifest.get("format_version") != FORMAT_VERSION:
        # before format 4 every printing was its own picture, in lists each process copied
        return f"format {manifest.get('format_version')} release (this build writes " \
               f"format {FORMAT_VERSION})"
    if any(k is None for k in keys):
        return "references without image keys"
    slots = int(manifest["counts"]["slots"])
    cards = int(manifest["counts"]["cards"])
    if not cards:
        return "empty previous release"
    try:
        id_map = IdMap((previous / ID_MAP_FILE).read_bytes())
    except OSError as exc:
        return f"no readable id map ({exc})"
    old_keys = {e["key"] for e in id_map if e is not None}
    new_keys = set(keys)
    changed = len(new_keys - old_keys) + len(old_keys - new_keys)
    if changed > max_changed * cards:
        return f"{changed} of {cards} printings changed (over {max_changed:.0%})"
    empty = slots - cards + len(old_keys - new_keys)
    if empty > 0.2 * (slots + len(new_keys - old_keys)):
        return f"{empty} empty slots: time to compact"
    return None


def build_incremental(
    refs: Iterable[ReferenceImage],
    out_dir: Path,
    params: FeatureParams,
    previous: Path,
    *,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Extend the bundle at `previous` to exactly the printings of `refs` (see module doc).
    Only references whose key is new are prepared; the rest keep their slot and vectors."""
    with _omp_threads(workers):
        return _build_incremental(refs, out_dir, params, previous, progress=progress,
                                  workers=workers)


class FullBuildNeeded(BundleError):
    """The previous release cannot be extended to this catalogue; the message says why."""


def _build_incremental(
    refs: Iterable[ReferenceImage],
    out_dir: Path,
    params: FeatureParams,
    previous: Path,
    *,
    progress: bool,
    workers: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    out_dir = _fresh_dir(out_dir)
    timings: dict[str, float] = {}
    old = Bundle.open(previous, expected_params=params)
    try:
        old_entries = list(old.iter_entries())
        by_key = {e["key"]: slot for slot, e in enumerate(old_entries) if e is not None}
        refs = list(refs)

        def stays(ref: ReferenceImage) -> bool:
            """Same image, same picture: keeps its slot. A printing whose picture changed
            moves (its slot is emptied, it is added again)."""
            slot = by_key.get(ref.key)
            return slot is not None and (old_entries[slot] or {}).get("picture") == (
                ref.extra.get("picture"))

        new_refs = [r for r in refs if not stays(r)]
        staying = {by_key[r.key] for r in refs if stays(r)}
        gone = [slot for slot, e in enumerate(old_entries) if e is not None
                and slot not in staying]
        orphans = [slot for slot in gone if int(old.picture[slot]) == slot
                   and any(int(old.picture[s]) == slot for s in staying)]
        if orphans:
            raise FullBuildNeeded(
                f"{len(orphans)} printing(s) indexed for a picture that other printings still "
                f"show are gone (slot {orphans[0]}): their pictures need a new reference")
        # entries: old ones (their metadata refreshed from refs), gone ones emptied
        entries: list[dict[str, Any] | None] = list(old_entries)
        changed_slots: set[int] = set(gone)
        for ref in refs:
            slot = by_key.get(ref.key)
            if slot in staying and entries[slot] != ref.id_entry():
                entries[slot] = ref.id_entry()  # same image, new metadata (id map only)
        for slot in gone:
            entries[slot] = None
        # the references already indexed for the pictures of new printings
        wanted_pictures = {_picture_of(r) for r in new_refs} - {None}
        known = {
            str((entries[slot] or {})["picture"]): (slot,
                                                     pictures.signature(old.thumbnail(slot)))
            for slot in sorted(staying)
            if int(old.picture[slot]) == slot and old.kept[slot] > 0
            and (entries[slot] or {}).get("picture") in wanted_pictures
        }

        clock = time.perf_counter()
        index = faiss.read_index(str(previous / INDEX_FILE))
        scratch = (faiss.read_index(str(previous / STOPWORDS_FILE))
                   if (previous / STOPWORDS_FILE).exists() else None)
        # Vectors of gone printings stay in the index, under a slot the id map marks empty
        # (the query ignores its votes) until a full build compacts them away (see
        # incremental_plan). Not remove_ids: on fast-scan lists, vectors added after a
        # removal were found for 37% of queries instead of 100% (faiss 1.15, measured).
        timings["load"] = time.perf_counter() - clock

        clock = time.perf_counter()
        spool = _Spool(out_dir, first_slot=len(entries))
        try:
            with Progress("extracting", total=len(new_refs), unit="img",
                          enabled=progress) as bar:
                shared = _Pictures(params, spool, workers, bar, known)
                shared.add(new_refs)
            skipped = shared.skipped
            spool.close()
            if shared.undescribed_strays:
                raise FullBuildNeeded(
                    f"{shared.undescribed_strays} printing(s) differ from their picture's "
                    "reference and have no features of their own")
            timings["extract"] = time.perf_counter() - clock
            clock = time.perf_counter()
            added = len(spool.counts)
            new_kp: dict[int, _Kept] = {}
            stats = {"stop_words": 0}
            adder = mapped_lists.blocks_like(index)
            for kept in _index_spool(adder, scratch, spool, params, len(entries), False, stats):
                new_kp[len(entries)] = kept
                entries.append(kept.entry)
            padding = mapped_lists.append_blocks(index, adder)
            timings["index"] = time.perf_counter() - clock
        finally:
            spool.remove()
        changed_slots.update(new_kp)

        # shards: hard-link those with no changed slot, rewrite the others
        clock = time.perf_counter()
        shard_slots = old.shard_slots
        shard_count = (len(entries) + shard_slots - 1) // shard_slots
        linked = 0
        for number in range(shard_count):
            lo, hi = number * shard_slots, min(len(entries), (number + 1) * shard_slots)
            name = shard_name(number)
            if (number < len(old.manifest["shards"])
                    and hi <= len(old_entries) and not any(s in changed_slots
                                                           for s in range(lo, hi))):
                os.link(previous / name, out_dir / name)
                linked += 1
                continue
            writer = _ShardWriter()
            for slot in range(lo, hi):
                if slot in new_kp:
                    writer.add_kept(new_kp[slot])
                elif slot < len(old_entries) and (entry := entries[slot]) is not None:
                    writer.add(old.keypoints(slot), old.thumbnail_bytes(slot),
                               (float(old.ref_size[slot][0]), float(old.ref_size[slot][1])),
                               str(entry["name"]), old.color_bytes(slot),
                               int(old.picture[slot]))
                else:
                    writer.add_empty()
            writer.write(out_dir / name)
        timings["shards"] = time.perf_counter() - clock
        _write_index(index, out_dir / INDEX_FILE)
        if scratch is not None:
            os.link(previous / STOPWORDS_FILE, out_dir / STOPWORDS_FILE)
        counts_out = {
            "candidates": int(old.manifest["counts"].get("candidates", 0)),
            "stop_words": int(old.manifest["counts"].get("stop_words", 0)) + stats["stop_words"],
            "skipped_images": skipped,
            "reused_cards": len(refs) - len(new_refs),
            "new_cards": added,
            "removed_cards": len(gone),
            "padding_vectors": int(old.manifest["counts"].get("padding_vectors", 0)) + padding,
            "linked_shards": linked,
            "references": int(old.manifest["counts"].get("references", 0)) + int(
                np.count_nonzero(np.asarray(spool.counts) > 0)),
            "shared_pictures": shared.shared,
            "picture_disagreements": shared.disagreed,
        }
        parent = old.version
    finally:
        old.close()
    return _finish(out_dir, params, index, entries, shard_count, shard_slots, counts_out,
                   timings, started, parent)
