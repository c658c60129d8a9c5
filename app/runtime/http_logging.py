"""One log line per request: method, path, status, duration and request id.

The request id comes from the proxy's `X-Request-ID` when it sends one (so a request can be
followed from the core API into this service) and is echoed back in the response.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

log = logging.getLogger("app.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUIET_PATHS = frozenset({"/healthz"})


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        started = getattr(g, "started", None)
        duration_ms = (time.perf_counter() - started) * 1000 if started else 0.0
        response.headers["X-Request-ID"] = getattr(g, "request_id", "-")
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        log.log(
            level,
            "%s %s %s %.1fms client=%s",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            request.remote_addr or "-",
        )
        return response
