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
        description: The status document (here during the nightly refresh).
        schema: {$ref: '#/definitions/Status'}
        examples:
          application/json:
            service: descriptor-infer-service
            version: 0.1.0
            host: infer-7d9c5b6f4-x2kqp
            time: "2026-11-27T02:03:10+00:00"
            release:
              status: loaded
              detail: serving bundle 20261126T020000000000Z-3fa1b2c4
              version: 20261126T020000000000Z-3fa1b2c4
              loaded_at: "2026-11-26T02:14:09+00:00"
              built_at: "2026-11-26T02:13:51.204118+00:00"
              age_s: 86359.2
              counts: {cards: 10719, references: 10719, slots: 10719, new_cards: 212,
                       reused_cards: 10507, shared_pictures: 4210, picture_disagreements: 37,
                       skipped_images: 2, indexed_descriptors: 3471925, candidates: 5600,
                       padding_vectors: 104871, stop_words: 1913}
              stale_build_fields: []
              last_swap_pause_ms: 0.004
              run_points_at: 20261126T020000000000Z-3fa1b2c4
              releases: [20261124T020000000000Z-9b0e77d1, 20261125T020000000000Z-52c0aa3e,
                         20261126T020000000000Z-3fa1b2c4]
            catalog: {backend: postgresql, cards: 104233, error: null}
            refresh:
              enabled: true
              cron: 0 2 * * *
              next_run_at: "2026-11-28T02:00:00+00:00"
              running: true
              reason: nightly
              started_at: "2026-11-27T02:00:00+00:00"
              serving: 20261126T020000000000Z-3fa1b2c4
              last_runs:
                - id: 41
                  outcome: succeeded
                  host: infer-7d9c5b6f4-x2kqp
                  started_at: "2026-11-26T02:00:00+00:00"
                  finished_at: "2026-11-26T02:13:58+00:00"
                  duration_s: 838.0
                  error: null
                  build: full
                  faces: 10719
                  images: {extracted: 212, cached: 10505, missing: 2, image_errors: 0}
                  validation: {sample: 40, hits: 39, hit_rate: 0.975}
                  build_timings_s: {extract: 61.8, train: 95.2, stop_sample: 12.1,
                                    index: 140.8}
                  reason: null
            update_lock: {name: model_update_lock, backend: redis, held_by_this_replica: true}
            settings:
              profile: {flask_env: production, recognition_profile: default,
                        recognition_threads: 2}
              limits: {max_content_length: 10485760, max_image_pixels: 50000000,
                       max_concurrent_infer: 2, infer_queue_timeout: 2.0,
                       infer_time_budget_ms: 1500}
              refresh_policy: {refresh_enabled: true, refresh_cron: 0 2 * * *,
                               refresh_langs: [en], refresh_sets: [],
                               refresh_excluded_layouts: [art_series, double_faced_token, emblem,
                                                          planar, scheme, token, vanguard],
                               refresh_min_hit_rate: 0.85,
                               scryfall_api_url: "https://api.scryfall.com",
                               scryfall_bulk_type: default_cards, resource_bundle_url: "",
                               bootstrap_missing_bundle: true}
              auth: {infer_auth: enabled, infer_api_tokens: 2 token(s)}
              stores: {postgres_host: postgres, postgres_port: 5432, postgres_db: mtg,
                       postgres_user: postgres, postgres_password: "***",
                       redis_host: redis, redis_port: 6379, redis_db: 0,
                       redis_password: ""}
              logging: {log_level: INFO, log_format: json, log_file_path: ""}
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
