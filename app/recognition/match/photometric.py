"""Photometric verification: the photo warped onto a candidate's reference thumbnail through the
verified homography, and compared where this printing differs from the others of its layout,
in grey levels and in colour.

Why: every modern card shares its frame, so a homography fits the frame of any card of that
frame with 20-170 inliers (the figure of the first engine's docstring, commit 550b6b9,
2026-11-26, without the run it came from); only the art tells a wrong card aligned on its
frame from the right one (how well the art correlates, on the eval set: `decide.py`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from app.recognition.features import layout
from app.recognition.features.extraction import Features
from app.recognition.index.bundle import Bundle
from app.recognition.match.appearance import View
from app.recognition.match.records import Verified
from app.recognition.params import FeatureParams


class Pyramid:
    """Query gray image (or colour image) and its pyrDown levels, made lazily (anti-aliasing
    for the warp)."""

    def __init__(self, image: np.ndarray) -> None:
        self.levels = [image]

    def level(self, n: int) -> np.ndarray:
        while len(self.levels) <= n and min(self.levels[-1].shape[:2]) >= 16:
            self.levels.append(cv2.pyrDown(self.levels[-1]))
        return self.levels[min(n, len(self.levels) - 1)]


class PhotoPyramids:
    """What the photometric check warps: the query's gray pyramid, and its colour one when
    the query has colour (made only when a reference with a colour thumbnail is checked)."""

    def __init__(self, query: Features) -> None:
        self.gray = Pyramid(query.gray)
        self._color_image = query.color
        self._color: Pyramid | None = None

    def color(self) -> Pyramid | None:
        if self._color is None and self._color_image is not None:
            self._color = Pyramid(self._color_image)
        return self._color


def warp_onto(
    pyramid: Pyramid, to_query: np.ndarray, size: tuple[int, int],
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


def ncc(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
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
    cand: Verified,
    photo: PhotoPyramids,
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
    warped, valid = warp_onto(photo.gray, to_query, (tw, th), hidden)
    warped = cv2.GaussianBlur(warped, (0, 0), layout.BLUR)
    ref = cv2.GaussianBlur(thumb, (0, 0), layout.BLUR)
    cand.view = View(warped.astype(np.float32), valid, ref.astype(np.float32))
    card_corr = ncc(warped, ref, valid)
    mean = bundle.layout_mean(cand.row)
    distinct = None if mean is None else layout.distinct_correlation(
        warped, ref, valid, mean, params.art_highpass)
    if distinct is None:  # a bundle without layout keys: the fixed art box
        x0, y0, x1, y1 = params.art_box
        art = (slice(int(y0 * th), int(y1 * th)), slice(int(x0 * tw), int(x1 * tw)))
        seen = layout.highpassed(warped.astype(np.float32), params.art_highpass, valid)
        own = layout.highpassed(ref.astype(np.float32), params.art_highpass)
        distinct = ncc(seen[art], own[art], valid[art])
    cand.gray_corr = distinct
    if params.color_check:
        cand.color_corr = color_corr(bundle, cand, photo, to_query, (tw, th), hidden)
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


def color_corr(
    bundle: Bundle, cand: Verified, photo: PhotoPyramids, thumb_to_query: np.ndarray,
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
    warped, valid = warp_onto(pyramid, to_query, (cw, ch), hidden)
    return layout.color_correlation(layout.blurred(warped), layout.blurred(reference), valid,
                                    bundle.layout_chroma(cand.row))
