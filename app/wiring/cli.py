"""`flask --app app <command>`: build-index, refresh, status, rollback.

Commands that change what is served take the same update lock as the nightly refresh, so an
operator's build and the scheduled job never promote over each other.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.common.settings import Settings, SettingsError, parse_set_codes
from app.pipeline import releases
from app.pipeline.locks import make_update_lock
from app.pipeline.refresh import run_refresh
from app.pipeline.refresh_options import RefreshOptions
from app.pipeline.running import describe_running
from app.recognition.params import PROFILES

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
@with_appcontext
@click.option(
    "--catalog",
    "catalog_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Scryfall card objects, JSON Lines or JSON array, optionally gzipped; image paths "
    "relative to the file or file: URLs.",
)
@click.option("--profile", default=None, help="Recognition profile (default: RECOGNITION_PROFILE).")
@click.option("--min-hit-rate", default=None, type=click.FloatRange(0.0, 1.0),
              help="Validation hit rate below which the bundle is not promoted "
              "[default: REFRESH_MIN_HIT_RATE].")
@click.option("--workers", default=6, show_default=True, help="Image reading/extraction threads.")
@click.option("--keep-cache", is_flag=True,
              help="Keep cached features of printings not in this catalogue (several "
              "catalogues built from one feature cache, as the scale benchmark does).")
@click.option("--full", is_flag=True,
              help="Build the index anew even when the served release could be extended.")
def build_index(
    catalog_file: Path, profile: str | None, min_hit_rate: float | None, workers: int,
    keep_cache: bool, full: bool,
) -> None:
    """Build a descriptor bundle from a local catalogue and make it the served one.

    The same pipeline as the nightly refresh (lock, card records, feature cache, validation,
    atomic promotion), fed from a file instead of Scryfall's bulk data.
    """
    settings = _settings()
    name = profile or settings.recognition_profile
    if name not in PROFILES:
        raise click.BadParameter(f"unknown profile {name!r}; one of {', '.join(PROFILES)}")
    changes: dict[str, object] = {
        "catalog_file": catalog_file,
        "force": True,
        "image_workers": workers,
        "build_workers": min(workers, os.cpu_count() or 1),
        "prune_cache": not keep_cache,
        "incremental": not full,
    }
    if min_hit_rate is not None:
        changes["min_hit_rate"] = min_hit_rate
    options = RefreshOptions.from_settings(settings, **changes)
    result = run_refresh(
        settings, current_app.extensions["catalog"], options, params=PROFILES[name],
        reason="flask build-index",
    )
    click.echo(result.summary())
    if result.status != "succeeded":
        raise SystemExit(1)


@click.command("status")
@with_appcontext
def status() -> None:
    """Current release, counts, the refresh running now and the last refresh runs."""
    settings = _settings()
    current = releases.describe(releases.current_release(settings.resources_dir))
    info: dict[str, object] = {
        "resources_dir": str(settings.resources_dir),
        "current_release": current["name"],
        "releases": [p.name for p in releases.list_releases(settings.resources_dir)],
    }
    if current["name"] is not None:
        info["counts"] = current["counts"]
        info["built_at"] = current["built_at"]
    name = current["name"]
    info["refresh"] = describe_running(settings.resources_dir,
                                       str(name) if name is not None else None)
    store = current_app.extensions["catalog"]
    try:
        store.migrate()
        info["catalog"] = {"backend": store.backend, "cards": store.count_cards()}
        info["last_runs"] = store.recent_runs(5)
    except Exception as exc:  # status must work with the database down
        info["catalog"] = {"backend": store.backend, "error": str(exc)}
    click.echo(json.dumps(info, indent=2, default=str))


@click.command("rollback")
@with_appcontext
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
@with_appcontext
@click.option("--force", is_flag=True, help="Rebuild even if Scryfall's updated_at has not moved.")
@click.option(
    "--lang",
    "langs",
    multiple=True,
    help="Languages of the printings to index (repeat; 'any' for all) "
    "[default: REFRESH_LANGS, en].",
)
@click.option(
    "--set",
    "set_codes",
    multiple=True,
    help="Index only the printings of this set (repeat; 'all' for every set) "
    "[default: REFRESH_SETS, every set].",
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
    set_codes: tuple[str, ...],
    include_layouts: tuple[str, ...],
    catalog_file: Path | None,
    min_hit_rate: float | None,
    workers: int,
) -> None:
    """Run the nightly refresh now (same update lock as the scheduled job).

    The printings policy comes from REFRESH_LANGS, REFRESH_SETS, REFRESH_EXCLUDED_LAYOUTS and
    REFRESH_MIN_HIT_RATE, as for the scheduled job; the options override it for this run."""
    settings = _settings()
    changes: dict[str, object] = {
        "catalog_file": catalog_file,
        "force": force,
        "image_workers": workers,
        "exclude_layouts": frozenset(settings.refresh_excluded_layouts) - set(include_layouts),
    }
    if langs:
        changes["langs"] = () if "any" in langs else tuple(langs)
    if set_codes:
        try:
            parsed = parse_set_codes("--set", ",".join(set_codes))
        except SettingsError as exc:
            raise click.BadParameter(str(exc)) from None
        changes["sets"] = () if "all" in parsed else parsed
    if min_hit_rate is not None:
        changes["min_hit_rate"] = min_hit_rate
    options = RefreshOptions.from_settings(settings, **changes)
    result = run_refresh(settings, current_app.extensions["catalog"], options,
                         reason="flask refresh")
    click.echo(result.summary())
    if result.status == "failed":
        raise SystemExit(1)
