"""Recognition's one entry point: the bytes of a photo in, the cards it shows with their
printings out. `POST /infer` (app/api/infer.py) and every benchmark call `decode_upload` and
`recognise`, so that what a benchmark measures is what the service answers.

The steps, in order (each in its stage's package):

1. `decode/`: the upload is sniffed, checked and decoded, reduced on the fly when huge
   (`decode_upload`; a bad image raises `ImageError` with its HTTP status, before any bundle
   is needed).
2. `features/` + `index/` + `match/`: SIFT features, FAISS neighbours, votes, RANSAC and
   photometric verification decide the card and, by appearance, its printing
   (`match.card.recognize`, or `match.scene.recognize_all` for every card of a photo).
3. `collector_line/`: the line printed at the bottom of each recognised card is read and
   settles the exact printing (set, collector_number, lang, foil) when it is legible.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from app.recognition.collector_line.records import Evidence
from app.recognition.collector_line.settle import settle
from app.recognition.collector_line.tesseract import Reader
from app.recognition.decode.uploads import DecodedImage, Photo, decode
from app.recognition.index.bundle import Bundle
from app.recognition.match.card import recognize
from app.recognition.match.records import Recognition
from app.recognition.match.scene import recognize_all
from app.recognition.params import FeatureParams


@dataclass
class Answer:
    """One recognised card: `result` with its printing settled by the collector line,
    `evidence` what the line said, `appearance` the id-map entry of the printing the photo's
    appearance alone chose (before the line was read; the benchmarks tell the two apart)."""

    result: Recognition
    evidence: Evidence
    appearance: dict[str, Any]


@dataclass
class Outcome:
    """What a photo shows. `answers`: the cards recognised, strongest first (empty: none).
    `searched`: the single-card search's own result, also when it found no card (its
    `alternatives` then say what came closest); None for `multi`. `timings_ms`: the stages'
    times (`features`, `search`, `verify`, ..., `passes`, and `read_line` when a line was
    read)."""

    answers: list[Answer]
    searched: Recognition | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    # the CPU time reading the lines took in this thread (Tesseract and OpenCV run in it):
    # what the collector-line benchmark reports, which other jobs do not inflate as wall time
    read_line_cpu_ms: float | None = None


def query_side(params: FeatureParams, multi: bool) -> int:
    """The longest side a photo is decoded at: a scene of several cards needs more."""
    return params.multi_max_side if multi else params.query_max_side


def decode_upload(
    data: bytes, params: FeatureParams, *, max_pixels: int, multi: bool = False
) -> DecodedImage:
    """The upload decoded for recognition, or `ImageError` saying what is wrong with it.
    Huge JPEGs are decoded at 1/2..1/8 size straight away; recognition would shrink them
    anyway, and a 12 MP photo decoded in full costs time and 200 MB of memory."""
    return decode(data, max_pixels=max_pixels, max_side=query_side(params, multi))


def recognise(
    bundle: Bundle,
    data: bytes,
    decoded: DecodedImage,
    *,
    max_pixels: int,
    reader: Reader | None = None,
    multi: bool = False,
    deadline: float | None = None,
) -> Outcome:
    """Recognise the card (`multi`: every card) of a decoded upload, then settle each card's
    printing from its collector line with `reader` (None: by appearance only). `data` is the
    upload itself: the line is read from a copy decoded at enough resolution, not from the
    reduced query image. `deadline` (a `time.perf_counter()` value) is the request's time
    budget. Thread-safe."""
    quad_scale = float(decoded.reduction)
    searched: Recognition | None = None
    if multi:
        scene = recognize_all(bundle, decoded.image, quad_scale=quad_scale, deadline=deadline)
        results, timings = scene.cards, scene.timings_ms
    else:
        searched = recognize(bundle, decoded.image, quad_scale=quad_scale, deadline=deadline)
        results = [searched] if searched.match is not None else []
        timings = searched.timings_ms
    photo = Photo(data, decoded, max_pixels)
    # settle may put another printing in `match`; it replaces the candidate, never its card
    appearances = [r.match.card for r in results if r.match is not None]
    started, cpu = time.perf_counter(), time.thread_time()
    evidences = [settle(bundle, result, photo, reader) for result in results]
    cpu_ms = round((time.thread_time() - cpu) * 1000, 1)
    if results:
        timings["read_line"] = round((time.perf_counter() - started) * 1000, 2)
    answers = [Answer(r, e, a) for r, e, a in zip(results, evidences, appearances, strict=True)]
    return Outcome(answers, searched, timings, cpu_ms if results else None)


_SETS: weakref.WeakKeyDictionary[Bundle, list[str]] = weakref.WeakKeyDictionary()


def indexed_sets(bundle: Bundle) -> list[str]:
    """The set codes of the printings a bundle indexes, sorted (read once per bundle: every
    entry of its id map is parsed, ~0.3 s at 100,000 printings, so a caller asks only for a
    catalogue that `REFRESH_SETS` limits)."""
    sets = _SETS.get(bundle)
    if sets is None:
        codes = {str(entry["set"]) for entry in bundle.iter_entries() if entry and entry.get("set")}
        sets = _SETS[bundle] = sorted(codes)
    return sets

