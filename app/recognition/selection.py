"""Which reference descriptors are worth indexing.

A reference image gives ~800 SIFT keypoints; indexing all of them costs 100 KB per printing
and most are useless for recognition: tiny keypoints vanish when the card fills a fifth of a
webcam frame, and frame elements (name bar, mana symbols, text box, set symbol) recur on
thousands of cards. Keeping the 250 highest-contrast keypoints (OpenCV's own choice) halved
the real-photo accuracy (figures.md); what works is keeping keypoints that survive the
photo's downscaling (large ones first) spread over the whole card, then removing the ones
other cards repeat (stop words, found on a sample of cards by the builder).
"""

from __future__ import annotations

import numpy as np

from app.recognition.features import Features

GRID = (6, 8)  # cells across, down: no region (a dense art corner) takes all the slots


def preselect(features: Features, count: int) -> np.ndarray:
    """Indices of at most `count` keypoints, best first: score = contrast x sqrt(size) (a
    large blob is seen at a smaller photo scale), taken round-robin over a grid so every
    part of the card is represented."""
    n = len(features.keypoints)
    if n <= count:
        order = _by_score(features)
        return order
    order = _by_score(features)
    height, width = features.gray.shape[:2]
    xy = features.keypoints[order]
    cx = np.clip((xy[:, 0] * GRID[0] / max(width, 1)).astype(np.int64), 0, GRID[0] - 1)
    cy = np.clip((xy[:, 1] * GRID[1] / max(height, 1)).astype(np.int64), 0, GRID[1] - 1)
    cell = cy * GRID[0] + cx
    # rank of each keypoint within its cell (0 = the cell's best), then take by rank
    rank = np.zeros(n, np.int64)
    seen = np.zeros(GRID[0] * GRID[1], np.int64)
    for i, c in enumerate(cell):
        rank[i] = seen[c]
        seen[c] += 1
    chosen = np.lexsort((np.arange(n), rank))[:count]
    return order[chosen]


def _by_score(features: Features) -> np.ndarray:
    n = len(features.keypoints)
    if features.responses is None or features.sizes is None or not features.responses.any():
        return np.arange(n)
    score = features.responses * np.sqrt(np.maximum(features.sizes, 1e-3))
    return np.argsort(-score, kind="stable")
