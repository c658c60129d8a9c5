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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from app.recognition.features import layout
from app.recognition.features.extraction import (
    Features,
    extract_features,
    mirror,
    rootsift,
    target_size,
)
from app.recognition.index.bundle import Bundle
from app.recognition.match.appearance import View, printing_odds
from app.recognition.params import FeatureParams


@dataclass
class Candidate:
    """A verified candidate card. `confidence` (0-1) is calibrated so that `accept` means
    something (see `decide`); `score` orders candidates: art + whole-card correlation
    (photometric decision) or the inlier count (legacy decision)."""

    row: int
    card: dict[str, Any]
    score: float
    inliers: int
    confidence: float
    votes: float = 0.0
    art_inliers: int = 0
    art_corr: float = 0.0
    card_corr: float = 0.0
    same_art: bool = False  # shares the art of the best match (another printing of it)
    ambiguous: bool = False  # the photo cannot tell this printing from the others of its art
    art_confidence: float = 0.0  # the card's (art's) confidence, whatever its printing
    source: _Verified | None = field(default=None, repr=False, compare=False)


@dataclass
class Recognition:
    """`match` is None for "no match"; `alternatives` come best first, printings sharing the
    match's art before other cards; `quad` is the match's corners (TL, TR, BR, BL of the card
    as printed) in the uploaded image's pixels."""

    match: Candidate | None
    alternatives: list[Candidate]
    quad: list[list[float]] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    mirrored: bool = False  # the photo shows the card mirrored left-right (front camera)

    @property
    def ambiguous_printing(self) -> bool:
        """The card is certain, its printing is not: `alternatives` starts with the other
        printings it may be (see printing.py)."""
        return self.match is not None and self.match.ambiguous


@dataclass
class _Verified:
    row: int
    votes: float
    inliers: int
    art_inliers: int
    homography: np.ndarray  # reference feature coords -> query feature coords
    art_corr: float = 0.0
    card_corr: float = 0.0
    view: View | None = None  # the photo warped onto this reference (photometric decision)
    gray_corr: float = 0.0  # the art correlation in grey levels ...
    color_corr: float | None = None  # ... and in colour (None: not compared)


# -- voting --------------------------------------------------------------------------------
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


# -- geometric verification ----------------------------------------------------------------
def _sane(homography: np.ndarray, size: tuple[float, float], query: Features) -> bool:
    """Reject homographies that cannot be a photographed card: mirrored, non-convex, tiny."""
    width, height = size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    quad = cv2.perspectiveTransform(corners[None], homography)[0]
    edges = np.roll(quad, -1, axis=0) - quad
    cross = edges[:, 0] * np.roll(edges[:, 1], -1) - edges[:, 1] * np.roll(edges[:, 0], -1)
    if not np.all(cross > 0):
        return False  # not convex, or mirrored (reference corners turn one way, y down)
    area = 0.5 * abs(float(np.sum(quad[:, 0] * np.roll(quad[:, 1], -1) - np.roll(quad[:, 0], -1)
                                   * quad[:, 1])))
    query_area: int = query.gray.shape[0] * query.gray.shape[1]
    return 0.002 * query_area < area < 4.0 * query_area


def correspondences(
    bundle: Bundle, slot: int, cards: np.ndarray, dist: np.ndarray, ids: np.ndarray,
    params: FeatureParams,
) -> tuple[np.ndarray, np.ndarray]:
    """(query descriptor rows, reference keypoint positions) matching one card, taken from
    the index neighbours already found for voting: for each query descriptor its nearest
    neighbour in that card, then one query descriptor per reference keypoint (the closest).
    No reference descriptors are stored, so no second matching pass is needed."""
    hit = (cards == slot) & (dist <= params.vote_max_dist)
    rows, cols = np.nonzero(hit)  # row-major: per row, nearest first
    if len(rows) == 0:
        return rows, rows
    rows, first = np.unique(rows, return_index=True)
    cols = cols[first]
    local = Bundle.local_of(ids[rows, cols])
    order = np.argsort(dist[rows, cols], kind="stable")
    _, unique = np.unique(local[order], return_index=True)
    chosen = order[unique]
    return rows[chosen], local[chosen]


