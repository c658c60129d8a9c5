"""Start-up and background work of the serving process (the wiring at the top: it starts the
pipeline's bootstrap and the refresh schedule, so neither `runtime` nor `pipeline` imports the
other).

`create_app` only builds the app (tests, tools and `flask` commands use it and must not start
threads). The serving process then calls `start(app)` - `app.create_serving_app`, the target
of gunicorn and of `python -m app`, does both - which returns at once: `/healthz` answers
while a background thread migrates the catalogue and loads the bundle in RESOURCES_DIR/run,
the watcher loads every promotion, and the nightly schedule runs. Only a *missing* bundle
depends on BOOTSTRAP_MISSING_BUNDLE: obtained (release archive or one refresh) when true,
else the service waits for one to be promoted. `/readyz` reports the progress or failure.
`shutdown(app)` stops all of it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

from flask import Flask

from app.common.settings import Settings
from app.pipeline.bootstrap import bootstrap
from app.pipeline.locks import FileLock
from app.pipeline.refresh import run_refresh
from app.pipeline.refresh_state import reselected_release
from app.recognition.features.extraction import configure_threads
from app.recognition.index.bundle import Bundle
from app.recognition.params import PROFILES
from app.runtime.model import ModelHolder
from app.runtime.watcher import BundleWatcher
from app.wiring import scheduler

log = logging.getLogger(__name__)


def make_holder(settings: Settings) -> ModelHolder[Bundle]:
    """A holder whose loader verifies bundles against the configured recognition profile."""
    expected = PROFILES[settings.recognition_profile]
    return ModelHolder(lambda path: Bundle.open(path, expected_params=expected))


def init_app(app: Flask) -> None:
    """Attach the model holder; nothing is loaded and no thread starts until `start`."""
    settings: Settings = app.config["SETTINGS"]
    configure_threads(settings.recognition_threads)
    holder = make_holder(settings)
    holder.set_status(
        "unloaded",
        "not started: the serving process calls app.wiring.startup.start (the gunicorn target "
        "`app:create_serving_app()` and `python -m app` do)",
    )
    app.extensions["model"] = holder


def start(app: Flask) -> None:
    """Start the serving process's background work: load the bundle in RESOURCES_DIR/run
    (obtaining one first if it is missing and BOOTSTRAP_MISSING_BUNDLE allows), watch for
    promotions, schedule the nightly refresh. Returns at once; calling it again does nothing.

    Under a one-off `flask` command (not `flask run`) it does nothing: `flask --app
    "app:create_serving_app()" refresh` must not start a second server's worth of threads.
    """
    if "started" in app.extensions or _is_cli_command():
        return
    app.extensions["started"] = True
    settings: Settings = app.config["SETTINGS"]
    holder: ModelHolder[Bundle] = app.extensions["model"]
    holder.set_status("starting", "the service is starting")
    thread = threading.Thread(target=prepare, args=(app,), name="prepare-resources", daemon=True)
    app.extensions["prepare_thread"] = thread
    thread.start()
    watcher = BundleWatcher(holder, settings.resources_dir, polling=settings.watch_polling)
    watcher.start()
    app.extensions["watcher"] = watcher
    scheduler.init_app(app, is_cli=False)


def _is_cli_command() -> bool:
    """True under `flask --app app <command>` other than `run`: a one-off command must not
    start the serving process's background work (loading, refresh schedule)."""
    return os.environ.get("FLASK_RUN_FROM_CLI") == "true" and "run" not in sys.argv[1:]


def shutdown(app: Flask) -> None:
    """Stop background threads and release resources (tests, and a clean exit)."""
    scheduler.shutdown(app)
    watcher = app.extensions.get("watcher")
    if watcher is not None:
        watcher.stop()
    app.extensions.setdefault("prepare_stop", threading.Event()).set()  # ends a retry wait
    thread = app.extensions.get("prepare_thread")
    if thread is not None:
        thread.join(timeout=30)
    app.extensions["model"].unload()
    app.extensions["catalog"].close()
    reader = app.extensions.get("line_reader")
    if reader is not None:
        reader.close()


def bootstrap_lock(settings: Settings) -> FileLock:
    """Cross-process lock for first-time preparation on one host (several workers/CLIs)."""
    return FileLock(settings.resources_dir / ".bootstrap.lock", name="bootstrap")


BOOTSTRAP_FIRST_RETRY_S = 5.0
"""Seconds before the second bootstrap attempt; each later wait doubles, up to
BOOTSTRAP_RETRY_MAX_DELAY."""


