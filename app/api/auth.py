"""Bearer-token check for the routes the core API's proxy calls.

Several tokens may be valid at once (INFER_API_TOKENS is comma-separated) so a token can be
rotated without downtime. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, request

from app.api.errors import error_response
from app.common.settings import Settings

log = logging.getLogger(__name__)


def _token_ok(presented: str, tokens: tuple[str, ...]) -> bool:
    # Compare against every token, without stopping early, so timing says nothing.
    result = False
    for token in tokens:
        result |= hmac.compare_digest(presented.encode(), token.encode())
    return result


def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings: Settings = current_app.config["SETTINGS"]
        if not settings.infer_api_tokens or settings.infer_auth == "disabled":
            return view(*args, **kwargs)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            log.warning("refused %s %s: no bearer token", request.method, request.path)
            return error_response(401, "Missing bearer token: send Authorization: Bearer <token>.")
        if not _token_ok(presented.strip(), settings.infer_api_tokens):
            log.warning("refused %s %s: wrong bearer token", request.method, request.path)
            return error_response(403, "Invalid bearer token.")
        return view(*args, **kwargs)

    return wrapper
