"""Fast-scan inverted lists in a layout every serving process maps and shares.

Why: FAISS copies fast-scan lists (`BlockInvertedLists`, file tag `ilbl`) into every process
that reads them, whatever the IO flags (FAISS 1.10-1.15 source, `index_read.cpp`): at 100,000
printings that was ~750 MB per serving process, paid again by every replica or pod on a host.
Array lists (`ArrayInvertedLists`, `ilar`) are mapped read-only with `IO_FLAG_MMAP_IFC` and
shared through the page cache. Fast-scan *search* reads a list only through
`InvertedLists::get_codes` and `list_size` (`IndexIVFFastScan.cpp`), and walks its codes in
whole blocks of `bbs` (32) vectors, packed (`pq4_pack_codes`). So each list is stored as array
lists whose codes are those packed blocks: a list of n vectors is padded to a multiple of 32
with copies of its last vector (same code, same id: a neighbour found twice, never a vector
that is not there), and its 32-vector blocks of `bbs * M / 2` bytes are `n * code_size` bytes
of an array list with `code_size = M / 2`. Measured: the same neighbours and distances as the
block lists; padding adds 16 vectors per list on average (~1.7% at 100,000 printings).

Adding (builds only) needs block lists: `blocks_like` gives an empty fast-scan index with the
same quantizer and codebooks to add into; `append_blocks` then pads its lists and appends
them, block by block, to the mapped layout. An index that is not fast-scan (8-bit PQ, the
legacy profile) already has array lists: both functions leave it as it is.
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


def _pad(lists: Any, code_size: int) -> int:
    """Pad every non-empty block list to whole blocks with copies of its last vector."""
    padded = 0
    for number in range(lists.nlist):
        size = lists.list_size(number)
        missing = (-size) % BLOCK
        if size == 0 or missing == 0:
            continue
        code = faiss.rev_swig_ptr(lists.get_single_code(number, size - 1), code_size).copy()
        last = lists.get_single_id(number, size - 1)
        lists.add_entries(number, missing, faiss.swig_ptr(np.full(missing, last, np.int64)),
                          faiss.swig_ptr(np.tile(code, missing)))
        padded += missing
    return padded


def _append_packed(target: Any, source: Any, code_size: int) -> None:
    """Append each padded block list of `source` to the array list of `target`."""
    for number in range(source.nlist):
        size = source.list_size(number)
        if size == 0:
            continue
        codes = faiss.rev_swig_ptr(source.get_codes(number), size * code_size).copy()
        ids = faiss.rev_swig_ptr(source.get_ids(number), size).copy()
        target.add_entries(number, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))


def to_mapped(index: Any) -> int:
    """Turn a fast-scan index's block lists into the mapped layout, in place; the number of
    padding vectors added (0 for an index that needs none)."""
    ivf = _ivf(index)
    blocks = _block_lists(ivf) if is_fast_scan(index) else None
    if blocks is None:
        return 0
    code_size = ivf.get_CodePacker().code_size
    padded = _pad(blocks, code_size)
    arrays = faiss.ArrayInvertedLists(ivf.nlist, code_size)
    _append_packed(arrays, blocks, code_size)
    ivf.replace_invlists(arrays, True)
    arrays.this.disown()  # owned by the index now
    ivf.ntotal = index.ntotal = arrays.compute_ntotal()
    return padded


def blocks_like(index: Any) -> Any:
    """An empty index with `index`'s quantizer and codebooks to add vectors into: itself
    when its lists take additions as they are (not in the mapped layout)."""
    ivf = _ivf(index)
    if not is_fast_scan(index) or _block_lists(ivf) is not None:
        return index
    empty = faiss.clone_index(index)
    target = _ivf(empty)
    packer = target.get_CodePacker()
    packer.this.disown()  # the block lists delete their packer
    blocks = faiss.BlockInvertedLists(target.nlist, packer)
    target.replace_invlists(blocks, True)
    blocks.this.disown()
    target.ntotal = empty.ntotal = 0
    return empty


def append_blocks(index: Any, added: Any) -> int:
    """Append what was added to `added` (from `blocks_like(index)`) to `index`'s mapped
    lists; the padding vectors added. Nothing to do when `added` is `index` itself."""
    if added is index:
        return 0
    ivf, source = _ivf(index), _ivf(added)
    blocks = _block_lists(source)
    code_size = source.get_CodePacker().code_size
    padded = _pad(blocks, code_size)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    _append_packed(lists, blocks, code_size)
    ivf.ntotal = index.ntotal = lists.compute_ntotal()
    return padded
