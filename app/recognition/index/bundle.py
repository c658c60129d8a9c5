"""The descriptor bundle as served: open, verify and read it (built by `build.py`).

Layout of a bundle directory (format 4; every file written under a temporary name, renamed,
the manifest last):

- `faiss_ivf.index`     IVF-PQ (fast-scan, HNSW coarse quantizer) over RootSIFT, its lists in
                        the layout every serving process maps and shares (`mapped_lists.py`).
                        A FAISS id is `slot << LOCAL_BITS | local`: the card slot and the
                        descriptor's position among that card's kept descriptors, so the card
                        of a neighbour is a shift and no id map per descriptor exists. Only a
                        few hundred stable, distinctive descriptors per card are kept;
                        descriptors that recur across cards ("stop words": frame, mana
                        symbols) are left out. Printings that show one picture are indexed
                        once, under one of them (`pictures.py`): the others' slots hold no
                        descriptor and name that reference in their shard's `picture`.
- `stopwords.index`     the sample of other cards' descriptors the stop words were found
                        with, kept so that an incremental build classifies new cards alike.
- `cards-NNNNN.h5`      per-card data of slots [N*S, (N+1)*S) (S = manifest shard_slots): kept
                        keypoints (uint16, 1/KP_SCALE px) by `kp_offsets`, the reference's
                        feature-image size, and a thumbnail for photometric verification
                        by `thumb_offsets` (equalised gray, 128x178), and since format 3 a
                        colour one by `color_offsets` (BGR, 64x89; empty for a slot without
                        one), encoded as the parameters' `thumb_format` says (WebP; JPEG
                        where they do not name one). Since format 4, `picture`: the slot
                        of the reference each slot's picture is indexed under. An
                        incremental build hard-links unchanged shards.
- `id_map.jsonl`        one JSON object per slot (Scryfall id, face, name, set, collector
                        number, image key, ...) or `null` for a slot whose printing is gone.
- `manifest.json`       format version, release version, parameters, counts, sha256 per file.

Format 2 (before colour thumbnails) is still read and served: its art check compares grey
levels only, and the service's next refresh rebuilds it (its parameters lack `color_scale`,
which reads as 0: a build field that differs).

Serving maps the index with IO_FLAG_MMAP_IFC (read-only, shared through the page cache; a
format 3 bundle's fast-scan block lists are read into the process) and the id map, parsing an
entry only when it is answered; per-card data are read for the few candidates verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import faiss
import h5py
import numpy as np

from app.recognition.features import layout
from app.recognition.params import BUILD_FIELDS, FeatureParams

log = logging.getLogger(__name__)

FORMAT_VERSION = 4  # 4: one reference per picture (`picture`); 3: colour thumbnails
READABLE_FORMATS = (2, 3, 4)  # 2: without them (served with the grey art check); before 4
#                               every printing is its own picture
INDEX_FILE = "faiss_ivf.index"
STOPWORDS_FILE = "stopwords.index"
ID_MAP_FILE = "id_map.jsonl"
MANIFEST_FILE = "manifest.json"
SHARD_SLOTS = 4096  # card slots per shard file (default; the manifest records it)
LOCAL_BITS = 10  # FAISS id = slot << LOCAL_BITS | local; at most 1024 kept per card
KP_SCALE = 8.0  # keypoints stored as uint16 in 1/8 px (feature images up to 8191 px)


class BundleError(Exception):
    """A bundle that cannot be built or must not be served; the message says why."""


def shard_name(number: int) -> str:
    return f"cards-{number:05d}.h5"


def name_hash(name: str) -> int:
    """64-bit key of a card name (printings of one name are looked up by it)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ivf_search_params(
    params: FeatureParams, nprobe: int | None = None
) -> faiss.SearchParametersIVF:
    """Per-call search parameters (thread-safe, unlike setting `index.nprobe`), with the
    HNSW quantizer's beam width when the coarse quantizer is HNSW."""
    search_params = faiss.SearchParametersIVF()
    search_params.nprobe = nprobe or params.nprobe
    if params.coarse == "hnsw":
        quantizer_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        quantizer_params.efSearch = max(params.hnsw_ef, search_params.nprobe)
        search_params.quantizer_params = quantizer_params
        search_params._keep = quantizer_params  # type: ignore[attr-defined]  # owns the C++ object
    return search_params


