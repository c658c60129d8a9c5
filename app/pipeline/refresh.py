"""The nightly refresh: Scryfall -> catalogue -> descriptors -> validated bundle -> promotion.

Order of work, chosen so that a failure anywhere leaves what is served, and the card records,
exactly as they were:

 1. take the update lock WITHOUT waiting (another holder: log "skipped" and return);
 2. ask `/bulk-data`; nothing to do when `updated_at` has not moved since the last success;
 3. download the bulk file (verified complete) and read it to the end once, choosing the
    faces to index - a truncated or malformed file fails here, before anything is written;
 4. fetch images and extract features only for faces whose image version is not in the
    feature cache (incremental), bounded concurrency, missing images counted;
 5. build the bundle in `staging/`, VALIDATE it (recognise perturbed reference images; refuse
    a low hit rate, an empty catalogue or one much smaller than the current release);
 6. write card and set records (each upsert is one transaction) - only after validation;
 7. check the lease is still ours, move the bundle into `releases/`, promote (atomic rename).

This module runs the steps in that order, under the lock, and records the run; each step's
work is a module of its own: selection (3), extraction (4), building and validation (5),
with the run's options and records in refresh_options and what the last success was made
from in refresh_state.
"""

from __future__ import annotations

import logging
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.catalog.store import CatalogStore
from app.common import metrics
from app.common.progress import Progress
from app.common.settings import Settings
from app.pipeline import releases
from app.pipeline.building import build_from_cache
from app.pipeline.downloads import FeatureCache, ImageFetcher, params_digest
from app.pipeline.extraction import extract_new_faces
from app.pipeline.locks import UpdateLock, make_update_lock
from app.pipeline.refresh_options import RefreshError, RefreshOptions, RefreshResult
from app.pipeline.refresh_state import current_card_count, load_state, save_state
from app.pipeline.running import RunningRecord
from app.pipeline.scryfall import BulkItem, ScryfallClient, ScryfallError
from app.pipeline.selection import card_rows, select_faces
from app.pipeline.validation import validate
from app.recognition.params import PROFILES, FeatureParams

log = logging.getLogger(__name__)


def run_refresh(
    settings: Settings,
    store: CatalogStore,
    options: RefreshOptions | None = None,
    *,
    lock: UpdateLock | None = None,
    params: FeatureParams | None = None,
    on_promoted: Callable[[Path], None] | None = None,
    reason: str = "refresh",
) -> RefreshResult:
    """Run one refresh under the update lock; never raises for a failed run (see result).

    `reason` says why it runs ("nightly", "flask refresh", "bootstrap: no bundle", "start-up:
    REFRESH_SETS changed from rtr to dsk,rtr"): /readyz and /status show it, with the release
    served meanwhile, while the refresh holds the lock (app/pipeline/running.py)."""
    options = options or RefreshOptions.from_settings(settings)
    params = params or PROFILES[settings.recognition_profile]
    lock = lock or make_update_lock(settings)
    host = socket.gethostname()
    started = time.perf_counter()
    result = _run_locked(settings, store, options, lock, params, on_promoted, host, reason)
    metrics.record_refresh(result.status, time.perf_counter() - started, time.time())
    return result


