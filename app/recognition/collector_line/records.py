"""The collector line's records, and what the whole stage shares: which cards' lines are read.

`Printing` is what a line may name (one catalogued printing of the recognised art, with the
bundle's id-map fields: Scryfall's `set`, `collector_number`, `lang`, `frame`, `finishes`);
`Evidence` is what the line said (the answer's `printing_evidence`). The constants here are
read by several modules of the stage, `settle` among them: lines on cards smaller than
`MIN_CARD_HEIGHT` are not read (measured: below it the line is not legible); the foil mark
(★ or •) is told by its shape on cards from `FOIL_MIN_CARD_HEIGHT` up. Constants that tune
one step live with that step (region.py, decode.py, foil_mark.py, read.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# -- which cards' lines are read -----------------------------------------------------------
# Card height in the uploaded photo's pixels under which the line is not read: its letters
# are then under ~6 px tall (bench/collector_line.py measures readings by height).
MIN_CARD_HEIGHT = 600
# ... and under which the foil mark is not told (foil_mark None): at 600 px a ★ is ~5 px
# tall, and the benchmark's renders at 600 px took one star of 14 for a bullet (a wrong
# finish, a wrong price), while none from 800 px up
FOIL_MIN_CARD_HEIGHT = 700
# The line is read from a copy of the photo in which the card is at least this tall (a JPEG
# is decoded at 1/2..1/8 only down to it), and rectified at region.RECTIFIED_HEIGHT.
SOURCE_CARD_HEIGHT = 1000

# -- what a frame prints -------------------------------------------------------------------
FRAMES_WITHOUT_SET_CODE = frozenset({"2003", "1997", "1993"})


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
