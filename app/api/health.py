"""Liveness, readiness and the service's identity."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, url_for
from flask.typing import ResponseReturnValue

from app.catalog.access import get_store
from app.common.settings import Settings
from app.common.version import SERVICE_NAME, __version__
from app.pipeline.running import describe_running
from app.runtime.model import get_holder

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """Service name, version, loaded bundle and where the docs are.
    ---
    tags: [health]
    produces: [application/json]
    responses:
      200:
        description: Identity of the service.
        schema:
          type: object
          properties:
            service: {type: string, example: descriptor-infer-service}
            version: {type: string, example: 0.1.0}
            docs: {type: string, example: /apidocs/}
            spec: {type: string, example: /apispec_1.json}
            index_version: {type: string, x-nullable: true}
            index_loaded_at: {type: string, x-nullable: true}
        examples:
          application/json:
            service: descriptor-infer-service
            version: 0.1.0
            docs: /apidocs/
            spec: /apispec_1.json
            index_version: 20261126T020000000000Z-3fa1b2c4
            index_loaded_at: "2026-11-26T02:14:09+00:00"
    """
    state = get_holder().state
    return jsonify(
        service=SERVICE_NAME,
        version=__version__,
        docs=url_for("flasgger.apidocs"),
        spec=url_for("flasgger.apispec_1"),
        index_version=state.version,
        index_loaded_at=state.loaded_at,
    )


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is alive (it says nothing of the bundle or the database).
    ---
    tags: [health]
    produces: [application/json]
    responses:
      200:
        description: Alive.
        schema:
          type: object
          properties:
            status: {type: string, example: ok}
        examples:
          application/json: {status: ok}
    """
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready to recognise: a bundle is loaded and the catalogue store answers.

    The status code says whether this replica answers; `refresh` says whether a refresh runs
    on this host meanwhile (after REFRESH_SETS changed, at start-up: about a minute while the
    release built under the old sets is served), why, and which release answers until it
    promotes its own.
    ---
    tags: [health]
    produces: [application/json]
    responses:
      200:
        description: Ready (here while a refresh runs, the release it replaces serving).
        schema: {$ref: '#/definitions/Readiness'}
        examples:
          application/json:
            ready: true
            reason: null
            model:
              status: loaded
              detail: serving bundle 20261126T020000000000Z-3fa1b2c4
              version: 20261126T020000000000Z-3fa1b2c4
              loaded_at: "2026-11-26T02:14:09+00:00"
              last_swap_pause_ms: 0.004
            catalog: {backend: postgresql, ok: true, detail: answering}
            settings_profile: default
            refresh:
              running: true
              reason: "start-up: REFRESH_SETS changed from rtr to dsk,rtr"
              started_at: "2026-11-26T09:14:03+00:00"
              serving: 20261126T020000000000Z-3fa1b2c4
      503:
        description: Not ready; `reason` says why (preparing, failed download, database down).
        schema: {$ref: '#/definitions/Readiness'}
        examples:
          application/json:
            ready: false
            reason: "no descriptor bundle loaded (preparing: no bundle: bootstrapping (release
              archive or refresh))"
            model:
              status: preparing
              detail: "no bundle: bootstrapping (release archive or refresh)"
              version: null
              loaded_at: null
              last_swap_pause_ms: null
            catalog: {backend: postgresql, ok: true, detail: answering}
            settings_profile: default
            refresh:
              running: true
              reason: "bootstrap: no bundle"
              started_at: "2026-11-26T09:14:03+00:00"
              serving: null
    definitions:
      Readiness:
        type: object
        properties:
          ready: {type: boolean}
          reason: {type: string, x-nullable: true}
          model: {$ref: '#/definitions/ModelState'}
          catalog:
            type: object
            properties:
              backend: {type: string, example: postgresql}
              ok: {type: boolean}
              detail: {type: string}
          settings_profile:
            type: string
            description: RECOGNITION_PROFILE, the feature parameters bundles are checked
              against.
          refresh: {$ref: '#/definitions/RefreshInProgress'}
      RefreshInProgress:
        type: object
        description: The refresh running on this host now, from any process of it (also
          in /status, under `refresh`). A record left by a refresh whose process died is
          not shown.
        properties:
          running: {type: boolean}
          reason:
            type: string
            x-nullable: true
            description: 'Why it runs: nightly, flask refresh, flask build-index,
              "bootstrap: no bundle", "start-up: REFRESH_SETS changed from rtr to dsk,rtr".'
          started_at: {type: string, x-nullable: true, description: UTC, ISO 8601.}
          serving:
            type: string
            x-nullable: true
            description: The release answering meanwhile (null when none is loaded, or no
              refresh runs).
      ModelState:
        type: object
        description: The loaded descriptor bundle (also in /status).
        properties:
          status: {type: string, example: loaded}
          detail: {type: string}
          version: {type: string, x-nullable: true}
          loaded_at: {type: string, x-nullable: true}
          last_swap_pause_ms:
            type: number
            x-nullable: true
            description: How long requests waited for the last bundle swap.
    """
    settings: Settings = current_app.config["SETTINGS"]
    state = get_holder().state
    store = get_store()
    try:
        store.ping()
        catalog = {"backend": store.backend, "ok": True, "detail": "answering"}
    except Exception as exc:  # any driver error means "not answering"
        # the driver's text (host and user names) goes to the log only: /readyz is public
        log.warning("readiness: catalogue store %s not answering: %s", store.backend, exc)
        catalog = {"backend": store.backend, "ok": False,
                   "detail": f"not answering ({type(exc).__name__}; see the service log)"}
    reasons = []
    if state.status != "loaded":
        reasons.append(f"no descriptor bundle loaded ({state.status}: {state.detail})")
    if not catalog["ok"]:
        reasons.append(f"catalogue store ({store.backend}) {catalog['detail']}")
    body = {
        "ready": not reasons,
        "reason": "; ".join(reasons) or None,
        "model": {
            "status": state.status,
            "detail": state.detail,
            "version": state.version,
            "loaded_at": state.loaded_at,
            "last_swap_pause_ms": state.last_swap_pause_ms,
        },
        "catalog": catalog,
        "settings_profile": settings.recognition_profile,
        "refresh": describe_running(settings.resources_dir, state.version),
    }
    return jsonify(body), (200 if not reasons else 503)
