"""Logging to stdout always, and to a daily-rotated file when LOG_FILE_PATH is set.

One format for every line so operators can grep a request id across the access line and
whatever the request logged on the way. LOG_FORMAT=json makes each line one JSON object
(time, level, logger, message, request_id, and the structured fields a line carries: route,
status, duration_ms, card_id, confidence on access lines; event, done, total, rate on
progress events), for log collectors that should not parse text.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from datetime import UTC, datetime
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any

from flask import g, has_request_context

from app.common import progress

FORMAT = "%(asctime)s %(levelname)s [%(name)s] [%(request_id)s] %(message)s"
_HANDLER_MARK = "_mtgscan_handler"
# Attributes every LogRecord has: whatever else a record carries came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "taskName",
}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's id, or '-' outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = "-"
        if has_request_context():
            request_id = getattr(g, "request_id", "-")
        record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra=` fields become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: with LOG_FORMAT=json its own lines (start, workers,
    timeouts) are JSON objects too, on stderr as before. The root logger gets no handler here:
    `configure_logging` installs the service's when the app is created (else every line of
    the app would be written twice). Empty for text: gunicorn's defaults."""
    if log_format != "json":
        return {}
    stream: dict[str, Any] = {"class": "logging.StreamHandler", "formatter": "json",
                              "stream": "ext://sys.stderr"}
    return {
        "root": {"level": "INFO", "handlers": []},
        "loggers": {
            name: {"level": "INFO", "handlers": ["gunicorn"], "propagate": False,
                   "qualname": name}
            for name in ("gunicorn.error", "gunicorn.access")
        },
        "handlers": {"gunicorn": stream},
        "formatters": {"json": {"()": JsonFormatter}},
    }


def configure_logging(level: str, log_file_path: str = "", log_format: str = "text") -> None:
    """Install the service's handlers on the root logger, replacing ones installed before.

    Called by every `create_app`, so it must be idempotent: tests create many apps.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    formatter: logging.Formatter = (
        JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT)
    )
    # a terminal bar would break the one-object-per-line promise of JSON logs
    progress.use_bars(log_format != "json")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file_path:
        # "{hostname}" gives each replica its own file on a shared log volume (one rotating
        # file written by several processes loses lines at each rotation)
        path = Path(log_file_path.replace("{hostname}", socket.gethostname()))
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            TimedRotatingFileHandler(path, when="midnight", backupCount=14, utc=True, delay=True)
        )
    for handler in handlers:
        setattr(handler, _HANDLER_MARK, True)
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(level)
    # Werkzeug's own access lines would duplicate ours.
    logging.getLogger("werkzeug").setLevel(max(logging.WARNING, root.level))