def _run_locked(
    settings: Settings,
    store: CatalogStore,
    options: RefreshOptions,
    lock: UpdateLock,
    params: FeatureParams,
    on_promoted: Callable[[Path], None] | None,
    host: str,
    reason: str,
) -> RefreshResult:
    if not lock.acquire():
        if lock.unavailable:
            reason = "lock unavailable"
            metrics.UPDATE_LOCK.labels("unavailable").inc()
            message = f"skipped: cannot take {lock.name}: {lock.unavailable}"
            log.warning("refresh %s; serving is unaffected", message)
        else:
            reason = "locked"
            metrics.UPDATE_LOCK.labels("skipped").inc()
            message = f"skipped: another replica holds {lock.name}"
            log.info("refresh %s", message)
        result = RefreshResult("skipped", {"reason": reason}, error=message)
        try:
            store.migrate()
            result.run_id = store.start_run(host)
            store.finish_run(result.run_id, "skipped", result.counts, message)
        except Exception as exc:  # recording a skip must not fail anything
            log.warning("could not record the skipped run: %s", exc)
        return result
    metrics.UPDATE_LOCK.labels("held").inc()
    record = RunningRecord(settings.resources_dir, reason)
    record.write()
    log.info("refresh started (%s)", reason)
    job: _Job | None = None
    try:
        store.migrate()
        abandoned = store.abandon_runs()  # we hold the lock: a 'running' run died
        if abandoned:
            log.warning("refresh: %d earlier run(s) were interrupted; marked failed", abandoned)
        run_id = store.start_run(host)
        job = _Job(settings, store, options, params, lock)
        try:
            result = job.run()
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            expected = isinstance(exc, RefreshError | ScryfallError)
            log.error("refresh failed: %s", error, exc_info=not expected)
            result = RefreshResult("failed", job.counts, error=error)
        result.run_id = run_id
        store.finish_run(run_id, result.status, result.counts, result.error)
        log.info("%s", result.summary())
        if result.status == "succeeded" and result.release and on_promoted is not None:
            try:
                on_promoted(settings.run_dir)
            except Exception as exc:  # promoted already; the watcher/next start loads it
                log.error("loading the promoted release failed: %s", exc)
        return result
    except Exception as exc:  # the database itself failed
        log.error("refresh failed: %s", exc)
        return RefreshResult("failed", job.counts if job else {}, error=str(exc))
    finally:
        if job is not None:
            job.cleanup()
        record.remove()
        lock.release()


