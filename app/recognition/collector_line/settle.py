"""Settle a recognised card's exact printing with its collector line.

`match.decide.decide` names the card and weighs the printings that share its art by
appearance (`match/appearance.py`); when they differ only by set symbol and collector line it
can only flag the answer `ambiguous_printing`. `settle` reads the line (`read.read_line`) and:

- the line names exactly one printing of the art (any of the catalogue's, not only the ones
  verified): it becomes the answer, unflagged, `printing_evidence.source: "collector_line"`;
- unless the photo's appearance had already told the printings apart (not ambiguous) and
  named one that looks otherwise (another `frame`, `border_color` or `frame_effects`): a
  line that contradicts what the photo shows changes nothing. Between printings that look
  alike (the same frame, differing by set symbol and collector line), the line is the
  better evidence, whatever the pixels said;
- the line names none or several: the visual decision and its flag stand;
- the language read is not the answer's: that printing in the language read when the
  catalogue holds it, else the answer flagged `ambiguous_printing` (a German card is never a
  confident English answer); letters in the language's place that are no language code
  flag it too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from app.recognition.collector_line.read import read_line
from app.recognition.collector_line.records import (
    FOIL_MIN_CARD_HEIGHT,
    MIN_CARD_HEIGHT,
    SOURCE_CARD_HEIGHT,
    Evidence,
    Printing,
)
from app.recognition.collector_line.region import card_height
from app.recognition.collector_line.tesseract import Reader
from app.recognition.decode.uploads import ImageError, Photo
from app.recognition.index.bundle import Bundle
from app.recognition.match.records import Recognition

log = logging.getLogger(__name__)


def same_art_printings(bundle: Bundle, slot: int) -> list[Printing]:
    """Every catalogued printing sharing the art of `slot` (itself first): the slots of the
    same card name whose `illustration_id` agrees where both have one, and the same face."""
    entry = bundle.card(slot)
    illustration = entry.get("illustration_id")
    face = entry.get("face", 0)
    printings = [Printing.of(slot, entry)]
    for other in bundle.printings(slot):
        if other == slot or not bundle.alive[other]:
            continue
        candidate = bundle.card(other)
        if candidate.get("face", 0) != face:
            continue
        theirs = candidate.get("illustration_id")
        if illustration and theirs and theirs != illustration:
            continue
        printings.append(Printing.of(other, candidate))
    return printings


def settle(
    bundle: Bundle, result: Recognition, photo: Photo, reader: Reader | None
) -> Evidence:
    """Read the line of `result`'s card and settle its printing (see the module doc);
    `result` is updated in place. Returns what was read (`source` "appearance" when the line
    was not read, or did not decide)."""
    if result.match is None or result.quad is None or reader is None:
        return Evidence()
    quad = np.array(result.quad, np.float32)
    height = card_height(quad)
    if not height >= MIN_CARD_HEIGHT:
        return Evidence()
    try:
        image, reduction = photo.gray_at_least(SOURCE_CARD_HEIGHT, height)
    except ImageError as exc:  # the answer stands without the line
        log.warning("collector line not read: %s", exc.message)
        return Evidence()
    printings = same_art_printings(bundle, result.match.row)
    evidence = read_line(reader, image, quad / reduction, printings, time.perf_counter,
                         foil=height >= FOIL_MIN_CARD_HEIGHT)
    match = result.match
    chosen = evidence.slot
    if chosen is not None and chosen != match.row and not match.ambiguous:
        looks = {p.slot: p.looks for p in printings}
        if looks.get(chosen) != looks.get(match.row):
            # the photo shows another frame, border or frame effect than the printing the
            # line names, and told them apart: a misreading, most likely
            chosen = None
    if chosen is not None:
        _answer_printing(bundle, result, chosen)
        evidence.source = "collector_line"
    answered = result.match
    assert answered is not None
    lang = answered.card.get("lang")
    if evidence.lang is not None and lang is not None and evidence.lang != lang:
        answered.ambiguous = True
        evidence.lang_mismatch = True
    elif evidence.lang_unread and lang is not None:
        answered.ambiguous = True  # a language was printed there, which one is not known
    return evidence


def _answer_printing(bundle: Bundle, result: Recognition, slot: int) -> None:
    """Make `slot` the answer, unflagged, with the card's confidence (the art's, its
    printing no longer in doubt); the printings it was confused with follow at 0."""
    match = result.match
    assert match is not None
    card_confidence = max(
        [match.art_confidence] + [c.art_confidence for c in result.alternatives if c.same_art]
    )
    pool = [match, *result.alternatives]
    chosen = next((c for c in pool if c.row == slot), None)
    if chosen is None:  # a printing the appearance did not compare: the line found it
        chosen = replace(match, row=slot, card=bundle.card(slot), score=0.0, votes=0.0,
                         source=match.source)
    rest = [c for c in pool if c is not chosen]
    chosen.confidence = round(card_confidence, 4)
    chosen.ambiguous = False
    chosen.same_art = True
    for other in rest:
        other.ambiguous = False
        if other.same_art:
            other.confidence = 0.0
    rest.sort(key=lambda c: (not c.same_art, -c.confidence))
    result.match = chosen
    result.alternatives = rest


def answer_finish(evidence: Evidence, finishes: list[str] | tuple[str, ...] | None) -> str | None:
    """`finish` of the answer: "foil" for a ★ read on a printing that has a foil finish,
    "nonfoil" for a • on one that has a nonfoil finish, else None."""
    if evidence.foil_mark is None or not finishes:
        return None
    finish = "foil" if evidence.foil_mark else "nonfoil"
    return finish if finish in finishes else None

