"""The nightly refresh schedule, inside the serving process.

One APScheduler `BackgroundScheduler` per serving process (one process per container, see
docs/design-notes.md, "One process per container"), cron from REFRESH_CRON in UTC,
`max_instances=1` and `coalesce=True` so a slow run is never doubled and missed runs
collapse into one. Across replicas, the job's update lock (Redis lease) makes exactly one
of them do the work.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from flask import Flask

from app.common.settings import Settings
from app.pipeline.refresh import run_refresh

log = logging.getLogger(__name__)

JOB_ID = "nightly-refresh"


def make_scheduler(settings: Settings, job: Any) -> BackgroundScheduler:
    """A (not started) scheduler holding the refresh job."""
    scheduler = BackgroundScheduler(timezone="UTC", daemon=True)
    scheduler.add_job(
        job,
        CronTrigger.from_crontab(settings.refresh_cron, timezone="UTC"),
        id=JOB_ID,
        name="nightly Scryfall refresh",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
        replace_existing=True,
    )
    return scheduler


def should_schedule(settings: Settings, is_cli: bool) -> bool:
    return settings.refresh_enabled and not is_cli and settings.flask_env != "testing" and (
        os.environ.get("FLASK_ENV", settings.flask_env) != "testing"
    )


def init_app(app: Flask, is_cli: bool) -> BackgroundScheduler | None:
    """Start the schedule in a serving process (not in CLI commands, not under testing)."""
    settings: Settings = app.config["SETTINGS"]
    if not should_schedule(settings, is_cli):
        return None

    def job() -> None:
        holder = app.extensions.get("model")
        result = run_refresh(
            settings,
            app.extensions["catalog"],
            on_promoted=(lambda run: holder.load(run)) if holder is not None else None,
            reason="nightly",
        )
        log.info("scheduled %s", result.summary())

    scheduler = make_scheduler(settings, job)
    scheduler.start()
    app.extensions["scheduler"] = scheduler
    atexit.register(shutdown, app)
    log.info("nightly refresh scheduled: %r (UTC), next at %s", settings.refresh_cron,
             scheduler.get_job(JOB_ID).next_run_time)
    return scheduler


def shutdown(app: Flask) -> None:
    """Stop the scheduler without waiting for a running refresh (its lock lease expires)."""
    scheduler: BackgroundScheduler | None = app.extensions.pop("scheduler", None)
    if scheduler is not None and scheduler.running:
        scheduler.shutdown(wait=False)
