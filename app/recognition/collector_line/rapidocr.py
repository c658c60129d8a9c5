"""A second reader of collector lines: PaddleOCR's PP-OCRv6 text-line recognition model,
run through RapidOCR on onnxruntime.

Why a second engine: on the 2003 frame the collector number is 8 px serif type at the end of
the copyright line, on a marbled frame; at card heights of 800-1000 px Tesseract reads those
digits as letters (`Tees`, `Tory` for 188 and 190) and no preprocessing measured changed it
(see docs/api.md, "The exact printing"). PP-OCRv6 reads most of them (`184/271`, `143224`), and
on the lines Tesseract left undecided on the collector-line benchmark it decided 11 of 16,
none wrongly (`bench/collector_line.py`).

Why RapidOCR: its wheel ships the PP-OCRv6 models (`rapidocr/models`), so nothing is
downloaded at run time, and it is maintained (RapidAI). Only the recognition model is
loaded: the line is already found and rectified by `collector_line`, so no text detection
runs. `Rec.model_path` names the wheel's file, which also keeps RapidOCR from fetching one.

Cost, measured on this machine: about 100 MB more resident memory per process (onnxruntime's
library ~30 MB, the session ~50 MB, buffers), 30-90 ms a line on one core. It is consulted
only for lines Tesseract's readings left undecided, so the usual card pays nothing in time;
`SECOND_LINE_READER=false` saves the memory.

Telemetry: onnxruntime's recent Linux wheels (1.32 here) upload usage events to Microsoft
(`mobile.events.data.microsoft.com`) and keep a device identifier under ~/.cache unless
`ORT_DISABLE_TELEMETRY` is set before onnxruntime starts (microsoft/onnxruntime#27379,
#29843). A recognition service sends nothing off its machine: this module sets it before
importing onnxruntime, and the Dockerfile sets it too.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MODEL = "PP-OCRv6_rec_small.onnx"  # inside the rapidocr 3.10 wheel, rapidocr/models/
# read by onnxruntime when it starts: no uploader, no events, no device identifier on disk
TELEMETRY_OPT_OUT = ("ORT_DISABLE_TELEMETRY", "1")
NOT_INSTALLED = f"rapidocr with its {MODEL} is not installed (pip install -r requirements.txt)"


def model_path() -> Path | None:
    """The recognition model inside the installed rapidocr package (found without importing
    it), or None when the package or the file is missing."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL
    return path if path.is_file() else None


class LineRecognizer:
    """Reads one line of text from an image of that line (gray uint8 (h, w), the text across
    its width). Thread-safe: calls are serialised, which costs little as only undecided lines
    come here."""

    def __init__(self, model: Path) -> None:
        os.environ[TELEMETRY_OPT_OUT[0]] = TELEMETRY_OPT_OUT[1]  # before onnxruntime loads
        import onnxruntime
        from rapidocr import RapidOCR

        onnxruntime.disable_telemetry_events()

        self.model = model
        self._engine: Any = RapidOCR(params={
            "Global.use_det": False,
            "Global.use_cls": False,
            "Global.log_level": "error",
            "Rec.model_path": str(model),
            # one thread: request threads are the service's parallelism (as for FAISS)
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        self._lock = threading.Lock()
        self.read(np.full((48, 160), 255, np.uint8))  # load the session now: fail at start-up

    def read(self, gray: np.ndarray) -> str:
        """The text of a one-line gray image; "" when nothing was read."""
        image = cv2.cvtColor(np.ascontiguousarray(gray, dtype=np.uint8), cv2.COLOR_GRAY2BGR)
        with self._lock:
            if self._engine is None:
                return ""
            result = self._engine(image, use_det=False, use_cls=False, use_rec=True)
        texts = getattr(result, "txts", None) or ()
        return " ".join(str(t) for t in texts).strip()

    def close(self) -> None:
        """Drop the onnxruntime session (explicit unload)."""
        with self._lock:
            self._engine = None


def load_line_recognizer() -> tuple[LineRecognizer | None, str]:
    """(recognizer, what was loaded) or (None, why there is none), never raising: without
    it, lines Tesseract cannot decide stay undecided."""
    path = model_path()
    if path is None:
        return None, NOT_INSTALLED
    try:
        recognizer = LineRecognizer(path)
    except Exception as exc:  # onnxruntime missing or broken, a corrupt model: say so
        return None, f"RapidOCR could not load {path}: {exc}"
    return recognizer, f"RapidOCR PP-OCRv6 recognition with {path}"
