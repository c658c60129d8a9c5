"""The service's Prometheus metrics: every metric object lives here, with the few helpers
that record them. A leaf module like `progress`: the HTTP layer, the model holder, the
admission gate and the refresh pipeline all record into it without importing each other.

Metrics are process-global (prometheus_client's default registry), which is what one serving
process per container needs. When several worker processes ever serve one port, set
PROMETHEUS_MULTIPROC_DIR to an empty directory before start-up (prometheus_client's standard
multiprocess mode): every process then writes its values to files there, `exposition()`
merges them, and gauges say how (`multiprocess_mode`). gunicorn marks a dead worker with
`gunicorn_child_exit` (set by `app/__main__.py` and `gunicorn.conf.py`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# -- HTTP ----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "mtgscan_http_requests", "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "mtgscan_http_request_duration_seconds",
    "Time from the request's arrival in the app to its response, by route template.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
)
HTTP_IN_FLIGHT = Gauge(
    "mtgscan_http_requests_in_flight", "HTTP requests being handled now.",
    multiprocess_mode="livesum",
)

# -- recognition ---------------------------------------------------------------------------
# The stages of app.recognition.match.card's timings_ms (summed over passes) plus decoding.
STAGES = (
    "decode", "features", "search", "vote", "verify", "decide", "mirror", "read_line", "total"
)
RECOGNITION_STAGE = Histogram(
    "mtgscan_recognition_stage_seconds",
    "Time spent per recognition stage (decode, features, search, vote, verify, decide, "
    "mirror: the search of a photo without a match as a mirrored one, read_line: reading "
    "the collector lines of the cards found, total of the recognition proper).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0),
)
INFER_ANSWERS = Counter(
    "mtgscan_infer_answers",
    "Recognition answers by outcome: match, no_match (404), ambiguous_printing (a 200 whose "
    "printing is not certain among printings sharing the art).",
    ["outcome"],
)
PRINTING_EVIDENCE = Counter(
    "mtgscan_printing_evidence",
    "Cards answered, by what decided their printing (printing_evidence.source): "
    "collector_line (the line read named it) or appearance.",
    ["source"],
)
SECOND_LINE_READINGS = Counter(
    "mtgscan_second_line_readings",
    "Collector lines no Tesseract reading decided, read again by the second engine "
    "(SECOND_LINE_READER), by outcome: decided (it named the printing) or undecided. What "
    "the engine's ~100 MB per process buys.",
    ["outcome"],
)
INFER_IN_FLIGHT = Gauge(
    "mtgscan_infer_in_flight", "Recognitions holding one of MAX_CONCURRENT_INFER slots now.",
    multiprocess_mode="livesum",
)
INFER_REFUSED = Counter(
    "mtgscan_infer_refused",
    "POST /infer answered 503: busy (no slot within INFER_QUEUE_TIMEOUT) or no_bundle.",
    ["reason"],
)

# -- the served bundle ---------------------------------------------------------------------
BUNDLE_INFO = Gauge(
    "mtgscan_bundle_info", "1 for the release version being served, 0 for one served before.",
    ["version"], multiprocess_mode="livemax",
)
BUNDLE_PRINTINGS = Gauge(
    "mtgscan_bundle_printings",
    "Card faces indexed by the served bundle (a double-faced printing counts each face).",
    multiprocess_mode="livemax",
)
BUNDLE_DESCRIPTORS = Gauge(
    "mtgscan_bundle_descriptors", "Descriptors in the served bundle's FAISS index.",
    multiprocess_mode="livemax",
)
BUNDLE_LOADED_AT = Gauge(
    "mtgscan_bundle_loaded_timestamp_seconds", "Unix time the served bundle was loaded.",
    multiprocess_mode="livemax",
)
BUNDLE_SWAPS = Counter(
    "mtgscan_bundle_swaps", "Bundles loaded and swapped in (the first load included).",
)
BUNDLE_REFUSED = Counter(
    "mtgscan_bundle_refused", "Bundles refused at load (checksums, parameters, format).",
)
BUNDLE_SWAP_PAUSE = Gauge(
    "mtgscan_bundle_last_swap_pause_seconds",
    "How long requests waited for the last bundle swap.", multiprocess_mode="livemax",
)

# -- the refresh -----------------------------------------------------------------------------
REFRESH_RUNS = Counter(
    "mtgscan_refresh_runs", "Refresh runs by outcome (succeeded, skipped, failed).", ["outcome"],
)
REFRESH_DURATION = Histogram(
    "mtgscan_refresh_duration_seconds", "Wall time of refresh runs, by outcome.", ["outcome"],
    buckets=(1, 5, 15, 60, 180, 600, 1800, 3600, 7200, 14400, 28800),
)
REFRESH_LAST_SUCCESS = Gauge(
    "mtgscan_refresh_last_success_timestamp_seconds",
    "Unix time of the last refresh that promoted a release in this process.",
    multiprocess_mode="max",
)
UPDATE_LOCK = Counter(
    "mtgscan_update_lock_attempts",
    "Attempts to take model_update_lock: held (taken), skipped (another holder), "
    "unavailable (Redis down).",
    ["result"],
)
UPDATE_LOCK_HELD = Gauge(
    "mtgscan_update_lock_held", "1 while this process holds model_update_lock.",
    multiprocess_mode="livesum",
)
REFRESH_IMAGES = Counter(
    "mtgscan_refresh_images",
    "Reference images of refreshes: fetched (downloaded and extracted), cached (features "
    "already in the cache), missing (404), failed (unreadable or failed after retries).",
    ["result"],
)


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_LATENCY.labels(route, method).observe(seconds)


def record_recognition(
    decode_ms: float, timings_ms: Mapping[str, float], answer: Mapping[str, Any] | None
) -> None:
    """One recognition: its stage times and its outcome (`answer` None: no match)."""
    RECOGNITION_STAGE.labels("decode").observe(decode_ms / 1000)
    for stage in STAGES[1:]:
        if stage in timings_ms:
            RECOGNITION_STAGE.labels(stage).observe(float(timings_ms[stage]) / 1000)
    if answer is None:
        outcome = "no_match"
    elif answer.get("ambiguous_printing"):
        outcome = "ambiguous_printing"
    else:
        outcome = "match"
    INFER_ANSWERS.labels(outcome).inc()


def record_bundle(
    previous: str | None, version: str, counts: Mapping[str, Any], loaded_at: float,
    pause_ms: float,
) -> None:
    if previous is not None and previous != version:
        BUNDLE_INFO.labels(previous).set(0)
    BUNDLE_INFO.labels(version).set(1)
    BUNDLE_PRINTINGS.set(int(counts.get("cards", 0)))
    BUNDLE_DESCRIPTORS.set(int(counts.get("indexed_descriptors", 0)))
    BUNDLE_LOADED_AT.set(loaded_at)
    BUNDLE_SWAP_PAUSE.set(pause_ms / 1000)
    BUNDLE_SWAPS.inc()


def record_refresh(outcome: str, seconds: float, finished_at: float) -> None:
    REFRESH_RUNS.labels(outcome).inc()
    REFRESH_DURATION.labels(outcome).observe(seconds)
    if outcome == "succeeded":
        REFRESH_LAST_SUCCESS.set(finished_at)


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` hook in multiprocess mode: a dead worker's live gauges stop
    counting (prometheus_client's documented gunicorn setup)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def exposition() -> tuple[bytes, str]:
    """The text format for a scrape: this process's registry, or every process's values
    merged from PROMETHEUS_MULTIPROC_DIR in multiprocess mode."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
