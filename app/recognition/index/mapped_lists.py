"""Fast-scan inverted lists in a layout every serving process maps and shares.

Why: FAISS copies fast-scan lists (`BlockInvertedLists`, file tag `ilbl`) into every process
that reads them, whatever the IO flags (FAISS 1.10-1.15 source, `index_read.cpp`): at 100,000
printings that was ~750 MB per serving process, paid again by every replica or pod on a host.
Array lists (`ArrayInvertedLists`, `ilar`) are mapped read-only with `IO_FLAG_MMAP_IFC` and
shared through the page cache. Fast-scan *search* reads a list only through
`InvertedLists::get_codes` and `list_size` (`IndexIVFFastScan.cpp`), and walks its codes in
whole blocks of `bbs` (32) vectors, packed (`pq4_pack_codes`). So each list is stored as array
lists whose codes are those packed blocks: a list of n vectors is padded to a multiple of 32
with a vector far from every descriptor (`far_code`, under the list's last id: never within
a vote's distance), and its 32-vector blocks of `bbs * M / 2` bytes are `n * code_size` bytes
of an array list with `code_size = M / 2`. Measured: the same neighbours and distances as the
block lists; padding adds 16 vectors per list on average (~1.7% at 100,000 printings).
Releases built before 2026-12-07 hold other codes in their padding (see `_append_list`):
random vectors under a real id, a little noise in the votes, gone at the next full build.

Adding (builds only): the build already knows each vector's list (the stop-word pass's
coarse assignment), so `Additions` encodes the vectors itself, holds their codes until the
last card, then pads each list's new vectors, packs them into blocks (`CodePacker.pack_all`)
and appends them to the mapped lists. FAISS's own `add_with_ids` would assign every vector to
its list a second time: an HNSW search per vector, 115 s of a 100,000-printing build
(index phase 322 -> 207 s, side by side: docs/benchmarks.md). An index that is not
fast-scan (8-bit PQ, the legacy profile) already has array lists and takes the vectors
through `add_core` with the same assignment.
"""

from __future__ import annotations

from typing import Any

import faiss as _faiss
import numpy as np

faiss: Any = _faiss  # SWIG classes beyond the stubs' reach (BlockInvertedLists, packers)

BLOCK = 32  # vectors per fast-scan block (FAISS's bbs)


def _ivf(index: Any) -> Any:
    """The IVF index inside `index`, as its own class (extract_index_ivf gives the base)."""
    return faiss.downcast_index(faiss.extract_index_ivf(index))


def is_fast_scan(index: Any) -> bool:
    return isinstance(_ivf(index), faiss.IndexIVFFastScan)


def _block_lists(ivf: Any) -> Any:
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.BlockInvertedLists) else None


def far_code(ivf: Any) -> np.ndarray:
    """The flat code of the padding vector: in each sub-quantizer, the centroid of largest
    norm. RootSIFT vectors have unit norm; this one's squared norm is ~2, and it lies
    0.60 (squared) from the nearest of 24,000 eval reference descriptors, beyond the
    votes' `vote_max_dist` (0.5) and every real neighbour (p99 0.29): never counted."""
    pq = ivf.pq
    centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
    far = (centroids**2).sum(axis=2).argmax(axis=1)
    vector = centroids[np.arange(pq.M), far].reshape(1, -1).astype(np.float32)
    code: np.ndarray = pq.compute_codes(vector)[0]  # its own centroids: exactly `far`
    return code


