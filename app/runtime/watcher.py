"""Hot reload: notice when `RESOURCES_DIR/run` is switched and serve the new bundle.

Promotion renames a new symlink over `run`, which inotify reports as a *move* into `run`
(not a modification), so every event kind that names `run` counts. Events come in bursts and
may be missed altogether on volumes written by another kernel (NFS, some Docker Desktop
mounts): events only *hasten* a check, a slow periodic check is the safety net, and
WATCH_POLLING=true swaps inotify for watchdog's polling observer.

The check itself is cheap: resolve `run`, and if it names another release than the one
served, hand it to the ModelHolder, which verifies it fully before swapping.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from app.runtime.model import ModelHolder

log = logging.getLogger(__name__)


class _RunEvents(FileSystemEventHandler):
    def __init__(self, kick: threading.Event) -> None:
        self._kick = kick

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(Path(str(p)).name == "run" for p in paths if p):
            self._kick.set()


class BundleWatcher:
    """Watches RESOURCES_DIR and reloads the holder when `run` points somewhere new."""

    def __init__(
        self,
        holder: ModelHolder[Any],
        resources_dir: Path,
        *,
        polling: bool = False,
        debounce_seconds: float = 0.3,
        safety_interval: float = 10.0,
    ) -> None:
        self.holder = holder
        self.resources_dir = resources_dir
        self.polling = polling
        self.debounce_seconds = debounce_seconds
        self.safety_interval = safety_interval
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self._refused: tuple[Path, float] | None = None

    def start(self) -> None:
        self.resources_dir.mkdir(parents=True, exist_ok=True)
        observer = PollingObserver(timeout=1.0) if self.polling else Observer()
        observer.schedule(_RunEvents(self._kick), str(self.resources_dir), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._loop, name="bundle-watcher", daemon=True)
        self._thread.start()
        log.info(
            "watching %s for bundle promotions (%s)",
            self.resources_dir,
            "polling" if self.polling else "inotify",
        )

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            kicked = self._kick.wait(timeout=self.safety_interval)
            if self._stop.is_set():
                return
            if kicked:
                # Let the burst settle (symlink rename, pruning of old releases).
                self._stop.wait(self.debounce_seconds)
                self._kick.clear()
            self.check()

    def check(self) -> bool:
        """Load the release `run` names if it is not the one served; True if it swapped."""
        run = self.resources_dir / "run"
        try:
            target = run.resolve(strict=True)
            manifest = target / "manifest.json"
            stamp = manifest.stat().st_mtime
        except OSError:
            return False  # no run yet, or switched again under us: the next event tells
        if self.holder.current_path == target:
            return False
        if self._refused == (target, stamp):
            return False  # already refused this exact release; don't retry on every tick
        try:
            self.holder.load(run)
        except Exception as exc:
            self._refused = (target, stamp)
            log.error("promoted release %s refused, still serving the old one: %s", target, exc)
            return False
        self._refused = None
        return True
