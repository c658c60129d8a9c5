"""The descriptor bundle: build it from reference images, open it for serving.

Layout of a bundle directory (all written under temporary names, renamed, manifest last):

- `faiss_ivf.index`        IVF-PQ over RootSIFT; FAISS ids ARE descriptor rows of the h5.
                           Descriptors recurring in many cards (frame, mana symbols: "stop
                           words") are left out of it, so they cannot vote.
- `candidate_features.h5`  contiguous datasets: descriptors uint8 [N,128], keypoints float32
                           [N,2], indexed uint8 [N] (1 = in FAISS), offsets int64 [C+1] (card
                           row c owns descriptor rows offsets[c]:offsets[c+1]), faces int16 [C],
                           ref_size float32 [C,2] (feature image w, h), thumbs uint8 [C,H,W].
- `id_map.json`            card row -> Scryfall id, face, name, set, collector number, ...
- `manifest.json`          format version, build version, parameters, counts, sha256 per file.

Serving never loads the descriptors: the index is memory-mapped (IO_FLAG_MMAP) and only the
slices of the few verified candidates are read from the h5.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
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
from tqdm import tqdm

from app.recognition.features import Features, extract_features, rootsift
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "faiss_ivf.index"
FEATURES_FILE = "candidate_features.h5"
ID_MAP_FILE = "id_map.json"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (INDEX_FILE, FEATURES_FILE, ID_MAP_FILE)
_CHUNK = 65536  # descriptors per block when streaming through FAISS / h5


class BundleError(Exception):
    """A bundle that cannot be built or must not be served; the message says why."""


@dataclass
class ReferenceImage:
    """One face image to index. `load` returns BGR uint8 and is called once, in a worker."""

    card_id: str
    face: int
    name: str
    set: str
    collector_number: str
    illustration_id: str | None
    load: Callable[[], np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)  # copied into id_map (set_name, ...)
    # Optional (features, thumbnail) from a feature cache (the nightly refresh's incremental
    # build); when set, build_bundle uses it instead of calling `load` and extracting again.
    precomputed: Callable[[], tuple[Features, np.ndarray]] | None = None

    def id_entry(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.card_id,
            "face": self.face,
            "name": self.name,
            "set": self.set,
            "collector_number": self.collector_number,
            "illustration_id": self.illustration_id,
        }


def make_thumbnail(features: Features, params: FeatureParams) -> np.ndarray:
    """The reference's equalised gray image at the fixed thumbnail size (photometric check)."""
    return cv2.resize(
        features.gray, (params.thumb_width, params.thumb_height), interpolation=cv2.INTER_AREA
    )


# -- building ------------------------------------------------------------------------------
def _extract(ref: ReferenceImage, params: FeatureParams) -> tuple[Features, np.ndarray] | None:
    if ref.precomputed is not None:
        try:
            return ref.precomputed()
        except Exception as exc:
            log.warning("skipping %s face %d: cached features unreadable: %s",
                        ref.card_id, ref.face, exc)
            return None
    try:
        image = ref.load()
    except Exception as exc:  # a broken image must not sink a nightly build of 90k cards
        log.warning("skipping %s face %d: %s", ref.card_id, ref.face, exc)
        return None
    features = extract_features(image, params, role="reference")
    return features, make_thumbnail(features, params)


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


def _choose_nlist(n: int, params: FeatureParams) -> int:
    """Power of two near sqrt(N): below FAISS's 4-16*sqrt(N) guideline, which targets huge
    batches; here each query photo brings ~2000 vectors and the coarse quantizer's cost
    (queries x nlist) would dominate. At least 39 training points per list."""
    if params.nlist:
        nlist = params.nlist
    else:
        nlist = 1 << max(4, round(np.log2(max(1.0, np.sqrt(n)))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    return nlist


def _new_index(nlist: int, params: FeatureParams) -> faiss.IndexIVF:
    quantizer = faiss.IndexFlatL2(128)
    index: faiss.IndexIVF
    if params.pq_nbits == 4:
        index = faiss.IndexIVFPQFastScan(quantizer, 128, nlist, params.pq_m, 4)
    else:
        index = faiss.IndexIVFPQ(quantizer, 128, nlist, params.pq_m, params.pq_nbits)
        # polysemous training (a code permutation for Hamming filtering, never used here)
        # took 95% of the training time
        index.do_polysemous_training = False  # type: ignore[attr-defined]
    index.by_residual = params.pq_residual
    # k-means iterations: FAISS's default 25 makes PQ training (many k-means in 4-8 dims,
    # which BLAS does slowly) the longest step of a small build; 10 loses little for voting
    index.cp.niter = 12
    index.pq.cp.niter = 10
    return index


def _pq_training_points(params: FeatureParams) -> int:
    """k-means of each PQ sub-quantizer wants ~40 points per centroid (2^nbits centroids)."""
    return 40 * (1 << params.pq_nbits)


def _train_index(desc: np.ndarray, params: FeatureParams, seed: int) -> faiss.IndexIVF:
    n = desc.shape[0]
    nlist = _choose_nlist(n, params)
    index = _new_index(nlist, params)
    sample_size = min(n, max(nlist * params.train_per_list, _pq_training_points(params)))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=sample_size, replace=False))
    index.train(rootsift(np.asarray(desc[sample])))
    return index


