"""Which printing of one artwork a photo shows, judged only where the printings differ.

Printings that share the art (a reprint in another frame; a borderless or showcase version;
the same card with another set symbol and collector line) match the photo equally well on
everything they share, so a whole-card score mostly measures the photo's noise. Here each
pair of printings is compared on the pixels where their references differ: the photo
(already warped onto the reference frame) is closer to one of them there. When the
references differ in too few pixels for the photo to show it (a set symbol and a collector
number are a few pixels of a 128x178 thumbnail), the pair is undecidable, and the answer
says so (`ambiguous_printing`) instead of a confident guess.

Pure functions of arrays: the matcher supplies the warped photo and the thumbnails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.recognition.params import FeatureParams


@dataclass(frozen=True)
class View:
    """One printing as the photo sees it: the photo warped onto the printing's reference
    frame (blurred like the reference), where that warp is inside the photo and not hidden,
    and the printing's reference thumbnail (blurred)."""

    warped: np.ndarray  # float32 (h, w)
    valid: np.ndarray  # bool (h, w)
    reference: np.ndarray  # float32 (h, w)


@dataclass(frozen=True)
class PrintingOdds:
    """Probability of each printing (in the order given) and whether the photo leaves the
    printing undecided (the best is below `printing_sure`)."""

    probabilities: list[float]
    ambiguous: bool


def _normalised(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Zero mean, unit deviation over the valid pixels: exposure and contrast drop out."""
    values = image[valid]
    if values.size < 2:
        return np.zeros_like(image)
    normalised: np.ndarray = (image - values.mean()) / max(float(values.std()), 1e-3)
    return normalised


def pair_evidence(a: View, b: View, params: FeatureParams) -> float:
    """How much better the photo fits printing `a` than `b` where their references differ:
    (err_b - err_a) / (err_a + err_b), from -1 (surely b) to 1 (surely a); 0 when the
    references differ in fewer than `printing_min_px` visible pixels (undecidable)."""
    valid = a.valid & b.valid
    if valid.sum() < 16:
        return 0.0
    ref_a, ref_b = _normalised(a.reference, valid), _normalised(b.reference, valid)
    differs = valid & (np.abs(ref_a - ref_b) > params.printing_diff)
    if int(differs.sum()) < params.printing_min_px:
        return 0.0
    photo_a, photo_b = _normalised(a.warped, valid), _normalised(b.warped, valid)
    err_a = float(np.mean((photo_a[differs] - ref_a[differs]) ** 2))
    err_b = float(np.mean((photo_b[differs] - ref_b[differs]) ** 2))
    return (err_b - err_a) / max(err_a + err_b, 1e-6)


def printing_odds(views: list[View], params: FeatureParams) -> PrintingOdds:
    """Probabilities of printings sharing one artwork: each printing's strength is the sum
    of its pairwise evidence against the others (times `printing_slope`); a softmax turns
    strengths into probabilities. Undecidable pairs add nothing, so printings the photo
    cannot separate end up with equal shares."""
    count = len(views)
    if count == 1:
        return PrintingOdds([1.0], False)
    strength = np.zeros(count)
    for i in range(count):
        for j in range(i + 1, count):
            evidence = pair_evidence(views[i], views[j], params)
            strength[i] += params.printing_slope * evidence
            strength[j] -= params.printing_slope * evidence
    weights = np.exp(strength - strength.max())
    probabilities = weights / weights.sum()
    return PrintingOdds(
        [float(p) for p in probabilities], float(probabilities.max()) < params.printing_sure
    )
