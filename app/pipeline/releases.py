"""Releases on disk and the atomic switch of what is served.

    RESOURCES_DIR/
        releases/<version>/   one complete bundle each (never modified once promoted)
        run -> releases/<version>   relative symlink, the served bundle
        staging/              bundles being built; anything here after a crash is garbage

Promotion makes a new symlink beside `run` and renames it over `run`: rename(2) is atomic,
so a reader sees the old release or the new one, never a mix.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

KEEP_RELEASES = 3


class ReleaseError(RuntimeError):
    """A promotion or rollback that cannot be done."""


def releases_dir(resources: Path) -> Path:
    return resources / "releases"


def staging_dir(resources: Path) -> Path:
    return resources / "staging"


def new_version() -> str:
    """Sortable, unique enough for one host: UTC time to the microsecond."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def new_staging(resources: Path, version: str) -> Path:
    """A fresh, empty directory to build a bundle in; moved into releases/ when complete."""
    base = staging_dir(resources)
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{version}-", dir=base))


def clean_staging(resources: Path) -> None:
    """Remove leftovers of builds that crashed; call only while holding the update lock."""
    base = staging_dir(resources)
    if base.exists():
        for leftover in base.iterdir():
            log.warning("removing stale staging directory %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def store_release(resources: Path, built: Path, version: str) -> Path:
    """Move a complete bundle from staging into releases/<version> (same filesystem)."""
    target = releases_dir(resources) / version
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise ReleaseError(f"release {version} already exists")
    os.replace(built, target)
    return target


def current_release(resources: Path) -> Path | None:
    run = resources / "run"
    if not run.is_symlink():
        return run if run.is_dir() else None
    target = run.resolve()
    return target if target.is_dir() else None


def list_releases(resources: Path) -> list[Path]:
    base = releases_dir(resources)
    if not base.exists():
        return []
    return sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.name)


def promote(resources: Path, release: Path) -> None:
    """Point `run` at `release` with one atomic rename, then prune old releases."""
    release = release.resolve()
    if release.parent != releases_dir(resources).resolve():
        raise ReleaseError(f"{release} is not under {releases_dir(resources)}")
    run = resources / "run"
    if run.exists() and not run.is_symlink():
        raise ReleaseError(f"{run} is a real directory; move it into releases/ first")
    link = resources / f".run-{os.getpid()}-{release.name}"
    if link.is_symlink():
        link.unlink()
    os.symlink(os.path.relpath(release, resources), link)
    os.replace(link, run)
    _fsync_dir(resources)
    log.info("promoted release %s", release.name)
    prune(resources)


def rollback(resources: Path) -> Path:
    """Serve the release before the current one."""
    current = current_release(resources)
    releases = list_releases(resources)
    older = [r for r in releases if current is None or r.name < current.name]
    if not older:
        raise ReleaseError("no older release to roll back to")
    promote(resources, older[-1])
    return older[-1]


def prune(resources: Path, keep: int = KEEP_RELEASES) -> None:
    """Keep the newest `keep` releases and always the served one."""
    current = current_release(resources)
    releases = list_releases(resources)
    for old in releases[:-keep]:
        if current is not None and old.resolve() == current:
            continue
        log.info("pruning old release %s", old.name)
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