def verify(
    bundle: Bundle, slot: int, query: Features, cards: np.ndarray, dist: np.ndarray,
    ids: np.ndarray, params: FeatureParams,
) -> _Verified | None:
    """RANSAC homography (MAGSAC) on the index correspondences of one card."""
    qrows, local = correspondences(bundle, slot, cards, dist, ids, params)
    if len(qrows) < max(4, params.min_inliers):
        return None
    ref_kp = bundle.keypoints(slot)
    local_ok = local < len(ref_kp)
    src = ref_kp[local[local_ok]]
    dst = query.keypoints[qrows[local_ok]]
    if len(src) < max(4, params.min_inliers):
        return None
    homography, mask = cv2.findHomography(
        src, dst, cv2.USAC_MAGSAC, params.ransac_px, maxIters=2000, confidence=0.999
    )
    if homography is None or mask is None:
        return None
    inlier = mask.ravel().astype(bool)
    size = (float(bundle.ref_size[slot][0]), float(bundle.ref_size[slot][1]))
    if inlier.sum() < params.min_inliers or not _sane(homography, size, query):
        return None
    x0, y0, x1, y1 = params.art_box
    rel = src[inlier] / np.array(size, np.float32)
    in_art = (rel[:, 0] >= x0) & (rel[:, 0] <= x1) & (rel[:, 1] >= y0) & (rel[:, 1] <= y1)
    return _Verified(slot, 0.0, int(inlier.sum()), int(in_art.sum()), homography)


def _borrowed(bundle: Bundle, slot: int, leader: _Verified) -> _Verified:
    """Another printing of the leader's card checked through the leader's homography: same
    layout, so the reference frames differ only by their sizes. Votes split between reprints
    (and the index keeps no frame features), so a reprint may have too few correspondences
    of its own; the photometric check then decides between them."""
    lw, lh = bundle.ref_size[leader.row]
    sw, sh = bundle.ref_size[slot]
    scale = np.diag([lw / max(sw, 1.0), lh / max(sh, 1.0), 1.0])
    return _Verified(slot, 0.0, 0, 0, leader.homography @ scale)


# -- photometric verification --------------------------------------------------------------
class _Pyramid:
    """Query gray image (or colour image) and its pyrDown levels, made lazily (anti-aliasing
    for the warp)."""

    def __init__(self, image: np.ndarray) -> None:
        self.levels = [image]

    def level(self, n: int) -> np.ndarray:
        while len(self.levels) <= n and min(self.levels[-1].shape[:2]) >= 16:
            self.levels.append(cv2.pyrDown(self.levels[-1]))
        return self.levels[min(n, len(self.levels) - 1)]


class _Photo:
    """What the photometric check warps: the query's gray pyramid, and its colour one when
    the query has colour (made only when a reference with a colour thumbnail is checked)."""

    def __init__(self, query: Features) -> None:
        self.gray = _Pyramid(query.gray)
        self._color_image = query.color
        self._color: _Pyramid | None = None

    def color(self) -> _Pyramid | None:
        if self._color is None and self._color_image is not None:
            self._color = _Pyramid(self._color_image)
        return self._color


