"""Reading a recognised card's collector line: `read_line`, the readings tried in turn and
the `Evidence` they add up to.

Each region of the line (one per `frame` among the printings that share the art,
region.py) is rectified and read by Tesseract (`tesseract.Reader`) at the scales and with
the contrast `ATTEMPTS` lists, until a reading names a printing (decode.py); the foil mark
is measured in the reading that names it (foil_mark.py). A line none of Tesseract's
readings decides is read once more by the second engine (`Reader.second`, rapidocr.py),
and what each engine read that the other could not is put together.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from app.recognition.collector_line.decode import decode_line
from app.recognition.collector_line.foil_mark import foil_mark
from app.recognition.collector_line.rapidocr import LineRecognizer
from app.recognition.collector_line.records import FRAMES_WITHOUT_SET_CODE, Evidence, Printing
from app.recognition.collector_line.region import (
    RECTIFIED_HEIGHT,
    TEXT_ROWS,
    line_image,
    line_regions,
)
from app.recognition.collector_line.tesseract import Reader, Word

# The readings tried in turn (read_line): (card height rectified at, text contrast
# normalised locally or not). Local normalisation reads the lines on coloured bars and
# textured frames that a global threshold loses; the plain reading, and other scales, read
# some that it misses (Tesseract's slips change with the scale).
# Measured (bench/collector_line.py's renders >= 800 px, one core): the first
# reading at 2200 px decides as many lines as at 2600 px for 20% less CPU.
ATTEMPTS = ((2200, True), (RECTIFIED_HEIGHT, False), (3000, True), (1800, True))
MAX_READS = 10  # three regions (twins in the 2003 and later frames) get three or four attempts
# When no Tesseract reading decided, the second engine (`Reader.second`, rapidocr.py) reads
# each kind of line once: rectified at SECOND_READ_HEIGHT, levelled (local_contrast), one
# row of text at a time (a recognition model reads a single line). Measured on the
# collector-line benchmark's renders >= 800 px: of the 16 lines Tesseract left undecided it
# decides 11, none wrongly; rectified at 1000 or 2200 px and not levelled, 4 and 5 (it reads
# best near its own input of 48 px a row).
SECOND_READ_HEIGHT = 1400


def read_line(
    reader: Reader,
    image: np.ndarray,
    quad: np.ndarray,
    printings: list[Printing],
    clock: Callable[[], float],
    *,
    foil: bool = True,
) -> Evidence:
    """Read the collector line of the card at `quad` (float32 (4, 2), TL TR BR BL) in the
    gray `image` and decode it against `printings` (the card's same-art printings); the
    foil mark is told only with `foil` (a card from `FOIL_MIN_CARD_HEIGHT` up).

    Each region (one per frame among the printings) is read as `ATTEMPTS` says in turn
    until a reading names a printing (measured on the collector-line benchmark: each later
    attempt decides some lines the first left undecided, none wrongly). When that reading
    shows the set code but no language after it, the language another reading of the line
    showed after the same set code is taken, and the remaining attempts are read for it
    until one shows it: a German card whose `DE` one reading lost is not answered English.
    At most `MAX_READS` readings."""
    started = clock()
    evidence = Evidence()
    texts: list[str] = []
    languages: list[Evidence] = []  # readings that showed a language after a set code
    regions = line_regions(printings)
    attempts = [(height, local, region) for height, local in ATTEMPTS
                for region in regions][:MAX_READS]
    decided = False
    for n, (height, local, region) in enumerate(attempts):
        flat = line_image(image, quad, region, height, local)
        words = reader.read(flat)
        found = decode_line(words, printings)
        if found.set is not None and (found.lang is not None or found.lang_unread):
            languages.append(found)
        if decided:  # reading on for the language only
            if _take_language(evidence, languages):
                break
            continue
        if found.text and n < len(regions):
            texts.append(found.text)
        if foil and found.foil_word is not None and found.lang is not None:  # layout known
            found.foil_mark = foil_mark(flat, words, found.foil_word, found.set)
        if found.slot is not None or (found.set is not None and evidence.set is None) or (
                evidence.text is None):
            evidence = found
        if found.slot is not None:
            if found.text and found.text not in texts:
                texts.append(found.text)
            decided = True
            frame = next(p.frame for p in printings if p.slot == found.slot)
            if frame in FRAMES_WITHOUT_SET_CODE or found.foil_word is None or (
                    _take_language(found, languages)):
                break
    if evidence.slot is None and reader.second is not None and any(
            region in TEXT_ROWS for region in regions):
        second = _second_reading(reader.second, image, quad, printings)
        if second is not None:
            evidence = _with_first_reading(second, evidence)
            texts.append(second.text or "")
        evidence.second_reader = "undecided" if second is None else "decided"
    evidence.text = " / ".join(texts) or None
    evidence.timings_ms["read_line"] = round((clock() - started) * 1000, 2)
    return evidence


def _take_language(evidence: Evidence, languages: list[Evidence]) -> bool:
    """Whether `evidence` now has its language: its own, or else the first of `languages`
    (other readings of the line) read after the same set code, which it takes."""
    if evidence.lang is not None or evidence.lang_unread:
        return True
    other = next((e for e in languages if e.set == evidence.set), None)
    if other is None:
        return False
    evidence.lang, evidence.lang_unread = other.lang, other.lang_unread
    return True


def _with_first_reading(second: Evidence, first: Evidence) -> Evidence:
    """The second engine's deciding reading, with what Tesseract's read and it could not:
    the language where it read none (a German card stays German; two different languages
    read leave it unread, so the answer is flagged), and the foil mark Tesseract measured
    after the same set code (the second engine gives no glyph boxes to measure one by)."""
    if second.lang is None and not second.lang_unread:
        second.lang, second.lang_unread = first.lang, first.lang_unread
    elif first.lang is not None and second.lang is not None and first.lang != second.lang:
        second.lang, second.lang_unread = None, True
    if first.set is not None and first.set == second.set:
        second.foil_mark = first.foil_mark
    return second


def _second_reading(
    second: LineRecognizer, image: np.ndarray, quad: np.ndarray, printings: list[Printing]
) -> Evidence | None:
    """The second engine's reading of the first region that it decides (see
    SECOND_READ_HEIGHT), or None. Its words have no glyph boxes, so the foil mark is not
    told from it (`foil_mark` None)."""
    for region in line_regions(printings):
        rows = TEXT_ROWS.get(region)
        if rows is None:
            continue
        flat = line_image(image, quad, region, SECOND_READ_HEIGHT, True)
        step = flat.shape[0] / rows
        words: list[Word] = []
        for row in range(rows):
            y0, y1 = round(row * step), round((row + 1) * step)
            words += [Word(text, 0.0, (0, y0, flat.shape[1], y1))
                      for text in second.read(flat[y0:y1]).split()]
        found = decode_line(words, printings)
        if found.slot is not None:
            found.foil_mark = None
            return found
    return None
