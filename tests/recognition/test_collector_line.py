"""The exact printing from the collector line (app/recognition/collector_line/), on a real
bundle of synthetic cards read by the real Tesseract.

Card 101 has a twin (card-101-twin) that differs only by its set symbol and collector line:
from appearance the answer can only be flagged `ambiguous_printing`; the line decides it.
Card 102 is catalogued in English and German (same set and number), card 103 in English
only. Card 104's twin has no foil finish.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any, cast

import cv2
import numpy as np
import pytest
import requests

from app.common.reference import ReferenceImage
from app.recognition.collector_line.decode import decode_line
from app.recognition.collector_line.foil_mark import foil_mark
from app.recognition.collector_line.read import read_line
from app.recognition.collector_line.records import MIN_CARD_HEIGHT, Printing
from app.recognition.collector_line.region import (
    COPYRIGHT_LINE,
    MODERN_LINE,
    MODERN_LINE_ABOVE_BORDER,
    line_regions,
    local_contrast,
    rectify,
)
from app.recognition.collector_line.settle import answer_finish, settle
from app.recognition.collector_line.tesseract import Reader, Word
from app.recognition.decode.uploads import Photo, decode
from app.recognition.index.bundle import Bundle
from app.recognition.match.card import recognize
from app.recognition.match.records import Recognition
from app.recognition.params import PROFILES
from tests.support.cards import built_bundle
from tests.support.synthetic import (
    CARD_H,
    CARD_W,
    draw_collector_line,
    make_card,
    make_reprint,
    photograph,
)

PARAMS = PROFILES["default"]
BOTH = ["nonfoil", "foil"]

# card id -> (seed of the art, set, collector number, lang, finishes, footer twin?)
PRINTINGS: dict[str, tuple[int, str, str, str, list[str], bool]] = {
    **{f"card-{s}": (s, "syn", str(s - 80), "en", BOTH, False) for s in range(110, 122)},
    "card-101": (101, "syn", "21", "en", BOTH, False),
    "card-101-twin": (101, "rpt", "145", "en", BOTH, True),
    "card-102": (102, "syn", "22", "en", BOTH, False),
    "card-102-de": (102, "syn", "22", "de", BOTH, False),
    "card-103": (103, "syn", "23", "en", BOTH, False),
    "card-104": (104, "syn", "24", "en", BOTH, False),
    "card-104-twin": (104, "pls", "7", "en", ["nonfoil"], True),
    "card-105": (105, "syn", "25", "en", BOTH, False),
    "card-105-frame": (105, "old", "9", "en", BOTH, False),  # in an older frame
}
FRAMES = {"card-105-frame": "2003"}


def card_image(card_id: str, *, lang: str | None = None, foil: bool = False,
               set_code: str | None = None, number: str | None = None) -> np.ndarray:
    seed, set_, collector_number, own_lang, _, twin = PRINTINGS[card_id]
    base = make_reprint(seed, "footer") if twin else (
        make_reprint(seed, "frame") if card_id in FRAMES else make_card(seed))
    return draw_collector_line(base, number or collector_number, set_code or set_,
                               lang=(lang or own_lang).upper(), foil=foil)


def _ref(card_id: str) -> ReferenceImage:
    seed, set_, collector_number, lang, finishes, _ = PRINTINGS[card_id]
    return ReferenceImage(
        card_id=card_id, face=0, name=f"Card {seed}", set=set_,
        collector_number=collector_number, illustration_id=f"art-{seed}",
        load=lambda: card_image(card_id),
        extra={"frame": FRAMES.get(card_id, "2015"), "lang": lang, "finishes": finishes,
               "rarity": "common"},
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    yield from built_bundle([_ref(card_id) for card_id in PRINTINGS],
                            tmp_path_factory.mktemp("lines") / "run", PARAMS)


def _photo_bytes(card: np.ndarray, *, seed: int = 5, card_height: float = 0.8,
                 size: tuple[int, int] = (1200, 1600), **kwargs: Any) -> tuple[bytes, np.ndarray]:
    photo, corners = photograph(card, seed=seed, size=size, card_height=card_height,
                                rotation=4.0, tilt=0.04, **kwargs)
    ok, data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return data.tobytes(), corners


def _recognise(bundle: Bundle, data: bytes, reader: Reader | None) -> tuple[Recognition, Any]:
    decoded = decode(data, max_side=PARAMS.query_max_side)
    result = recognize(bundle, decoded.image, quad_scale=decoded.reduction)
    evidence = settle(bundle, result, Photo(data, decoded, 50_000_000), reader)
    return result, evidence


# -- the line decides twins ------------------------------------------------------------------
@pytest.mark.parametrize("card_id", ["card-101", "card-101-twin"])
def test_a_twin_is_decided_by_its_collector_line(
    bundle: Bundle, reader: Reader, card_id: str
) -> None:
    data, _ = _photo_bytes(card_image(card_id))
    without, _ = _recognise(bundle, data, None)
    assert without.ambiguous_printing, "from appearance alone the twins cannot be told apart"
    result, evidence = _recognise(bundle, data, reader)
    assert result.match is not None and result.match.card["id"] == card_id
    assert not result.ambiguous_printing
    assert evidence.source == "collector_line"
    _, set_, number, *_ = PRINTINGS[card_id]
    assert (evidence.set, evidence.collector_number, evidence.lang) == (set_, number, "en")
    assert evidence.foil_mark is False
    assert result.match.confidence >= PARAMS.accept
    twin = next(c for c in result.alternatives if c.same_art)
    assert twin.confidence == 0.0


def _thumb_over_the_line() -> bytes:
    """A photo (JPEG) of card-101-twin with a thumb over its collector line."""
    data, corners = _photo_bytes(card_image("card-101-twin"))
    photo = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert photo is not None
    to_photo = cv2.getPerspectiveTransform(
        np.array([[0, 0], [CARD_W, 0], [CARD_W, CARD_H], [0, CARD_H]], np.float32), corners)
    thumb = np.array([[0.0, 0.90 * CARD_H], [0.6 * CARD_W, 0.90 * CARD_H],
                      [0.6 * CARD_W, CARD_H], [0.0, CARD_H]], np.float32)
    covered = cv2.perspectiveTransform(thumb[None], to_photo)[0].astype(np.int32)
    cv2.fillPoly(photo, [covered], (120, 150, 200))
    ok, encoded = cv2.imencode(".jpg", photo)
    assert ok
    return encoded.tobytes()


def test_an_unreadable_line_leaves_the_flag(bundle: Bundle, reader: Reader) -> None:
    """A thumb over the collector line: the card is found, its printing stays flagged."""
    result, evidence = _recognise(bundle, _thumb_over_the_line(), reader)
    assert result.match is not None and result.match.card["name"] == "Card 101"
    assert result.ambiguous_printing
    assert evidence.source == "appearance" and evidence.collector_number is None


def test_a_heic_photo_decoded_reduced_is_read(bundle: Bundle, reader: Reader) -> None:
    """An iPhone photo (HEIF) big enough to be decoded reduced: its line is read from that
    decode (a HEIF cannot be decoded again cheaply, as a JPEG is), not refused with a 500."""
    import pillow_heif
    from PIL import Image

    photo, _ = photograph(card_image("card-101-twin"), seed=5, size=(1600, 2400),
                          card_height=0.8, rotation=4.0, tilt=0.04)
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(photo[:, :, ::-1])).save(buffer, quality=90)
    data = buffer.getvalue()
    decoded = decode(data, max_side=PARAMS.query_max_side)
    assert decoded.format == "heif" and decoded.reduction == 2
    result = recognize(bundle, decoded.image, quad_scale=decoded.reduction)
    evidence = settle(bundle, result, Photo(data, decoded, 50_000_000), reader)
    assert result.match is not None and result.match.card["id"] == "card-101-twin"
    assert evidence.source == "collector_line" and not result.ambiguous_printing


def test_a_line_on_a_small_card_is_not_read(bundle: Bundle, reader: Reader) -> None:
    data, _ = _photo_bytes(card_image("card-101-twin"), size=(720, 960), card_height=0.55)
    result, evidence = _recognise(bundle, data, reader)
    assert result.quad is not None
    assert np.ptp(np.array(result.quad)[:, 1]) < MIN_CARD_HEIGHT * 1.1
    assert result.ambiguous_printing and evidence.text is None


def test_a_reading_that_names_no_candidate_changes_nothing(
    bundle: Bundle, reader: Reader
) -> None:
    """A printing the catalogue does not hold (set ZZZ): the line is read, names none of the
    card's printings, and the visual answer and its flag stand."""
    data, _ = _photo_bytes(card_image("card-101-twin", set_code="zzz", number="999"))
    plain, _ = _recognise(bundle, data, None)
    result, evidence = _recognise(bundle, data, reader)
    assert evidence.text is not None and "999" in evidence.text
    assert evidence.source == "appearance" and evidence.collector_number is None
    assert result.ambiguous_printing
    assert result.match is not None and plain.match is not None
    assert result.match.card["id"] == plain.match.card["id"]


