"""Every route of the service: one blueprint per area, documented with Flasgger (Swagger 2.0)."""

from __future__ import annotations

from flasgger import Swagger
from flask import Flask

from app.api import cors, errors, health, infer, metrics, status
from app.common.version import __version__

SWAGGER_TEMPLATE = {
    "swagger": "2.0",
    "info": {
        "title": "MTGScan card-recognition inference service",
        "description": (
            "Recognises which Magic: The Gathering printing a photo shows. Reached only "
            "through the core API's authenticating proxy, which sends "
            "`Authorization: Bearer <token>` when INFER_API_TOKENS is set."
        ),
        "version": __version__,
        "license": {"name": "GPL-3.0-or-later"},
    },
    "consumes": ["multipart/form-data", "image/jpeg", "image/png", "image/webp"],
    "produces": ["application/json"],
    "tags": [
        {"name": "recognition", "description": "POST /infer (bearer token)"},
        {"name": "health", "description": "liveness, readiness, identity (open)"},
        {"name": "operations", "description": "/status (bearer token), /metrics (open: keep "
                                               "the port on the internal network)"},
    ],
    # answers shared by the token-protected routes (referenced as #/responses/...)
    "responses": {
        "Unauthorized": {
            "description": "No bearer token (only when INFER_API_TOKENS is set).",
            "schema": {"$ref": "#/definitions/Error"},
            "examples": {"application/json": {
                "error": "Missing bearer token: send Authorization: Bearer <token>."}},
        },
        "Forbidden": {
            "description": "Wrong bearer token.",
            "schema": {"$ref": "#/definitions/Error"},
            "examples": {"application/json": {"error": "Invalid bearer token."}},
        },
    },
    "securityDefinitions": {
        "bearer": {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "description": "`Bearer <token>`, one of INFER_API_TOKENS",
        }
    },
}

SWAGGER_CONFIG = {
    "headers": [],
    "specs": [
        {
            "endpoint": "apispec_1",
            "route": "/apispec_1.json",
            "rule_filter": lambda rule: True,
            "model_filter": lambda tag: True,
        }
    ],
    "static_url_path": "/flasgger_static",
    "swagger_ui": True,
    "specs_route": "/apidocs/",
}


def init_app(app: Flask) -> None:
    errors.init_app(app)
    cors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(metrics.bp)
    infer.init_app(app)
    Swagger(app, template=SWAGGER_TEMPLATE, config=SWAGGER_CONFIG, merge=True)
