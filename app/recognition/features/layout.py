"""Where a printing differs from the other printings of its layout: the art check's weights.

A homography fits the shared frame of any card of a layout, so the photometric check must
look where THIS printing is its own. A fixed art box does that for a normal card, but on a
Room or a split card (two sideways halves), a saga (art down one side), a class, a case, an
adventure, a battle or a planeswalker the box holds mostly what every card of that layout
shares: reminder text, type lines, chapter and level bars. Here the layout is learnt from
the bundle's own thumbnails: the mean of a sample of printings of the same layout key
(Scryfall's `layout`, the frame, borderless/full-art, planeswalker) is what the layout
looks like, and a printing's weight at a pixel is how far its reference departs from that
mean there (its art, its name, its colours, wherever the layout puts them).

The comparison is made on departures from that mean (see `distinct_correlation`): what all
cards of the layout share drops out. Colour is compared the same way (`color_correlation`,
on the bundle's colour thumbnails, free of white balance): grey levels alone let a red Room
pass for a blue one. Pure functions of arrays; `Bundle.layout_mean` and
`Bundle.layout_chroma` sample and cache the means.
"""

from __future__ import annotations

import cv2
import numpy as np

BLUR = 1.0  # thumbnail px: the photometric check compares images blurred like this
WEIGHT_BLUR = 3.0  # thumbnail px: weights spread to regions (a photo's warp is not exact)
SAMPLE = 48  # printings of a layout averaged into its mean
MIN_PRINTINGS = 6  # fewer printings of a layout: no mean (the fixed art box is used)
MIN_WEIGHT_SHARE = 0.15  # the weights must cover this much of the card's area (see below)


