"""The exact printing, from the collector line printed on the card.

Half of all printings share their art, frame and border with another printing (docs/design-notes.md,
"Printings that look alike"): the photo's appearance can only guess among them. What tells
them apart is the collector line at the bottom of the card: `M 0194` / `DSK • EN` on 2015
and later frames (rarity, collector number, set code, language; a ★ instead of the • on
foils), the number alone (`141/274`) on 2003 frames, little or nothing on older ones.

Here, once a card is recognised, its quad (the verified homography's corners, in the
uploaded photo's pixels) rectifies the line's region from the photo decoded at enough
resolution (not the reduced query image), Tesseract reads it (`ocr.Reader`; a line none of
its readings decides is read once more by a second engine, `ppocr.py`), and the reading is
decoded against what the catalogue allows: the set codes, collector numbers and languages
of the printings that share the recognised art (all of them, not only the best-voted few).
A reading that names exactly one of them decides the printing; a reading that names none,
several, or one the photo's appearance rules out, changes nothing. A number is read
exactly, or one digit off when something else printed on the line vouches for it (the set
code read whole; on a 2003 frame, the copyright's year or its "Coast"), never when another
printing's number is read whole. Lines on cards smaller than `MIN_CARD_HEIGHT` are not read
(measured: below it the line is not legible); the foil mark (★ or •) is told by its shape
on cards from `FOIL_MIN_CARD_HEIGHT` up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from app.recognition.collector_line.rapidocr import LineRecognizer
from app.recognition.collector_line.tesseract import Reader, Word

# Card height in the uploaded photo's pixels under which the line is not read: its letters
# are then under ~6 px tall (bench/collector_line.py measures readings by height).
MIN_CARD_HEIGHT = 600
# ... and under which the foil mark is not told (foil_mark None): at 600 px a ★ is ~5 px
# tall, and the benchmark's renders at 600 px took one star of 14 for a bullet (a wrong
# finish, a wrong price), while none from 800 px up
FOIL_MIN_CARD_HEIGHT = 700
# The line is read from a copy of the photo in which the card is at least this tall (a JPEG
# is decoded at 1/2..1/8 only down to it), and rectified at RECTIFIED_HEIGHT (letters
# ~28 px tall, what Tesseract's LSTM model reads best).
SOURCE_CARD_HEIGHT = 1000
RECTIFIED_HEIGHT = 2600
# The readings tried in turn (read_line): (card height rectified at, text contrast
# normalised locally or not). Local normalisation reads the lines on coloured bars and
# textured frames that a global threshold loses; the plain reading, and other scales, read
# some that it misses (Tesseract's slips change with the scale).
# Measured (bench/collector_line.py's renders >= 800 px, one core): the first
# reading at 2200 px decides as many lines as at 2600 px for 20% less CPU.
ATTEMPTS = ((2200, True), (RECTIFIED_HEIGHT, False), (3000, True), (1800, True))
MAX_READS = 10  # three regions (twins in the 2003 and later frames) get three or four attempts
# When no Tesseract reading decided, the second engine (`Reader.second`, ppocr.py) reads
# each kind of line once: rectified at SECOND_READ_HEIGHT, levelled (local_contrast), one
# row of text at a time (a recognition model reads a single line). Measured on the
# collector-line benchmark's renders >= 800 px: of the 16 lines Tesseract left undecided it
# decides 11, none wrongly; rectified at 1000 or 2200 px and not levelled, 4 and 5 (it reads
# best near its own input of 48 px a row).
SECOND_READ_HEIGHT = 1400
# Local contrast: the text's neighbourhood (Gaussian sigma, in letter heights) and the
# least standard deviation divided by (gray levels of the stretched line): flat areas are
# not blown up into noise, which Tesseract would read as letters.
LOCAL_SIGMA = 1.0
LOCAL_MIN_STD = 55.0
CARD_ASPECT = 63 / 88  # width / height of a Magic card
# The foil mark's shape (collector_line.mark_shape; measured on rendered photos by
# bench/collector_line.py, cards 800-1400 px): height relative to the letters, and
# area / convex hull (bullets 0.24-0.54 of the letters' height and solidity 0.93-0.98;
# stars 0.72-1.0 and 0.71-0.94, blurred ones at the top of that range)
STAR_MIN_HEIGHT = 0.65
STAR_SOLIDITY = 0.95
BULLET_MAX_HEIGHT = 0.56
# The least space on either side of the mark, in letter heights (_spaced_mark_shape)
MARK_GAP = 0.25

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
_TEXT_ROWS = {MODERN_LINE: 2, COPYRIGHT_LINE: 1}
FRAMES_WITHOUT_SET_CODE = frozenset({"2003", "1997", "1993"})
PADDED_DIGITS = 3  # the least digits of a number on a frame that prints the set code
# Digits a number read next to its set code may be off by and still name that set's printing
# (decode_line; measured on the collector-line benchmark: a "9" in 10 px type is read "0",
# "O" or "C" on a third of the synthetic twins' lines at 800 px)
NUMBER_SLIPS = 1

UNREAD_LANG = "?"  # Evidence.lang of a language code that was seen but not read
# Language codes as printed on the line -> Scryfall's `lang`
PRINTED_LANGS = {
    "EN": "en", "DE": "de", "FR": "fr", "IT": "it", "ES": "es", "SP": "es", "PT": "pt",
    "JP": "ja", "JA": "ja", "KR": "ko", "KO": "ko", "RU": "ru", "CS": "zhs", "CT": "zht",
    "PH": "ph",
}
# What OCR confuses in a field that must be digits
_AS_DIGIT = str.maketrans({"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "Z": "2",
                           "S": "5", "B": "8", "G": "6", "T": "7"})
_DIGIT_SLIPS = frozenset("ODQILZSBGT")
# Glyphs OCR takes for one another in set codes ("DSK" read "OSK"): each class -> one letter
_CONFUSABLE = str.maketrans({"0": "O", "D": "O", "Q": "O", "U": "O", "1": "I", "L": "I",
                             "J": "I", "T": "I", "5": "S", "8": "B", "2": "Z", "6": "G",
                             "V": "Y"})


def frame_of_date(released_at: str | None) -> str | None:
    """The frame a printing released then most likely has, for catalogues without Scryfall's
    `frame` field: 2015 from Magic Origins (2015-07), 2003 from Eighth Edition (2003-07),
    1997 from Visions (1997-02). Reprint sets in older frames make it a guess, which only
    chooses where to read: a wrong guess reads the wrong place and names nothing."""
    if not released_at:
        return None
    for start, frame in (("2015-07", "2015"), ("2003-07", "2003"), ("1997-02", "1997")):
        if released_at >= start:
            return frame
    return "1993"


@dataclass(frozen=True)
class Printing:
    """One catalogued printing the line may name: its bundle slot and the id-map entry's
    fields (`set`, `collector_number`, `lang`, `frame`, `finishes`)."""

    slot: int
    set: str
    collector_number: str
    lang: str | None
    frame: str | None
    finishes: tuple[str, ...]
    looks: tuple[Any, ...] = ()  # (frame, border_color, frame_effects): what a photo shows
    year: int | None = None  # of `released_at`: the year a 2003 frame's copyright prints

    @classmethod
    def of(cls, slot: int, entry: dict[str, Any]) -> Printing:
        frame = entry.get("frame") or frame_of_date(entry.get("released_at"))
        looks = (frame, entry.get("border_color"), tuple(sorted(entry.get("frame_effects") or ())))
        released = str(entry.get("released_at") or "")
        return cls(slot, str(entry.get("set") or "").upper(),
                   str(entry.get("collector_number") or ""), entry.get("lang"),
                   frame, tuple(entry.get("finishes") or ()), looks,
                   int(released[:4]) if released[:4].isdigit() else None)

    @property
    def number(self) -> int | None:
        """The collector number's digits (`0194` and `194` are one number; `123a` is 123)."""
        digits = re.search(r"\d+", self.collector_number)
        return int(digits.group()) if digits else None


