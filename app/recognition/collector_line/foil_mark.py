"""The foil mark: a ★ (foil) or a • (nonfoil) between the set code and the language on the
collector line of 2015 and later frames, told by its shape in the rectified line.

OCR reads either mark as "©", "®", "*" or "+", joined to the code or the language or on
its own, so the mark is found from Tesseract's word boxes and measured with OpenCV:
connected components of the Otsu-thresholded band, their height against the letters' and
their solidity (area / convex hull area).
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from app.recognition.collector_line.decode import PRINTED_CONFUSABLE, confusable
from app.recognition.collector_line.tesseract import Word

# The foil mark's shape (mark_shape; measured on rendered photos by
# bench/collector_line.py, cards 800-1400 px): height relative to the letters, and
# area / convex hull (bullets 0.24-0.54 of the letters' height and solidity 0.93-0.98;
# stars 0.72-1.0 and 0.71-0.94, blurred ones at the top of that range)
STAR_MIN_HEIGHT = 0.65
STAR_SOLIDITY = 0.95
BULLET_MAX_HEIGHT = 0.56
# The least space on either side of the mark, in letter heights (_spaced_mark_shape)
MARK_GAP = 0.25


def _glyph_span(word: Word, first: int, last: int) -> tuple[float, float]:
    """x range of characters first..last-1 of a word, spacing its box evenly over them."""
    x0, _, x1, _ = word.box
    step = (x1 - x0) / max(len(word.text), 1)
    return x0 + first * step, x0 + last * step


def foil_mark(
    image: np.ndarray, words: list[Word], at: int, code: str | None = None
) -> bool | None:
    """True for a ★ after the set code `code` (read in word `at`), False for a •, None when
    not found or not clear. Told by shape, not by OCR (which reads either as "©", "®", "*"
    or "+", joined to the code or the language or on its own): the bullet is a small disc,
    about half the letters' height; the star is about as tall as the letters, and not
    convex."""
    shape = (_spaced_mark_shape(image, words, at, code) if code else None) or mark_shape(
        image, words, at)
    if shape is None:
        return None
    relative_height, solidity = shape
    if relative_height >= STAR_MIN_HEIGHT and solidity < STAR_SOLIDITY:
        return True
    if relative_height <= BULLET_MAX_HEIGHT:
        return False
    return None


def _letter_height(words: list[Word], at: int) -> int:
    """The letters' height: of the set code's word (`at`) or the next, whichever is taller
    (Tesseract sometimes boxes "RP1•" at the bullet's height), the next only when it is on
    the same line and at most 2.5 times as tall (not the artist's name, boxed with the art
    above it)."""
    _, y0, _, y1 = words[at].box
    heights = [y1 - y0]
    if at + 1 < len(words) and re.search(r"[A-Za-z0-9]{2}", words[at + 1].text):
        _, top, _, bottom = words[at + 1].box
        if y0 - (y1 - y0) / 2 <= (top + bottom) / 2 <= y1 + (y1 - y0) / 2 and (
                bottom - top <= 2.5 * (y1 - y0)):
            heights.append(bottom - top)
    return max(max(heights), 1)


def _spaced_mark_shape(
    image: np.ndarray, words: list[Word], at: int, code: str
) -> tuple[float, float] | None:
    """The shape (as `mark_shape`, its height against the letters' glyphs) of the mark
    between the set code `code` (read in word `at`) and the language, found among the
    glyphs from the code to the language's last letter: the third glyph from the right,
    two letters after it, spaced off on both sides by at least `MARK_GAP` letter heights.

    Why: Tesseract's boxes place the mark poorly when it joins it to a word ("DSK" boxed
    with the ★ but read without it, "*®EN" boxed from the E). Measured on the benchmark's
    renders (800-1400 px): the mark's gaps are 0.29-0.71 letter heights, gaps between the
    letters of a code or a language 0.02-0.21; letters of a code may touch ("RP" one
    glyph), so the mark is counted from the language's end. None when those glyphs are not
    there (a mark merged with a letter, or not inked: no glyph is then spaced off on both
    sides)."""
    word = words[at]
    squeezed = confusable(code)
    start = confusable(word.text).find(squeezed)
    if start < 0 or (start and not word.text[:start].isalnum()):
        return None
    last = None
    for i in range(at, min(at + 3, len(words))):
        tail = confusable(words[i].text)[start + len(squeezed) if i == at else 0:]
        if len(tail) >= 2 and tail[-2:] in PRINTED_CONFUSABLE:
            last = i
            break
    if last is None:
        return None
    height = _letter_height(words, at)
    margin = 0.3 * height
    # a number glued before the code ("0039RP1"): from where the code's letters begin,
    # spacing the word's box evenly
    x0 = _glyph_span(word, start, start)[0] if start else word.box[0] - margin
    x0, x1 = int(max(0, x0)), int(words[last].box[2] + margin)
    y0 = max(0, word.box[1] - height // 2)
    band = image[y0: word.box[3] + height // 2, x0:x1]
    if band.size == 0:
        return None
    _, ink = cv2.threshold(band, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(ink)
    top, bottom = word.box[1] - y0, word.box[3] - y0
    left, width = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_WIDTH]
    upper, tall = stats[:, cv2.CC_STAT_TOP], stats[:, cv2.CC_STAT_HEIGHT]
    glyphs = sorted((label for label in range(1, count)
                     if tall[label] >= 0.2 * height and top <= centroids[label][1] <= bottom
                     and left[label] > 0 and left[label] + width[label] < band.shape[1]
                     and upper[label] > 0 and upper[label] + tall[label] < band.shape[0]),
                    key=lambda label: int(left[label]))
    if len(glyphs) < 4:
        return None
    before, mark, first, second = glyphs[-4:]
    letters = float(np.median([tall[label] for label in glyphs if label != mark]))
    gaps = (left[mark] - left[before] - width[before], left[first] - left[mark] - width[mark])
    if min(gaps) < MARK_GAP * letters or left[second] - left[first] - width[first] >= (
            MARK_GAP * letters):
        return None  # no glyph spaced off as the mark is, or the language is no two letters
    if not 0.75 <= width[mark] / tall[mark] <= 1.35 or min(tall[first], tall[second]) < (
            0.6 * letters):
        return None
    return _shape(labels, stats, mark, letters)


def _shape(
    labels: np.ndarray, stats: np.ndarray, label: int, height: float
) -> tuple[float, float]:
    """(height / `height`, area / convex hull area) of connected component `label`."""
    contours, _ = cv2.findContours((labels == label).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    # the hull joins the outer pixels' centres: half its perimeter, plus one, is the area
    # of the pixels it cuts through (Pick's theorem), which a pixel count includes
    hull_area = cv2.contourArea(hull) + cv2.arcLength(hull, True) / 2 + 1
    solidity = float(stats[label, cv2.CC_STAT_AREA]) / hull_area
    return float(stats[label, cv2.CC_STAT_HEIGHT]) / height, solidity


def mark_shape(image: np.ndarray, words: list[Word], at: int) -> tuple[float, float] | None:
    """(height / the set code's letter height, area / convex hull area) of the mark after
    the set code in word `at` of `image` (the rectified line), or None when none is found."""
    word = words[at]
    code = re.match(r"[A-Za-z0-9]+", word.text)
    if code is None:
        return None
    after = words[at + 1] if at + 1 < len(words) else None
    height = _letter_height(words, at)
    lead = re.match(r"[^A-Za-z0-9]*", after.text).end() if after else 0  # type: ignore[union-attr]
    if after is not None and lead == len(after.text):  # the mark read as a word: "®", "©"
        start, stop = after.box[0] - 0.5 * height, after.box[2] + 0.5 * height
    elif code.end() < len(word.text):  # "SYN@EN" or "SYN©": the mark is inside this word
        start, stop = _glyph_span(word, code.end(), len(word.text))
        tail = re.search(r"[A-Za-z0-9]+$", word.text[code.end():])
        if tail is not None:
            stop = _glyph_span(word, code.end() + tail.start(), len(word.text))[0]
        start, stop = start - 0.3 * height, stop + 0.3 * height
    elif after is not None and lead:  # "@EN": the mark leads the language's word
        start, stop = _glyph_span(after, 0, lead)
        start, stop = min(start, float(word.box[2])), stop + 0.3 * height
    else:  # dropped: between the code and the language
        stop = float(after.box[0]) if after is not None else word.box[2] + 2.0 * height
        start = min(float(word.box[2]), stop - 0.3 * height)
    y0 = max(0, word.box[1] - height // 2)
    band = image[y0: word.box[3] + height // 2, max(0, int(start)): max(0, int(stop))]
    if band.size == 0 or band.shape[1] < 0.25 * height:
        return None
    _, ink = cv2.threshold(band, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink)
    left, width = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_WIDTH]
    tall = stats[:, cv2.CC_STAT_HEIGHT]
    marks = [label for label in range(1, count)
             if 0.2 * height <= tall[label] <= 1.3 * height
             and 0.75 <= width[label] / tall[label] <= 1.35  # round or star-shaped: no "1"
             and left[label] > 0 and left[label] + width[label] < band.shape[1]]  # not a
    # letter cut by the band's edge
    if not marks:
        return None
    label = max(marks, key=lambda m: stats[m, cv2.CC_STAT_AREA])
    return _shape(labels, stats, label, height)
