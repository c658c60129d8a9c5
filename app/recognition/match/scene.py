"""Every catalogued card in one photo (a table, a binder page): `POST /infer?multi=true`.

The photo is searched once, at more pixels than for a single card, so that a card a tenth of
the photo's width still has features. Then, round after round, the single-card decision runs
on the query features not yet explained: the best verified card is reported, the features
inside its outline stop voting (so its frame cannot make up a second card and it is not
reported twice), and its area is left out of later photometric checks (a card lying on
another hides part of it). Candidates of a round that verifies nothing are set aside; after
`multi_misses` such rounds in a row, or `multi_max_cards` cards, or the time budget, it stops.
When nothing was found, the single-card search runs as a last resort: on a photo of one card
its smaller sizes can see what the wide search's background features drowned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from app.recognition.features.extraction import Features, extract_features, mirror, rootsift
from app.recognition.index.bundle import Bundle
from app.recognition.match.card import recognize, verify_candidates
from app.recognition.match.decide import decide
from app.recognition.match.geometry import card_quad, corners, overlap
from app.recognition.match.records import Recognition
from app.recognition.match.vote import candidates, vote


@dataclass
class Scene:
    """The cards found, strongest first (each a single-card `Recognition` with its quad)."""

    cards: list[Recognition]
    timings_ms: dict[str, float] = field(default_factory=dict)


def _inside(points: np.ndarray, quad: np.ndarray, margin: float) -> np.ndarray:
    """Which points lie inside a convex quad grown by `margin` (a fraction of its size)."""
    centre = quad.mean(axis=0)
    grown = centre + (quad - centre) * (1.0 + margin)
    edges = np.roll(grown, -1, axis=0) - grown
    rel = points[:, None, :] - grown[None, :, :]
    cross = edges[None, :, 0] * rel[:, :, 1] - edges[None, :, 1] * rel[:, :, 0]
    return np.all(cross >= 0, axis=1) | np.all(cross <= 0, axis=1)


def recognize_all(
    bundle: Bundle,
    image_bgr: np.ndarray,
    *,
    quad_scale: float = 1.0,
    deadline: float | None = None,
    max_cards: int | None = None,
) -> Scene:
    """Find every catalogued card in a photo, each once. Thread-safe. `quad_scale` and
    `deadline` as for `card.recognize`; `max_cards` defaults to `multi_max_cards`."""
    params = bundle.params
    limit = min(max_cards or params.multi_max_cards, params.multi_max_cards)
    start = clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + (now - clock) * 1000, 2)
        clock = now

    wide = replace(
        params, query_max_side=params.multi_max_side, query_nfeatures=params.multi_nfeatures
    )
    query = extract_features(image_bgr, wide, role="query", max_pixels=params.multi_pixels,
                             tile_pixels=params.multi_tile_pixels)
    descriptors = rootsift(query.descriptors)
    lap("features")
    if len(descriptors) < params.min_inliers:
        return Scene([], {**timings, "total": timings["features"]})
    dist, ids = bundle.search(descriptors, params.multi_knn)
    lap("search")
    cards = _rounds(bundle, query, dist, ids, quad_scale, deadline, limit, timings)
    lap("rounds")
    if not cards and params.mirror_search and not timings.get("budget_stop"):
        # a mirrored photo (front camera, webcam preview): every card in it is mirrored
        query = mirror(query)
        dist, ids = bundle.search(rootsift(query.descriptors), params.multi_knn)
        lap("mirror")
        cards = _rounds(bundle, query, dist, ids, quad_scale, deadline, limit, timings)
        for card in cards:
            card.mirrored = True
        lap("mirror")
    if not cards and not timings.get("budget_stop"):
        # a photo of one card whose features the wide search drowned in the background's:
        # the single-card search, at its own sizes, may still see it
        single = recognize(bundle, image_bgr, quad_scale=quad_scale, deadline=deadline)
        if single.match is not None:
            cards.append(single)
        lap("single_card")
    timings["total"] = round((time.perf_counter() - start) * 1000, 2)
    cards.sort(key=lambda r: -(r.match.confidence if r.match else 0.0))
    return Scene(cards, timings)


def _rounds(
    bundle: Bundle,
    query: Features,
    dist: np.ndarray,
    ids: np.ndarray,
    quad_scale: float,
    deadline: float | None,
    limit: int,
    timings: dict[str, float],
) -> list[Recognition]:
    """The search rounds over one set of query features and their index neighbours (see
    the module docstring); `timings` gets `budget_stop` when the deadline ended them."""
    params = bundle.params
    cards: list[Recognition] = []
    active = np.ones(len(ids), bool)
    hidden = np.zeros(query.gray.shape, np.uint8)  # areas of the cards already found
    set_aside = np.zeros(bundle.slot_count, bool)
    misses = rounds = 0
    seen_elsewhere: list[int] = []
    while len(cards) < limit and misses < params.multi_misses:
        if rounds and deadline is not None and time.perf_counter() > deadline:
            timings["budget_stop"] = 1  # the first round always runs: a budget too small
            break  #                      for one card must not turn a card into a 404
        rounds += 1
        masked = np.where(active[:, None], ids, -1)
        votes = vote(bundle, dist, masked, params)
        votes[set_aside] = 0
        order = candidates(bundle, votes, params.multi_candidates)
        # cards a previous round saw elsewhere come first: their votes may be fewer than a
        # frame-heavy wrong candidate's, and set aside with it they would be lost
        order = np.array(list(dict.fromkeys([*seen_elsewhere, *(int(r) for r in order)])))
        seen_elsewhere = []
        if len(order) == 0:
            break
        verified = verify_candidates(
            bundle, order, votes, query, dist, masked, params, hidden if cards else None
        )
        match, alternatives = decide(verified, bundle, params)
        if match is None:
            set_aside[order] = True
            misses += 1
            continue
        misses = 0
        chosen = match.source
        assert chosen is not None
        outline = corners(chosen, bundle)
        cards.append(Recognition(
            match, alternatives[:8], card_quad(chosen, bundle, query, quad_scale)
        ))
        active &= ~_inside(query.keypoints, outline, 0.03)
        cv2.fillConvexPoly(hidden, np.round(outline).astype(np.int32), 255)
        seen_elsewhere = [
            v.row for v in verified
            if v.art_corr >= params.early_stop_corr and overlap(corners(v, bundle), outline) < 0.5
        ]
    timings["rounds_count"] = timings.get("rounds_count", 0) + rounds
    return cards
