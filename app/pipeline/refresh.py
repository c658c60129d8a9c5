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
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.catalog.records import FaceImage, face_images, iter_records
from app.catalog.store import CatalogStore, card_row
from app.common import metrics
from app.common.progress import Progress
from app.common.settings import DEFAULT_EXCLUDED_LAYOUTS, Settings
from app.pipeline import releases
from app.pipeline.downloads import (
    FeatureCache,
    ImageFetcher,
    MissingImage,
    bounded_map,
    params_digest,
)
from app.pipeline.locks import UpdateLock, make_update_lock
from app.pipeline.scryfall import BulkItem, ScryfallClient, ScryfallError
from app.recognition.params import PROFILES, FeatureParams

log = logging.getLogger(__name__)

STATE_FILE = "refresh_state.json"
# Layouts that are not cards one would scan (REFRESH_EXCLUDED_LAYOUTS, RefreshOptions).
EXCLUDED_LAYOUTS = frozenset(DEFAULT_EXCLUDED_LAYOUTS)


class RefreshError(RuntimeError):
    """A refresh that must not promote; the message says why."""


@dataclass(frozen=True)
class RefreshOptions:
    """Knobs of one refresh. Defaults suit the nightly job on Scryfall's default_cards."""

    langs: tuple[str, ...] = ("en",)  # empty: every language
    sets: tuple[str, ...] = ()  # Scryfall set codes to index; empty: every set
    exclude_layouts: frozenset[str] = EXCLUDED_LAYOUTS
    catalog_file: Path | None = None  # a local catalogue instead of Scryfall's bulk data
    force: bool = False  # rebuild even when updated_at has not moved
    image_workers: int = 6
    build_workers: int = 2
    max_image_bytes: int = 15 * 1024 * 1024
    max_missing_fraction: float = 0.05
    validation_sample: int = 40
    min_hit_rate: float = 0.85
    min_size_ratio: float = 0.9  # refuse a catalogue smaller than this x the current one
    prune_cache: bool = True  # drop cached features of printings no longer indexed
    incremental: bool = True  # extend the current release when few printings changed
    max_incremental_change: float = 0.2  # ... at most this fraction (else a full build)
    progress: bool = True
    # retry/rate knobs (tests make them tiny)
    retry_tries: int = 5
    retry_backoff: float = 1.0
    retry_max_wait: float = 60.0
    api_interval: float = 0.15

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> RefreshOptions:
        """The printings policy of REFRESH_LANGS, REFRESH_SETS, REFRESH_EXCLUDED_LAYOUTS and
        REFRESH_MIN_HIT_RATE (what scheduled runs use), with `changes` on top."""
        values: dict[str, Any] = {
            "langs": tuple(settings.refresh_langs),
            "sets": tuple(settings.refresh_sets),
            "exclude_layouts": frozenset(settings.refresh_excluded_layouts),
            "min_hit_rate": settings.refresh_min_hit_rate,
        }
        values.update(changes)
        return cls(**values)

    def selection_digest(self) -> str:
        """What decides which printings are indexed: a change (REFRESH_SETS widened, another
        language) makes the next run rebuild even when Scryfall's file has not moved."""
        policy = {"langs": sorted(self.langs), "sets": sorted(self.sets),
                  "exclude_layouts": sorted(self.exclude_layouts)}
        return hashlib.sha256(json.dumps(policy).encode()).hexdigest()[:16]


@dataclass
class RefreshResult:
    status: str  # succeeded | skipped | failed
    counts: dict[str, Any] = field(default_factory=dict)
    release: str | None = None
    error: str | None = None
    run_id: int | None = None

    def summary(self) -> str:
        text = f"refresh {self.status}"
        if self.error and self.error.startswith(self.status):
            text = "refresh"  # "skipped: another replica holds ..." says it already
        if self.release:
            text += f": serving {self.release}"
        if self.error:
            text += f": {self.error}"
        return f"{text} {json.dumps(self.counts, default=str)}"


