"""The records of the match stage: a verified candidate (`Candidate`), the answer for one
card (`Recognition`) and what verification keeps of a candidate while it decides (`Verified`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.recognition.match.appearance import View


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
    source: Verified | None = field(default=None, repr=False, compare=False)


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
        printings it may be (see appearance.py)."""
        return self.match is not None and self.match.ambiguous


@dataclass
class Verified:
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
