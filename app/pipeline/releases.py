"""Releases on disk and the atomic switch of what is served.

    RESOURCES_DIR/
        releases/<version>/   one complete bundle each (never modified once promoted)
        run -> releases/<version>   relative symlink, the served bundle
        staging/              bundles being built; anything here after a crash is garbage

Promotion makes a new symlink beside `run` and renames it over `run`: rename(2) is atomic,
so a reader sees the old release or the new one, never a mix.

A process killed between moving a bundle into releases/ and promoting it would leave a
release that was never served, counted by pruning and offered by rollback. So `store_release`
first writes a marker `staging/<version>.pending`, `promote` removes it, and `clean_staging`
(the next holder of the update lock) deletes a marked release unless `run` points at it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from app.recognition.index.bundle import VERSION_PATTERN

log = logging.getLogger(__name__)

KEEP_RELEASES = 3
PENDING_SUFFIX = ".pending"


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
    """Remove leftovers of builds and promotions that crashed (stale staging directories,
    releases stored but never promoted, temporary `run` links); call only while holding the
    update lock."""
    base = staging_dir(resources)
    if base.exists():
        current = current_release(resources)
        for leftover in sorted(base.iterdir()):
            if leftover.name.endswith(PENDING_SUFFIX) and leftover.is_file():
                release = releases_dir(resources) / leftover.name.removesuffix(PENDING_SUFFIX)
                if release.is_dir() and (current is None or release.resolve() != current):
                    log.warning("removing release %s: stored but never promoted (the process "
                                "was interrupted)", release.name)
                    shutil.rmtree(release, ignore_errors=True)
                leftover.unlink(missing_ok=True)
                continue
            log.warning("removing stale staging directory %s", leftover)
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    for link in resources.glob(".run-*") if resources.exists() else ():
        if link.is_symlink():
            log.warning("removing a temporary run link left by an interrupted promotion: %s",
                        link.name)
            link.unlink(missing_ok=True)


def _pending_marker(resources: Path, version: str) -> Path:
    return staging_dir(resources) / f"{version}{PENDING_SUFFIX}"


def store_release(resources: Path, built: Path, version: str, *, pending: bool = True) -> Path:
    """Move a complete bundle from staging into releases/<version> (same filesystem).

    With `pending` (the default) the release is marked as about to be promoted, so that an
    interruption before `promote` gets it removed by the next `clean_staging`; pass False for
    a release deliberately stored without serving it.
    """
    if not VERSION_PATTERN.fullmatch(version) or ".." in version:
        raise ReleaseError(f"release version {version!r} is not a plain name")
    target = releases_dir(resources) / version
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise ReleaseError(f"release {version} already exists")
    if pending:
        marker = _pending_marker(resources, version)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{os.getpid()}\n")
    os.replace(built, target)
    return target


def current_release(resources: Path) -> Path | None:
    run = resources / "run"
    if not run.is_symlink():
        return run if run.is_dir() else None
    target = run.resolve()
    return target if target.is_dir() else None


def describe(release: Path | None) -> dict[str, object]:
    """Name, build time and counts of a release from its manifest (for status reports)."""
    if release is None:
        return {"name": None, "built_at": None, "counts": None}
    try:
        manifest = json.loads((release / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    return {"name": release.name, "built_at": manifest.get("built_at"),
            "counts": manifest.get("counts")}


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
    # From here `release` is served: what follows must not fail the promotion, or a caller
    # cleaning up after a "failed" promotion would delete the release being served.
    log.info("promoted release %s", release.name)
    try:
        _fsync_dir(resources)
        _pending_marker(resources, release.name).unlink(missing_ok=True)
        prune(resources)
    except OSError as exc:
        log.error("promoted %s, but tidying up after it failed: %s", release.name, exc)


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
