"""The one owner of the collector-line OCR engine in a serving process.

Like the bundle's holder: one object per app, the engine loaded once under a lock (on the
first card that needs a line read, so an app that never recognises never pays for it),
unloaded explicitly at shutdown. Whether reading is possible is found out at start-up, and
said in one log line; without an engine the service answers from appearance alone.
"""

from __future__ import annotations

import logging
import threading

from app.recognition.collector_line.rapidocr import NOT_INSTALLED, model_path
from app.recognition.collector_line.tesseract import Reader, find_tessdata, load_reader

log = logging.getLogger(__name__)


class LineReaderHolder:
    """Gives the process's `Reader`, or None when reading is off or impossible."""

    def __init__(self, enabled: bool, second: bool = True) -> None:
        self._lock = threading.Lock()
        self._reader: Reader | None = None
        self._loaded = False
        self._second = second
        self.status = self._probe(enabled)

    def _probe(self, enabled: bool) -> str:
        if not enabled:
            self._loaded = True
            return "off (READ_COLLECTOR_LINE=false): printings are told by appearance only"
        try:
            import tesserocr  # noqa: F401
        except ImportError:
            self._loaded = True
            return ("off: the tesserocr package is missing (pip install -r requirements.txt); "
                    "printings are told by appearance only")
        tessdata = find_tessdata()
        if tessdata is None:
            self._loaded = True
            return ("off: Tesseract's eng.traineddata is missing (install Debian's "
                    "tesseract-ocr-eng, or set TESSDATA_PREFIX); printings are told by "
                    "appearance only")
        model = model_path() if self._second else None
        if not self._second:
            second = "off (SECOND_LINE_READER=false)"
        elif model is None:
            second = f"off ({NOT_INSTALLED})"
        else:
            second = f"RapidOCR with {model}"
        return f"on: Tesseract with {tessdata / 'eng.traineddata'}; second reader: {second}"

    @property
    def available(self) -> bool:
        return self.status.startswith("on")

    def get(self) -> Reader | None:
        """The reader, loaded on first use; None when reading is off or failed to load."""
        if self._loaded:
            return self._reader
        with self._lock:
            if not self._loaded:
                self._reader, detail = load_reader(second=self._second)
                self._loaded = True
                if self._reader is None:
                    self.status = f"off: {detail}"
                    log.error("collector-line reading failed to start: %s", detail)
                else:
                    log.info("collector-line reading loaded: %s", detail)
        return self._reader

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = None
            self._loaded = True
