"""Which reference descriptors are worth indexing.

A reference image gives up to `ref_nfeatures` (4,000) SIFT keypoints; indexing all of them
would cost hundreds of KB per printing and most are useless for recognition: tiny keypoints
vanish when the card fills a fifth of a webcam frame, and frame elements (name bar, mana
symbols, text box, set symbol) recur on thousands of cards. Keeping the 250 highest-contrast
keypoints (OpenCV's own choice) halved the real-photo accuracy (docs/design-notes.md, "Which
descriptors to keep"); what works is keeping keypoints that survive the photo's downscaling
(large ones first) spread over the whole card, then removing the ones other cards repeat
(stop words, found on a sample of cards by the index build: `index/stop_words.py`).

The choice is made on keypoints alone (`spread`), so extraction describes only the chosen
ones (`extraction.extract_features`), and it is idempotent: choosing again among the chosen
keeps them in the same order (a feature cache may hold either).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from app.recognition.features.extraction import Features

GRID = (6, 8)  # cells across, down: no region (a dense art corner) takes all the slots


def spread(
    xy: np.ndarray,
    sizes: np.ndarray | None,
    responses: np.ndarray | None,
    shape: tuple[int, ...],
    count: int,
) -> np.ndarray:
    """Indices of at most `count` keypoints (`xy` float32 (N, 2) in an image of `shape`
    (h, w)), best first: score = contrast x sqrt(size) (a large blob is seen at a smaller
    photo scale), taken round-robin over a grid so every part of the card is represented:
    every cell's best, then every cell's second best, and so on. Choosing again among the
    chosen gives them back in the same order (each keeps its rank in its cell)."""
    n = len(xy)
    order = _by_score(n, sizes, responses)
    height, width = shape[:2]
    ordered = xy[order]
    cx = np.clip((ordered[:, 0] * GRID[0] / max(width, 1)).astype(np.int64), 0, GRID[0] - 1)
    cy = np.clip((ordered[:, 1] * GRID[1] / max(height, 1)).astype(np.int64), 0, GRID[1] - 1)
    cell = cy * GRID[0] + cx
    # rank of each keypoint within its cell (0 = the cell's best), then take by rank
    rank = np.zeros(n, np.int64)
    seen = np.zeros(GRID[0] * GRID[1], np.int64)
    for i, c in enumerate(cell):
        rank[i] = seen[c]
        seen[c] += 1
    chosen = np.lexsort((np.arange(n), rank))[:count]
    out: np.ndarray = order[chosen]
    return out


def preselect(features: Features, count: int) -> np.ndarray:
    """`spread` over a reference's features: indices of at most `count`, best first."""
    return spread(features.keypoints, features.sizes, features.responses,
                  features.gray.shape, count)


def _by_score(n: int, sizes: np.ndarray | None, responses: np.ndarray | None) -> np.ndarray:
    if responses is None or sizes is None or not responses.any():
        return np.arange(n)
    score = responses * np.sqrt(np.maximum(sizes, 1e-3))
    return np.argsort(-score, kind="stable")
