"""One log line and one metrics sample per request: method, route, status, duration, id.

The request id comes from the proxy's `X-Request-ID` when it sends one (so a request can be
followed from the core API into this service) and is echoed back in the response. A view
adds what it found to its request's line with `annotate()` (POST /infer: the card id
returned and its confidence); with LOG_FORMAT=json these are fields of the JSON object.

Metrics are labelled by the route *template* (`/infer`), never the raw path: a scanner
probing random URLs must not create a time series per URL (they count as `unmatched`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request

from app.common import metrics

log = logging.getLogger("app.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUIET_PATHS = frozenset({"/healthz", "/metrics"})


def annotate(**fields: Any) -> None:
    """Fields for this request's access line (in a request context)."""
    g.setdefault("log_fields", {}).update(fields)


def route_label() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()
        metrics.HTTP_IN_FLIGHT.inc()
        g.counted_in_flight = True

    @app.after_request
    def _log_request(response: Response) -> Response:
        started = getattr(g, "started", None)
        seconds = time.perf_counter() - started if started else 0.0
        response.headers["X-Request-ID"] = getattr(g, "request_id", "-")
        route = route_label()
        metrics.record_request(route, request.method, response.status_code, seconds)
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        fields: dict[str, Any] = dict(getattr(g, "log_fields", {}))
        shown = "".join(f" {key}={value}" for key, value in fields.items())
        log.log(
            level,
            "%s %s %s %.1fms client=%s%s",
            request.method,
            request.path,
            response.status_code,
            seconds * 1000,
            request.remote_addr or "-",
            shown,
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 1),
                "client": request.remote_addr,
                **fields,
            },
        )
        return response

    @app.teardown_request
    def _done(_exc: BaseException | None) -> None:
        if g.pop("counted_in_flight", False):
            metrics.HTTP_IN_FLIGHT.dec()