class _Job:
    def __init__(
        self,
        settings: Settings,
        store: CatalogStore,
        options: RefreshOptions,
        params: FeatureParams,
        lock: UpdateLock,
    ) -> None:
        self.settings = settings
        self.store = store
        self.options = options
        self.params = params
        self.lock = lock
        self.resources = settings.resources_dir
        self.data_dir = settings.scryfall_data_dir
        self.counts: dict[str, Any] = {}
        self.staging: Path | None = None
        self.stored_release: Path | None = None
        self.promoted = False

    def cleanup(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self.stored_release is not None and not self.promoted:
            served = releases.current_release(self.resources)
            if served is not None and served.resolve() == self.stored_release.resolve():
                log.warning("keeping %s: it is being served", self.stored_release.name)
                return
            shutil.rmtree(self.stored_release, ignore_errors=True)

    # -- phases --------------------------------------------------------------------------
    def run(self) -> RefreshResult:
        started = time.perf_counter()
        opts = self.options
        releases.clean_staging(self.resources)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for part in (self.data_dir / "bulk").glob(".*.part"):  # an interrupted download
            log.warning("removing partial download %s", part.name)
            part.unlink(missing_ok=True)
        client = ScryfallClient(
            self.settings.scryfall_api_url,
            max_tries=opts.retry_tries,
            backoff=opts.retry_backoff,
            max_wait=opts.retry_max_wait,
            api_interval=opts.api_interval,
        )
        fetcher = ImageFetcher(
            max_bytes=opts.max_image_bytes,
            tries=opts.retry_tries,
            backoff=opts.retry_backoff / 2,
            max_wait=opts.retry_max_wait,
        )
        try:
            return self._run(client, fetcher, started)
        finally:
            client.close()
            fetcher.close()

    def _run(self, client: ScryfallClient, fetcher: ImageFetcher, started: float) -> RefreshResult:
        opts = self.options
        # 1. what is there to fetch
        if opts.catalog_file is not None:
            source = Path(opts.catalog_file).resolve()
            stat = source.stat()
            item = BulkItem("local", f"{source}|{stat.st_size}|{stat.st_mtime_ns}", "", "local")
        else:
            item = client.bulk_item(self.settings.scryfall_bulk_type)
        self.counts["bulk_type"] = item.type
        self.counts["bulk_updated_at"] = item.updated_at
        state = load_state(self.data_dir)
        current = releases.current_release(self.resources)
        selection = opts.selection_digest()
        # a release built under another selection (REFRESH_SETS, REFRESH_LANGS changed) is
        # not comparable in size with this run's catalogue
        reselected = current is not None and state.get("release") == current.name and (
            state.get("selection") != selection)
        unchanged = (
            state.get("bulk_type") == item.type
            and state.get("updated_at") == item.updated_at
            and state.get("params") == params_digest(self.params)
            and current is not None
            and state.get("release") == current.name
            and not reselected
        )
        if unchanged and not opts.force:
            log.info("refresh: %s unchanged since %s; nothing to do", item.type, item.updated_at)
            self.counts["reason"] = "unchanged"
            return RefreshResult("skipped", self.counts, release=current.name if current else None)

        # 2. the bulk file, verified complete
        if opts.catalog_file is not None:
            path = source
            base_dir = source.parent
        else:
            log.info("refresh: downloading %s (%s) from %s", item.type, item.format,
                     item.download_uri)
            path = self._download(client, item)
            base_dir = self.data_dir
        self.counts["download_bytes"] = path.stat().st_size

        # 3. read it to the end once: choose the faces (a truncated file fails here)
        faces = select_faces(path, base_dir, opts, self.counts)
        if not faces:
            raise RefreshError("the catalogue has no printing to index; refusing to promote")
        before = current_card_count(self.resources)
        if reselected and before:
            log.info("refresh: the printings policy changed since release %s (REFRESH_SETS, "
                     "REFRESH_LANGS or REFRESH_EXCLUDED_LAYOUTS); its size is no yardstick",
                     current.name if current else None)
            before = 0
        if before and len(faces) < opts.min_size_ratio * before:
            raise RefreshError(
                f"the new catalogue has {len(faces)} faces to index, the current release "
                f"{before}: below {opts.min_size_ratio:.0%}; refusing to promote"
            )
        sets = list(client.iter_sets()) if opts.catalog_file is None else []
        self.counts["sets"] = len(sets)

        # 4. features for new or changed images
        cache = FeatureCache(self.data_dir / "features", self.params)
        samples = extract_new_faces(faces, cache, fetcher, self.settings, self.params, opts,
                                    self.counts)

        # 5. build and validate
        version = releases.new_version()
        self.staging = releases.new_staging(self.resources, version)
        built = self.staging / "bundle"
        manifest = build_from_cache(faces, cache, built, self.resources, self.params, opts,
                                    self.counts)
        validate(built, samples, manifest, before, self.params, opts, self.counts)

        # 6. records, only now
        if not self.lock.still_held():
            raise RefreshError("the update lock was lost; not writing records nor promoting")
        self._write_records(path, base_dir, sets)

        # 7. promote
        if not self.lock.still_held():
            raise RefreshError("the update lock was lost; not promoting")
        current = releases.current_release(self.resources)
        if current is not None and current.name >= manifest["version"]:
            raise RefreshError(
                f"the served release {current.name} is newer than {manifest['version']}"
            )
        self.stored_release = releases.store_release(self.resources, built, manifest["version"])
        releases.promote(self.resources, self.stored_release)
        self.promoted = True
        save_state(
            self.data_dir,
            {
                "bulk_type": item.type,
                "updated_at": item.updated_at,
                "params": params_digest(self.params),
                "selection": selection,
                "policy": opts.selection_policy(),
                "release": manifest["version"],
            },
        )
        if self.options.prune_cache:
            self.counts["cache_pruned"] = cache.prune({f.key for f in faces})
        self.counts["seconds"] = round(time.perf_counter() - started, 1)
        log.info("refresh: promoted %s (%s)", manifest["version"], manifest["counts"])
        return RefreshResult("succeeded", self.counts, release=manifest["version"])

    def _download(self, client: ScryfallClient, item: BulkItem) -> Path:
        with Progress("downloading", total=item.size, unit="B",
                      enabled=self.options.progress) as bar:
            return client.download_bulk(item, self.data_dir / "bulk", progress=bar.update)

    def _write_records(self, path: Path, base_dir: Path, sets: list[dict[str, Any]]) -> None:
        if sets:
            self.store.upsert_sets(sets)
        written = self.store.upsert_cards(card_rows(path, base_dir, self.options))
        self.counts["cards_written"] = written
        log.info("refresh: %d card records, %d sets written to %s", written, len(sets),
                 self.store.backend)

