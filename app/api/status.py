"""GET /status: what this replica serves and does, for an operator, in one JSON document.

Refresh runs are read from the catalogue store's `refresh_runs` table, where every run
(scheduled, CLI or first start, from any replica) is recorded: PostgreSQL in production, so
the history survives restarts and every replica shows the same runs, whichever ran them.

The document shows configuration (masked: passwords as ***, tokens counted, URLs without
credentials or query) and the error texts of failed runs, so it is behind the same bearer
token as /infer when INFER_API_TOKENS is set. /metrics is not (numbers only).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from app.api.auth import require_token
from app.common.settings import Settings
from app.common.version import SERVICE_NAME, __version__
from app.pipeline import releases
from app.pipeline.locks import UPDATE_LOCK_NAME, held_here
from app.pipeline.running import describe_running
from app.runtime.model import get_holder

bp = Blueprint("status", __name__)

RUNS_SHOWN = 3


def _age_seconds(timestamp: str | None, now: datetime) -> float | None:
    if not timestamp:
        return None
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return round((now - then).total_seconds(), 1)


def _run(row: dict[str, Any]) -> dict[str, Any]:
    counts = row.get("counts") or {}
    started, finished = row.get("started_at"), row.get("finished_at")
    duration = None
    if started and finished:
        duration = _age_seconds(started, datetime.fromisoformat(finished))
    return {
        "id": row.get("id"),
        "outcome": row.get("status"),
        "host": row.get("host"),
        "started_at": started,
        "finished_at": finished,
        "duration_s": duration,
        "error": row.get("error"),
        "build": counts.get("build"),
        "faces": counts.get("faces"),
        "images": {key: counts[key] for key in ("extracted", "cached", "missing", "image_errors")
                   if key in counts},
        "validation": counts.get("validation"),
        "build_timings_s": counts.get("build_timings_s"),
        "reason": counts.get("reason"),
    }


def _next_run(app: Flask) -> str | None:
    # the scheduler (app/wiring/scheduler.py, above this layer) holds one job: the refresh
    scheduler = app.extensions.get("scheduler")
    jobs = scheduler.get_jobs() if scheduler is not None else []
    job = jobs[0] if jobs else None
    when = job.next_run_time if job is not None else None
    return when.isoformat() if when is not None else None


def _settings(settings: Settings) -> dict[str, Any]:
    shown = settings.public_dict()

    def pick(*names: str) -> dict[str, Any]:
        return {name: shown[name] for name in names}

    return {
        "profile": pick("flask_env", "recognition_profile", "recognition_threads"),
        "limits": pick("max_content_length", "max_image_pixels", "max_concurrent_infer",
                       "infer_queue_timeout", "infer_time_budget_ms"),
        "refresh_policy": pick("refresh_enabled", "refresh_cron", "refresh_langs",
                               "refresh_sets", "refresh_excluded_layouts",
                               "refresh_min_hit_rate", "scryfall_api_url",
                               "scryfall_bulk_type", "resource_bundle_url",
                               "bootstrap_missing_bundle"),
        "auth": pick("infer_auth", "infer_api_tokens"),
        "stores": pick("postgres_host", "postgres_port", "postgres_db", "postgres_user",
                       "postgres_password", "redis_host", "redis_port", "redis_db",
                       "redis_password"),
        "logging": pick("log_level", "log_format", "log_file_path"),
    }


def build_status(app: Flask) -> dict[str, Any]:
    """The status document (also what `flask --app app status` could grow into)."""
    settings: Settings = app.config["SETTINGS"]
    now = datetime.now(UTC)
    holder = get_holder()
    state = holder.state
    with holder.lease() as bundle:
        stale = list(getattr(bundle, "stale_fields", ())) if bundle is not None else []
    run_target = releases.current_release(settings.resources_dir)
    served = releases.describe(Path(state.path) if state.path and state.version else None)
    store = app.extensions["catalog"]
    catalog: dict[str, Any] = {"backend": store.backend, "cards": None, "error": None}
    runs: list[dict[str, Any]] = []
    try:
        catalog["cards"] = store.count_cards()
        runs = [_run(row) for row in store.recent_runs(RUNS_SHOWN)]
    except Exception as exc:  # status must answer with the database down
        catalog["error"] = f"not answering ({type(exc).__name__}; see the service log)"
    return {
        "service": SERVICE_NAME,
        "version": __version__,
        "host": socket.gethostname(),
        "time": now.isoformat(timespec="seconds"),
        "release": {
            "status": state.status,
            "detail": state.detail,
            "version": state.version,
            "loaded_at": state.loaded_at,
            "built_at": served["built_at"],
            "age_s": _age_seconds(str(served["built_at"] or ""), now),
            "counts": served["counts"],
            "stale_build_fields": stale,
            "last_swap_pause_ms": state.last_swap_pause_ms,
            "run_points_at": run_target.name if run_target is not None else None,
            "releases": [p.name for p in releases.list_releases(settings.resources_dir)],
        },
        "catalog": catalog,
        "refresh": {
            "enabled": settings.refresh_enabled,
            "cron": settings.refresh_cron,
            "next_run_at": _next_run(app),
            **describe_running(settings.resources_dir, state.version),
            "last_runs": runs,
        },
        "update_lock": {
            "name": UPDATE_LOCK_NAME,
            "backend": "redis" if settings.uses_redis else "file",
            "held_by_this_replica": held_here(UPDATE_LOCK_NAME),
        },
        "settings": _settings(settings),
    }


@bp.get("/status")
@require_token
def status() -> ResponseReturnValue:
    """What this replica serves and does: release, catalogue, refresh runs, lock, settings.
    ---
    tags: [operations]
    summary: Operator status of this replica
    description: >
      The loaded release and its age, the catalogue's counts and backend, the refresh
      running on this host now and why (as in /readyz), the last three refresh runs (from
      the catalogue store, shared by replicas), the next scheduled run,
      whether this replica holds model_update_lock, and the effective settings with secrets
      masked. Needs the bearer token when INFER_API_TOKENS is set (it shows configuration).
    produces: [application/json]
    security: [{bearer: []}]
    responses:
      200:
        description: The status document.
        schema: {$ref: '#/definitions/Status'}
      401: {$ref: '#/responses/Unauthorized'}
      403: {$ref: '#/responses/Forbidden'}
    definitions:
      RefreshRun:
        type: object
        properties:
          id: {type: integer}
          outcome: {type: string, enum: [running, succeeded, skipped, failed]}
          host: {type: string, x-nullable: true}
          started_at: {type: string}
          finished_at: {type: string, x-nullable: true}
          duration_s: {type: number, x-nullable: true}
          error: {type: string, x-nullable: true}
          build: {type: string, x-nullable: true, description: full or incremental}
          faces: {type: integer, x-nullable: true}
          images: {type: object, additionalProperties: {type: integer}}
          validation: {type: object, x-nullable: true}
          build_timings_s: {type: object, x-nullable: true}
          reason: {type: string, x-nullable: true}
      Status:
        type: object
        required: [service, version, release, catalog, refresh, update_lock, settings]
        properties:
          service: {type: string}
          version: {type: string}
          host: {type: string}
          time: {type: string}
          release:
            allOf:
              - {$ref: '#/definitions/ModelState'}
              - type: object
                properties:
                  built_at: {type: string, x-nullable: true}
                  age_s: {type: number, x-nullable: true, description: Seconds since built.}
                  counts: {type: object, x-nullable: true}
                  stale_build_fields:
                    type: array
                    items: {type: string}
                    description: Build settings the served bundle was made with otherwise
                      than this service's (an upgrade changed them); it is served as it is
                      and the next refresh rebuilds it.
                  run_points_at:
                    type: string
                    x-nullable: true
                    description: The release RESOURCES_DIR/run names (after a promotion or
                      a rollback, until this replica's watcher has loaded it, not yet
                      `version`).
                  releases: {type: array, items: {type: string}}
          catalog:
            type: object
            properties:
              backend: {type: string, example: postgresql}
              cards: {type: integer, x-nullable: true}
              error: {type: string, x-nullable: true}
          refresh:
            description: The schedule, the refresh running on this host now (the fields of
              /readyz's `refresh`) and the last runs.
            allOf:
              - {$ref: '#/definitions/RefreshInProgress'}
              - type: object
                properties:
                  enabled: {type: boolean}
                  cron: {type: string}
                  next_run_at: {type: string, x-nullable: true}
                  last_runs: {type: array, items: {$ref: '#/definitions/RefreshRun'}}
          update_lock:
            type: object
            properties:
              name: {type: string}
              backend: {type: string, enum: [redis, file]}
              held_by_this_replica: {type: boolean}
          settings: {type: object}
    """
    return jsonify(build_status(current_app))
