"""Two serving processes that open one bundle share its index's pages (mapped_lists.py):
the second process maps the same file and pays no private copy of the inverted lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np

from app.recognition.index import mapped_lists
from app.recognition.index.bundle import INDEX_FILE, Bundle
from tests.support.environment import REPOSITORY

# Opens the bundle, searches every list (every page of the codes is read), then reports
# what the process holds of the index file's mapping (/proc/self/smaps), and waits for a
# line on stdin before it exits, so that both processes are alive when the second reports.
OPEN_AND_REPORT = r"""
import json, sys
import numpy as np
from pathlib import Path
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
    # additions go through block lists, appended whole blocks
    added = mapped_lists.blocks_like(index)
    assert added is not index and added.ntotal == 0
    extra = rng.random((500, 128), dtype=np.float32)
    added.add_with_ids(extra, np.arange(500, dtype=np.int64) + 10**6)
    mapped_lists.append_blocks(index, added)
    _, found = index.search(extra[:50], 1, params=params)
    assert (found[:, 0] == np.arange(50) + 10**6).mean() > 0.9