def _warp_onto(
    pyramid: _Pyramid, to_query: np.ndarray, size: tuple[int, int],
    hidden: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(the photo warped onto a `size` (w, h) image of the reference, valid pixels): from
    the pyramid level whose pixels match the reference's (anti-aliasing), `to_query` mapping
    that image's pixels to query-feature pixels; `hidden` pixels are not valid."""
    scale = math.sqrt(abs(np.linalg.det(to_query[:2, :2])))  # query px per reference px
    level = max(0, int(math.floor(math.log2(max(scale, 1.0)))))
    image = pyramid.level(level)
    factor = image.shape[1] / pyramid.levels[0].shape[1]
    warp = np.diag([factor, factor, 1.0]) @ to_query
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(image, warp, size, flags=flags)
    valid = cv2.warpPerspective(np.full(image.shape[:2], 255, np.uint8), warp, size,
                                flags=flags) == 255
    if hidden is not None:
        covered = cv2.warpPerspective(
            hidden, to_query, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        )
        valid &= covered == 0
    return warped, valid


def _ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    """Zero-mean normalised cross-correlation over valid pixels, times the valid fraction
    (a card half outside the photo cannot prove much)."""
    coverage = float(valid.mean())
    if coverage < 0.3:
        return 0.0
    x = a[valid].astype(np.float32)
    y = b[valid].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    denom = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y)) / denom * coverage if denom > 1e-6 else 0.0


def photometric(
    bundle: Bundle,
    cand: _Verified,
    photo: _Photo,
    params: FeatureParams,
    hidden: np.ndarray | None = None,
) -> tuple[float, float]:
    """(art correlation, whole-card correlation) of the photo warped onto the reference;
    the warp is kept on `cand.view` for the printing decision. The art correlation is taken
    where this printing differs from the others of its layout (`layout.distinct_correlation`:
    a Room's or a saga's own art and name, not the layout they share); the fixed
    `params.art_box` only for a bundle without layout keys or a layout too rare to learn.
    Either is compared without its smooth part (`params.art_highpass`: a glare band across
    the art is not held against the card). Where the bundle has the reference in colour,
    colours that do not match lower the art correlation (`colored`). `hidden`
    (query-feature sized, non-zero = covered by a card already found) is left out of the
    comparison."""
    thumb = bundle.thumbnail(cand.row)
    th, tw = thumb.shape
    rw, rh = bundle.ref_size[cand.row]
    to_query = cand.homography @ np.diag([rw / tw, rh / th, 1.0])  # thumb -> query coords
    warped, valid = _warp_onto(photo.gray, to_query, (tw, th), hidden)
    warped = cv2.GaussianBlur(warped, (0, 0), layout.BLUR)
    ref = cv2.GaussianBlur(thumb, (0, 0), layout.BLUR)
    cand.view = View(warped.astype(np.float32), valid, ref.astype(np.float32))
    card_corr = _ncc(warped, ref, valid)
    mean = bundle.layout_mean(cand.row)
    distinct = None if mean is None else layout.distinct_correlation(
        warped, ref, valid, mean, params.art_highpass)
    if distinct is None:  # a bundle without layout keys: the fixed art box
        x0, y0, x1, y1 = params.art_box
        art = (slice(int(y0 * th), int(y1 * th)), slice(int(x0 * tw), int(x1 * tw)))
        seen = layout.highpassed(warped.astype(np.float32), params.art_highpass, valid)
        own = layout.highpassed(ref.astype(np.float32), params.art_highpass)
        distinct = _ncc(seen[art], own[art], valid[art])
    cand.gray_corr = distinct
    if params.color_check:
        cand.color_corr = _color_corr(bundle, cand, photo, to_query, (tw, th), hidden)
    return colored(distinct, cand.color_corr, params), card_corr


def colored(gray: float, color: float | None, params: FeatureParams) -> float:
    """The art correlation from the grey and the colour ones: the grey one, lowered by as
    much as the colour correlation falls short of `params.color_floor`. A look-alike whose
    grey levels match is not the card when its colours do not; the colour correlation of a
    right match is lower and noisier than its grey one (a card of one hue has little colour
    structure, a glare band bleaches it), so it only vetoes, it never raises.
    Measured on rendered photos of the eval catalogue (every 5th printing, 500 and 1000 px,
    all candidates verified): right printings' colour correlation p1 0.23, p5 0.53, median
    0.89; with the floor at 0.2, no right printing's art correlation fell below 0.75 that was
    not there already, and other cards' above 0.45 went from 45 to 19 of 200 (above 0.65:
    13 to 4); the floor at 0.3 put 2 right printings under 0.65."""
    if color is None:
        return gray
    return gray - max(0.0, params.color_floor - color)