@dataclass
class Evidence:
    """What decided the printing, as the answer's `printing_evidence` says it.

    `source` is "collector_line" when the line named the answered printing, else
    "appearance"; `text` is the raw reading (None when nothing was read); `set`,
    `collector_number`, `lang` are what the reading decoded to (None where it did not),
    `foil_mark` True for a ★, False for a •, None when not seen."""

    source: str = "appearance"
    text: str | None = None
    set: str | None = None
    collector_number: str | None = None
    lang: str | None = None
    foil_mark: bool | None = None
    slot: int | None = None  # the printing the line named, if exactly one
    lang_mismatch: bool = False  # the language read is not the answer's, nor catalogued
    lang_unread: bool = False  # letters where the language goes, no language code
    foil_word: int | None = None  # the word the set code was read in (the mark follows it)
    # "decided" / "undecided" when the second engine read the line (Tesseract's readings
    # decided nothing), None when it was not asked
    second_reader: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "text": self.text, "set": self.set,
                "collector_number": self.collector_number, "lang": self.lang,
                "foil_mark": self.foil_mark}


# -- geometry ------------------------------------------------------------------------------
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


# -- decoding ------------------------------------------------------------------------------
def _digit_runs(text: str, min_digits: int = 1) -> set[int]:
    """Collector numbers a reading may show: digit runs, and tokens that are digits up to
    OCR's letter-for-digit slips ("OL26" is 0126; a rarity letter may lead: "M0194"),
    leaving out the set size after a "/"; only those of `min_digits` characters or more."""
    numbers: set[int] = set()
    for token in re.findall(r"[A-Z0-9/]+", text.upper()):
        part = token.split("/")[0]  # "141/274": 274 is the set's size
        numbers.update(int(run) for run in re.findall(r"\d+", part) if len(run) >= min_digits)
        for core in (part, part[1:]) if part[:1].isalpha() else (part,):  # "M0194"
            if len(core) >= min_digits and any(ch.isdigit() for ch in core) and all(
                ch.isdigit() or ch in _DIGIT_SLIPS for ch in core
            ):
                numbers.add(int(core.translate(_AS_DIGIT)))
    return numbers


