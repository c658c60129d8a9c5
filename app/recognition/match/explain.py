"""Why a reference was not the answer: what each query pass saw of it (a benchmark's and an
operator's question when a photo of a catalogued card goes unrecognised)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.recognition.features.extraction import extract_features, rootsift
from app.recognition.index.bundle import Bundle
from app.recognition.match.geometry import verify
from app.recognition.match.photometric import PhotoPyramids, photometric
from app.recognition.match.vote import vote


def why_not(bundle: Bundle, image: np.ndarray, slot: int) -> dict[str, Any]:
    """The descriptors `slot` keeps in the index and, per query pass, the query's
    descriptors, the slot's votes and rank among all cards by votes, and its RANSAC inliers
    and art correlation when verified on its own (None: no homography)."""
    params = bundle.params
    passes: list[dict[str, Any]] = []
    for budget in params.query_passes:
        query = extract_features(image, params, role="query", max_pixels=budget)
        if len(query.descriptors) == 0:
            passes.append({"query_descriptors": 0})
            continue
        dist, ids = bundle.search(rootsift(query.descriptors), params.knn)
        votes = vote(bundle, dist, ids, params)
        rank = int((votes > votes[slot]).sum()) + 1
        found = verify(bundle, slot, query, bundle.card_of(ids), dist, ids, params)
        art = None
        if found is not None:
            art = round(photometric(bundle, found, PhotoPyramids(query), params)[0], 3)
        passes.append({"size": list(query.gray.shape[::-1]),
                       "query_descriptors": len(query.descriptors),
                       "votes": round(float(votes[slot]), 1), "rank": rank,
                       "inliers": found.inliers if found else None, "art_corr": art})
    return {"kept": int(bundle.kept[slot]), "passes": passes}