def _color_corr(
    bundle: Bundle, cand: _Verified, photo: _Photo, thumb_to_query: np.ndarray,
    thumb_size: tuple[int, int], hidden: np.ndarray | None,
) -> float | None:
    """`layout.color_correlation` of the photo and the reference's colour thumbnail; None
    when either has no colour (a format 2 bundle, a gray photo) or the reference's colour
    tells it from nothing."""
    pyramid = photo.color()
    if pyramid is None:
        return None
    reference = bundle.color_thumbnail(cand.row)
    if reference is None:
        return None
    ch, cw = reference.shape[:2]
    to_query = thumb_to_query @ np.diag([thumb_size[0] / cw, thumb_size[1] / ch, 1.0])
    warped, valid = _warp_onto(pyramid, to_query, (cw, ch), hidden)
    return layout.color_correlation(layout.blurred(warped), layout.blurred(reference), valid,
                                    bundle.layout_chroma(cand.row))


# -- decision ------------------------------------------------------------------------------
def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def _same_art(a: _Verified, b: _Verified, bundle: Bundle) -> bool:
    """Printings that (may) share the art: same illustration_id when the catalogue has both,
    otherwise the same card name (reprints mostly reuse the art; the printing is then told
    by the whole-card correlation, and a different art scores low there anyway)."""
    ca, cb = bundle.card(a.row), bundle.card(b.row)
    if ca.get("illustration_id") and cb.get("illustration_id"):
        return bool(ca["illustration_id"] == cb["illustration_id"])
    return bool(ca.get("name") == cb.get("name"))


def corners(v: _Verified, bundle: Bundle) -> np.ndarray:
    """The candidate card's corners (TL, TR, BR, BL) in query-feature pixels."""
    rw, rh = bundle.ref_size[v.row]
    card = np.array([[0, 0], [rw, 0], [rw, rh], [0, rh]], np.float32)
    quad: np.ndarray = cv2.perspectiveTransform(card[None], v.homography)[0]
    return quad


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Shared area of two convex quads over the smaller one's area (0..1)."""
    smaller = min(cv2.contourArea(a), cv2.contourArea(b))
    if smaller <= 0:
        return 0.0
    shared, _ = cv2.intersectConvexConvex(a, b)
    return float(shared) / smaller


def decide(
    verified: list[_Verified], bundle: Bundle, params: FeatureParams
) -> tuple[Candidate | None, list[Candidate]]:
    """Pick the art, then the printing; confidence from art correlation and its margin.

    Art confidence = logistic(slope * min(art - conf_center, art - rival - conf_margin)),
    where `art` is the art-box correlation of the best art and `rival` that of the best
    candidate of another art covering the same part of the photo (another card elsewhere in
    the photo is not a rival). The answer is accepted on the art confidence. Printings of
    that art are then weighed by `printing.printing_odds`; each candidate's confidence is
    its art confidence times its printing probability, and when no printing is sure the
    answer is flagged ambiguous rather than dropped.
    Measured on the eval set: right cards correlate 0.91-0.99, wrong ones at most 0.48.
    """
    if not verified:
        return None, []
    if params.decision == "inliers":
        ranked = sorted(verified, key=lambda v: -v.inliers)
        cands = [
            _candidate(v, bundle, float(v.inliers), v.inliers / (v.inliers + params.min_inliers))
            for v in ranked
        ]
        best = cands[0]
        return (best, cands[1:]) if best.confidence >= params.accept else (None, cands)

    def confidence(art: float, rival: float) -> float:
        evidence = min(art - params.conf_center, art - rival - params.conf_margin)
        return _logistic(params.conf_slope * evidence)

    top_art = max(verified, key=lambda v: v.art_corr)
    where = corners(top_art, bundle)
    here = [v for v in verified if v is top_art or overlap(corners(v, bundle), where) > 0.5]
    # printings of the art in the same place; the same art elsewhere is another card
    group = [v for v in here if v is top_art or _same_art(v, top_art, bundle)]
    others = [v for v in verified if all(v is not g for g in group)]
    rival = max((v.art_corr for v in here if all(v is not g for g in group)), default=0.0)
    views = [v.view for v in group if v.view is not None]
    assert len(views) == len(group), "photometric verification leaves a view on each"
    odds = printing_odds(views, params)
    likely = sorted(
        range(len(group)), key=lambda i: (-odds.probabilities[i], -group[i].card_corr)
    )
    cands = []
    for i in likely:
        v = group[i]
        art_confidence = confidence(v.art_corr, rival)
        c = _candidate(v, bundle, v.art_corr + v.card_corr,
                       art_confidence * odds.probabilities[i])
        c.art_confidence = round(art_confidence, 4)
        c.same_art = True
        c.ambiguous = odds.ambiguous
        cands.append(c)
    accepted = confidence(group[likely[0]].art_corr, rival) >= params.accept
    others.sort(key=lambda v: -(v.art_corr + v.card_corr))
    shown = {v.row for v in group}  # a printing also verified elsewhere is listed once
    for v in others:
        if v.row in shown:
            continue
        shown.add(v.row)
        cands.append(_candidate(v, bundle, v.art_corr + v.card_corr,
                                confidence(v.art_corr, top_art.art_corr)))
    return (cands[0], cands[1:]) if accepted else (None, cands)


