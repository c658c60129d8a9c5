"""Logging to stdout always, and to a daily-rotated file when LOG_FILE_PATH is set.

One format for every line so operators can grep a request id across the access line and
whatever the request logged on the way.
"""

from __future__ import annotations

import logging
import socket
import sys
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

from flask import g, has_request_context

FORMAT = "%(asctime)s %(levelname)s [%(name)s] [%(request_id)s] %(message)s"
_HANDLER_MARK = "_mtgscan_handler"


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's id, or '-' outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = "-"
        if has_request_context():
            request_id = getattr(g, "request_id", "-")
        record.request_id = request_id
        return True


def configure_logging(level: str, log_file_path: str = "") -> None:
    """Install the service's handlers on the root logger, replacing ones installed before.

    Called by every `create_app`, so it must be idempotent: tests create many apps.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(FORMAT)
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
