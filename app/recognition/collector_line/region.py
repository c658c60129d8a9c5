"""Where the collector line is on a card, and the line seen flat, as the engines read it.

Each Scryfall `frame` prints its line in its own place (fractions of the card, measured on
scans); the recognised card's quad (the verified homography's corners, in the uploaded
photo's pixels) rectifies that region from the photo decoded at enough resolution (not the
reduced query image) with OpenCV's `warpPerspective`, at the scale of a card of a chosen
height, dark text on a light ground; `local_contrast` levels a ground that changes within
the region (coloured bars, textured frames, glare).
"""

from __future__ import annotations

import cv2
import numpy as np

from app.recognition.collector_line.records import Printing

CARD_ASPECT = 63 / 88  # width / height of a Magic card
# The scale a line is rectified at by default: a card this tall (letters ~28 px tall, what
# Tesseract's LSTM model reads best).
RECTIFIED_HEIGHT = 2600
# Local contrast: the text's neighbourhood (Gaussian sigma, in letter heights) and the
# least standard deviation divided by (gray levels of the stretched line): flat areas are
# not blown up into noise, which Tesseract would read as letters.
LOCAL_SIGMA = 1.0
LOCAL_MIN_STD = 55.0

# Where each `frame` prints its collector line, as fractions of the card (x0, y0, x1, y1).
MODERN_LINE = (0.03, 0.925, 0.30, 0.99)  # two lines bottom left, left of the artist's name
# The same lines without the black border under them (measured on the eval scans: the
# lines end at 0.968 on 2015-2024 frames), read as a second region: on a light frame, and
# under a line painted over it, the border's edge takes Tesseract's layout analysis off the
# text (measured on the collector-line benchmark: a first reading decides 235 of 266
# renders >= 800 px here, 227 in MODERN_LINE, which reads others that this one clips)
MODERN_LINE_ABOVE_BORDER = (0.03, 0.925, 0.30, 0.975)
COPYRIGHT_LINE = (0.04, 0.936, 0.64, 0.968)  # "™ & © 2012 Wizards of the Coast 141/274"
_MODERN = (MODERN_LINE, MODERN_LINE_ABOVE_BORDER)
_LINE_REGIONS: dict[str | None, tuple[tuple[float, float, float, float], ...]] = {
    "2015": _MODERN,
    "future": _MODERN,
    "2003": (COPYRIGHT_LINE,),
    "1997": (),  # no collector number worth reading
    "1993": (),
    None: _MODERN,  # frame unknown: the place of today's frames
}
# Letter height of each line, as a fraction of the card's height (measured on 672x936
# scans: 10 px on Duskmourn's lines, 8 px on Return to Ravnica's copyright line)
_LETTER_HEIGHT = {MODERN_LINE: 0.0107, MODERN_LINE_ABOVE_BORDER: 0.0107, COPYRIGHT_LINE: 0.0085}
# Rows of text of each region, for the second engine (MODERN_LINE_ABOVE_BORDER holds the
# same two lines as MODERN_LINE, clipped: not read again)
TEXT_ROWS = {MODERN_LINE: 2, COPYRIGHT_LINE: 1}


# -- the regions, rectified ----------------------------------------------------------------
def line_regions(printings: list[Printing]) -> list[tuple[float, float, float, float]]:
    """The distinct regions to read for these printings' frames (none for old frames)."""
    regions: list[tuple[float, float, float, float]] = []
    for printing in printings:
        for region in _LINE_REGIONS.get(printing.frame, _MODERN):
            if region not in regions:
                regions.append(region)
    return regions


def card_height(quad: np.ndarray) -> float:
    """Mean length of a quad's left and right edges (TL, TR, BR, BL order), in its pixels."""
    return float(np.linalg.norm(quad[3] - quad[0]) + np.linalg.norm(quad[2] - quad[1])) / 2


def rectify(
    image: np.ndarray,
    quad: np.ndarray,
    region: tuple[float, float, float, float],
    height: int = RECTIFIED_HEIGHT,
) -> np.ndarray:
    """The card region `region` (fractions of the card) of `image`, seen flat, from the
    card's corners `quad` (float32 (4, 2), TL TR BR BL, in `image`'s pixels), at the scale
    of a card `height` px tall: gray uint8 (h, w), dark text on a light ground."""
    card_w, card_h = height * CARD_ASPECT, float(height)
    card = np.array([[0, 0], [card_w, 0], [card_w, card_h], [0, card_h]], np.float32)
    to_image = cv2.getPerspectiveTransform(card, quad.astype(np.float32))
    x0, y0, x1, y1 = region
    shift = np.array([[1, 0, x0 * card_w], [0, 1, y0 * card_h], [0, 0, 1]], np.float64)
    size = (int((x1 - x0) * card_w), int((y1 - y0) * card_h))
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    flat = cv2.warpPerspective(gray, to_image @ shift, size,
                               flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
    low, high = np.percentile(flat, (2, 98))
    flat = np.clip((flat.astype(np.float32) - low) * (255.0 / max(high - low, 1.0)), 0, 255)
    rectified: np.ndarray = flat.astype(np.uint8)
    # text is the smaller of the two tones: light text on a dark bar (most frames) or on a
    # mid-grey one is turned dark on light, as Tesseract reads best
    threshold, _ = cv2.threshold(rectified, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    if float(np.mean(rectified > threshold)) < 0.5:
        rectified = 255 - rectified
    return rectified


def local_contrast(flat: np.ndarray, letter_px: float) -> np.ndarray:
    """`flat` (a rectified line, gray uint8) with its background levelled: each pixel's
    difference from its neighbourhood's mean, divided by the neighbourhood's standard
    deviation (at least `LOCAL_MIN_STD`), dark text on light whatever the text's colour.

    Why: the line's ground changes within the region (a coloured bar above a black border,
    a textured frame, glare), and one global threshold (Tesseract's Otsu) then keeps the
    ground and loses the letters. Polarity is the sign of the skewness: text is the sparse
    tail of the levels, bright on a dark ground, dark on a light one."""
    image = flat.astype(np.float32)
    sigma = max(letter_px * LOCAL_SIGMA, 1.0)
    mean = cv2.GaussianBlur(image, (0, 0), sigma)
    deviation = image - mean
    variance = cv2.GaussianBlur(deviation * deviation, (0, 0), sigma)
    normalised = deviation / np.sqrt(variance + LOCAL_MIN_STD**2)
    if float(np.mean(normalised**3)) > 0:  # light text
        normalised = -normalised
    levelled: np.ndarray = np.clip(180.0 + 60.0 * normalised, 0, 255).astype(np.uint8)
    return levelled


def line_image(
    image: np.ndarray,
    quad: np.ndarray,
    region: tuple[float, float, float, float],
    height: int,
    levelled: bool,
) -> np.ndarray:
    """`region` rectified at `height` (`rectify`), its contrast levelled (`local_contrast`)
    when `levelled`: what either engine reads."""
    flat = rectify(image, quad, region, height)
    if levelled:
        flat = local_contrast(flat, _LETTER_HEIGHT.get(region, 0.01) * height)
    return flat