def _add_rows(index: faiss.Index, desc: np.ndarray, rows: np.ndarray) -> None:
    """Add descriptors by row number, the row being the FAISS id."""
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        index.add_with_ids(rootsift(np.asarray(desc[chunk])), chunk.astype(np.int64))


def _stop_words(
    trained: faiss.Index, desc: np.ndarray, offsets: np.ndarray, params: FeatureParams, seed: int
) -> np.ndarray:
    """Flag descriptors with near-duplicates in >= stop_min_cards OTHER cards.

    The neighbour finder is a scratch copy of the trained index holding the descriptors of
    (at most `stop_sample_cards`) randomly chosen cards: an exact all-pairs search is
    quadratic, approximate neighbours are good enough to spot the frame elements that every
    card repeats, and a sample bounds the scratch memory for a 90k-card catalogue.
    """
    cards = len(offsets) - 1
    rng = np.random.default_rng(seed + 1)
    sample = np.arange(cards)
    if 0 < params.stop_sample_cards < cards:
        sample = np.sort(rng.choice(cards, params.stop_sample_cards, replace=False))
    scratch = faiss.clone_index(trained)
    for card in sample:
        _add_rows(scratch, desc, np.arange(offsets[card], offsets[card + 1]))

    n = desc.shape[0]
    k = max(8, 2 * params.stop_min_cards + 2)
    search_params = ivf_search_params(max(2, params.nprobe // 4))
    flags = np.zeros(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        dist, ids = scratch.search(
            rootsift(np.asarray(desc[start:stop])), k, params=search_params
        )
        near = (ids >= 0) & (dist < params.stop_radius)
        owners: np.ndarray = np.where(near, np.searchsorted(offsets, ids, side="right") - 1, -1)
        own = np.searchsorted(offsets, np.arange(start, stop), side="right") - 1
        owners[owners == own[:, None]] = -1  # the descriptor's own card
        owners.sort(axis=1)
        distinct = owners >= 0
        distinct[:, 1:] &= owners[:, 1:] != owners[:, :-1]
        flags[start:stop] = distinct.sum(axis=1) >= params.stop_min_cards
    return flags


def ivf_search_params(nprobe: int) -> faiss.SearchParametersIVF:
    """Per-call search parameters: thread-safe, unlike setting `index.nprobe`."""
    search_params = faiss.SearchParametersIVF()
    search_params.nprobe = nprobe
    return search_params


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


class _Spool:
    """Append-only raw files for per-descriptor arrays, so a 90k-card build streams to disk
    instead of holding 10 GB of descriptors in RAM."""

    def __init__(self, directory: Path, names: dict[str, tuple[np.dtype, tuple[int, ...]]]):
        self.specs = names
        self.paths = {name: directory / f".{name}.spool" for name in names}
        self.files: dict[str, BinaryIO] = {n: p.open("wb") for n, p in self.paths.items()}
        self.rows = dict.fromkeys(names, 0)

    def append(self, name: str, array: np.ndarray) -> None:
        dtype = self.specs[name][0]
        self.files[name].write(np.ascontiguousarray(array, dtype=dtype).tobytes())
        self.rows[name] += len(array)

    def finish(self) -> dict[str, np.ndarray]:
        out = {}
        for name, fh in self.files.items():
            fh.close()
            dtype, shape = self.specs[name]
            rows = self.rows[name]
            out[name] = (
                np.memmap(self.paths[name], dtype=dtype, mode="r", shape=(rows, *shape))
                if rows
                else np.zeros((0, *shape), dtype)
            )
        return out

    def remove(self) -> None:
        for path in self.paths.values():
            path.unlink(missing_ok=True)


def build_bundle(
    refs: Iterable[ReferenceImage],
    out_dir: Path,
    params: FeatureParams,
    *,
    progress: bool = True,
    workers: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Extract, index and write a bundle into `out_dir` (absent or empty); returns the manifest."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"{out_dir} is not empty; a bundle is built into a fresh directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    thumb_shape = (params.thumb_height, params.thumb_width)
    spool = _Spool(
        out_dir,
        {
            "descriptors": (np.dtype(np.uint8), (128,)),
            "keypoints": (np.dtype(np.float32), (2,)),
            "thumbs": (np.dtype(np.uint8), thumb_shape),
        },
    )
    entries: list[dict[str, Any]] = []
    counts: list[int] = []
    faces: list[int] = []
    sizes: list[tuple[int, int]] = []
    skipped = 0
    try:
        items = refs if not progress else tqdm(refs, desc="extracting", unit="img")
        for ref, result in _ordered_map(lambda r: _extract(r, params), items, workers):
            if result is None:
                skipped += 1
                continue
            features, thumb = result
            spool.append("descriptors", features.descriptors)
            spool.append("keypoints", features.keypoints)
            spool.append("thumbs", thumb[None])
            entries.append({"row": len(entries), **ref.id_entry()})
            counts.append(len(features.descriptors))
            faces.append(ref.face)
            sizes.append((features.gray.shape[1], features.gray.shape[0]))
        if not entries:
            raise BundleError("no reference image could be read; nothing to index")
        arrays = spool.finish()
        extracted = time.perf_counter()
        desc = arrays["descriptors"]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if len(desc) < _pq_training_points(params):
            raise BundleError(f"only {len(desc)} descriptors: too few to train IVF-PQ")

        index = _train_index(desc, params, seed)
        indexed = np.ones(len(desc), dtype=bool)
        if params.stop_min_cards > 0:  # the served index gets only the other descriptors
            indexed = ~_stop_words(index, desc, offsets, params, seed)
        _add_rows(index, desc, np.flatnonzero(indexed))
        faiss.write_index(index, str(out_dir / (INDEX_FILE + ".tmp")))
        os.replace(out_dir / (INDEX_FILE + ".tmp"), out_dir / INDEX_FILE)

        h5_tmp = out_dir / (FEATURES_FILE + ".tmp")
        with h5py.File(h5_tmp, "w") as h5:
            h5.attrs["format_version"] = FORMAT_VERSION
            for name, array in (
                ("descriptors", desc),
                ("keypoints", arrays["keypoints"]),
                ("thumbs", arrays["thumbs"]),
            ):
                dataset = h5.create_dataset(name, shape=array.shape, dtype=array.dtype)
                for start in range(0, len(array), _CHUNK):
                    dataset[start : start + _CHUNK] = array[start : start + _CHUNK]
            h5.create_dataset("indexed", data=indexed.astype(np.uint8))
            h5.create_dataset("offsets", data=offsets)
            h5.create_dataset("faces", data=np.asarray(faces, dtype=np.int16))
            h5.create_dataset("ref_size", data=np.asarray(sizes, dtype=np.float32))
        os.replace(h5_tmp, out_dir / FEATURES_FILE)
        _write_json(out_dir / ID_MAP_FILE, entries)
    finally:
        spool.remove()

    files: dict[str, dict[str, Any]] = {
        name: {"sha256": _sha256(out_dir / name), "bytes": (out_dir / name).stat().st_size}
        for name in DATA_FILES
    }
    built_at = datetime.now(UTC)
    short = hashlib.sha256(
        "".join(f["sha256"] for f in files.values()).encode()
    ).hexdigest()[:10]
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": f"{built_at:%Y%m%dT%H%M%SZ}-{short}",
        "built_at": built_at.isoformat(),
        "build_seconds": round(time.perf_counter() - started, 2),
        "extract_seconds": round(extracted - started, 2),
        "params": params.to_dict(),
        "index": {
            "type": type(index).__name__,
            "nlist": int(index.nlist),
            "pq_m": params.pq_m,
            "pq_nbits": params.pq_nbits,
            "by_residual": params.pq_residual,
        },
        "counts": {
            "cards": len(entries),
            "descriptors": int(len(desc)),
            "indexed_descriptors": int(index.ntotal),
            "stop_words": int((~indexed).sum()),
            "skipped_images": skipped,
        },
        "files": files,
    }
    _write_json(out_dir / MANIFEST_FILE, manifest)
    return manifest


# -- serving -------------------------------------------------------------------------------
class Bundle:
    """A verified, opened bundle. Thread-safe: h5 reads hold a lock, FAISS search is re-entrant."""

    def __init__(
        self,
        directory: Path,
        manifest: dict[str, Any],
        params: FeatureParams,
        index: faiss.Index,
        h5: h5py.File,
        id_map: list[dict[str, Any]],
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.params = params
        self.index = index
        self._h5 = h5
        self._lock = threading.Lock()
        self._id_map = id_map
        self._by_name: dict[str, list[int]] = {}
        for row, entry in enumerate(id_map):
            self._by_name.setdefault(str(entry.get("name", "")), []).append(row)
        self.offsets: np.ndarray = h5["offsets"][:]
        self.faces: np.ndarray = h5["faces"][:]
        self.ref_size: np.ndarray = h5["ref_size"][:]
        self.card_count = len(id_map)
        self._search_params = ivf_search_params(params.nprobe)

    @classmethod
    def open(cls, directory: Path, *, expected_params: FeatureParams | None = None) -> Bundle:
        """Open after checking format, parameters, checksums and counts (BundleError if not)."""
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{directory}: no readable {MANIFEST_FILE} ({exc})") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{directory}: bundle format {manifest.get('format_version')!r}, "
                f"this service reads format {FORMAT_VERSION}; rebuild the bundle"
            )
        try:
            params = FeatureParams.from_dict(manifest["params"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{directory}: unreadable feature parameters ({exc})") from None
        if expected_params is not None and params != expected_params:
            raise BundleError(
                f"{directory}: built with other feature parameters "
                f"({', '.join(params.differences(expected_params))} differ); rebuild the bundle"
            )
        for name in DATA_FILES:
            expected = manifest.get("files", {}).get(name, {})
            path = directory / name
            if not path.is_file():
                raise BundleError(f"{directory}: {name} is missing")
            if path.stat().st_size != expected.get("bytes") or _sha256(path) != expected.get(
                "sha256"
            ):
                raise BundleError(f"{directory}: {name} does not match its manifest checksum")
        counts = manifest["counts"]
        index = faiss.read_index(str(directory / INDEX_FILE), faiss.IO_FLAG_MMAP)
        h5 = h5py.File(directory / FEATURES_FILE, "r", locking=False)
        id_map = json.loads((directory / ID_MAP_FILE).read_text(encoding="utf-8"))
        problems = []
        if index.ntotal != counts["indexed_descriptors"]:
            problems.append(f"index holds {index.ntotal} vectors")
        if h5["descriptors"].shape[0] != counts["descriptors"]:
            problems.append(f"h5 holds {h5['descriptors'].shape[0]} descriptors")
        if len(id_map) != counts["cards"] or h5["offsets"].shape[0] != counts["cards"] + 1:
            problems.append("card counts disagree")
        if problems:
            h5.close()
            raise BundleError(f"{directory}: {'; '.join(problems)} (manifest: {counts})")
        return cls(directory, manifest, params, index, h5, id_map)

    def card(self, row: int) -> dict[str, Any]:
        return self._id_map[row]

    def printings(self, row: int) -> list[int]:
        """Card rows with the same name as `row` (other printings, faces with that name)."""
        return self._by_name.get(str(self._id_map[row].get("name", "")), [row])

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest indexed descriptors: (squared distances, descriptor rows)."""
        return self.index.search(vectors, k, params=self._search_params)

    def card_of(self, rows: np.ndarray) -> np.ndarray:
        """Card row of each descriptor row (-1 stays -1)."""
        cards = np.searchsorted(self.offsets, rows, side="right") - 1
        return np.where(rows >= 0, cards, -1)

    def card_features(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints float32 [n,2], descriptors uint8 [n,128]) of one card, read on demand."""
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        with self._lock:
            return self._h5["keypoints"][start:stop], self._h5["descriptors"][start:stop]

    def thumbnail(self, row: int) -> np.ndarray:
        with self._lock:
            return self._h5["thumbs"][row]

    def close(self) -> None:
        with self._lock:
            if self._h5.id.valid:
                self._h5.close()
