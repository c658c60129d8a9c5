"""Query path: features -> IVF-PQ votes -> exact re-rank + RANSAC -> photometric decision.

Why not just count RANSAC inliers: every modern card shares its frame (name bar, type line,
text box), so a homography fits the frame of ANY card of that frame with 20-170 inliers.
Instead the homography of each candidate is used to warp the photo into the candidate's
reference frame, and the ART BOX is compared pixel-wise (normalised cross-correlation). A
wrong card aligned on frame features has uncorrelated art; the right card has matching art.
Printings that share the art (Mind Stone IMA vs WTH) are then told apart by the whole-card
correlation, which sees the frame, the set symbol and the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from app.recognition.features.extraction import (
    Features,
    extract_features,
    mirror,
    rootsift,
    target_size,
)
from app.recognition.index.bundle import Bundle
from app.recognition.match.decide import decide
from app.recognition.match.geometry import borrowed, card_quad, corners, overlap, verify
from app.recognition.match.photometric import PhotoPyramids, photometric
from app.recognition.match.records import Candidate, Recognition, Verified
from app.recognition.match.vote import dense_candidates, vote
from app.recognition.params import FeatureParams


def verify_candidates(
    bundle: Bundle,
    order: np.ndarray,
    votes: np.ndarray,
    query: Features,
    dist: np.ndarray,
    ids: np.ndarray,
    params: FeatureParams,
    hidden: np.ndarray | None = None,
) -> list[Verified]:
    """Geometric (+ photometric) verification of candidates in vote order, stopping early:
    once a candidate's art clearly matches, much less voted candidates are skipped. Then
    every printing of the leader's picture is compared where the leader matched: they are
    indexed once, under the leader (index/pictures.py), so only their thumbnails tell them apart;
    and up to `max_printings` other printings of its name even if they got few votes:
    reprints in another frame share most features, so votes split between them and the
    right printing can rank low."""
    photo = PhotoPyramids(query) if params.decision == "photometric" else None
    verified: list[Verified] = []
    leader: Verified | None = None
    tried: set[int] = set()
    cards = bundle.card_of(ids)

    def add(result: Verified) -> None:
        nonlocal leader
        result.votes = float(votes[result.row])
        if photo is not None:
            result.art_corr, result.card_corr = photometric(
                bundle, result, photo, params, hidden
            )
            if result.art_corr >= params.early_stop_corr and (
                leader is None or result.art_corr > leader.art_corr
            ):
                leader = result
        verified.append(result)

    def check(row: int, sibling_of: Verified | None = None) -> None:
        result = None if row in tried else verify(bundle, row, query, cards, dist, ids, params)
        tried.add(row)
        if sibling_of is None or photo is None:
            if result is not None:
                add(result)
            return
        place = corners(sibling_of, bundle)
        if result is not None and overlap(corners(result, bundle), place) > 0.5:
            add(result)
            return
        if result is not None:  # this printing elsewhere in the photo: another card
            add(result)
        add(borrowed(bundle, row, sibling_of))  # and compared where the leader is

    for row in (int(r) for r in order):
        if leader is None or votes[row] >= params.early_stop_votes * leader.votes:
            check(row)
    if leader is not None:
        place = corners(leader, bundle)
        here = {v.row for v in verified if overlap(corners(v, bundle), place) > 0.5}
        twins = [r for r in bundle.picture_printings(leader.row) if r not in here]
        seen = here | set(twins)
        others = [r for r in bundle.printings(leader.row) if r not in seen]
        others.sort(key=lambda r: -votes[r])
        chief = leader
        for row in twins + others[: params.max_printings]:
            check(row, chief)
    return verified


def recognize(
    bundle: Bundle,
    image_bgr: np.ndarray,
    *,
    quad_scale: float = 1.0,
    deadline: float | None = None,
) -> Recognition:
    """Recognise the card a photo shows. Thread-safe. `quad_scale` maps the given image's
    coordinates to the uploaded image's (the JPEG reduction factor of `decode.uploads.decode`).

    Coarse to fine: each of `query_passes` (pixel budgets) runs only if the previous one found
    no confident match and the next one actually sees more pixels. `deadline` (a
    `time.perf_counter()` value) is the request's time budget: a finer pass, which costs about
    twice the one before, is not started when it would end past it.
    """
    params = bundle.params
    start = time.perf_counter()
    timings: dict[str, float] = {}
    best: Recognition | None = None
    height, width = image_bgr.shape[:2]
    previous_size: tuple[int, int] | None = None
    for budget in params.query_passes:
        size = target_size(width, height, params, "query", budget)
        if size == previous_size:
            break
        now = time.perf_counter()
        if best is not None and deadline is not None and now + 2 * (now - start) > deadline:
            timings["budget_stop"] = 1
            break
        previous_size = size
        result = _recognize_once(bundle, image_bgr, budget, quad_scale, timings)
        timings["passes"] = timings.get("passes", 0) + 1
        if best is None or _top_confidence(result) > _top_confidence(best):
            best = result
        if result.match is not None:
            break
    assert best is not None
    timings["total"] = round((time.perf_counter() - start) * 1000, 2)
    best.timings_ms = timings
    return best


def _top_confidence(result: Recognition) -> float:
    if result.match is not None:
        return 1.0 + result.match.confidence
    return max((c.confidence for c in result.alternatives), default=0.0)


def _recognize_once(
    bundle: Bundle,
    image_bgr: np.ndarray,
    max_pixels: int,
    quad_scale: float,
    timings: dict[str, float],
) -> Recognition:
    """One pass at one query resolution; stage times are added into `timings`."""
    params = bundle.params
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + (now - clock) * 1000, 2)
        clock = now

    query = extract_features(image_bgr, params, role="query", max_pixels=max_pixels)
    lap("features")
    if len(query.descriptors) < params.min_inliers:
        return Recognition(None, [], None)
    match, alternatives = _search(bundle, query, lap)
    if match is None and params.mirror_search:
        # A front camera or a webcam preview mirrors the photo. Searched only when the photo
        # as it is matched nothing, so only photos without an answer pay for it; the
        # mirrored homography is then a plain one (`sane` still refuses mirrored fits).
        query = mirror(query)
        mirrored, mirrored_alternatives = _search(bundle, query, lap, "mirror")
        if mirrored is not None:
            match, alternatives = mirrored, mirrored_alternatives
    quad = None
    if match is not None:
        assert match.source is not None
        quad = card_quad(match.source, bundle, query, quad_scale)
    return Recognition(match, alternatives[:8], quad, mirrored=match is not None and
                       query.mirrored)


def _search(
    bundle: Bundle, query: Features, lap: Callable[[str], None], stage: str | None = None
) -> tuple[Candidate | None, list[Candidate]]:
    """Index search, votes, verification and decision for one set of query features;
    `lap` times each step under its name, or all of them under `stage`."""
    params = bundle.params
    dist, ids = bundle.search(rootsift(query.descriptors), params.knn)
    lap(stage or "search")
    votes = vote(bundle, dist, ids, params)
    order = np.argsort(-votes, kind="stable")[: params.top_candidates]
    order = order[votes[order] > 0]
    order = np.concatenate([order, dense_candidates(bundle, votes, order, params)])
    lap(stage or "vote")
    verified = verify_candidates(bundle, order, votes, query, dist, ids, params)
    lap(stage or "verify")
    result = decide(verified, bundle, params)
    lap(stage or "decide")
    return result
