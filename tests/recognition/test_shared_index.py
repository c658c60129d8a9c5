"""Two serving processes that open one bundle share its index's pages (mapped_lists.py):
the second process maps the same file and pays no private copy of the inverted lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from app.recognition.index import mapped_lists
from app.recognition.index.bundle import INDEX_FILE, Bundle
from app.recognition.params import FeatureParams
from tests.support.environment import REPOSITORY

PARAMS = FeatureParams()

# Opens the bundle, searches every list (every page of the codes is read), then reports
# what the process holds of the index file's mapping (/proc/self/smaps), and waits for a
# line on stdin before it exits, so that both processes are alive when the second reports.
OPEN_AND_REPORT = r"""
import json, sys
import numpy as np
import pytest
from pathlib import Path
from typing import Any
from app.recognition.index.bundle import Bundle
bundle = Bundle.open(Path(sys.argv[1]))
rng = np.random.default_rng(0)
queries = rng.random((64, 128), dtype=np.float32)
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
import faiss
params = faiss.SearchParametersIVF()
params.nprobe = int(faiss.extract_index_ivf(bundle.index).nlist)
bundle.index.search(queries, 8, params=params)
fields, inside = {}, False
for line in Path("/proc/self/smaps").read_text().splitlines():
    head = line.split()
    if "-" in head[0] and len(head) >= 5:
        inside = line.endswith(sys.argv[2])
    elif inside and head[0].endswith(":") and len(head) >= 2 and head[1].isdigit():
        fields[head[0][:-1]] = fields.get(head[0][:-1], 0) + int(head[1])