def test_a_line_that_contradicts_the_frame_shown_changes_nothing(
    bundle: Bundle, reader: Reader
) -> None:
    """The photo shows card 105 in today's frame, its line names the printing in the older
    frame (a misprint, a sticker, a misreading): the frame shown wins."""
    data, _ = _photo_bytes(card_image("card-105", set_code="old", number="9"))
    result, evidence = _recognise(bundle, data, reader)
    assert evidence.slot is not None  # the line did name the other printing
    assert result.match is not None and result.match.card["id"] == "card-105"
    assert not result.ambiguous_printing and evidence.source == "appearance"


def test_decoding_names_only_catalogued_printings() -> None:
    printings = [Printing(0, "SYN", "21", "en", "2015", ("nonfoil",)),
                 Printing(1, "RPT", "145", "en", "2015", ("nonfoil",))]

    def words(*texts: str) -> list[Word]:
        return [Word(t, 90.0, (i * 50, 0, i * 50 + 40, 20)) for i, t in enumerate(texts)]

    assert decode_line(words("C", "0145", "RPT", "•", "EN"), printings).slot == 1
    assert decode_line(words("C", "0021", "0YN", "EN"), printings).slot is None  # no set
    assert decode_line(words("C", "0021", "SYN", "EN"), printings).slot == 0
    assert decode_line(words("C", "0145", "SYN", "EN"), printings).slot is None  # crossed
    assert decode_line(words("C", "0999", "ZZZ", "EN"), printings).slot is None
    assert decode_line(words("M", "0145", "OSK"), [
        Printing(2, "DSK", "145", "en", "2015", ())]).slot == 2  # OCR's D for O
    assert decode_line(words("C", "0021", "SYN", "OE"), printings).lang == "de"  # D read O
    assert decode_line(words("C", "0021", "SYNXEN"), printings).lang == "en"  # ★ read "X"
    assert decode_line(words("C", "0021", "SYN", "SEN"), printings).lang == "en"  # • read "S"
    # only EN ends in N: "ON" and "tn" (read at 700 px) are English, not an unread language
    assert decode_line(words("C", "0021", "SYN", "ON"), printings).lang == "en"
    assert decode_line(words("C", "0021", "SYN", "+", "tn"), printings).lang == "en"
    unread = decode_line(words("C", "0021", "SYN", "XQ"), printings)
    assert unread.lang is None and unread.lang_unread  # a language, not known which


