"""Geometric verification: a RANSAC homography (OpenCV's USAC MAGSAC) from a candidate's
reference keypoints to the photo's, on the correspondences the index search already found;
and what follows from a homography (the card's corners, overlaps, the answer's `quad`)."""

from __future__ import annotations

import cv2
import numpy as np

from app.recognition.features.extraction import Features
from app.recognition.index.bundle import Bundle
from app.recognition.match.records import Verified
from app.recognition.params import FeatureParams


def sane(homography: np.ndarray, size: tuple[float, float], query: Features) -> bool:
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
) -> Verified | None:
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
    if inlier.sum() < params.min_inliers or not sane(homography, size, query):
        return None
    x0, y0, x1, y1 = params.art_box
    rel = src[inlier] / np.array(size, np.float32)
    in_art = (rel[:, 0] >= x0) & (rel[:, 0] <= x1) & (rel[:, 1] >= y0) & (rel[:, 1] <= y1)
    return Verified(slot, 0.0, int(inlier.sum()), int(in_art.sum()), homography)


def corners(v: Verified, bundle: Bundle) -> np.ndarray:
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


def card_quad(
    v: Verified, bundle: Bundle, query: Features, quad_scale: float
) -> list[list[float]]:
    """The card's corners in the uploaded image's pixels (the answer's `quad`); features of
    the mirrored photo give them back in the photo's own (unmirrored) pixels."""
    quad = corners(v, bundle)
    if query.mirrored:
        quad[:, 0] = (query.gray.shape[1] - 1) - quad[:, 0]
    quad = quad / np.array(query.scale, np.float32)
    return [[round(float(x) * quad_scale, 1), round(float(y) * quad_scale, 1)] for x, y in quad]


def borrowed(bundle: Bundle, slot: int, leader: Verified) -> Verified:
    """Another printing of the leader's card checked through the leader's homography: same
    layout, so the reference frames differ only by their sizes. Votes split between reprints
    (and the index keeps no frame features), so a reprint may have too few correspondences
    of its own; the photometric check then decides between them."""
    lw, lh = bundle.ref_size[leader.row]
    sw, sh = bundle.ref_size[slot]
    scale = np.diag([lw / max(sw, 1.0), lh / max(sh, 1.0), 1.0])
    return Verified(slot, 0.0, 0, 0, leader.homography @ scale)
