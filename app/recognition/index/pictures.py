"""One reference per picture: printings that show the same picture share one indexed reference.

About half of the catalogue is made of twins: measured on MTGJSON's set files (April 2022,
56,270 English paper printings), 52.4% of printings share their illustration, frame and
border colour with at least one other printing, in groups of 2.7 on average and up to 19
(Sol Ring). Indexed one by one, a picture shared by n printings puts n copies of the same
descriptors into the index, splits each matching query descriptor's vote n ways, counts n
times as "another card" in the stop-word sample (a picture of 5 or more printings in a
catalogue of 2,200 had its art dropped as stop words: 20 of 21 such photos were not found),
and costs n SIFT extractions per full build.

So the index build extracts and indexes one printing of each picture (its *reference*); the
others keep their own slot, id-map entry and thumbnails (what the printing decision compares
and the collector line settles) and point at the reference's slot (`Bundle.picture`). A
match on the reference is then decided among the picture's printings as before
(`match.card.verify_candidates` compares every one of them where the reference matched).

Two printings show one picture when the catalogue says so (`common.reference.picture_key`:
the same `illustration_id`, `lang`, `frame`, `border_color`, `frame_effects`, `full_art`,
stamps among `promo_types`, layout and face) *and* their images agree (`agree`), so that a
catalogue error cannot merge two different pictures into one reference. A reprint in
another frame, language or with a stamp is another picture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import cv2
import numpy as np

# Art-box correlation (blurred, equalised gray thumbnails at half size) above which two
# printings' images agree. Measured on the 2,212-printing twins catalogue when the threshold
# was set (2026-12-07, commit 1cbc619, by a run the repository does not keep; also in
# docs/design-notes.md, "One reference per picture"): the 493 printings of a shared picture
# correlate 1.000 with its reference (synthetic twins share their art exactly); 3,000 random
# pairs of different pictures at most 0.52 (p99 0.38, median 0.04). Real scans of one picture
# from two sets differ by scanning and colour; none was measured (the eval catalogue has no
# `illustration_id`), hence the margin below 1.
AGREE_MIN = 0.75
_BLUR = 1.0  # signature px (2 thumbnail px): two scans a pixel apart still agree
_ART = (0.08, 0.11, 0.92, 0.56)  # x0, y0, x1, y1 of the art box, as a share of the card

T = TypeVar("T")


def signature(thumb: np.ndarray) -> np.ndarray:
    """What `agree` compares of a printing: its gray thumbnail's art box at half size,
    blurred (uint8, ~2 KB; a build keeps one per picture that has several printings)."""
    height, width = thumb.shape[:2]
    x0, y0, x1, y1 = _ART
    art = thumb[int(y0 * height) : int(y1 * height), int(x0 * width) : int(x1 * width)]
    half = cv2.resize(art, (max(1, art.shape[1] // 2), max(1, art.shape[0] // 2)),
                      interpolation=cv2.INTER_AREA)
    out: np.ndarray = cv2.GaussianBlur(half, (0, 0), _BLUR)
    return out


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised correlation of two signatures (-1..1)."""
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    x = a.astype(np.float32).ravel()
    y = b.astype(np.float32).ravel()
    x -= x.mean()
    y -= y.mean()
    denom = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y)) / denom if denom > 1e-6 else 0.0


def agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two printings' signatures show the same picture (see AGREE_MIN)."""
    return correlation(a, b) >= AGREE_MIN


def split(items: Sequence[T], key_of: Callable[[T], str | None]) -> tuple[list[T], list[T]]:
    """(references, others): the first printing of each picture and every printing without a
    picture key, then the other printings of a picture, each list in the given order. The
    references are extracted first; the others are compared with their picture's reference
    and extracted only when they do not agree."""
    seen: set[str] = set()
    references: list[T] = []
    others: list[T] = []
    for item in items:
        key = key_of(item)
        if key is None or key not in seen:
            references.append(item)
            if key is not None:
                seen.add(key)
        else:
            others.append(item)
    return references, others