def test_decoding_reads_the_numbers_ocr_slips_on() -> None:
    """The slips measured on rendered photos: a 2003 line's "/" dropped ("95274"), a "1"
    read "£", a number glued to the set code ("COLISRP1") or read as letters only ("OLOO");
    and the copyright's year is never a number."""

    def words(*texts: str) -> list[Word]:
        return [Word(t, 90.0, (i * 50, 0, i * 50 + 40, 20)) for i, t in enumerate(texts)]

    old_frame = [Printing(0, "RTR", "95", "en", "2003", ()),
                 Printing(1, "RTR", "126", "en", "2003", ()),
                 Printing(2, "RTR", "2", "en", "2003", ()),
                 Printing(3, "RP1", "20", "en", "2015", ())]
    copyright_ = ("TM", "&", "©", "2012", "Wizards", "of", "the", "Coast")
    assert decode_line(words(*copyright_, "95274"), old_frame).slot == 0
    assert decode_line(words(*copyright_, "951274"), old_frame).slot == 0  # "/" read "1"
    assert decode_line(words(*copyright_, "£26278"), old_frame).slot == 1
    assert decode_line(words(*copyright_), old_frame).slot is None  # 2012 is no "2/012"
    assert decode_line(words(*copyright_), [Printing(4, "RTR", "12", "en", "2003", ())]).slot is (
        None)  # nor a "2" read for a rarity letter before 012
    assert decode_line(words(*copyright_, "9527"), old_frame).slot is None  # no set size
    today = [Printing(0, "SYN", "21", "en", "2015", ()),
             Printing(1, "RP1", "115", "en", "2015", ()),
             Printing(2, "RP2", "100", "en", "2015", ())]
    assert decode_line(words("COLISRP1", "+", "EN"), today).slot == 1
    assert decode_line(words("C", "OLOO", "RP2", "+", "EN"), today).slot == 2
    assert decode_line(words("C", "OLOO", "RP1", "+", "EN"), today).slot is None  # crossed
    # a line with a set code is no 2003 line: its number names no printing of that frame
    assert decode_line(words("C", "00260", "RP1", "•", "EN"), [
        Printing(0, "RTR", "260", "en", "2003", ()), *today]).slot is None
    # a number shorter than the zero-padded ones these frames print is part of one: "4"
    # read from a blurred "0335" names neither printing 4 nor 335
    shop = [Printing(0, "DSK", "335", "en", "2015", ()), Printing(1, "DSK", "4", "en", "2015", ())]
    assert decode_line(words("4", "DSK", "+", "EN"), shop).slot is None
    assert decode_line(words("M", "0004", "DSK", "+", "EN"), shop).slot == 1


