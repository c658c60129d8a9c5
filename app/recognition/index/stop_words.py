"""Step 3 of a build: drop the stop words, keep each card's best descriptors, add them.

A scratch copy of the trained index holds the candidates of a random sample of cards
(`stop_sample_cards`); each card's candidates near-duplicated (`stop_radius`) in
>= `stop_min_cards` other sampled cards are dropped, the first `ref_keep` others are indexed
with id `slot << LOCAL_BITS | local`. One coarse assignment per vector serves both the
scratch search and the add (`mapped_lists.Additions`). An incremental build searches the
previous release's sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np

from app.common.progress import Progress
from app.recognition.features.extraction import rootsift
from app.recognition.index import mapped_lists
from app.recognition.index.bundle import LOCAL_BITS
from app.recognition.index.shards import Kept
from app.recognition.index.spool import Spool, described
from app.recognition.index.training import sample_cards
from app.recognition.params import FeatureParams

_CARDS_PER_CHUNK = 256  # cards per block through FAISS in the stop-word/add pass


def stop_word_sample(index: Any, spool: Spool, params: FeatureParams, seed: int,
                     progress: bool) -> Any:
    """The trained index holding the candidates of a sample of cards, id = card row."""
    if params.stop_min_cards <= 0:
        return None
    scratch = faiss.clone_index(index)
    # references only: a picture's other printings hold no descriptors (pictures.py), so
    # a picture counts once however many printings show it
    sample = sample_cards(described(spool), params.stop_sample_cards, seed + 1)
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
    additions: mapped_lists.Additions,
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
    additions.add(x[chosen], ids[chosen], coarse[1][chosen, 0])
    return keep, int(stop.sum())


def index_spool(
    index: Any, additions: mapped_lists.Additions, scratch: Any, spool: Spool,
    params: FeatureParams, first_slot: int, in_sample: bool, stats: dict[str, int],
) -> Iterator[Kept]:
    """Index every card of the spool (slots from `first_slot`), block by block, into
    `additions` (for `index`, whose quantizer assigns the lists); yield what its shard
    keeps. `in_sample`: the spool's cards are the ones the stop-word sample was
    drawn from (a card must not count its own descriptors as near-duplicates)."""
    cards = len(spool.counts)
    for first in range(0, cards, _CARDS_PER_CHUNK):
        last = min(cards, first + _CARDS_PER_CHUNK)
        counts = np.asarray(spool.counts[first:last], np.int64)
        rows = np.arange(first, last) if in_sample else np.full(last - first, -1)
        keep, stops = _index_cards(index, additions, scratch, spool.descriptors(first, last),
                                   counts,
                                   rows, np.arange(first, last) + first_slot, params)
        stats["stop_words"] += stops
        kps = spool.keypoints(first, last)
        thumbs, offsets = spool.thumbs(first, last)
        colors, color_offsets = spool.colors(first, last)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for i in range(last - first):
            a, b = int(bounds[i]), int(bounds[i + 1])
            yield Kept(kps[a:b][keep[a:b]], thumbs[int(offsets[i]) : int(offsets[i + 1])],
                       spool.ref_sizes[first + i], spool.entries[first + i],
                       colors[int(color_offsets[i]) : int(color_offsets[i + 1])],
                       spool.pictures[first + i])