def _slipped_digits(chunk: str, min_digits: int) -> list[str]:
    """The digits `chunk` (squeezed, upper case) may be as a whole or without its first
    character (a rarity letter), OCR's letter slips taken for digits even when no true
    digit was read ("OLOO" is 0100); only those of `min_digits` characters or more."""
    return [core.translate(_AS_DIGIT) for core in (chunk, chunk[1:])
            if len(core) >= min_digits and all(ch.isdigit() or ch in _DIGIT_SLIPS for ch in core)]


def _glued_number(prefix: str, min_digits: int) -> set[int]:
    """The collector number in what precedes the set code, in its word or the word before:
    "COLIS" before "RP1" is rarity C and 0115."""
    return {int(core) for core in _slipped_digits(prefix, min_digits)}


def _numbers_before_size(text: str) -> set[int]:
    """Collector numbers of a 2003-frame line whose "/" OCR dropped or misread: `95/274`
    read "95274" or "951274" is 95 before a set size of three digits (a "/" read "1", "7" or
    "I" leaves one more character). Runs that look like the copyright's year (1993-2039) are
    no number and a set size: "2012" is never card 2 of a set of 012."""
    numbers: set[int] = set()
    # a "1" in this small serif type is often read "£"
    for token in re.findall(r"[A-Z0-9]+", text.upper().replace("£", "1")):
        if not any(ch.isdigit() for ch in token) or not all(
            ch.isdigit() or ch in _DIGIT_SLIPS for ch in token
        ):
            continue
        digits = token.translate(_AS_DIGIT)
        if len(digits) == 4 and 1993 <= int(digits) <= 2039:
            continue
        for cut in range(1, len(digits) - 2):
            rest = digits[cut:]
            if len(rest) == 3 or (len(rest) == 4 and token[cut] in "17I"):
                numbers.add(int(digits[:cut]))
    return numbers


