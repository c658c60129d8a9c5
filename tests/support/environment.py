"""The environment a test's app runs in: where the repository is, the settings variables a
developer's shell must not pass on, an isolated configuration, the threads a started app runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path

from app.common.settings import Settings

REPOSITORY = Path(__file__).resolve().parents[2]


class LookupRecorder(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_variables() -> frozenset[str]:
    """Every variable `Settings.from_env` reads, current and old names: found by letting it
    read an empty environment that records the lookups, so a variable or old name added to
    app/common/settings.py is scrubbed without anyone updating a list here."""
    recorder = LookupRecorder()
    Settings.from_env(recorder)
    return frozenset(recorder.names)


def scrub_settings_environment(environ: MutableMapping[str, str]) -> list[str]:
    """Remove from `environ` every variable the settings read; the names removed, sorted."""
    removed = sorted(settings_variables() & set(environ))
    for name in removed:
        del environ[name]
    return removed


def isolated_config(base: Path) -> dict[str, str]:
    """Settings for an isolated app: its own resources and data dirs, no refresh schedule, no
    bootstrap downloads or builds (an app that `start`s only loads what a test promoted)."""
    return {
        "FLASK_ENV": "testing",
        "RESOURCES_DIR": str(base / "resources"),
        "SCRYFALL_DATA_DIR": str(base / "data"),
        "BOOTSTRAP_MISSING_BUNDLE": "false",
        "REFRESH_ENABLED": "false",
        "LOG_LEVEL": "warning",
        "SCRYFALL_API_URL": "http://127.0.0.1:9",  # nothing listens: never the real one
    }


# Threads the serving process's background work runs: what `start` begins, `shutdown` ends.
BACKGROUND_THREAD_NAMES = frozenset({"prepare-resources", "bundle-watcher", "APScheduler"})


def background_threads() -> set[threading.Thread]:
    """Live threads of a started app: loading, watcher, schedule, watchdog's observers."""
    from watchdog.utils import BaseThread

    return {
        thread
        for thread in threading.enumerate()
        if thread.name in BACKGROUND_THREAD_NAMES or isinstance(thread, BaseThread)
    }
