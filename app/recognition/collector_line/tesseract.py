"""The OCR engine that reads a card's collector line: Tesseract, through tesserocr.

Why Tesseract: its LSTM model reads short printed lines in a few milliseconds on one core
once the line is rectified and upscaled (measured in `bench/collector_line.py`), its
model is Debian's `tesseract-ocr-eng` package (nothing downloaded at run time), and tesserocr's
wheel bundles libtesseract, so the C API is called in-process (no subprocess per reading, as
pytesseract would spawn).

One owner, like the descriptor bundle: `Reader` holds a small pool of `PyTessBaseAPI`
instances (an instance is not thread-safe, and loading the model costs ~100 ms, so instances
are reused, never shared at once), made lazily, and `close()` ends them. When the engine or
its model is missing, `load_reader` says why in one line and the service reads no lines
(answers keep `printing_evidence.source: "appearance"`); it never fails a request for it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.recognition.collector_line.rapidocr import LineRecognizer, load_line_recognizer

log = logging.getLogger(__name__)

LANGUAGE = "eng"
PAD = 10  # px of background added around an image before reading it
# Debian's tesseract-ocr-eng (bookworm: 5/tessdata), other distributions' and older paths
TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/opt/homebrew/share/tessdata",
)


@dataclass(frozen=True)
class Word:
    """One word Tesseract found: its text, confidence (0-100) and box (x0, y0, x1, y1) in
    the pixels of the image read."""

    text: str
    confidence: float
    box: tuple[int, int, int, int]


def find_tessdata(configured: str | None = None) -> Path | None:
    """The directory holding `eng.traineddata`: `configured`, else TESSDATA_PREFIX, else
    the usual system places; None when none has it."""
    for candidate in (configured, os.environ.get("TESSDATA_PREFIX"), *TESSDATA_DIRS):
        if candidate and (Path(candidate) / f"{LANGUAGE}.traineddata").is_file():
            return Path(candidate)
    return None


class Reader:
    """Reads lines of text from gray uint8 images with a pool of Tesseract instances, and
    holds the second engine (`second`, see rapidocr.py) for lines Tesseract leaves undecided."""

    def __init__(self, tessdata: Path, second: LineRecognizer | None = None) -> None:
        import tesserocr

        self._tesserocr: Any = tesserocr
        self.tessdata = tessdata
        self.second = second
        self.version: str = str(tesserocr.tesseract_version()).splitlines()[0]
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        with self._engine():  # load the model once now: a broken model fails at start-up
            pass

    def _make(self) -> Any:
        tesserocr = self._tesserocr
        api = tesserocr.PyTessBaseAPI(
            path=str(self.tessdata), lang=LANGUAGE, psm=tesserocr.PSM.SINGLE_BLOCK,
            oem=tesserocr.OEM.LSTM_ONLY,
        )
        # no dictionary: set codes and numbers are not words (and loading is faster)
        api.SetVariable("load_system_dawg", "0")
        api.SetVariable("load_freq_dawg", "0")
        # the text comes dark on light (collector_line normalises it): Tesseract's second
        # pass on an inverted copy of each unsure line only costs time (~25% of a reading)
        api.SetVariable("tessedit_do_invert", "0")
        with self._lock:
            self._all.append(api)
        return api

    @contextmanager
    def _engine(self) -> Iterator[Any]:
        if self._closed:
            raise RuntimeError("the OCR reader is closed")
        try:
            api = self._idle.get_nowait()
        except queue.Empty:
            api = self._make()
        try:
            yield api
        finally:
            self._idle.put(api)

    def read(self, gray: np.ndarray) -> list[Word]:
        """Words of a gray uint8 image (h, w), in reading order. Thread-safe."""
        tesserocr = self._tesserocr
        # a margin of background: Tesseract misses letters that touch the image's edge
        image = cv2.copyMakeBorder(np.ascontiguousarray(gray, dtype=np.uint8), PAD, PAD, PAD,
                                   PAD, cv2.BORDER_REPLICATE)
        height, width = image.shape
        words: list[Word] = []
        with self._engine() as api:
            api.SetImageBytes(image.tobytes(), width, height, 1, width)
            api.Recognize()
            level = tesserocr.RIL.WORD
            iterator = api.GetIterator()
            for item in tesserocr.iterate_level(iterator, level):
                try:
                    text = item.GetUTF8Text(level)
                except RuntimeError:  # tesserocr's "No text returned": nothing was found
                    break
                box = item.BoundingBox(level)
                if text and text.strip() and box:
                    x0, y0, x1, y1 = (int(v) - PAD for v in box)
                    words.append(Word(text.strip(), float(item.Confidence(level)),
                                      (x0, y0, x1, y1)))
            api.Clear()
        return words

    def close(self) -> None:
        """End every Tesseract instance and the second engine (explicit unload, as the
        bundle's)."""
        with self._lock:
            self._closed = True
            engines, self._all = self._all, []
        for api in engines:
            api.End()
        if self.second is not None:
            self.second.close()


def load_reader(
    configured: str | None = None, *, second: bool = True
) -> tuple[Reader | None, str]:
    """(reader, what was loaded) or (None, why there is none), never raising: a missing
    engine turns line reading off, it does not stop the service. With `second`, the second
    engine is loaded too when installed; without it, reading goes on with Tesseract alone
    (and what was loaded says why)."""
    try:
        import tesserocr  # noqa: F401
    except ImportError as exc:
        return None, f"tesserocr is not installed ({exc}); pip install -r requirements.txt"
    tessdata = find_tessdata(configured)
    if tessdata is None:
        return None, (
            f"no {LANGUAGE}.traineddata in TESSDATA_PREFIX or {', '.join(TESSDATA_DIRS[:3])}; "
            "install Debian's tesseract-ocr-eng (make install does, as root)"
        )
    recognizer, second_detail = load_line_recognizer() if second else (
        None, "off (SECOND_LINE_READER=false)")
    try:
        reader = Reader(tessdata, recognizer)
    except Exception as exc:  # a corrupt model, an ABI mismatch: say so, keep serving
        if recognizer is not None:
            recognizer.close()
        return None, f"Tesseract could not load {tessdata}: {exc}"
    return reader, (f"Tesseract {reader.version} with {tessdata / (LANGUAGE + '.traineddata')}"
                    f"; second reader: {second_detail}")