def _candidate(v: _Verified, bundle: Bundle, score: float, confidence: float) -> Candidate:
    return Candidate(
        row=v.row,
        card=bundle.card(v.row),
        score=round(score, 4),
        inliers=v.inliers,
        confidence=round(confidence, 4),
        art_confidence=round(confidence, 4),  # decide() sets it apart for printings of an art
        votes=round(v.votes, 2),
        art_inliers=v.art_inliers,
        art_corr=round(v.art_corr, 4),
        card_corr=round(v.card_corr, 4),
        source=v,
    )


def card_quad(
    v: _Verified, bundle: Bundle, query: Features, quad_scale: float
) -> list[list[float]]:
    """The card's corners in the uploaded image's pixels (the answer's `quad`); features of
    the mirrored photo give them back in the photo's own (unmirrored) pixels."""
    quad = corners(v, bundle)
    if query.mirrored:
        quad[:, 0] = (query.gray.shape[1] - 1) - quad[:, 0]
    quad = quad / np.array(query.scale, np.float32)
    return [[round(float(x) * quad_scale, 1), round(float(y) * quad_scale, 1)] for x, y in quad]


def verify_candidates(
    bundle: Bundle,
    order: np.ndarray,
    votes: np.ndarray,
    query: Features,
    dist: np.ndarray,
    ids: np.ndarray,
    params: FeatureParams,
    hidden: np.ndarray | None = None,
) -> list[_Verified]:
    """Geometric (+ photometric) verification of candidates in vote order, stopping early:
    once a candidate's art clearly matches, much less voted candidates are skipped. Then
    every printing of the leader's picture is compared where the leader matched: they are
    indexed once, under the leader (pictures.py), so only their thumbnails tell them apart;
    and up to `max_printings` other printings of its name even if they got few votes:
    reprints in another frame share most features, so votes split between them and the
    right printing can rank low."""
    photo = _Photo(query) if params.decision == "photometric" else None
    verified: list[_Verified] = []
    leader: _Verified | None = None
    tried: set[int] = set()
    cards = bundle.card_of(ids)

    def add(result: _Verified) -> None:
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

    def check(row: int, sibling_of: _Verified | None = None) -> None:
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
        add(_borrowed(bundle, row, sibling_of))  # and compared where the leader is

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
    coordinates to the uploaded image's (the JPEG reduction factor of `imageio.decode`).

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
        # mirrored homography is then a plain one (`_sane` still refuses mirrored fits).
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