def test_a_set_code_read_whole_names_its_printing_despite_a_slip_in_the_number() -> None:
    """A "9" in small type read "0", "O" or "C": with the set code read, one wrong digit
    still names the one printing of that set; a set that holds the art twice, two wrong
    digits, or another set's number read exactly name nothing."""

    def words(*texts: str) -> list[Word]:
        return [Word(t, 90.0, (i * 50, 0, i * 50 + 40, 20)) for i, t in enumerate(texts)]

    twins = [Printing(0, "SYN", "21", "en", "2015", ()),
             Printing(1, "RP1", "92", "en", "2015", ()),
             Printing(2, "RP3", "2", "en", "2015", ())]
    assert decode_line(words("C", "OO92", "RP1", "•", "EN"), twins).slot == 1
    assert decode_line(words("C", "OOO2", "RP1", "•", "EN"), twins).slot is None  # RP3's
    del twins[2]
    assert decode_line(words("C", "OOO2", "RP1", "•", "EN"), twins).slot == 1
    assert decode_line(words("CO02", "RP1", "•", "EN"), twins).slot == 1  # rarity glued
    assert decode_line(words("COS92RP1*EN"), twins).slot == 1  # glued, "0" read "S"
    assert decode_line(words("C", "0000", "RP1", "•", "EN"), twins).slot is None  # 2 slips
    assert decode_line(words("C", "OOO2", "RPX", "•", "EN"), twins).slot is None  # no set
    same_set = [Printing(0, "DSK", "51", "en", "2015", ()),
                Printing(1, "DSK", "371", "en", "2015", ())]
    assert decode_line(words("R", "O57!", "DSK", "•", "EN"), same_set).slot is None


def test_each_frame_is_read_where_it_prints_its_line() -> None:
    """Today's frames: the two lines, then the same without the border under them (a second
    region: the border's edge takes Tesseract off some lines); 2003: the copyright line;
    older frames: nothing. Each region once, whatever the number of printings."""
    today, old = (Printing(0, "SYN", "1", "en", "2015", ()),
                  Printing(1, "RTR", "2", "en", "2003", ()))
    ancient = Printing(2, "LEA", "3", "en", "1993", ())
    assert line_regions([today, today]) == [MODERN_LINE, MODERN_LINE_ABOVE_BORDER]
    assert line_regions([old, today]) == [COPYRIGHT_LINE, MODERN_LINE,
                                          MODERN_LINE_ABOVE_BORDER]
    assert line_regions([ancient]) == []


def test_a_light_line_on_a_coloured_bar_is_read(reader: Reader) -> None:
    """Light letters on a mid-grey bar above the black border (a coloured bar, in gray): one
    global threshold keeps the bar and the border apart and loses the letters; levelling the
    contrast locally reads them."""
    card = np.full((936, 672), 200, np.uint8)
    card[int(0.925 * 936): int(0.965 * 936), 20:336] = 150  # the bar
    card[int(0.965 * 936):, :] = 15  # the border
    cv2.putText(card, "C 0263 RP1 * EN", (30, int(0.951 * 936)), cv2.FONT_HERSHEY_SIMPLEX,
                0.42, 215, 1, cv2.LINE_AA)
    quad = np.array([[0, 0], [672, 0], [672, 936], [0, 936]], np.float32)
    printings = [Printing(0, "SYN", "21", "en", "2015", ()),
                 Printing(1, "RP1", "263", "en", "2015", ())]
    assert read_line(reader, card, quad, printings, time.perf_counter).slot == 1
    flat = rectify(card, quad, MODERN_LINE, 2200)  # why: the plain rectified line reads nothing
    assert decode_line(reader.read(flat), printings).slot is None
    assert decode_line(reader.read(local_contrast(flat, 0.0107 * 2200)), printings).slot == 1


def _code_mark_language(code: str, mark: str, width: int) -> np.ndarray:
    """A gray line `code` ★ EN (mark "star") or `code` • EN (mark "bullet"), dark on light,
    letters 25 px tall, the mark centred at x 100."""
    image: np.ndarray = np.full((80, width), 230, np.uint8)
    cv2.putText(image, code, (10, 55), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 20, 2, cv2.LINE_AA)
    cv2.putText(image, "EN", (120, 55), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 20, 2, cv2.LINE_AA)
    if mark == "star":
        points = [(100 + (13 if i % 2 == 0 else 5.5) * np.cos(-np.pi / 2 + i * np.pi / 5),
                   43 + (13 if i % 2 == 0 else 5.5) * np.sin(-np.pi / 2 + i * np.pi / 5))
                  for i in range(10)]
        cv2.fillPoly(image, [np.array(points, np.int32)], 20, cv2.LINE_AA)
    else:
        cv2.circle(image, (100, 43), 5, 20, -1, cv2.LINE_AA)
    return image


