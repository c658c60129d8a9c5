"""Build a descriptor bundle in full (format in `bundle.py`; from the release before it:
`incremental.py`).

Full build, streamed so that 100k printings fit in a few GB of RAM:
 1. extract (or take from the feature cache) each reference's features; keep its best
    `ref_candidates` descriptors (`selection.preselect`) in a spool file on disk
    (`spool.py`);
 2. train the index on a sample of cards: the coarse centroids by two-level k-means (cost
    grows with sqrt(nlist), not nlist), then the PQ codebooks (`training.py`);
 3. stop words: a scratch copy of the trained index holds the candidates of a random sample
    of cards; each card's candidates near-duplicated in >= stop_min_cards other sampled cards
    are dropped, the first `ref_keep` others are indexed with id `slot << LOCAL_BITS | local`.
    One coarse assignment per vector serves both the scratch search and the add
    (`stop_words.py`);
 4. write the index, the stop-word sample, per-card shards, the id map, then the manifest
    (`shards.py`, `writing.py`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import faiss

from app.common.progress import Progress
from app.common.reference import ReferenceImage
from app.recognition.index import mapped_lists
from app.recognition.index.bundle import (
    INDEX_FILE,
    SHARD_SLOTS,
    STOPWORDS_FILE,
    BundleError,
    shard_name,
)
from app.recognition.index.shards import ShardWriter
from app.recognition.index.spool import Pictures, Spool, described
from app.recognition.index.stop_words import index_spool, stop_word_sample
from app.recognition.index.training import factory, train
from app.recognition.index.writing import finish, fresh_dir, write_index
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)


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
    with omp_threads(workers):
        return _build_full(refs, out_dir, params, progress=progress, workers=workers, seed=seed,
                           total=total, shard_slots=shard_slots)


@contextlib.contextmanager
def omp_threads(count: int) -> Iterator[None]:
    """FAISS's OpenMP thread count for the calling thread, set for the block, then restored."""
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
    out_dir = fresh_dir(out_dir)
    timings: dict[str, float] = {}
    spool = Spool(out_dir)
    refs = list(refs)
    try:
        with Progress("extracting", total=len(refs), unit="img", enabled=progress) as bar:
            shared = Pictures(params, spool, workers, bar)
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
        index = train(spool, params, seed)
        timings["train"] = time.perf_counter() - clock
        clock = time.perf_counter()
        log.info("build: index %s trained in %.0f s; stop-word sample next",
                 factory(int(index.nlist), params), timings["train"])
        scratch = stop_word_sample(index, spool, params, seed, progress)
        if scratch is not None:
            write_index(scratch, out_dir / STOPWORDS_FILE)
        timings["stop_sample"] = time.perf_counter() - clock
        clock = time.perf_counter()
        stats = {"stop_words": 0}
        shard = ShardWriter()
        shard_count = 0
        additions = mapped_lists.Additions(index)
        with Progress("indexing", total=cards, unit="card", enabled=progress) as bar:
            for kept in index_spool(index, additions, scratch, spool, params, 0, True, stats):
                shard.add_kept(kept)
                if len(shard) == shard_slots:
                    shard.write(out_dir / shard_name(shard_count))
                    shard_count += 1
                    shard = ShardWriter()
                bar.update(1)
        if len(shard) or shard_count == 0:
            shard.write(out_dir / shard_name(shard_count))
            shard_count += 1
        padding = additions.close()
        timings["index"] = time.perf_counter() - clock
        log.info("build: %d vectors indexed; writing the index and checksums", index.ntotal)
        write_index(index, out_dir / INDEX_FILE)
        entries: list[dict[str, Any] | None] = list(spool.entries)
        counts_out = {
            "candidates": int(spool.offsets[-1]),
            "stop_words": stats["stop_words"],
            "skipped_images": skipped,
            "reused_cards": 0,
            "new_cards": cards,
            "references": len(described(spool)),
            "padding_vectors": padding,
            "shared_pictures": shared.shared,
            "picture_disagreements": shared.disagreed,
        }
    finally:
        spool.remove()
    return finish(out_dir, params, index, entries, shard_count, shard_slots, counts_out,
                  timings, started, None)