print(json.dumps(fields), flush=True)
sys.stdin.readline()
bundle.close()
"""


def _open(bundle: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", OPEN_AND_REPORT, str(bundle), str(bundle / INDEX_FILE)],
        cwd=REPOSITORY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})


def test_two_processes_opening_one_bundle_share_the_index_pages(
    synthetic_bundles: dict[str, Path]
) -> None:
    bundle = synthetic_bundles["A"]
    opened = Bundle.open(bundle)
    try:
        assert mapped_lists.is_fast_scan(opened.index)
        invlists = faiss.extract_index_ivf(opened.index).invlists
        assert invlists is not None
        lists = faiss.downcast_InvertedLists(invlists)
        assert isinstance(lists, faiss.ArrayInvertedLists), "array lists: mappable"
    finally:
        opened.close()
    size_kb = (bundle / INDEX_FILE).stat().st_size / 1024
    first = _open(bundle)
    second = None
    try:
        assert first.stdout is not None
        mine = json.loads(first.stdout.readline())  # the first has read the index ...
        second = _open(bundle)  # ... before the second opens it
        assert second.stdout is not None
        theirs = json.loads(second.stdout.readline())
    finally:
        for proc in (first, second):
            if proc is None:
                continue
            if proc.stdin is not None:
                proc.stdin.write("\n")
                proc.stdin.close()
            proc.wait(timeout=60)
            if proc.stdout is not None:
                proc.stdout.close()
    for fields in (mine, theirs):
        # the index file is mapped, and what search read of it is in the page cache
        assert fields.get("Rss", 0) >= 0.5 * size_kb, fields
        assert fields.get("Anonymous", 0) == 0, "no page of the index copied"
    # the second process's pages of the index are the first one's (shared, not private;
    # pages just written by the build and not yet on disk count as dirty)
    shared = theirs.get("Shared_Clean", 0) + theirs.get("Shared_Dirty", 0)
    assert shared >= 0.9 * theirs["Rss"], json.dumps([mine, theirs])
    assert np.isclose(theirs["Rss"], mine["Rss"], rtol=0.1)


def test_the_mapped_layout_finds_what_the_block_lists_find() -> None:
    """Fast-scan lists stored as array lists of packed blocks, padded with copies of each
    list's last vector: the nearest neighbour and its distance are the block lists' own,
    and an index in that layout takes additions (an incremental build)."""
    rng = np.random.default_rng(3)
    vectors = rng.random((12_000, 128), dtype=np.float32)
    index = faiss.index_factory(128, "IVF32,PQ32x4fs")
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64) * 3)
    queries = vectors[:300] + rng.normal(0, 0.01, (300, 128)).astype(np.float32)
    params = faiss.SearchParametersIVF()
    params.nprobe = 4
    before_d, before_i = index.search(queries, 8, params=params)
    padding = mapped_lists.to_mapped(index)
    assert padding > 0 and index.ntotal == len(vectors) + padding
    after_d, after_i = index.search(queries, 8, params=params)
    assert (after_i[:, 0] == before_i[:, 0]).all()
    assert np.allclose(after_d[:, 0], before_d[:, 0])
    # an index in the mapped layout takes additions (an incremental build)
    additions = mapped_lists.Additions(index)
    extra = rng.random((500, 128), dtype=np.float32)
    additions.add(extra, np.arange(500, dtype=np.int64) + 10**6, _assign(index, extra))
    assert additions.close() > 0
    _, found = index.search(extra[:50], 1, params=params)
    assert (found[:, 0] == np.arange(50) + 10**6).mean() > 0.9


def _assign(index: Any, x: np.ndarray) -> np.ndarray:
    _, lists = faiss.extract_index_ivf(index).quantizer.search(x, 1)
    return np.asarray(lists[:, 0], np.int64)


@pytest.mark.parametrize("factory", ["IVF32,PQ32x4fs", "IVF32_HNSW32,PQ32x4fs", "IVF32,PQ16"])
def test_additions_with_the_builds_assignment_are_faiss_own_add(factory: str) -> None:
    """The build adds vectors to the lists its stop-word pass assigned them to, without
    FAISS assigning them again: the index written is byte for byte the one FAISS's own
    `add_with_ids` (then `to_mapped`) makes, added in several blocks as the build does."""
    rng = np.random.default_rng(5)
    vectors = rng.random((9_000, 128), dtype=np.float32)
    trained = faiss.index_factory(128, factory)
    trained.train(vectors[:4000])
    ids = np.arange(len(vectors), dtype=np.int64) * 7
    theirs = faiss.clone_index(trained)
    theirs.add_with_ids(vectors, ids)
    their_padding = mapped_lists.to_mapped(theirs)
    ours = faiss.clone_index(trained)
    additions = mapped_lists.Additions(ours)
    for a, b in ((0, 2500), (2500, 2500), (2500, 7001), (7001, 9000)):
        additions.add(vectors[a:b], ids[a:b], _assign(ours, vectors[a:b]))
    assert additions.close() == their_padding
    assert ours.ntotal == theirs.ntotal == len(vectors) + their_padding
    assert bytes(faiss.serialize_index(ours)) == bytes(faiss.serialize_index(theirs))


def test_the_padding_is_never_a_neighbour() -> None:
    """Each list is padded to whole blocks with a vector far from every descriptor, under
    the list's last id. Padding with copies of the last vector put that one vector in all k
    neighbours of a query near it; before that fix the copies were packed as if flat and
    decoded to arbitrary codes, random vectors voting for a real card."""
    rng = np.random.default_rng(8)
    raw = rng.random((6_000, 128), dtype=np.float32) ** 4  # peaky, like SIFT histograms
    vectors = np.sqrt(raw / raw.sum(axis=1, keepdims=True))  # RootSIFT: unit norm, >= 0
    index = faiss.index_factory(128, "IVF16,PQ32x4fs")
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    assert mapped_lists.to_mapped(index) > 0
    ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
    packer, lists = ivf.get_CodePacker(), faiss.downcast_InvertedLists(ivf.invlists)
    far = mapped_lists.far_code(ivf)
    far_vector = ivf.pq.decode(far[None])[0]
    assert ((vectors - far_vector) ** 2).sum(axis=1).min() > PARAMS.vote_max_dist
    _, assigned = ivf.quantizer.search(vectors, 1)
    padded_lists = 0
    for number in range(ivf.nlist):
        real = int((assigned[:, 0] == number).sum())
        size = lists.list_size(number)
        assert size == real + (-real) % mapped_lists.BLOCK
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * packer.code_size).copy()
        ids = faiss.rev_swig_ptr(lists.get_ids(number), size)
        unpacked = [packer.unpack_1(codes.reshape(-1, packer.block_size), i)
                    for i in range(size)]
        for i in range(real, size):
            padded_lists += i == real
            assert ids[i] == ids[real - 1]
            assert (unpacked[i] == far).all(), (number, i)
        # and the real vectors are the ones FAISS encoded for them
        mine = ivf.pq.compute_codes(vectors[assigned[:, 0] == number])
        assert np.array_equal(np.stack(unpacked[:real]), mine)
    assert padded_lists > 0