def standardised(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """float32, zero mean and unit deviation over the valid pixels (all when None):
    exposure and contrast drop out."""
    image = image.astype(np.float32)
    values = image if valid is None else image[valid]
    if values.size < 2:
        return np.zeros_like(image)
    out: np.ndarray = (image - float(values.mean())) / max(float(values.std()), 1e-3)
    return out


def blurred(thumb: np.ndarray) -> np.ndarray:
    """A thumbnail as the photometric check compares it (float32, blurred by BLUR px)."""
    out: np.ndarray = cv2.GaussianBlur(thumb.astype(np.float32), (0, 0), BLUR)
    return out


def highpassed(image: np.ndarray, sigma: float, valid: np.ndarray | None = None) -> np.ndarray:
    """`image` (float32) less its Gaussian-smoothed self (`sigma` px; 0: unchanged), the
    smoothing taken over the valid pixels only (normalised convolution: the photo's edge or
    a hidden region does not bleed in). A glare band, a shadow or a vignette adds a smooth
    field to the photo that a global correlation counts against the right card (measured:
    a glare band over the art took right renders' art correlation from 0.9 to 0.5-0.64);
    what is left after the high-pass is the art's own detail, which the field barely dims."""
    if sigma <= 0:
        return image
    if valid is None:
        smooth = cv2.GaussianBlur(image, (0, 0), sigma)
    else:
        mask = valid.astype(np.float32)
        weight = cv2.GaussianBlur(mask, (0, 0), sigma)
        smooth = cv2.GaussianBlur(image * mask, (0, 0), sigma) / np.maximum(weight, 1e-3)
    out: np.ndarray = (image - smooth).astype(np.float32)
    return out


def mean_of(thumbs: list[np.ndarray]) -> np.ndarray:
    """A layout's mean look: the mean of its thumbnails, blurred and standardised."""
    return np.mean([standardised(blurred(t)) for t in thumbs], axis=0).astype(np.float32)


def distinct_weights(reference: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """(h, w) float32 weights in 0..1: how far the reference (blurred, as `blurred`) departs
    from its layout's mean, spread to regions, kept where it departs more than its median
    departure. None when that leaves too little of the card (a reference that is its
    layout's mean, or nearly: nothing tells it from the others)."""
    departure = cv2.GaussianBlur(np.abs(standardised(reference) - mean), (0, 0), WEIGHT_BLUR)
    weights = np.maximum(departure - float(np.median(departure)), 0.0)
    if float((weights > 0).mean()) < MIN_WEIGHT_SHARE or float(weights.max()) <= 1e-6:
        return None
    out: np.ndarray = (weights / float(weights.max())).astype(np.float32)
    return out


def distinct_correlation(
    warped: np.ndarray, reference: np.ndarray, valid: np.ndarray, mean: np.ndarray,
    highpass: float = 0.0,
) -> float | None:
    """How well the photo (warped onto the reference frame, blurred like it) matches the
    reference where the reference is its own: the correlation of the two images' departures
    from the layout's mean, weighted by `distinct_weights`. What every card of the layout
    shares (the frame, dark art over a light text box, reminder text) is in the mean and
    drops out, so another card of the same layout scores near 0 (measured: 0.0-0.3 between
    Duskmourn Rooms, where the fixed art box gave 0.7-0.86). With `highpass` (px), both
    departures are compared without their smooth parts (`highpassed`: glare, shadows).
    None without weights."""
    weights = distinct_weights(reference, mean)
    if weights is None:
        return None
    photo = highpassed(standardised(warped, valid) - mean, highpass, valid)
    own = highpassed(standardised(reference) - mean, highpass)
    return weighted_ncc(photo, own, weights, valid)


def weighted_ncc(a: np.ndarray, b: np.ndarray, weights: np.ndarray, valid: np.ndarray) -> float:
    """Weighted zero-mean normalised cross-correlation of two (h, w) images, or (h, w, c)
    ones (each channel's weighted mean removed, all channels summed), over the valid pixels,
    times the share of the weight that is valid (a card half outside the photo, or under
    another card, proves less)."""
    w = weights * valid
    total = float(weights.sum())
    if total <= 1e-6:
        return 0.0
    coverage = float(w.sum()) / total
    if coverage < 0.3:
        return 0.0
    if a.ndim == 3:
        w = w[..., None]
    x = a - (a * w).sum(axis=(0, 1)) / float(w.sum(axis=(0, 1)).max())
    y = b - (b * w).sum(axis=(0, 1)) / float(w.sum(axis=(0, 1)).max())
    denom = float(np.sqrt((w * x * x).sum() * (w * y * y).sum()))
    return float((w * x * y).sum()) / denom * coverage if denom > 1e-6 else 0.0


# -- colour ----------------------------------------------------------------------------------
# Grey levels tell a red Room from a blue one badly (their frames and often their art have
# the same luminance pattern); colour tells them at a glance. The colour compared is free of
# brightness and white balance: each channel is divided by its mean over the card (a phone's
# warm or cool cast multiplies a channel, "grey world"), then two opponent chromaticities are
# taken per pixel, divided by the pixel's intensity (shading and exposure drop out).
CHROMA_EPS = 0.15  # intensity floor (the card's mean intensity is 1): dark pixels' noise
COLOR_MIN_DEPARTURE = 0.05  # mean chromaticity departure from the layout's below which a
#                             reference's colour tells it from nothing (a grey card)


def chroma(image_bgr: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(h, w, 2) float32 opponent chromaticities of a BGR image, white-balanced over the
    valid pixels (all when None): red-green and yellow-blue, each over the pixel's
    intensity, the channels first divided by their means (a uniform tint drops out)."""
    bgr = image_bgr.astype(np.float32)
    values = bgr.reshape(-1, 3) if valid is None else bgr[valid]
    if len(values) < 2:
        return np.zeros((*bgr.shape[:2], 2), np.float32)
    bgr /= np.maximum(values.mean(axis=0), 1.0)
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    intensity = (b + g + r) / 3 + CHROMA_EPS
    out = np.stack([(r - g) / np.sqrt(2.0), (r + g - 2 * b) / np.sqrt(6.0)], axis=-1)
    out /= intensity[..., None]
    return out.astype(np.float32)


def chroma_mean_of(thumbs: list[np.ndarray]) -> np.ndarray:
    """A layout's mean colour: the mean chromaticities of its colour thumbnails, blurred."""
    return np.mean([chroma(blurred(t)) for t in thumbs], axis=0).astype(np.float32)


def color_weights(reference: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """(h, w) float32 weights in 0..1: where the reference's chromaticities (`chroma` of the
    blurred colour thumbnail) depart from its layout's mean colour, spread to regions, above
    the median departure; None when its colour is its layout's, or nearly (a grey card: its
    colour tells it from nothing)."""
    distance = np.sqrt(((reference - mean) ** 2).sum(axis=-1))
    departure = cv2.GaussianBlur(distance, (0, 0), WEIGHT_BLUR / 2)  # colour thumbnail px
    weights = np.maximum(departure - float(np.median(departure)), 0.0)
    if (float((weights > 0).mean()) < MIN_WEIGHT_SHARE or float(weights.max()) <= 1e-6
            or float((distance * weights).sum() / weights.sum()) < COLOR_MIN_DEPARTURE):
        return None
    out: np.ndarray = (weights / float(weights.max())).astype(np.float32)
    return out


def color_correlation(
    warped: np.ndarray, reference: np.ndarray, valid: np.ndarray, mean: np.ndarray | None
) -> float | None:
    """How well the photo's colour (BGR, warped onto the colour thumbnail, blurred like it)
    matches the reference's (`blurred` colour thumbnail) where the reference's colour is its
    own: the weighted correlation of both images' chromaticity departures from the layout's
    mean colour (both channels at once), white balance and exposure left out (`chroma`).
    Without a layout mean, the departures from the card's own mean colour. None when the
    reference's colour tells it from nothing (`color_weights`)."""
    photo = chroma(warped, valid)
    own = chroma(reference)
    if mean is None:
        mean = np.broadcast_to(own.reshape(-1, 2).mean(axis=0), own.shape).astype(np.float32)
    weights = color_weights(own, mean)
    if weights is None:
        return None
    return weighted_ncc(photo - mean, own - mean, weights, valid)
