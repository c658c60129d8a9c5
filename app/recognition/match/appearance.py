"""Which printing of one artwork a photo shows, judged only where the printings differ.

Printings that share the art (a reprint in another frame; a borderless or showcase version;
the same card with another set symbol and collector line) match the photo equally well on
everything they share, so a whole-card score mostly measures the photo's noise. Here each
pair of printings is compared on the pixels where their references differ: the photo
(already warped onto the reference frame) is closer to one of them there. When the
references differ in too few pixels for the photo to show it (a set symbol and a collector
number are a few pixels of a 128x178 thumbnail), the pair is undecidable, and the answer
says so (`ambiguous_printing`) instead of a confident guess.

Pure functions of arrays: `photometric.py` supplies the warped photo and the thumbnails.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.recognition.params import FeatureParams

BLUR_STEPS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # candidate blurs of a reference, thumbnail px


@dataclass(frozen=True)
class View:
    """One candidate printing as the photo sees it: the photo warped onto the reference
    frame by the candidate's homography (blurred like the reference), where that warp is
    inside the photo and not hidden, and the printing's reference thumbnail (blurred)."""

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


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y)) / denom if denom > 1e-6 else 0.0


def _blurred(reference: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(reference, (0, 0), sigma) if sigma else reference


def _detail(image: np.ndarray, sigma: float) -> np.ndarray:
    """`image` less what varies slower than `sigma` (thumbnail px): a glare band, shading
    and exposure gradients drop out, the printed detail stays; `image` itself for 0."""
    return image - _blurred(image, sigma) if sigma else image


def matched_blur(view: View) -> float:
    """The blur (Gaussian sigma, thumbnail pixels) that makes the reference look most like
    the photo: the photo's effective resolution on this card, relative to this reference.
    Printings are compared at that resolution, so a blurry photo is not evidence for
    whichever reference has less fine detail (or comes from a softer scan)."""
    valid = view.valid
    if valid.sum() < 16:
        return 0.0
    scores = [_correlation(view.warped[valid], _blurred(view.reference, sigma)[valid])
              for sigma in BLUR_STEPS]
    return BLUR_STEPS[int(np.argmax(scores))]


def printing_odds(views: list[View], params: FeatureParams) -> PrintingOdds:
    """Probabilities of printings sharing one artwork, one view each.

    The photo and the references are compared on their detail (`printing_highpass`), where a
    glare band or shading over the differing part cannot pass for the other printing's
    lighter or darker art.

    Every printing is judged under every candidate's alignment and keeps its best: printings
    of one layout then share the best alignment, so that none wins for its homography's own
    error, while an older frame (the art elsewhere on the card) keeps its own. Each pair is
    compared where its references, blurred like the photo, differ (`pair_evidence`); a
    printing's strength is the sum of its evidence against the others times
    `printing_slope`, and a softmax turns strengths into probabilities. Undecidable pairs
    add nothing, so printings the photo cannot separate end up with equal shares."""
    count = len(views)
    if count == 1:
        return PrintingOdds([1.0], False)
    valid = np.logical_and.reduce([view.valid for view in views])
    if valid.sum() < 16:
        return PrintingOdds([1.0 / count] * count, True)
    detail = params.printing_highpass
    photos = [_normalised(_detail(view.warped, detail), valid) for view in views]
    references = [
        _normalised(_detail(_blurred(view.reference, matched_blur(view)), detail), valid)
        for view in views
    ]
    strength = np.zeros(count)
    for i in range(count):
        for j in range(i + 1, count):
            evidence = pair_evidence(references[i], references[j], photos, valid, params)
            strength[i] += params.printing_slope * evidence
            strength[j] -= params.printing_slope * evidence
    weights = np.exp(strength - strength.max())
    probabilities = weights / weights.sum()
    return PrintingOdds(
        [float(p) for p in probabilities], float(probabilities.max()) < params.printing_sure
    )


def pair_evidence(
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    photos: list[np.ndarray],
    valid: np.ndarray,
    params: FeatureParams,
) -> float:
    """How much better the photo fits reference `a` than `b` where they differ (by more
    than `printing_diff`), each at its best alignment among `photos` (all normalised over
    `valid`): (err_b - err_a) / (err_a + err_b), from -1 (surely b) to 1 (surely a); 0 when
    they differ in fewer than `printing_min_px` visible pixels (undecidable)."""
    differs = valid & (np.abs(ref_a - ref_b) > params.printing_diff)
    if int(differs.sum()) < params.printing_min_px:
        return 0.0
    target_a, target_b = ref_a[differs], ref_b[differs]
    seen = [photo[differs] for photo in photos]
    err_a = min(float(np.mean((x - target_a) ** 2)) for x in seen)
    err_b = min(float(np.mean((x - target_b) ** 2)) for x in seen)
    return (err_b - err_a) / max(err_a + err_b, 1e-6)
