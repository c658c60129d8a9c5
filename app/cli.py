"""`flask --app app <command>`: build-index, refresh, status, rollback.

Commands that change what is served take the same update lock as the nightly refresh, so an
operator's build and the scheduled job never promote over each other.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click
from flask import Flask, current_app

from app.pipeline import releases
from app.runtime.locks import make_update_lock
from app.settings import Settings

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    app.cli.add_command(build_index)
    app.cli.add_command(status)
    app.cli.add_command(rollback)
    app.cli.add_command(refresh)


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


@click.command("build-index")
@click.option(
    "--catalog",
    "catalog_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Scryfall card objects, JSON Lines or JSON array, optionally gzipped; image paths "
    "relative to the file or file: URLs.",
)
@click.option("--profile", default=None, help="Recognition profile (default: RECOGNITION_PROFILE).")
@click.option("--workers", default=2, show_default=True, help="Feature extraction processes.")
@click.option("--no-promote", is_flag=True, help="Build into releases/ without serving it.")
def build_index(catalog_file: Path, profile: str | None, workers: int, no_promote: bool) -> None:
    """Build a descriptor bundle from a local catalogue and make it the served one."""
    from app.catalog.records import iter_records, reference_images
    from app.catalog.store import card_row
    from app.recognition.bundle import build_bundle
    from app.recognition.params import PROFILES

    settings = _settings()
    name = profile or settings.recognition_profile
    if name not in PROFILES:
        raise click.BadParameter(f"unknown profile {name!r}; one of {', '.join(PROFILES)}")
    lock = make_update_lock(settings)
    if not lock.acquire():
        raise click.ClickException(
            f"another refresh or build holds {lock.name}; try again when it has finished"
        )
    try:
        started = time.perf_counter()
        releases.clean_staging(settings.resources_dir)
        version = releases.new_version()
        staging = releases.new_staging(settings.resources_dir, version) / "bundle"
        manifest = build_bundle(
            list(reference_images(catalog_file)),
            staging,
            PROFILES[name],
            progress=True,
            workers=workers,
        )
        release = releases.store_release(
            settings.resources_dir, staging, manifest["version"], pending=not no_promote
        )
        staging.parent.rmdir()
        store = current_app.extensions["catalog"]
        store.migrate()
        count = store.upsert_cards(card_row(card) for card in iter_records(catalog_file))
        click.echo(f"catalogue: {count} card records in {store.backend}")
        if no_promote:
            click.echo(f"built {release} (not promoted)")
            return
        if not lock.still_held():
            raise click.ClickException("lost the update lock during the build; not promoting")
        releases.promote(settings.resources_dir, release)
        elapsed = time.perf_counter() - started
        click.echo(
            f"serving bundle {manifest['version']}: {manifest['counts']} "
            f"({elapsed:.1f} s) from {settings.run_dir}"
        )
    finally:
        lock.release()


@click.command("status")
def status() -> None:
    """Current release, counts and the last refresh runs."""
    settings = _settings()
    current = releases.current_release(settings.resources_dir)
    info: dict[str, object] = {
        "resources_dir": str(settings.resources_dir),
        "current_release": current.name if current else None,
        "releases": [p.name for p in releases.list_releases(settings.resources_dir)],
    }
    if current is not None and (current / "manifest.json").exists():
        manifest = json.loads((current / "manifest.json").read_text())
        info["counts"] = manifest.get("counts")
        info["built_at"] = manifest.get("built_at")
    store = current_app.extensions["catalog"]
    try:
        store.migrate()
        info["catalog"] = {"backend": store.backend, "cards": store.count_cards()}
        info["last_runs"] = store.recent_runs(5)
    except Exception as exc:  # status must work with the database down
        info["catalog"] = {"backend": store.backend, "error": str(exc)}
    click.echo(json.dumps(info, indent=2, default=str))


@click.command("rollback")
def rollback() -> None:
    """Serve the release before the current one."""
    settings = _settings()
    lock = make_update_lock(settings)
    if not lock.acquire():
        raise click.ClickException(f"a refresh holds {lock.name}; try again when it has finished")
    try:
        target = releases.rollback(settings.resources_dir)
    except releases.ReleaseError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        lock.release()
    click.echo(f"now serving {target.name}")


@click.command("refresh")
@click.option("--force", is_flag=True, help="Rebuild even if Scryfall's updated_at has not moved.")
@click.option(
    "--lang",
    "langs",
    multiple=True,
    help="Languages of the printings to index (repeat; 'any' for all) "
    "[default: REFRESH_LANGS, en].",
)
@click.option(
    "--include-layout",
    "include_layouts",
    multiple=True,
    help="Index a layout REFRESH_EXCLUDED_LAYOUTS excludes (art_series, token, emblem, ...); "
    "repeatable.",
)
@click.option(
    "--catalog",
    "catalog_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A local catalogue file instead of Scryfall's bulk data (image paths relative to it "
    "or file: URLs).",
)
@click.option("--min-hit-rate", default=None, type=click.FloatRange(0.0, 1.0),
              help="Validation hit rate below which the new bundle is not promoted "
              "[default: REFRESH_MIN_HIT_RATE, 0.85].")
@click.option("--workers", default=6, show_default=True, help="Image download/extraction threads.")
def refresh(
    force: bool,
    langs: tuple[str, ...],
    include_layouts: tuple[str, ...],
    catalog_file: Path | None,
    min_hit_rate: float | None,
    workers: int,
) -> None:
    """Run the nightly refresh now (same update lock as the scheduled job).

    The printings policy comes from REFRESH_LANGS, REFRESH_EXCLUDED_LAYOUTS and
    REFRESH_MIN_HIT_RATE, as for the scheduled job; the options override it for this run."""
    from app.pipeline.refresh import RefreshOptions, run_refresh

    settings = _settings()
    changes: dict[str, object] = {
        "catalog_file": catalog_file,
        "force": force,
        "image_workers": workers,
        "exclude_layouts": frozenset(settings.refresh_excluded_layouts) - set(include_layouts),
    }
    if langs:
        changes["langs"] = () if "any" in langs else tuple(langs)
    if min_hit_rate is not None:
        changes["min_hit_rate"] = min_hit_rate
    options = RefreshOptions.from_settings(settings, **changes)
    result = run_refresh(settings, current_app.extensions["catalog"], options)
    click.echo(result.summary())
    if result.status == "failed":
        raise SystemExit(1)
