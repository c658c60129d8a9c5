"""Step 2 of a full build: train the IVF-PQ index on a sample of the spooled cards.

The coarse centroids come from a two-level k-means above 1024 lists (its cost grows with
sqrt(nlist), not nlist), then FAISS trains the PQ codebooks on the residuals. `factory`
names the index in FAISS's `indexfactory` terms; the manifest records it. An incremental
build reuses the trained index of the release before it.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from app.recognition.features.extraction import rootsift
from app.recognition.index.bundle import BundleError
from app.recognition.index.spool import Spool, described
from app.recognition.params import FeatureParams


def choose_nlist(n: int, params: FeatureParams) -> int:
    """A power of two near 4*sqrt(N) (FAISS's guideline is 4-16*sqrt(N); the low end, since
    each photo searches ~1500 vectors), at least 39 vectors per list."""
    nlist = params.nlist or 1 << max(4, round(np.log2(max(1.0, 4 * np.sqrt(n)))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    return nlist


def factory(nlist: int, params: FeatureParams) -> str:
    """The index in `faiss.index_factory` terms (4-bit PQ: the fast-scan variant)."""
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


def sample_cards(cards: np.ndarray, sample: int, seed: int) -> np.ndarray:
    """A random sample of `cards` (spool rows), in order; all of them when `sample` is 0."""
    rng = np.random.default_rng(seed)
    if sample <= 0 or sample >= len(cards):
        return cards
    return np.sort(rng.choice(cards, size=sample, replace=False))


def train(spool: Spool, params: FeatureParams, seed: int) -> Any:
    """The trained, empty index for the spooled cards (`choose_nlist` lists)."""
    references = described(spool)
    cards = len(references)
    total = int(spool.offsets[-1])
    nlist = choose_nlist(min(total, cards * params.ref_keep), params)
    want = max(nlist * params.train_per_list, 40 * (1 << params.pq_nbits) * 4)
    # whole cards, chosen at random, until the sample is large enough (contiguous reads)
    per_card = max(1, total // max(1, cards))
    order = sample_cards(references, min(cards, want // per_card + 1), seed)
    x = np.concatenate([rootsift(spool.descriptors(int(c), int(c) + 1)) for c in order])
    if len(x) < 40 * (1 << params.pq_nbits):
        raise BundleError(f"only {len(x)} descriptors: too few to train IVF-PQ")
    index: Any = faiss.index_factory(128, factory(nlist, params))  # already downcast
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