def run_refresh(
    settings: Settings,
    store: CatalogStore,
    options: RefreshOptions | None = None,
    *,
    lock: UpdateLock | None = None,
    params: FeatureParams | None = None,
    on_promoted: Callable[[Path], None] | None = None,
) -> RefreshResult:
    """Run one refresh under the update lock; never raises for a failed run (see result)."""
    options = options or RefreshOptions.from_settings(settings)
    params = params or PROFILES[settings.recognition_profile]
    lock = lock or make_update_lock(settings)
    host = socket.gethostname()
    started = time.perf_counter()
    result = _run_locked(settings, store, options, lock, params, on_promoted, host)
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
        lock.release()


# -- state ---------------------------------------------------------------------------------
def load_state(data_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        return state
    except (OSError, ValueError):
        return {}


def reselected_release(settings: Settings) -> str | None:
    """The served release's name when it was built under another printings policy than
    REFRESH_SETS, REFRESH_LANGS and REFRESH_EXCLUDED_LAYOUTS now say (the settings were
    changed, then the service restarted), else None (same policy, or not built here)."""
    state = load_state(settings.scryfall_data_dir)
    current = releases.current_release(settings.resources_dir)
    if current is None or state.get("release") != current.name or "selection" not in state:
        return None
    selection = RefreshOptions.from_settings(settings).selection_digest()
    return current.name if state["selection"] != selection else None


def save_state(data_dir: Path, state: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, data_dir / STATE_FILE)


def current_card_count(resources: Path) -> int:
    current = releases.current_release(resources)
    if current is None:
        return 0
    try:
        manifest = json.loads((current / "manifest.json").read_text())
        return int(manifest["counts"]["cards"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


# -- validation ----------------------------------------------------------------------------
def perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible photo of a reference: on a background, perspective-warped, blurred,
    with a brightness/contrast change."""
    import cv2

    h, w = image.shape[:2]
    margin = 0.2
    cw, ch = int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))
    canvas = np.full((ch, cw, 3), rng.integers(60, 160), np.uint8)
    ox, oy = w * margin, h * margin

    def jitter() -> float:
        return float(rng.uniform(-0.06, 0.06) * w)

    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    dst = np.array(
        [
            [ox + jitter(), oy + jitter()],
            [ox + w + jitter(), oy + jitter()],
            [ox + w + jitter(), oy + h + jitter()],
            [ox + jitter(), oy + h + jitter()],
        ],
        dtype=np.float32,
    )
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(
        image, matrix, (cw, ch), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT
    )
    warped = cv2.GaussianBlur(warped, (0, 0), float(rng.uniform(0.6, 1.2)))
    alpha, beta = float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15, 15))
    return cv2.convertScaleAbs(warped, alpha=alpha, beta=beta)


@dataclass(frozen=True)
class _Face:
    image: FaceImage
    key: str


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
        faces = self._select(path, base_dir)
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
        samples = self._features(faces, cache, fetcher)

        # 5. build and validate
        version = releases.new_version()
        self.staging = releases.new_staging(self.resources, version)
        built = self.staging / "bundle"
        manifest = self._build(faces, cache, built)
        self._validate(built, samples, manifest, before)

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

    def _included(self, record: dict[str, Any]) -> bool:
        """Whether the record's faces are indexed. Records of every printing are stored
        all the same (cheap, and the API answers from them): the policy limits indexing."""
        opts = self.options
        if opts.langs and record.get("lang", "en") not in opts.langs:
            return False
        if opts.sets and str(record.get("set", "")).lower() not in opts.sets:
            return False
        return record.get("layout") not in opts.exclude_layouts

    def _select(self, path: Path, base_dir: Path) -> list[_Face]:
        faces: list[_Face] = []
        records = 0
        last_log = time.monotonic()
        try:
            for record in iter_records(path):
                records += 1
                if self._included(record):
                    for image in face_images(record, base_dir):
                        faces.append(_Face(image, FeatureCache.key(image.uri)))
                if time.monotonic() - last_log > 10:
                    log.info("refresh: read %d records", records)
                    last_log = time.monotonic()
        except (ValueError, EOFError, OSError) as exc:
            raise RefreshError(f"the bulk file is truncated or malformed: {exc}") from None
        self.counts["records"] = records
        self.counts["faces"] = len(faces)
        log.info("refresh: %d records, %d faces to index", records, len(faces))
        return faces

    def _features(
        self, faces: list[_Face], cache: FeatureCache, fetcher: ImageFetcher
    ) -> list[tuple[_Face, np.ndarray]]:
        """Fetch + extract what the cache lacks; also fetch the validation sample.

        One printing of each picture is extracted (SIFT); the picture's other printings
        are fetched for their thumbnails only, and extracted as well when their image does
        not agree with the picture's reference (recognition/pictures.py): a new printing of
        an indexed picture costs a download and a thumbnail, not a SIFT extraction."""
        from app.recognition.decode.uploads import decode_image
        from app.recognition.features.extraction import extract_features
        from app.recognition.index import pictures
        from app.recognition.index.build import make_color_thumbnail, make_thumbnail

        opts = self.options
        rng = random.Random(len(faces))
        sample_keys = {
            f.key for f in rng.sample(faces, min(opts.validation_sample, len(faces)))
        }
        firsts, others = pictures.split(faces, lambda f: f.image.picture)
        counts = {"extracted": 0, "thumbnails": 0, "cached": 0, "missing": 0,
                  "image_errors": 0}
        guard = threading.Lock()
        samples: list[tuple[_Face, np.ndarray]] = []
        signatures: dict[str, np.ndarray] = {}  # picture -> its reference's signature

        def extract(face: _Face, image: np.ndarray, describe: bool) -> np.ndarray:
            features = extract_features(image, self.params, role="reference",
                                        describe=describe)
            thumb = make_thumbnail(features, self.params)
            cache.put(face.key, features, thumb, make_color_thumbnail(features, self.params),
                      described=describe)
            metrics.REFRESH_IMAGES.labels("fetched").inc()
            with guard:
                counts["extracted" if describe else "thumbnails"] += 1
            return thumb

        def reference_signature(picture: str) -> np.ndarray | None:
            with guard:
                if picture in signatures:
                    return signatures[picture]
            reference = references.get(picture)
            if reference is None or not cache.has(reference.key):
                return None  # its image is missing: this printing is extracted itself
            signature = pictures.signature(cache.get(reference.key)[1])
            with guard:
                signatures[picture] = signature
            return signature

        def work(face: _Face) -> np.ndarray | None:
            data = fetcher.fetch(face.image.uri)
            image = decode_image(data, max_pixels=self.settings.max_image_pixels)
            picture = face.image.picture
            if face in shared and not cache.has_any(face.key):
                known = reference_signature(picture) if picture else None
                thumb = extract(face, image, describe=False)
                if known is None or not pictures.agree(pictures.signature(thumb), known):
                    extract(face, image, describe=True)
            elif face not in shared and not cache.has(face.key):
                extract(face, image, describe=True)
            return image if face.key in sample_keys else None

        references = {f.image.picture: f for f in firsts if f.image.picture}
        shared = set(others)
        # references first, to the end: their picture's other printings compare with them
        phases = [[f for f in firsts if f.key in sample_keys or not cache.has(f.key)],
                  [f for f in others if f.key in sample_keys or not cache.has_any(f.key)]]
        done = ((face, image, error) for todo in phases
                for face, image, error in bounded_map(work, todo, max(1, opts.image_workers)))
        with Progress("images", total=sum(map(len, phases)), unit="img",
                      enabled=opts.progress) as bar:
            for face, image, error in done:
                bar.update(1)
                if isinstance(error, MissingImage):
                    metrics.REFRESH_IMAGES.labels("missing").inc()
                    counts["missing"] += 1
                    log.warning("image missing for %s face %d: %s", face.image.card_id,
                                face.image.face, error)
                elif error is not None:
                    metrics.REFRESH_IMAGES.labels("failed").inc()
                    counts["image_errors"] += 1
                    log.warning("image failed for %s face %d: %s", face.image.card_id,
                                face.image.face, error)
                elif image is not None:
                    samples.append((face, image))
        counts["cached"] = (sum(1 for f in faces if cache.has_any(f.key)) - counts["extracted"]
                            - counts["thumbnails"])
        metrics.REFRESH_IMAGES.labels("cached").inc(max(0, counts["cached"]))
        self.counts.update(counts)
        bad = counts["missing"] + counts["image_errors"]
        log.info("refresh: images done: %s", counts)
        if bad > opts.max_missing_fraction * len(faces):
            raise RefreshError(
                f"{bad} of {len(faces)} images missing or unreadable: over the "
                f"{opts.max_missing_fraction:.0%} allowed"
            )
        return samples

    def _build(self, faces: list[_Face], cache: FeatureCache, out: Path) -> dict[str, Any]:
        """Extend the served release when few printings changed, else build in full."""
        from app.recognition.index.build import (
            FullBuildNeeded,
            build_bundle,
            build_incremental,
            incremental_plan,
        )

        def no_load() -> np.ndarray:
            raise RuntimeError("cached reference has no image")

        refs = [
            face.image.reference(no_load, functools.partial(cache.get, face.key), key=face.key)
            for face in faces
            if cache.has_any(face.key)  # else: missing image, counted already
        ]
        refs = list({ref.key: ref for ref in refs}.values())  # one slot per image
        opts = self.options
        previous = releases.current_release(self.resources)
        why = "disabled" if not opts.incremental else (
            "no release is served" if previous is None else incremental_plan(
                previous, [r.key for r in refs], self.params, opts.max_incremental_change))
        manifest: dict[str, Any] | None = None
        if why is None and previous is not None:
            log.info("refresh: extending release %s in %s", previous.name, out)
            try:
                manifest = build_incremental(refs, out, self.params, previous,
                                             progress=opts.progress,
                                             workers=max(1, opts.build_workers))
                self.counts["build"] = "incremental"
            except FullBuildNeeded as exc:  # e.g. a picture's indexed printing is gone
                why = str(exc)
                shutil.rmtree(out, ignore_errors=True)
        if manifest is None:
            log.info("refresh: full build in %s (not incremental: %s)", out, why)
            manifest = build_bundle(refs, out, self.params, progress=opts.progress,
                                    workers=max(1, opts.build_workers), total=len(refs))
            self.counts["build"] = "full"
        self.counts["bundle"] = manifest["counts"]
        self.counts["build_timings_s"] = manifest.get("timings_s")
        return manifest

    def _validate(
        self,
        built: Path,
        samples: list[tuple[_Face, np.ndarray]],
        manifest: dict[str, Any],
        before: int,
    ) -> None:
        from app.recognition.index.bundle import Bundle
        from app.recognition.match.card import recognize

        opts = self.options
        cards = int(manifest["counts"]["cards"])
        if cards == 0:
            raise RefreshError("the new bundle is empty; refusing to promote")
        if before and cards < opts.min_size_ratio * before:
            raise RefreshError(
                f"the new bundle has {cards} faces, the current release {before}: below "
                f"{opts.min_size_ratio:.0%}; refusing to promote"
            )
        if not samples:
            raise RefreshError("no reference image could be fetched for validation")
        bundle = Bundle.open(built, expected_params=self.params)
        rng = np.random.default_rng(0)
        hits = 0
        misses: list[str] = []
        try:
            for face, image in samples:
                result = recognize(bundle, perturb(image, rng))
                match = result.match
                expected = face.image
                ok = match is not None and (
                    (match.card["id"] == expected.card_id
                     and int(match.card.get("face", 0)) == expected.face)
                    or (expected.illustration_id is not None
                        and match.card.get("illustration_id") == expected.illustration_id)
                )
                if ok:
                    hits += 1
                else:
                    misses.append(f"{expected.card_id}/{expected.face}")
        finally:
            bundle.close()
        rate = hits / len(samples)
        self.counts["validation"] = {"sample": len(samples), "hits": hits,
                                     "hit_rate": round(rate, 3)}
        log.info("refresh: validation %d/%d = %.1f%%", hits, len(samples), 100 * rate)
        if rate < opts.min_hit_rate:
            raise RefreshError(
                f"validation hit rate {rate:.1%} below {opts.min_hit_rate:.0%} "
                f"(missed {', '.join(misses[:10])}); refusing to promote"
            )

    def _write_records(self, path: Path, base_dir: Path, sets: list[dict[str, Any]]) -> None:
        def rows() -> Iterator[dict[str, Any]]:
            for record in iter_records(path):
                images = face_images(record, base_dir) if self._included(record) else []
                key = "|".join(img.uri for img in images) or None
                yield card_row(record, image_key=key)

        if sets:
            self.store.upsert_sets(sets)
        written = self.store.upsert_cards(rows())
        self.counts["cards_written"] = written
        log.info("refresh: %d card records, %d sets written to %s", written, len(sets),
                 self.store.backend)