def retry_delay(attempt: int, max_delay: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...): 5, 10, 20 ... capped
    at `max_delay`."""
    return min(max_delay, BOOTSTRAP_FIRST_RETRY_S * 2.0 ** min(attempt - 1, 30))


def prepare(app: Flask) -> None:
    """Make the service ready: migrate the catalogue, then load the bundle in run, or obtain
    one first when it is missing and BOOTSTRAP_MISSING_BUNDLE allows.

    A bootstrap that fails (the database not up yet, Scryfall or the release host down) is
    tried again with a doubling delay (BOOTSTRAP_RETRY_MAX_DELAY; 0: never), the catalogue
    migration too while it has not succeeded; meanwhile /readyz says which attempt failed,
    why, and when the next one is. Waiting ends early when a bundle appears (another replica
    promoted one: the watcher loaded it) or the service shuts down."""
    settings: Settings = app.config["SETTINGS"]
    holder: ModelHolder[Bundle] = app.extensions["model"]
    line_reader = app.extensions.get("line_reader")
    if line_reader is not None:  # load the OCR model now, not in the first request's slot
        line_reader.get()
    stop: threading.Event = app.extensions.setdefault("prepare_stop", threading.Event())
    migrated = _migrate(app)

    run = settings.run_dir
    if _try_load(holder, run):
        _refresh_if_reselected(app)
        return
    if not settings.bootstrap_missing_bundle:
        refused = (run / "manifest.json").exists()  # why is in the state, from the load
        found = (f"the bundle in {run} cannot be served ({holder.state.detail})" if refused
                 else f"no descriptor bundle in {run}")
        holder.set_status(
            "failed" if refused else "missing",
            f"{found}, and BOOTSTRAP_MISSING_BUNDLE=false: the service downloads or builds "
            "none. Build one with `flask --app app build-index --catalog FILE` or `flask --app "
            "app refresh` (it is loaded as soon as it is promoted), or set "
            "BOOTSTRAP_MISSING_BUNDLE=true to obtain one at start",
        )
        log.warning("%s and BOOTSTRAP_MISSING_BUNDLE=false; waiting for a bundle to be "
                    "promoted", found)
        return
    # nothing could ever succeed on a later try: no archive to fetch and no refresh allowed
    retry = settings.bootstrap_retry_max_delay > 0 and bool(
        settings.resource_bundle_url or settings.refresh_enabled)
    attempt = 0
    while not stop.is_set():
        attempt += 1
        if not migrated:
            migrated = _migrate(app)
        outcome = _bootstrap_attempt(app, holder, attempt)
        if outcome is None:
            return
        fix = ("build one with `flask --app app build-index --catalog FILE` or `flask --app "
               "app refresh`")
        if not retry:
            holder.set_status("failed", f"no descriptor bundle in {run} (bootstrap: "
                                        f"{outcome}); {fix}")
            log.warning("no descriptor bundle in %s; the service is not ready", run)
            return
        delay = retry_delay(attempt, settings.bootstrap_retry_max_delay)
        holder.set_status(
            "failed",
            f"no descriptor bundle in {run} (bootstrap: {outcome}; attempt {attempt}, next "
            f"in {delay:.0f} s); it is retried by itself, or {fix}",
        )
        log.warning("bootstrap attempt %d failed (%s); retrying in %.0f s", attempt, outcome,
                    delay)
        deadline = time.monotonic() + delay
        while not stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            if holder.state.status == "loaded":  # the watcher loaded a promoted release
                return
            if time.monotonic() >= deadline:
                break


def _refresh_if_reselected(app: Flask) -> None:
    """REFRESH_SETS (or REFRESH_LANGS, REFRESH_EXCLUDED_LAYOUTS) changed since the served
    release was built: refresh now, while that release serves, instead of at the next
    scheduled run. Replicas restarted together race for the update lock: one refreshes, the
    others skip and load its promotion."""
    settings: Settings = app.config["SETTINGS"]
    if not settings.refresh_enabled:
        return
    reselected = reselected_release(settings)
    if reselected is None:
        return
    log.info("%s since release %s was built: refreshing now; it serves meanwhile",
             reselected.change, reselected.release)
    holder: ModelHolder[Bundle] = app.extensions["model"]

    def serve(path: Path) -> None:
        holder.load(path)

    result = run_refresh(settings, app.extensions["catalog"], on_promoted=serve,
                         reason=f"start-up: {reselected.change}")
    log.info("start-up %s", result.summary())


def _migrate(app: Flask) -> bool:
    store = app.extensions["catalog"]
    try:
        store.migrate()
    except Exception as exc:  # the bundle can serve without the database
        log.error("catalogue %s unavailable at start-up: %s", store.backend, exc)
        return False
    return True


def _bootstrap_attempt(app: Flask, holder: ModelHolder[Bundle], attempt: int) -> str | None:
    """One attempt under the bootstrap file lock: None once a bundle is served, else what
    went wrong."""
    settings: Settings = app.config["SETTINGS"]
    run = settings.run_dir
    holder.set_status("preparing", "no bundle in RESOURCES_DIR/run; waiting for bootstrap lock"
                      + (f" (attempt {attempt})" if attempt > 1 else ""))
    lock = bootstrap_lock(settings)
    lock.acquire(blocking=True)
    try:
        if _try_load(holder, run):  # another process prepared it while we waited
            return None
        outcome = _bootstrap(app, holder)
        if _try_load(holder, run):
            return None
        return outcome
    finally:
        lock.release()


def _bootstrap(app: Flask, holder: ModelHolder[Bundle]) -> str:
    """Obtain a first bundle (release archive or one refresh); say what happened, for /readyz.

    See app.pipeline.bootstrap.
    """
    holder.set_status("preparing", "no bundle: bootstrapping (release archive or refresh)")
    try:
        outcome = str(bootstrap(app.config["SETTINGS"], app.extensions["catalog"]))
    except Exception as exc:
        log.error("bootstrap failed: %s", exc)
        return f"failed: {exc}"
    log.info("bootstrap: %s", outcome)
    return outcome


def _try_load(holder: ModelHolder[Bundle], run: Path) -> bool:
    if not (run / "manifest.json").exists():
        return False
    holder.set_status("preparing", f"loading bundle from {run}")
    try:
        holder.load(run)
    except Exception as exc:
        log.error("bundle in %s cannot be served: %s", run, exc)
        return False
    return True
