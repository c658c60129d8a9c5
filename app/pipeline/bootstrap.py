"""First start: obtain a bundle when RESOURCES_DIR/run has none.

Called by `lifecycle.prepare` while it holds the cross-process bootstrap file lock (so one
process of the host does it while the others wait). With RESOURCE_BUNDLE_URL set, the release
archive (tar.gz of one bundle directory) is streamed to disk, unpacked into staging with the
tar `data` filter (no absolute paths, links out of the tree or devices), verified by opening
it exactly as serving does (format, parameters, sha256 of every file against the manifest),
then moved into releases/ and promoted. Otherwise the refresh runs once from Scryfall.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import requests

from app.catalog.store import CatalogStore
from app.common.settings import Settings, mask_url
from app.pipeline import releases
from app.pipeline.downloads import ImageFetcher
from app.pipeline.legacy_import import (
    ID_MAP_FILE,
    LegacyImportError,
    convert_legacy_release,
    find_legacy_release,
    iter_json_strings,
)
from app.pipeline.locks import make_update_lock
from app.pipeline.refresh import run_refresh
from app.pipeline.scryfall import user_agent
from app.recognition.decode.uploads import decode_image
from app.recognition.index.bundle import MANIFEST_FILE, Bundle, BundleError, sha256_file
from app.recognition.params import PROFILES

log = logging.getLogger(__name__)


class BootstrapError(RuntimeError):
    """The release archive could not be obtained or verified."""


def bootstrap(settings: Settings, store: CatalogStore) -> str:
    """Make `run/` point at a valid bundle; return a one-line description of what was done."""
    if settings.resource_bundle_url:
        release = install_release_archive(settings, settings.resource_bundle_url, store=store)
        return f"installed release {release.name} from {mask_url(settings.resource_bundle_url)}"
    if not settings.refresh_enabled:
        return "no bundle, no RESOURCE_BUNDLE_URL and REFRESH_ENABLED=false: nothing to do"
    result = run_refresh(settings, store, reason="bootstrap: no bundle")
    return result.summary()


def _download(url: str, dest: Path, max_bytes: int) -> None:
    if url.startswith("file:"):
        shutil.copyfile(url.removeprefix("file://").removeprefix("file:"), dest)
        return
    try:
        with requests.get(url, stream=True, timeout=(10, 300),
                          headers={"User-Agent": user_agent()}) as response:
            if response.status_code != 200:
                raise BootstrapError(f"GET {mask_url(url)}: HTTP {response.status_code}")
            written = 0
            with dest.open("wb") as out:
                for chunk in response.iter_content(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise BootstrapError(
                            f"{mask_url(url)} is larger than {max_bytes} bytes")
                    out.write(chunk)
    except requests.RequestException as exc:  # its text repeats the URL, query included
        raise BootstrapError(f"GET {mask_url(url)}: {type(exc).__name__}") from None


def expected_sha256(url: str) -> str | None:
    """The archive digest given with the URL as `#sha256=<64 hex>` (a fragment: never sent)."""
    fragment = urlsplit(url).fragment
    if not fragment:
        return None
    key, _, value = fragment.partition("=")
    if key != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise BootstrapError("RESOURCE_BUNDLE_URL fragment must be #sha256=<64 lowercase hex>")
    return value


def install_release_archive(
    settings: Settings,
    url: str,
    max_bytes: int = 64 * 1024**3,
    *,
    store: CatalogStore | None = None,
    max_unpacked_bytes: int = 64 * 1024**3,
) -> Path:
    """Download, unpack, verify and promote a release archive; return the release path.

    Over plain http the archive could be swapped on the way: it is refused unless the URL
    carries its digest (`#sha256=...`), which is then checked (over https too, when given).
    The unpacked size is capped before anything is written.

    An archive of a release in the older layout (no manifest; see legacy_import) is converted
    to the current layout first, with card fields and reference images (for thumbnails) from
    the catalogue `store` when it has them."""
    shown = mask_url(url)  # signed URLs carry tokens: never in errors, /readyz or logs
    digest = expected_sha256(url)
    if urlsplit(url).scheme == "http" and digest is None:
        raise BootstrapError(f"{shown}: plain http needs the archive's digest in the URL "
                             "(#sha256=<hex>), or use https")
    resources = settings.resources_dir
    lock = make_update_lock(settings)
    if not lock.acquire():
        raise BootstrapError(f"another process holds {lock.name}; not installing")
    releases.clean_staging(resources)  # leftovers of an interrupted build or install
    staging = releases.new_staging(resources, releases.new_version())
    try:
        archive = staging / "release.tar.gz"
        log.info("bootstrap: downloading release archive %s", shown)
        _download(url.partition("#")[0], archive, max_bytes)
        if digest is not None:
            got = sha256_file(archive)
            if got != digest:
                raise BootstrapError(f"{shown}: sha256 {got} is not the {digest} given")
        unpacked = staging / "unpacked"
        unpacked.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                size = sum(member.size for member in tar.getmembers())
                if size > max_unpacked_bytes:
                    raise BootstrapError(f"{shown}: unpacks to {size} bytes, over the "
                                         f"{max_unpacked_bytes} byte cap")
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BootstrapError(f"{shown}: not a readable tar archive ({exc})") from None
        archive.unlink()
        manifests = sorted(unpacked.rglob(MANIFEST_FILE), key=lambda p: len(p.parts))
        if manifests:
            bundle_dir = manifests[0].parent
        else:
            bundle_dir = _convert_legacy(settings, shown, unpacked, staging / "converted", store)
        try:
            bundle = Bundle.open(bundle_dir, expected_params=PROFILES[settings.recognition_profile])
        except BundleError as exc:
            raise BootstrapError(f"{shown}: {exc}") from None
        version = bundle.version
        bundle.close()
        if (releases.releases_dir(resources) / version).exists():
            release = releases.releases_dir(resources) / version
        else:
            release = releases.store_release(resources, bundle_dir, version)
        if not lock.still_held():
            raise BootstrapError("lost the update lock; not promoting")
        releases.promote(resources, release)
        log.info("bootstrap: promoted release %s from %s", version, shown)
        return release
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _convert_legacy(
    settings: Settings, url: str, unpacked: Path, out: Path, store: CatalogStore | None
) -> Path:
    """`url` is the masked URL, for messages only."""
    source = find_legacy_release(unpacked)
    if source is None:
        raise BootstrapError(
            f"{url}: no {MANIFEST_FILE} in the archive, and no release in the older layout"
        )
    log.info("bootstrap: %s holds a release in the older layout; converting it", url)
    cards: dict[str, dict[str, Any]] = {}
    try:
        if store is not None:
            ids = list(dict.fromkeys(iter_json_strings(source / ID_MAP_FILE)))
            for start in range(0, len(ids), 5000):
                cards.update(store.get_cards(ids[start : start + 5000]))
    except LegacyImportError as exc:
        raise BootstrapError(f"{url}: {exc}") from None
    except Exception as exc:  # the catalogue is optional here
        log.warning("bootstrap: catalogue records unavailable for the conversion: %s", exc)
    params = PROFILES[settings.recognition_profile]
    load_image = _CatalogueImages(settings, cards) if cards else None
    try:
        convert_legacy_release(source, out, params, cards=cards, load_image=load_image)
    except LegacyImportError as exc:
        raise BootstrapError(f"{url}: older-layout release: {exc}") from None
    finally:
        if load_image is not None:
            load_image.close()
    return out


class _CatalogueImages:
    """card id -> its reference image, fetched from the catalogue record's image URL."""

    def __init__(self, settings: Settings, cards: dict[str, dict[str, Any]]) -> None:
        self.settings = settings
        self.cards = cards
        self.fetcher = ImageFetcher()

    def __call__(self, card_id: str) -> np.ndarray | None:
        record: dict[str, Any] = dict(self.cards.get(card_id) or {})
        uris = record.get("image_uris") or {}
        faces = record.get("card_faces")
        if not uris and isinstance(faces, list) and faces:
            uris = (faces[0] or {}).get("image_uris") or {}
        uri = (uris.get("normal") or uris.get("large")) if isinstance(uris, dict) else None
        if not uri:
            return None
        try:
            return decode_image(self.fetcher.fetch(str(uri)),
                                max_pixels=self.settings.max_image_pixels)
        except Exception as exc:
            log.warning("bootstrap: no reference image for %s: %s", card_id, exc)
            return None

    def close(self) -> None:
        self.fetcher.close()


def make_release_archive(bundle_dir: Path, dest: Path) -> Path:
    """Pack a bundle directory as a release archive (what RESOURCE_BUNDLE_URL serves)."""
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(bundle_dir, arcname=bundle_dir.name)
    os.replace(tmp, dest)
    return dest
