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

import requests

from app.catalog.store import CatalogStore
from app.pipeline import releases
from app.runtime.locks import make_update_lock
from app.settings import Settings

log = logging.getLogger(__name__)


class BootstrapError(RuntimeError):
    """The release archive could not be obtained or verified."""


def bootstrap(settings: Settings, store: CatalogStore) -> str:
    """Make `run/` point at a valid bundle; return a one-line description of what was done."""
    if settings.resource_bundle_url:
        release = install_release_archive(settings, settings.resource_bundle_url)
        return f"installed release {release.name} from {settings.resource_bundle_url}"
    if not settings.refresh_enabled:
        return "no bundle, no RESOURCE_BUNDLE_URL and REFRESH_ENABLED=false: nothing to do"
    from app.pipeline.refresh import run_refresh

    result = run_refresh(settings, store)
    return result.summary()


def _download(url: str, dest: Path, max_bytes: int) -> None:
    from app.pipeline.scryfall import user_agent

    if url.startswith("file:"):
        shutil.copyfile(url.removeprefix("file://").removeprefix("file:"), dest)
        return
    with requests.get(url, stream=True, timeout=(10, 300),
                      headers={"User-Agent": user_agent()}) as response:
        if response.status_code != 200:
            raise BootstrapError(f"GET {url}: HTTP {response.status_code}")
        written = 0
        with dest.open("wb") as out:
            for chunk in response.iter_content(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise BootstrapError(f"{url} is larger than {max_bytes} bytes")
                out.write(chunk)


def install_release_archive(
    settings: Settings, url: str, max_bytes: int = 64 * 1024**3
) -> Path:
    """Download, unpack, verify and promote a release archive; return the release path."""
    from app.recognition.bundle import MANIFEST_FILE, Bundle, BundleError
    from app.recognition.params import PROFILES

    resources = settings.resources_dir
    lock = make_update_lock(settings)
    if not lock.acquire():
        raise BootstrapError(f"another process holds {lock.name}; not installing")
    releases.clean_staging(resources)  # leftovers of an interrupted build or install
    staging = releases.new_staging(resources, releases.new_version())
    try:
        archive = staging / "release.tar.gz"
        log.info("bootstrap: downloading release archive %s", url)
        _download(url, archive, max_bytes)
        unpacked = staging / "unpacked"
        unpacked.mkdir()
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BootstrapError(f"{url}: not a readable tar archive ({exc})") from None
        archive.unlink()
        manifests = sorted(unpacked.rglob(MANIFEST_FILE), key=lambda p: len(p.parts))
        if not manifests:
            raise BootstrapError(f"{url}: no {MANIFEST_FILE} in the archive")
        bundle_dir = manifests[0].parent
        try:
            bundle = Bundle.open(bundle_dir, expected_params=PROFILES[settings.recognition_profile])
        except BundleError as exc:
            raise BootstrapError(f"{url}: {exc}") from None
        version = bundle.version
        bundle.close()
        if (releases.releases_dir(resources) / version).exists():
            release = releases.releases_dir(resources) / version
        else:
            release = releases.store_release(resources, bundle_dir, version)
        if not lock.still_held():
            raise BootstrapError("lost the update lock; not promoting")
        releases.promote(resources, release)
        log.info("bootstrap: promoted release %s from %s", version, url)
        return release
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def make_release_archive(bundle_dir: Path, dest: Path) -> Path:
    """Pack a bundle directory as a release archive (what RESOURCE_BUNDLE_URL serves)."""
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(bundle_dir, arcname=bundle_dir.name)
    os.replace(tmp, dest)
    return dest