def _squeezed(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def _confusable(text: str) -> str:
    return _squeezed(text).translate(_CONFUSABLE)


def decode_line(words: list[Word], printings: list[Printing]) -> Evidence:
    """Match a reading against the printings it may name (see the module doc).

    A printing is named when its collector number is read and, on frames that print it, its
    set code (compared up to OCR's usual confusions, "OSK" for "DSK"); the set code alone
    (the number misread) names nothing. The language is the printed code of the word after
    the set code. With several printings named, or none, nothing is decided (`slot` None)."""
    text = " ".join(w.text for w in words)
    # frames that print the set code print the number zero-padded ("084/249", "0194"): a
    # shorter run is part of a number, or no number ("4" read from a blurred "0335")
    padded = _digit_runs(text, PADDED_DIGITS)
    fraction_numbers = _digit_runs(text) | _numbers_before_size(text)
    tokens = [_confusable(w.text) for w in words]
    evidence = Evidence(text=text or None)
    named: list[Printing] = []
    set_word: int | None = None
    near_set: dict[int, int] = {}  # slot -> the word its set code was read in
    for printing in printings:
        code = _confusable(printing.set)
        at = next((i for i, token in enumerate(tokens) if code and code in token), None)
        if at is not None and printing.frame not in FRAMES_WITHOUT_SET_CODE:
            near_set[printing.slot] = at
        if at is not None and (set_word is None or len(code) > len(_squeezed(evidence.set or ""))):
            set_word = at
            evidence.set = printing.set.lower()
        needs_set = printing.frame not in FRAMES_WITHOUT_SET_CODE
        readable = padded if needs_set else fraction_numbers
        if at is not None:
            # the number glued to the set code ("C0115RP1" read "COLISRP1"), or the word
            # just before it (the number's line ends where the set code's begins)
            readable = readable | _glued_number(
                _squeezed(words[at].text)[: tokens[at].find(code)], PADDED_DIGITS)
            if at > 0:
                readable = readable | _glued_number(_squeezed(words[at - 1].text),
                                                    PADDED_DIGITS)
        has_number = printing.number is not None and printing.number in readable
        if has_number and (at is not None or not needs_set):
            named.append(printing)
    if near_set:
        # a line showing a set code is the line of a frame that prints one: its number
        # names no printing of a frame without ("C 00260 RP1", 0026 with a 0 too many, is
        # not 260/274)
        named = [p for p in named if p.slot in near_set]
    if set_word is not None:
        evidence.lang = _language_after(words, set_word, _confusable(evidence.set or ""))
        if evidence.lang == UNREAD_LANG:
            evidence.lang, evidence.lang_unread = None, True
        evidence.foil_word = set_word
    if not named:
        named = _named_by_set(words, tokens, printings, near_set, padded)
    if not named and not near_set:
        named = _named_by_copyright(text, printings)
    # the same set and number in several languages is one printing until the language says
    if len({(p.set, p.number) for p in named}) != 1:
        return evidence
    chosen = named[0]
    evidence.set = chosen.set.lower() if chosen.frame not in FRAMES_WITHOUT_SET_CODE else (
        evidence.set)
    evidence.collector_number = chosen.collector_number
    same_lang = [p for p in named if evidence.lang is not None and p.lang == evidence.lang]
    evidence.slot = (same_lang or [chosen])[0].slot
    return evidence


def _named_by_set(
    words: list[Word],
    tokens: list[str],
    printings: list[Printing],
    near_set: dict[int, int],
    padded: set[int],
) -> list[Printing]:
    """The printing named by a set code read whole and a number read with a slip: when the
    set code read is that of one printing of the art (one number: a set that holds the art
    twice needs its number read exactly), the digits printed just before the code (glued to
    it, or in one of the two words before, a rarity letter dropped) are within
    `NUMBER_SLIPS` digits of its number (`0092` read "OOO2", `0342` "COS42"), and no number
    read names a printing of another set. Both readings must then have gone wrong, and in
    agreement, for a wrong printing to be named."""
    by_set = [p for p in printings if p.slot in near_set]
    if len({(p.set, p.number) for p in by_set}) != 1:
        return []  # no set code read, several sets', or a set with several of these numbers
    if any(p.number in padded for p in printings if p.set != by_set[0].set):
        return []  # the number of another set's printing: the readings disagree
    code = _confusable(by_set[0].set)
    at = near_set[by_set[0].slot]
    chunks = [_squeezed(words[at].text)[: tokens[at].find(code)]]
    chunks += [_squeezed(word.text) for word in words[max(0, at - 2): at]]
    cores = [core for chunk in chunks for core in _slipped_digits(chunk, PADDED_DIGITS)]
    return [p for p in by_set if p.number is not None and any(
        _slips(core, p.number) <= NUMBER_SLIPS for core in cores)]


# The copyright line's last word as OCR reads it in small serif type: "Coast", "Goast",
# "Cowst", "Coust", "Cook", "Coe"
_COAST = re.compile(r"[CG][OA][A-Z]{1,3}")


def _named_by_copyright(text: str, printings: list[Printing]) -> list[Printing]:
    """The 2003-frame printing named by its copyright line read with a slip in the number:
    the frame prints no set code, but its copyright line ("™ & © 2012 Wizards of the
    Coast 141/274") stands in for one. After the line's year (a printing's release year or
    the year before) or its last word ("Coast", read "Goast", "Cowst", "Cook"), whichever
    is read first, when the digits that begin a token are within `NUMBER_SLIPS` of the
    number of exactly one 2003-frame printing ("1322778" for `122/274`, "T71/" for
    `171/274`; a first letter that is no digit is left out: "P11274"), that printing of the
    year read (any year when none was) is named, unless another printing's number was read
    whole. Numbers under three digits are not matched with a slip (one wrong digit of two
    leaves too little)."""
    old = [p for p in printings if p.frame == "2003" and p.number is not None
           and p.number >= 100]
    if not old:
        return []
    words = text.upper().replace("£", "1").split()
    year_read: set[int] = set()
    anchor = None
    for n, word in enumerate(words):
        digits = word.translate(_AS_DIGIT)
        years = {int(digits[i: i + 4]) for i in range(len(digits) - 3)
                 if digits[i: i + 4].isdigit() and 1993 <= int(digits[i: i + 4]) <= 2039}
        if years and not year_read:
            year_read = years
            anchor = n if anchor is None else anchor
        elif anchor is None and _COAST.fullmatch(re.sub(r"[^A-Z]", "", word)):
            anchor = n  # the first: later words of the art or frame may look alike ("CaP")
    if anchor is None:
        return []
    numbers = []
    for word in words[anchor + 1:]:
        squeezed = re.sub(r"[^A-Z0-9]", "", word)
        for core in (squeezed, squeezed[1:]):
            if core and all(ch.isdigit() or ch in _DIGIT_SLIPS for ch in core) and any(
                    ch.isdigit() for ch in core):
                numbers.append(core.translate(_AS_DIGIT))
                break

    def near_number(number: int) -> bool:
        digits = len(str(number))
        return any(len(core) > digits and _slips(core[:digits], number) <= NUMBER_SLIPS
                   for core in numbers)

    near = [p for p in old if (not year_read or year_read & {p.year, (p.year or 0) - 1})
            and near_number(p.number or 0)]
    if len({(p.set, p.number) for p in near}) != 1:
        return []
    whole = {int(core) for core in numbers} | {int(core[:-3]) for core in numbers
                                               if len(core) > 3}
    if any(p.number in whole for p in printings if p.number != near[0].number):
        return []  # another printing's number was read whole
    return near


def _slips(core: str, number: int) -> int:
    """Digits in which `core` (digits as read) differs from `number` zero-padded to its
    length; more than any slip when the number has more digits than were read."""
    target = str(number).zfill(len(core))
    if len(target) != len(core):
        return len(target)
    return sum(a != b for a, b in zip(core, target, strict=True))


_PRINTED_CONFUSABLE = {_confusable(code): lang for code, lang in PRINTED_LANGS.items()}


def _language_after(words: list[Word], at: int, code: str) -> str | None:
    """The Scryfall `lang` of the printed language code after the set code `code` (in its
    confusable form) in word `at`: the rest of that word when OCR joined them ("DSKEN"),
    else the next word of two letters or more (the foil mark between them is a word of its
    own or dropped). Compared up to OCR's confusions ("OE" is "DE")."""
    word = _confusable(words[at].text)
    rest = [word[word.find(code) + len(code):]]
    rest += [_confusable(w.text) for w in words[at + 1: at + 3]]
    for chunk in rest:
        if len(chunk) < 2:
            continue
        for printed in sorted(_PRINTED_CONFUSABLE, key=len, reverse=True):
            if chunk.startswith(printed):
                return _PRINTED_CONFUSABLE[printed]
        if len(chunk) == 3 and chunk[1:] in _PRINTED_CONFUSABLE:
            return _PRINTED_CONFUSABLE[chunk[1:]]  # the foil mark read as a letter: "XEN"
        if len(chunk) == 2 and chunk[1] == "N":
            return "en"  # of the printed codes only EN ends in N: "ON", "tn" are its slips
        # two letters in the language's place that are no language code: some language,
        # maybe not English (a German "DE" read "OC")
        return UNREAD_LANG if len(chunk) == 2 and chunk.isalpha() else None
    return None


# -- the foil mark -------------------------------------------------------------------------
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
    squeezed = _confusable(code)
    start = _confusable(word.text).find(squeezed)
    if start < 0 or (start and not word.text[:start].isalnum()):
        return None
    last = None
    for i in range(at, min(at + 3, len(words))):
        tail = _confusable(words[i].text)[start + len(squeezed) if i == at else 0:]
        if len(tail) >= 2 and tail[-2:] in _PRINTED_CONFUSABLE:
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


# -- reading -------------------------------------------------------------------------------
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
        flat = _line_image(image, quad, region, height, local)
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
            region in _TEXT_ROWS for region in regions):
        second = _second_reading(reader.second, image, quad, printings)
        if second is not None:
            evidence = _with_first_reading(second, evidence)
            texts.append(second.text or "")
        evidence.second_reader = "undecided" if second is None else "decided"
    evidence.text = " / ".join(texts) or None
    evidence.timings_ms["read_line"] = round((clock() - started) * 1000, 2)
    return evidence


def _line_image(
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
        rows = _TEXT_ROWS.get(region)
        if rows is None:
            continue
        flat = _line_image(image, quad, region, SECOND_READ_HEIGHT, True)
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
