"""What the benchmarks share: where the repository, ../shared and the results are, the
"skipped" check, the eval set's labels, parameter overrides, the serving subprocess, a server
on loopback, and the medians and percentiles their tables show.

Only the standard library and requests at import: numpy, FAISS and OpenCV size their thread
pools when they load, which a benchmark sets first (`threads_env`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests

ROOT = Path(__file__).resolve().parent.parent
# Next to the repository, not in it: the real photos and their catalogue (eval/), the
# generator of synthetic printings (tools/distractors.py).
SHARED = ROOT.parent / "shared"
EVAL_DIR = SHARED / "eval"
RESULTS_DIR = ROOT / "bench-results"
DATA_DIR = ROOT / "data"

T = TypeVar("T")


def threads_env(threads: int) -> None:
    """Thread pools of BLAS/OpenMP are sized at import: set them before numpy/faiss load."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # see configure_threads
        os.environ[var] = "1"


def eval_set_missing(eval_dir: Path, bench: str, *files: str) -> bool:
    """True, after one line saying so, when `eval_dir` lacks one of `files`: the benchmark
    then skips (exit 0), as in a clone without ../shared."""
    missing = [name for name in files if not (eval_dir / name).is_file()]
    if missing:
        print(f"{bench} bench skipped: no evaluation set at {eval_dir} (missing "
              f"{', '.join(missing)}; ../shared is not part of the repository)")
    return bool(missing)


# -- the eval set ----------------------------------------------------------------------------
def load_labels(eval_dir: Path) -> list[dict[str, Any]]:
    """One entry per photo: kind (catalogued / out / multi), capture group, truth ids."""
    by_photo: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (eval_dir / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_photo[row["photo_file"]].append(row)
    photos = []
    for photo, rows in by_photo.items():
        capture = rows[0]["capture"].lower()
        group = "webcam" if capture.startswith("webcam") else (
            "phone" if capture.startswith("phone photo") else "other")
        if len(rows) > 1:
            kind = "multi"
        else:
            kind = "catalogued" if rows[0]["in_catalogue"] == "yes" else "out"
        photos.append({
            "photo": photo,
            "kind": kind,
            "group": group,
            "truth": [r["card_id"] for r in rows if r["in_catalogue"] == "yes"],
            "truth_label": " + ".join(f"{r['card_name']} {r['set']}".strip() for r in rows),
        })
    return photos


def override(params: Any, assignments: list[str], profile: str) -> Any:
    """`params` with the `--set [profile.]name=json-value` assignments meant for `profile`."""
    changes: dict[str, Any] = {}
    for item in assignments:
        key, _, raw = item.partition("=")
        target, _, field = key.rpartition(".")
        if target and target != profile:
            continue
        current = getattr(params, field)
        value: Any = json.loads(raw) if not isinstance(current, str) else raw
        changes[field] = tuple(value) if isinstance(current, tuple) else value
    return dataclasses.replace(params, **changes)


# -- recognition -----------------------------------------------------------------------------
# POST /infer's default MAX_IMAGE_PIXELS (app/common/settings.py)
MAX_IMAGE_PIXELS = 50_000_000


def open_served(bundle_dir: Path) -> tuple[Any, Any]:
    """(bundle, collector-line reader) of a serving process on one thread (the benchmarks that
    read lines measure them per request); exits when no OCR engine is installed."""
    # imported here, not at the top: the benchmark sets its thread pools first (see above)
    from app.recognition.collector_line.tesseract import load_reader
    from app.recognition.features.extraction import configure_threads
    from app.recognition.index.bundle import Bundle

    configure_threads(1)
    bundle = Bundle.open(bundle_dir)
    reader, detail = load_reader()
    if reader is None:
        raise SystemExit(f"no OCR engine: {detail}")
    return bundle, reader


def recognise_upload(bundle: Any, data: bytes, reader: Any, *, multi: bool = False,
                     deadline: float | None = None) -> Any:
    """An upload recognised as POST /infer recognises it: `app.recognition.service`'s
    decode_upload and recognise, with `reader` reading the collector line (None: by
    appearance only). Returns the service's Outcome."""
    # imported here, not at the top: the benchmark sets its thread pools first (see above)
    from app.recognition import service

    decoded = service.decode_upload(data, bundle.params, max_pixels=MAX_IMAGE_PIXELS,
                                    multi=multi)
    return service.recognise(bundle, data, decoded, max_pixels=MAX_IMAGE_PIXELS,
                             reader=reader, multi=multi, deadline=deadline)


# -- processes -------------------------------------------------------------------------------
def serve_in_subprocess(module: str, args: Sequence[str], *, nice: bool = False,
                        show_log: bool = False, env: dict[str, str] | None = None) -> Any:
    """`python -m <module> <args>` (its hidden --serve mode) in a process of its own, so that
    what building the bundle allocated does not count in the serving figures; the JSON it
    prints last. `show_log`: its stderr goes to ours (else it is swallowed); paths in `args`
    must be absolute (it runs from the repository's root)."""
    command = [*(["nice"] if nice else []), sys.executable, "-m", module, *args]
    proc = subprocess.run(command, cwd=ROOT, env=env, check=True, text=True,
                          stdout=subprocess.PIPE, stderr=None if show_log else subprocess.PIPE)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `url`/readyz answers 200; RuntimeError when `server` exits first or after
    `timeout` seconds (the caller stops it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError("server did not become ready")
        time.sleep(0.25)


# -- figures ---------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile, interpolated between the two nearest values, to 0.1; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (pos - low), 1)


def middle(values: Iterable[float]) -> float:
    """The middle value (the upper one of an even count): a p50 that was measured, as the
    tables of the rendered photos, twins and printings show it."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def median_run(runs: Sequence[T], key: Callable[[T], float]) -> T:
    """The run whose `key` (its time) is the middle one of --repeat runs."""
    return sorted(runs, key=key)[len(runs) // 2]


def write_json(path: Path, data: Any, indent: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent))
    return path
