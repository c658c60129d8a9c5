"""Votes: each query descriptor's approximate neighbours (FAISS) vote for the cards they belong
to, and the most voted cards (or names) become the candidates to verify."""

from __future__ import annotations

import numpy as np

from app.recognition.index.bundle import Bundle
from app.recognition.params import FeatureParams


def vote(bundle: Bundle, dist: np.ndarray, ids: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Votes per card row from the k approximate neighbours of each query descriptor.

    Only neighbours close to the first (d^2 <= vote_ratio * d1^2) count. With `burst_norm`
    each query descriptor spreads ONE vote over the distinct cards among them, so a frame
    element matching fifty cards gives each a fiftieth while a distinctive art feature gives
    its card a whole vote.
    """
    valid = (ids >= 0) & (dist <= params.vote_max_dist)
    valid &= dist <= params.vote_ratio * np.maximum(dist[:, :1], 1e-6)
    cards = np.where(valid, bundle.card_of(ids), -1)
    cards[cards >= 0] = np.where(bundle.alive[cards[cards >= 0]], cards[cards >= 0], -1)
    if not params.burst_norm:
        keep = cards >= 0
        return np.bincount(cards[keep], minlength=bundle.slot_count).astype(np.float64)
    cards.sort(axis=1)
    distinct = cards >= 0
    distinct[:, 1:] &= cards[:, 1:] != cards[:, :-1]
    per_row = distinct.sum(axis=1, keepdims=True)
    weights = np.where(distinct, 1.0 / np.maximum(per_row, 1), 0.0)
    return np.bincount(cards[distinct], weights=weights[distinct], minlength=bundle.slot_count)


def candidates(bundle: Bundle, votes: np.ndarray, count: int) -> np.ndarray:
    """The `count` cards to verify: names ranked by the votes of all their printings, each
    by its most voted printing. Printings of one card split its votes (each query descriptor
    spreads its vote over the distinct cards it matches), so a card with many printings
    would otherwise rank below a wrong card with one; its other printings are verified with
    it anyway (`verify_candidates`). Used by the several-card search, whose rounds see few
    features per card; the single-card search keeps ranking printings (measured: ranking
    names lost mom_c.jpg there, a webcam photo whose right card is not the most voted
    name)."""
    voted = np.flatnonzero(votes > 0)
    if len(voted) == 0:
        return voted
    groups = bundle.name_group[voted]
    by_name = np.bincount(groups, weights=votes[voted])
    ranked = voted[np.lexsort((-votes[voted], groups))]  # by name, most voted first
    first = np.r_[True, bundle.name_group[ranked[1:]] != bundle.name_group[ranked[:-1]]]
    leaders = ranked[first]  # one printing per voted name
    top = np.argsort(-by_name[bundle.name_group[leaders]], kind="stable")[:count]
    return leaders[top]


def dense_candidates(
    bundle: Bundle, votes: np.ndarray, chosen: np.ndarray, params: FeatureParams
) -> np.ndarray:
    """Up to `params.dense_candidates` more cards to verify: the most votes per indexed
    descriptor, among cards not `chosen` with at least `min_inliers / 2` votes. A reference
    whose art is dark or smooth keeps few distinctive descriptors (25-60 against a median of
    160, the rest are stop words), so it collects few votes even when most of them hit, and a
    card with many descriptors outvotes it on chance matches (measured: Leyline of Resonance
    was not among the six most voted). Verified after the most voted, and only while no
    candidate's art has matched (the early stop of `verify_candidates`)."""
    if params.dense_candidates <= 0:
        return np.zeros(0, np.int64)
    density = votes / np.maximum(bundle.kept, params.dense_floor)
    density[votes < params.min_inliers / 2] = 0
    density[chosen] = 0
    extra: np.ndarray = np.argsort(-density, kind="stable")[: params.dense_candidates]
    return np.asarray(extra[density[extra] > 0])
