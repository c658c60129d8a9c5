"""Every error answers JSON `{"error": "..."}` so callers never parse an HTML page."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra: object) -> ResponseReturnValue:
    body: dict[str, object] = {"error": message}
    body.update(extra)
    return jsonify(body), status


def init_app(app: Flask) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return error_response(413, f"Request body too large: the limit is {limit} bytes.")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        response = exc.get_response()
        response.data = jsonify(error=exc.description or exc.name).get_data()
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_response(500, "Internal error; it has been logged.")