def _append_list(target: Any, packer: Any, number: int, ids: np.ndarray, codes: np.ndarray,
                 far: np.ndarray) -> int:
    """Append vectors (`ids`, flat `codes` [n, code_size]) to list `number` of the array
    lists `target`: padded to whole blocks with the `far_code` under the last vector's id,
    packed block by block; the padding vectors added. (Padding with copies of the last
    vector filled a query's k neighbours with one vector; before 2026-12-07 the copies were
    given to FAISS's `add_entries` flat, which reads packed blocks: they became other,
    arbitrary codes under a real id.)"""
    missing = (-len(ids)) % BLOCK
    ids = np.concatenate([ids, np.full(missing, ids[-1], np.int64)])
    flat = np.ascontiguousarray(np.concatenate([codes, np.repeat(far[None], missing, axis=0)]))
    packed = np.empty((len(flat) // BLOCK, packer.block_size), np.uint8)
    for block in range(len(packed)):
        packer.pack_all(faiss.swig_ptr(flat[block * BLOCK : (block + 1) * BLOCK]),
                        faiss.swig_ptr(packed[block]))
    target.add_entries(number, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(packed))
    return missing


def _unpacked(lists: Any, packer: Any, number: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, flat codes) of block list `number`."""
    size = lists.list_size(number)
    blocks = (size + BLOCK - 1) // BLOCK
    packed = faiss.rev_swig_ptr(lists.get_codes(number), blocks * packer.block_size).copy()
    flat = np.empty((blocks * BLOCK, packer.code_size), np.uint8)
    for block in range(blocks):
        packer.unpack_all(faiss.swig_ptr(packed[block * packer.block_size :]),
                          faiss.swig_ptr(flat[block * BLOCK :]))
    ids = faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
    return ids, flat[:size]


def to_mapped(index: Any) -> int:
    """Turn a fast-scan index's block lists into the mapped layout, in place; the number of
    padding vectors added (0 for an index that needs none)."""
    ivf = _ivf(index)
    blocks = _block_lists(ivf) if is_fast_scan(index) else None
    if blocks is None:
        return 0
    packer = ivf.get_CodePacker()
    arrays = faiss.ArrayInvertedLists(ivf.nlist, packer.code_size)
    padded = 0
    for number in range(blocks.nlist):
        if blocks.list_size(number):
            padded += _append_list(arrays, packer, number, *_unpacked(blocks, packer, number),
                                   far_code(ivf))
    ivf.replace_invlists(arrays, True)
    arrays.this.disown()  # owned by the index now
    ivf.ntotal = index.ntotal = arrays.compute_ntotal()
    return padded


class Additions:
    """Vectors to add to `index` (in the mapped layout, or not fast-scan), each with the list
    the build assigned it to; `close` writes them into the index's lists, in the order they
    came, as FAISS's `add_with_ids` and `to_mapped` would have (the same bytes, tested)."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self.ivf = _ivf(index)
        self.fast = is_fast_scan(index)
        if self.fast and _block_lists(self.ivf) is not None:
            to_mapped(index)  # an empty trained index: array lists to append to
        self._lists: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._codes: list[np.ndarray] = []

    def add(self, x: np.ndarray, ids: np.ndarray, lists: np.ndarray) -> None:
        """Add vectors `x` (float32 [n,d]) with `ids` to the lists `lists` (int64 [n])."""
        x = np.ascontiguousarray(x, np.float32)
        ids = np.ascontiguousarray(ids, np.int64)
        lists = np.ascontiguousarray(lists, np.int64)
        if not len(x):
            return
        if not self.fast:  # array lists: FAISS appends them as they are
            self.ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids),
                              faiss.swig_ptr(lists))
            self.index.ntotal = self.ivf.ntotal
            return
        codes = np.empty((len(x), self.ivf.code_size), np.uint8)
        self.ivf.encode_vectors(len(x), faiss.swig_ptr(x), faiss.swig_ptr(lists),
                                faiss.swig_ptr(codes))
        self._lists.append(lists.astype(np.int32))
        self._ids.append(ids)
        self._codes.append(codes)

    def close(self) -> int:
        """Write the held vectors into the index; the padding vectors added."""
        if not self._lists:
            return 0
        lists = np.concatenate(self._lists)
        order = np.argsort(lists, kind="stable")  # by list, in the order they came
        self._lists = []
        ids = np.concatenate(self._ids)[order]
        self._ids = []
        codes = np.concatenate(self._codes)[order]
        self._codes = []
        bounds = np.concatenate([[0], np.cumsum(np.bincount(lists, minlength=self.ivf.nlist))])
        target = faiss.downcast_InvertedLists(self.ivf.invlists)
        packer = self.ivf.get_CodePacker()
        far = far_code(self.ivf)
        padded = 0
        for number in np.flatnonzero(np.diff(bounds)):
            a, b = int(bounds[number]), int(bounds[number + 1])
            padded += _append_list(target, packer, int(number), ids[a:b], codes[a:b], far)
        self.ivf.ntotal = self.index.ntotal = target.compute_ntotal()
        return padded