@pytest.mark.parametrize("mark", ["star", "bullet"])
@pytest.mark.parametrize("blur", [0.0, 2.0])
def test_the_foil_mark_is_measured_against_the_letters_not_a_short_box(
    mark: str, blur: float
) -> None:
    """Tesseract sometimes boxes the set code's word ("SYN•") at the mark's height: the mark
    is still measured against the letters' height (the language's word), and told apart."""
    image = _code_mark_language("SYN", mark, width=300)
    if blur:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    short_box = [Word("SYN*", 90.0, (10, 38, 108, 49)), Word("EN", 90.0, (120, 31, 160, 56))]
    assert foil_mark(image, short_box, 0) is (mark == "star")


@pytest.mark.parametrize("mark", ["star", "bullet"])
@pytest.mark.parametrize("touching", [False, True])
def test_the_foil_mark_is_found_by_its_spacing_where_the_boxes_misplace_it(
    mark: str, touching: bool
) -> None:
    """As measured on rendered photos: Tesseract boxes "DSK" with the ★ but reads it
    without, and "*®EN" from the E; the next word, the artist's name, is boxed with the art
    above it; the code's letters may touch (a serif type's "RP"). The mark is the glyph
    spaced off on both sides before the language's two letters all the same."""
    image = _code_mark_language("DSK", mark, width=400)
    if touching:
        cv2.line(image, (12, 54), (82, 54), 20, 2)
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    boxes = [Word("DSK", 90.0, (10, 31, 113, 56)), Word("*®EN", 90.0, (120, 31, 160, 56)),
             Word("Artist", 90.0, (200, 0, 330, 80))]
    assert foil_mark(image, boxes, 0, "DSK") is (mark == "star")


def test_a_copyright_line_names_its_2003_printing_despite_a_slip_in_the_number() -> None:
    """A 2003 frame prints no set code: its copyright line's year, or its last word, stands
    in for one, and one wrong digit of three still names the one 2003-frame printing of
    that year; a printing of another year, two near numbers, or a short number do not."""

    def words(*texts: str) -> list[Word]:
        return [Word(t, 90.0, (i * 50, 0, i * 50 + 40, 20)) for i, t in enumerate(texts)]

    def rtr(slot: int, number: str, year: int = 2012) -> Printing:
        return Printing(slot, "RTR", number, "en", "2003", (), year=year)

    twins = [rtr(0, "122"), Printing(1, "RP1", "357", "en", "2015", (), year=2020)]
    line = ("TM", "&", "©", "2012", "Wizards", "of", "the", "Coast")
    assert decode_line(words(*line, "1322778"), twins).slot == 0  # "122/274" read
    assert decode_line(words("Wards", "of", "the", "Cowst", "T22274"), twins).slot == 0
    # the first word like "Coast" anchors the number, not one read in the art after it
    assert decode_line(words("Wcards", "WE", "Goase", "P12274", "ee", "CaP"), twins).slot == 0
    assert decode_line(words("Wizards", "of", "the", "1322778"), twins).slot is None  # no anchor
    assert decode_line(words(*line, "1332778"), twins).slot is None  # two slips
    assert decode_line(words(*line, "132"), twins).slot is None  # no set size after it
    assert decode_line(words(*line, "1322778"), [rtr(0, "122", 2015)]).slot is None  # year
    assert decode_line(words(*line, "1322778"), [*twins, rtr(2, "142")]).slot is None
    assert decode_line(words(*line, "1322778"), [*twins, rtr(2, "132")]).slot is None
    assert decode_line(words(*line, "2274"), [rtr(0, "12")]).slot is None  # short number


