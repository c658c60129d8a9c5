"""CORS for the MTGScan frontend only, and only on the read-only routes a browser may call.

`/infer` is not among them: browsers reach it through the core API, which authenticates the
user; allowing cross-origin calls here would let a page bypass that proxy.
"""

from __future__ import annotations

from flask import Flask, Response, request

from app.common.settings import Settings

BROWSER_ROUTES = frozenset({"/", "/healthz", "/readyz", "/apispec_1.json"})


def init_app(app: Flask) -> None:
    settings: Settings = app.config["SETTINGS"]
    origin = settings.frontend_url
    if not origin:
        return

    @app.after_request
    def _allow_frontend(response: Response) -> Response:
        if request.path in BROWSER_ROUTES and request.headers.get("Origin") == origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response