class IdMap:
    """`id_map.jsonl` held as one buffer; an entry is parsed when it is asked for. 100k
    printings as Python dicts would cost ~120 MB per process, the file is ~30 MB: served
    mapped read-only (`IdMap.open`), it is shared by every process on the host."""

    @classmethod
    def open(cls, path: Path) -> IdMap:
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return cls(b"")
            return cls(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self._data = data
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
        self._starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
        self._ends = ends.astype(np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, slot: int) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = json.loads(
            self._data[int(self._starts[slot]) : int(self._ends[slot])]
        )
        return entry

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))

    def strings(self, name: str) -> list[str]:
        """One string field of every slot ("" where absent, or for an empty slot), found in
        the buffer without parsing every entry (a JSON string value of `name`)."""
        values = [""] * len(self)
        pattern = re.compile(b'"' + re.escape(name.encode()) + rb'":\s*"((?:[^"\\]|\\.)*)"')
        for found in pattern.finditer(self._data):
            slot = int(np.searchsorted(self._ends, found.start()))
            values[slot] = json.loads(b'"' + found.group(1) + b'"')
        return values


VERSION_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,79}")


def check_version(version: object) -> str:
    """A release version is one safe path component (it names `releases/<version>`): an
    archive's manifest saying "../../x" must not place files outside RESOURCES_DIR."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version) or (
        ".." in version
    ):
        raise BundleError(f"release version {version!r} is not a plain name "
                          "(letters, digits, '.', '_', '-'; no '..')")
    return version


def read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads(
            (directory / MANIFEST_FILE).read_text(encoding="utf-8")
        )
    except (OSError, ValueError) as exc:
        raise BundleError(f"{directory}: no readable {MANIFEST_FILE} ({exc})") from None
    if manifest.get("format_version") not in READABLE_FORMATS:
        raise BundleError(
            f"{directory}: bundle format {manifest.get('format_version')!r}, this service "
            f"reads formats {', '.join(map(str, READABLE_FORMATS))}; rebuild the bundle"
        )
    try:
        check_version(manifest.get("version"))
    except BundleError as exc:
        raise BundleError(f"{directory}: {exc}") from None
    return manifest


def manifest_params(manifest: dict[str, Any]) -> FeatureParams:
    """The parameters a bundle was built with. A manifest that does not name `color_scale`
    was written before colour thumbnails existed: it has none (0), whatever today's default.
    KeyError, TypeError or ValueError when unreadable."""
    return FeatureParams.from_dict({"color_scale": 0, **manifest["params"]})


class Bundle:
    """A verified, opened bundle. Thread-safe: h5 reads hold a lock, FAISS search is re-entrant."""

    def __init__(
        self,
        directory: Path,
        manifest: dict[str, Any],
        params: FeatureParams,
        index: faiss.Index,
        shards: list[h5py.File],
        id_map: IdMap,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.version: str = manifest["version"]
        self.params = params
        self.index = index
        self._shards = shards
        self._lock = threading.Lock()
        self._id_map = id_map
        self.slot_count = len(id_map)
        self.shard_slots = int(manifest.get("shard_slots", SHARD_SLOTS))
        self.card_count = int(manifest["counts"]["cards"])
        self.kp_offsets = [np.asarray(h5["kp_offsets"][:]) for h5 in shards]
        self.thumb_offsets = [np.asarray(h5["thumb_offsets"][:]) for h5 in shards]
        # colour thumbnails (format 3); None for a shard of a format 2 bundle
        self.color_offsets = [np.asarray(h5["color_offsets"][:]) if "color_offsets" in h5
                              else None for h5 in shards]
        # indexed descriptors per slot (the votes a card can collect grow with it)
        self.kept: np.ndarray = np.concatenate(
            [np.diff(o) for o in self.kp_offsets] or [np.zeros(0, np.int64)])
        self.ref_size: np.ndarray = np.concatenate(
            [h5["ref_size"][:] for h5 in shards] or [np.zeros((0, 2), np.float32)]
        )
        self.names: np.ndarray = np.concatenate(
            [h5["name_hash"][:] for h5 in shards] or [np.zeros(0, np.int64)]
        )
        self.alive: np.ndarray = self.names != -1  # empty slots: printings gone since
        # slot of the reference each printing's picture is indexed under (pictures.py):
        # itself for a reference, -1 for an empty slot; before format 4, every slot itself
        self.picture: np.ndarray = np.concatenate(
            [h5["picture"][:] if "picture" in h5 else
             np.arange(len(h5["name_hash"]), dtype=np.int64) + number * self.shard_slots
             for number, h5 in enumerate(shards)] or [np.zeros(0, np.int64)])
        # slot -> index of its name among the distinct names (the printings of one card)
        self.name_group: np.ndarray = np.unique(self.names, return_inverse=True)[1].ravel()
        self._search_params = ivf_search_params(params)
        self.stale_fields: tuple[str, ...] = ()  # build fields the service would set otherwise
        self._layout_codes: np.ndarray | None = None  # slot -> its layout key's number
        self._layout_names: np.ndarray = np.zeros(0, str)  # number -> layout key
        self._layout_means: dict[str, np.ndarray | None] = {}
        self._layout_chroma: dict[str, np.ndarray | None] = {}

    @classmethod
    def open(cls, directory: Path, *, expected_params: FeatureParams | None = None) -> Bundle:
        """Open after checking format, parameters, checksums and counts (BundleError if not).
        With `expected_params`, the bundle must have been built with the same build fields,
        and is then searched with `expected_params`' query-time knobs."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        try:
            params = manifest_params(manifest)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{directory}: unreadable feature parameters ({exc})") from None
        stale: list[str] = []
        if expected_params is not None:
            differ = params.serving_differences(expected_params)
            if differ:
                raise BundleError(
                    f"{directory}: built with other feature parameters "
                    f"({', '.join(differ)} differ); rebuild the bundle"
                )
            # the service's query-time knobs, the bundle's own build fields: a bundle built
            # with other selection or index settings is still served (an upgrade that changes
            # them keeps answering) and the next refresh rebuilds it
            stale = params.build_differences(expected_params)
            params = replace(
                expected_params, **{name: getattr(params, name) for name in BUILD_FIELDS}
            )
        files = manifest.get("files", {})
        for name in (INDEX_FILE, ID_MAP_FILE, *manifest.get("shards", [])):
            if name not in files:
                raise BundleError(f"{directory}: {name} is not listed in the manifest")
        for name, expected in files.items():
            path = directory / name
            if not path.is_file():
                raise BundleError(f"{directory}: {name} is missing")
            if path.stat().st_size != expected.get("bytes") or sha256_file(path) != expected.get(
                "sha256"
            ):
                raise BundleError(f"{directory}: {name} does not match its manifest checksum")
        counts = manifest["counts"]
        try:
            # mapped read-only and shared by every process (mapped_lists.py); a bundle of
            # format 3 or older (fast-scan block lists) is read into the process
            index = faiss.read_index(str(directory / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError as exc:
            raise BundleError(f"{directory}: {INDEX_FILE} unreadable ({exc})") from None
        id_map = IdMap.open(directory / ID_MAP_FILE)
        shards = [
            h5py.File(directory / name, "r", locking=False) for name in manifest["shards"]
        ]
        problems = []
        if index.ntotal != counts["indexed_descriptors"]:
            problems.append(f"index holds {index.ntotal} vectors")
        if len(id_map) != counts["slots"]:
            problems.append(f"id map holds {len(id_map)} slots")
        if sum(h5["ref_size"].shape[0] for h5 in shards) != counts["slots"]:
            problems.append("shards disagree with the slot count")
        if problems:
            for h5 in shards:
                h5.close()
            raise BundleError(f"{directory}: {'; '.join(problems)} (manifest: {counts})")
        if stale:
            log.warning("bundle %s was built with other %s than this service's; serving it "
                        "as it is, the next refresh rebuilds it", manifest.get("version"),
                        ", ".join(stale))
        opened = cls(directory, manifest, params, index, shards, id_map)
        opened.stale_fields = tuple(stale)
        return opened

    # -- per card ----------------------------------------------------------------------------
    def card(self, slot: int) -> dict[str, Any]:
        entry = self._id_map[slot]
        if entry is None:
            raise KeyError(f"slot {slot} holds no printing")
        entry["row"] = slot
        return entry

    def iter_entries(self) -> Any:
        """Every slot's entry (None for an empty slot), in slot order."""
        return iter(self._id_map)

    def printings(self, slot: int) -> list[int]:
        """Slots with the same card name as `slot` (other printings, faces with that name)."""
        return [int(s) for s in np.flatnonzero(self.names == self.names[slot])]

    def picture_printings(self, slot: int) -> list[int]:
        """The printings that show the picture of `slot` (itself included), in slot order:
        indexed once, under one reference (pictures.py)."""
        return [int(s) for s in np.flatnonzero((self.picture == self.picture[slot])
                                               & self.alive)]

    def _where(self, slot: int) -> tuple[h5py.File, int, int]:
        number, local = divmod(slot, self.shard_slots)
        return self._shards[number], number, local

    def keypoints(self, slot: int) -> np.ndarray:
        """Kept keypoints of one card (float32 [n,2], feature-image px), `local` order."""
        h5, number, local = self._where(slot)
        offsets = self.kp_offsets[number]
        with self._lock:
            raw: np.ndarray = h5["keypoints"][int(offsets[local]) : int(offsets[local + 1])]
        return raw.astype(np.float32) / KP_SCALE

    def thumbnail_bytes(self, slot: int) -> bytes:
        """The encoded thumbnail of one card, as stored (WebP, or JPEG in older bundles)."""
        h5, number, local = self._where(slot)
        offsets = self.thumb_offsets[number]
        with self._lock:
            data = h5["thumbs"][int(offsets[local]) : int(offsets[local + 1])]
        return bytes(np.asarray(data, np.uint8))

    def thumbnail(self, slot: int) -> np.ndarray:
        """The reference's equalised gray thumbnail (decoded from what is stored)."""
        data = np.frombuffer(self.thumbnail_bytes(slot), np.uint8)
        thumb = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if len(data) else None
        if thumb is None:
            raise BundleError(f"{self.directory}: thumbnail of slot {slot} is unreadable")
        return thumb

    def color_bytes(self, slot: int) -> bytes:
        """The encoded colour thumbnail of one card, as stored (b"" when it has none)."""
        h5, number, local = self._where(slot)
        offsets = self.color_offsets[number]
        if offsets is None:
            return b""
        with self._lock:
            data = h5["colors"][int(offsets[local]) : int(offsets[local + 1])]
        return bytes(np.asarray(data, np.uint8))

    def color_thumbnail(self, slot: int) -> np.ndarray | None:
        """The reference's colour thumbnail (BGR uint8), None when the bundle has none for it
        (a format 2 bundle: the art check then compares grey levels only)."""
        data = np.frombuffer(self.color_bytes(slot), np.uint8)
        if not len(data):
            return None
        thumb = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if thumb is None:
            raise BundleError(f"{self.directory}: colour thumbnail of slot {slot} is unreadable")
        return thumb

    def layout_mean(self, slot: int) -> np.ndarray | None:
        """What `slot`'s layout looks like: the mean normalised thumbnail of up to
        `layout.SAMPLE` printings with its layout key (evenly spaced over the slots, so every
        process computes the same), cached per key. None for a bundle built without layout
        keys or a layout with fewer than `layout.MIN_PRINTINGS` printings."""
        return self._layout_cached(slot, self._layout_means, lambda picks: layout.mean_of(
            [self.thumbnail(s) for s in picks]))

    def layout_chroma(self, slot: int) -> np.ndarray | None:
        """The layout's mean colour (`layout.chroma_mean_of` the same sample as `layout_mean`),
        cached per key; None also when a sampled printing has no colour thumbnail."""
        def mean(picks: list[int]) -> np.ndarray | None:
            thumbs = [self.color_thumbnail(s) for s in picks]
            present = [t for t in thumbs if t is not None]
            return layout.chroma_mean_of(present) if len(present) == len(thumbs) else None

        return self._layout_cached(slot, self._layout_chroma, mean)

    def _layout_cached(
        self, slot: int, cache: dict[str, np.ndarray | None],
        compute: Callable[[list[int]], np.ndarray | None],
    ) -> np.ndarray | None:
        with self._lock:
            if self._layout_codes is None:
                # one number per slot, not a string object per printing (0: no key)
                keys = np.asarray([""] + self._id_map.strings("layout_key"))
                self._layout_codes = np.unique(keys, return_inverse=True)[1][1:].astype(
                    np.int32)
                self._layout_names = np.unique(keys)
            code = int(self._layout_codes[slot])
            key = str(self._layout_names[code])
            if not key:
                return None
            if key in cache:
                return cache[key]
            codes = self._layout_codes
        group = [int(s) for s in np.flatnonzero((codes == code) & self.alive)]
        mean = None
        if len(group) >= layout.MIN_PRINTINGS:
            picks = np.linspace(0, len(group) - 1, min(layout.SAMPLE, len(group)))
            mean = compute([group[int(round(i))] for i in picks])
        with self._lock:
            cache[key] = mean
        return mean

    # -- search ------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate k nearest indexed descriptors: (squared distances, FAISS ids)."""
        return self.index.search(vectors, k, params=self._search_params)

    @staticmethod
    def card_of(ids: np.ndarray) -> np.ndarray:
        """Card slot of each FAISS id (-1 stays -1)."""
        return np.where(ids >= 0, ids >> LOCAL_BITS, -1)

    @staticmethod
    def local_of(ids: np.ndarray) -> np.ndarray:
        return ids & ((1 << LOCAL_BITS) - 1)

    def close(self) -> None:
        with self._lock:
            for h5 in self._shards:
                if h5.id.valid:
                    h5.close()