# -- the second engine -----------------------------------------------------------------------
def _blurred_copyright_line() -> tuple[np.ndarray, np.ndarray, list[Printing]]:
    """A 2003 frame's copyright line on a mottled frame, blurred, on a card 655 px tall: a
    gray image, the card's quad in it, and the printings it may name (122/274 or a
    2015-frame twin). Tesseract reads nothing that names one at 620-690 px, PP-OCRv6 names
    122/274 from 635 px up."""
    card = np.full((936, 672), 190.0)
    card += cv2.GaussianBlur(np.random.default_rng(1).normal(0, 30, card.shape), (0, 0), 3)
    card8 = np.clip(card, 0, 255).astype(np.uint8)
    cv2.putText(card8, "TM & (C) 2012 Wizards of the Coast 122/274", (30, int(0.96 * 936)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.38, 30, 1, cv2.LINE_AA)
    small = cv2.resize(cv2.GaussianBlur(card8, (0, 0), 1.5), (470, 655),
                       interpolation=cv2.INTER_AREA)
    quad = np.array([[0, 0], [470, 0], [470, 655], [0, 655]], np.float32)
    printings = [Printing(0, "RTR", "122", "en", "2003", (), year=2012),
                 Printing(1, "RP1", "357", "en", "2015", (), year=2020)]
    return small, quad, printings


def test_a_line_tesseract_misreads_is_decided_by_the_second_engine(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tesseract reads the blurred line's digits as letters; the second engine (PP-OCRv6)
    reads them and names the printing, without a foil mark (it gives no glyph boxes)."""
    image, quad, printings = _blurred_copyright_line()
    assert reader.second is not None, "make install installs rapidocr"
    evidence = read_line(reader, image, quad, printings, time.perf_counter)
    assert evidence.slot == 0 and evidence.collector_number == "122"
    assert evidence.foil_mark is None
    monkeypatch.setattr(reader, "second", None)  # why: Tesseract alone decides nothing here
    assert read_line(reader, image, quad, printings, time.perf_counter).slot is None


def test_the_second_engine_reads_only_lines_tesseract_left_undecided(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line Tesseract decides costs no second reading; an undecided one gets one per
    kind of line."""
    assert reader.second is not None
    calls: list[tuple[int, int]] = []
    engine_read = reader.second.read

    def counted(gray: np.ndarray) -> str:
        calls.append(gray.shape)
        return engine_read(gray)

    monkeypatch.setattr(reader.second, "read", counted)
    quad = np.array([[0, 0], [CARD_W, 0], [CARD_W, CARD_H], [0, CARD_H]], np.float32)
    printings = [Printing(0, "SYN", "21", "en", "2015", ()),
                 Printing(1, "RP1", "145", "en", "2015", ())]
    decided = read_line(reader, card_image("card-101-twin"), quad, printings, time.perf_counter)
    assert decided.slot == 1 and calls == []
    blank = np.full((CARD_H, CARD_W, 3), 200, np.uint8)
    assert read_line(reader, blank, quad, printings, time.perf_counter).slot is None
    assert len(calls) == 2  # MODERN_LINE's two rows; the region above the border not again


def test_what_tesseract_read_stands_where_the_second_engine_reads_nothing(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tesseract reads `SYN • DE` but no number; the second engine reads the number and set
    code, no language and (without glyph boxes) no mark: the printing is named, the card
    stays German (never a confident English answer), and the • Tesseract measured after
    the same set code stands."""
    card = draw_collector_line(make_card(101), "", "SYN", lang="DE")
    quad = np.array([[0, 0], [CARD_W, 0], [CARD_W, CARD_H], [0, CARD_H]], np.float32)
    printings = [Printing(0, "SYN", "21", "en", "2015", ()),
                 Printing(1, "RP1", "145", "en", "2015", ())]
    assert reader.second is not None
    monkeypatch.setattr(reader, "second", None)
    alone = read_line(reader, card, quad, printings, time.perf_counter)
    # why: Tesseract reads the language and measures the mark
    assert (alone.slot, alone.lang, alone.foil_mark) == (None, "de", False)
    monkeypatch.undo()
    rows = iter(["C 0021", "SYN"])  # a second reading of the number and set code only
    monkeypatch.setattr(reader.second, "read", lambda gray: next(rows, ""))
    evidence = read_line(reader, card, quad, printings, time.perf_counter)
    assert (evidence.slot, evidence.lang, evidence.foil_mark) == (0, "de", False)
    assert evidence.text is not None and evidence.text.endswith("C 0021 SYN")


def test_the_second_engine_starts_no_telemetry(tmp_path: Any) -> None:
    """onnxruntime's Linux wheels upload usage events to Microsoft and keep a device id
    under ~/.cache unless told not to before they start: loading the engine, in a fresh
    process whose home is `tmp_path`, leaves no such file (no uploader was created)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / ".cache"))
    script = ("from app.recognition.collector_line.rapidocr import load_line_recognizer\n"
              "engine, detail = load_line_recognizer()\n"
              "assert engine is not None, detail\n"
              "engine.close()\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=os.getcwd(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.rglob("*")] == []


def test_two_engines_reading_two_languages_leave_the_language_unread() -> None:
    """Tesseract reads DE, the second engine EN: neither is believed, and the answer is
    flagged as for a language code seen but not read."""
    from app.recognition.collector_line.read import _with_first_reading
    from app.recognition.collector_line.records import Evidence

    first = Evidence(set="syn", lang="de", foil_mark=True)
    merged = _with_first_reading(Evidence(set="syn", lang="en", slot=0), first)
    assert (merged.lang, merged.lang_unread, merged.foil_mark) == (None, True, True)
    other_set = _with_first_reading(Evidence(set="rp1", lang="en", slot=1), first)
    assert other_set.foil_mark is None  # a mark measured after another set code


def test_the_second_engine_can_be_left_unloaded() -> None:
    """SECOND_LINE_READER=false: Tesseract alone, and the start-up status says so."""
    from app.runtime.line_reader import LineReaderHolder

    holder = LineReaderHolder(True, second=False)
    try:
        assert "second reader: off (SECOND_LINE_READER=false)" in holder.status
        loaded = holder.get()
        assert loaded is not None and loaded.second is None
    finally:
        holder.close()
    holder = LineReaderHolder(True)
    try:
        assert "second reader: RapidOCR" in holder.status
        loaded = holder.get()
        assert loaded is not None and loaded.second is not None
    finally:
        holder.close()


# -- finish and language ---------------------------------------------------------------------
def test_the_foil_mark_is_not_told_on_a_card_under_its_legible_size(
    bundle: Bundle, reader: Reader
) -> None:
    """At 650 px the line is read, but the mark is a few pixels: no finish is claimed."""
    data, _ = _photo_bytes(card_image("card-104", foil=True), size=(620, 820))
    result, evidence = _recognise(bundle, data, reader)
    assert result.match is not None and result.match.card["id"] == "card-104"
    assert evidence.collector_number is not None  # the line was read
    assert evidence.foil_mark is None
    assert answer_finish(evidence, result.match.card["finishes"]) is None


def test_a_star_gives_foil_only_for_a_printing_with_that_finish(
    bundle: Bundle, reader: Reader
) -> None:
    data, _ = _photo_bytes(card_image("card-104", foil=True))
    result, evidence = _recognise(bundle, data, reader)
    assert result.match is not None and result.match.card["id"] == "card-104"
    assert evidence.foil_mark is True
    assert answer_finish(evidence, result.match.card["finishes"]) == "foil"
    # the twin has no foil finish: a star read on it gives no finish
    data, _ = _photo_bytes(card_image("card-104-twin", foil=True))
    result, evidence = _recognise(bundle, data, reader)
    assert result.match is not None and result.match.card["id"] == "card-104-twin"
    assert evidence.foil_mark is True
    assert answer_finish(evidence, result.match.card["finishes"]) is None
    data, _ = _photo_bytes(card_image("card-104"))
    result, evidence = _recognise(bundle, data, reader)
    assert evidence.foil_mark is False
    assert answer_finish(evidence, BOTH) == "nonfoil"


def test_a_german_card_is_answered_in_german_when_catalogued(
    bundle: Bundle, reader: Reader
) -> None:
    data, _ = _photo_bytes(card_image("card-102", lang="de"))
    result, evidence = _recognise(bundle, data, reader)
    assert result.match is not None and result.match.card["id"] == "card-102-de"
    assert evidence.lang == "de" and not result.ambiguous_printing


def test_a_language_one_reading_lost_is_taken_from_another() -> None:
    """The reading that names the printing shows `DSK` and no language after it (`+O`, the
    mark and a broken `DE`): the language another reading of the line showed after the same
    set code is taken, read before or read on for; never a confident English answer."""
    printings = [Printing(0, "DSK", "26", "en", "2015", ()),
                 Printing(1, "RP1", "145", "en", "2015", ())]
    quad = np.array([[0, 0], [CARD_W, 0], [CARD_W, CARD_H], [0, CARD_H]], np.float32)
    blank = np.full((CARD_H, CARD_W), 200, np.uint8)

    def words(*texts: str) -> list[Word]:
        return [Word(t, 90.0, (i * 50, 0, i * 50 + 40, 20)) for i, t in enumerate(texts)]

    class Scripted:
        """Stands in for ocr.Reader: the readings Tesseract gave a line, in turn."""

        second = None

        def __init__(self, *readings: list[Word]) -> None:
            self.readings = iter(readings)

        def read(self, gray: np.ndarray) -> list[Word]:
            return next(self.readings, [])

    def read(*readings: list[Word]) -> Any:
        return read_line(cast(Reader, Scripted(*readings)), blank, quad, printings,
                         time.perf_counter, foil=False)

    lost = words("R", "0026", "DSK", "+O")
    later = read(lost, words("R", "0O26", "DSK", "•", "DE"))
    assert (later.slot, later.lang) == (0, "de")
    earlier = read(words("R", "OO", "DSK", "•", "DE"), lost)
    assert (earlier.slot, earlier.lang) == (0, "de")
    assert read(words("R", "0026", "DSK", "•", "EN")).lang == "en"
    assert read(lost).lang is None  # no reading shows one: nothing to take


def test_a_german_card_is_never_a_confident_english_answer(
    bundle: Bundle, reader: Reader
) -> None:
    data, _ = _photo_bytes(card_image("card-103", lang="de"))
    plain, _ = _recognise(bundle, data, None)
    assert plain.match is not None and not plain.ambiguous_printing  # one printing: sure
    result, evidence = _recognise(bundle, data, reader)
    assert result.match is not None and result.match.card["id"] == "card-103"
    assert evidence.lang == "de"
    assert result.ambiguous_printing


# -- over HTTP -------------------------------------------------------------------------------
def _record(card_id: str) -> dict[str, Any]:
    seed, set_, collector_number, lang, finishes, _ = PRINTINGS[card_id]
    return {
        "object": "card", "id": card_id, "oracle_id": f"oracle-{seed}",
        "illustration_id": f"art-{seed}", "name": f"Card {seed}", "lang": lang,
        "layout": "normal", "set": set_, "set_name": f"Set {set_.upper()}",
        "collector_number": collector_number, "finishes": finishes,
        "prices": {"usd": "1.00", "usd_foil": "4.50", "eur": "0.90", "eur_foil": None,
                   "tix": None},
        "image_uris": {"normal": f"https://img.invalid/{card_id}.jpg"}, "games": ["paper"],
        "digital": False, "released_at": "2026-01-01",
    }


def _metric(url: str, source: str, name: str = "mtgscan_printing_evidence_total",
            label: str = "source") -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    line = next((row for row in text.splitlines()
                 if row.startswith(f'{name}{{{label}="{source}"}}')), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_infer_answers_the_printing_its_line_names_with_its_finish(
    bundle: Bundle, base_config: dict[str, str]
) -> None:
    from app.catalog.store import card_row
    from tests.support.apps import LiveServer, serve_bundle, shutdown

    application = serve_bundle({**base_config, "INFER_AUTH": "disabled"}, bundle.directory)
    application.extensions["catalog"].upsert_cards(card_row(_record(c)) for c in PRINTINGS)
    try:
        with LiveServer(application) as live:
            before = _metric(live.url, "collector_line")
            data, _ = _photo_bytes(card_image("card-101-twin", foil=True))
            response = requests.post(f"{live.url}/infer", files={"roi_image": ("p.jpg", data)},
                                     timeout=60)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["predicted_card_id"] == "card-101-twin"
            assert body["ambiguous_printing"] is False
            evidence = body["printing_evidence"]
            assert evidence["source"] == "collector_line" and evidence["foil_mark"] is True
            assert (evidence["set"], evidence["collector_number"]) == ("rpt", "145")
            assert body["finish"] == "foil"
            assert body["finish_prices"] == {"usd": "4.50", "eur": None}
            assert body["timings_ms"]["read_line"] > 0
            assert _metric(live.url, "collector_line") == before + 1
    finally:
        shutdown(application)


def test_metrics_count_the_lines_the_second_engine_read(
    bundle: Bundle, base_config: dict[str, str]
) -> None:
    """A line Tesseract decides is not counted; a covered one, read again in vain, is
    counted undecided (what the second engine's memory buys, for an operator)."""
    from tests.support.apps import LiveServer, serve_bundle, shutdown

    application = serve_bundle({**base_config, "INFER_AUTH": "disabled"}, bundle.directory)
    name = "mtgscan_second_line_readings_total"
    try:
        with LiveServer(application) as live:
            before = _metric(live.url, "undecided", name, "outcome")
            data, _ = _photo_bytes(card_image("card-101-twin"))
            for photo in (data, _thumb_over_the_line()):
                response = requests.post(f"{live.url}/infer",
                                         files={"roi_image": ("p.jpg", photo)}, timeout=60)
                assert response.status_code == 200, response.text
            assert response.json()["ambiguous_printing"] is True
            assert _metric(live.url, "undecided", name, "outcome") == before + 1
            assert _metric(live.url, "decided", name, "outcome") == 0.0
    finally:
        shutdown(application)


def test_without_the_engine_the_service_says_so_and_answers_by_appearance(
    bundle: Bundle, base_config: dict[str, str], tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """No eng.traineddata anywhere: one start-up line says so, requests do not fail."""
    from app.recognition.collector_line import tesseract as ocr
    from tests.support.apps import serve_bundle, shutdown

    monkeypatch.setattr(ocr, "TESSDATA_DIRS", ())
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    with caplog.at_level("WARNING", logger="app.api.infer"):
        application = serve_bundle({**base_config, "INFER_AUTH": "disabled"},
                                   bundle.directory)
    try:
        assert any("eng.traineddata is missing" in r.getMessage() for r in caplog.records)
        data, _ = _photo_bytes(card_image("card-101-twin"))
        response = application.test_client().post(
            "/infer", data={"roi_image": (io.BytesIO(data), "p.jpg")})
        assert response.status_code == 200
        body = response.get_json()
        assert body["printing_evidence"]["source"] == "appearance"
        assert body["ambiguous_printing"] is True and body["finish"] is None
    finally:
        shutdown(application)
