"""The one object that owns the loaded descriptor bundle.

Loading a bundle takes seconds (checksums, FAISS index mapping); swapping it must not make
requests wait that long. So a new bundle is loaded and verified *outside* `model_lock`, and
the lock is held only to read or replace the reference. Each request leases the bundle it
started with and finishes on it; a replaced bundle is closed when its last lease ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from app.common import metrics

log = logging.getLogger(__name__)


class ServableBundle(Protocol):
    """What the holder needs of a bundle; `app.recognition.index.bundle.Bundle` provides it."""

    version: str

    def close(self) -> None: ...


B = TypeVar("B", bound=ServableBundle)
"""The bundle type a holder's loader makes: what requests lease from it (`Bundle` in the
service, small stand-ins in tests)."""


@dataclass
class _Slot(Generic[B]):
    bundle: B
    path: Path
    loaded_at: datetime
    leases: int = 0
    retired: bool = False


@dataclass
class ModelState:
    """What /readyz and / report about the model."""

    status: str = "starting"  # starting | preparing | loaded | failed | unloaded
    detail: str = "the service is starting"
    version: str | None = None
    path: str | None = None
    loaded_at: str | None = None
    last_swap_pause_ms: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class ModelHolder(Generic[B]):
    """Owns loading, swapping and unloading of the served bundle."""

    def __init__(self, loader: Callable[[Path], B]) -> None:
        self._loader = loader
        self.model_lock = threading.Lock()
        self._load_lock = threading.Lock()  # one load at a time; never held by requests
        self._slot: _Slot[B] | None = None
        self._state = ModelState()

    # -- state -------------------------------------------------------------------------
    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def loaded(self) -> bool:
        return self._slot is not None

    @property
    def current_path(self) -> Path | None:
        slot = self._slot
        return slot.path if slot else None

    def set_status(self, status: str, detail: str) -> None:
        """Record progress of work that is not a load (preparing, failed download...)."""
        if self._slot is not None and status != "loaded":
            # A bundle is serving: report the background problem without claiming unready.
            self._state.detail = f"serving {self._slot.bundle.version}; {detail}"
            return
        self._state.status = status
        self._state.detail = detail

    # -- requests ----------------------------------------------------------------------
    @contextmanager
    def lease(self) -> Iterator[B | None]:
        """Yield the bundle current at entry (None when nothing is loaded).

        The bundle stays open until the `with` block ends even if a swap happens meanwhile.
        """
        with self.model_lock:
            slot = self._slot
            if slot is not None:
                slot.leases += 1
        if slot is None:
            yield None
            return
        try:
            yield slot.bundle
        finally:
            close = False
            with self.model_lock:
                slot.leases -= 1
                close = slot.retired and slot.leases == 0
            if close:
                self._close(slot)

    # -- loading -----------------------------------------------------------------------
    def load(self, path: Path) -> B:
        """Load and verify the bundle at `path`, then make it the served one.

        On failure the previous bundle keeps serving and the exception propagates.
        """
        resolved = path.resolve()
        with self._load_lock:
            current = self._slot
            if current is not None and current.path == resolved:
                return current.bundle  # double-check: someone loaded it while we waited
            started = time.perf_counter()
            try:
                bundle = self._loader(resolved)
            except Exception as exc:
                log.error("refused bundle at %s: %s", resolved, exc)
                if self._slot is None:
                    self._state.status = "failed"
                self._state.detail = f"bundle at {resolved} refused: {exc}"
                self._remember("refused", str(resolved), None, str(exc))
                metrics.BUNDLE_REFUSED.inc()
                raise
            load_ms = (time.perf_counter() - started) * 1000
            new_slot = _Slot(bundle=bundle, path=resolved, loaded_at=datetime.now(UTC))
            pause_ms = self._swap(new_slot)
            previous = current.bundle.version if current is not None else None
            manifest: dict[str, Any] = getattr(bundle, "manifest", None) or {}
            metrics.record_bundle(previous, bundle.version, manifest.get("counts") or {},
                                  new_slot.loaded_at.timestamp(), pause_ms)
            self._state = ModelState(
                status="loaded",
                detail=f"serving bundle {bundle.version}",
                version=bundle.version,
                path=str(resolved),
                loaded_at=new_slot.loaded_at.isoformat(timespec="seconds"),
                last_swap_pause_ms=round(pause_ms, 4),
                history=self._state.history,
            )
            self._remember("loaded", str(resolved), bundle.version, None)
            log.info(
                "serving bundle %s from %s (loaded in %.0f ms, swap pause %.3f ms)",
                bundle.version,
                resolved,
                load_ms,
                pause_ms,
            )
            return bundle

    def unload(self) -> None:
        """Stop serving; the bundle closes once in-flight requests finish."""
        with self._load_lock:
            if self._slot is not None:
                metrics.BUNDLE_INFO.labels(self._slot.bundle.version).set(0)
            self._swap(None)
            self._state.status = "unloaded"
            self._state.detail = "no bundle loaded"
            self._state.version = None

    def _swap(self, new_slot: _Slot[B] | None) -> float:
        """Replace the served slot under `model_lock`; return how long requests waited (ms).

        The old bundle is closed now if idle, else by the last request still leasing it.
        """
        started = time.perf_counter()
        with self.model_lock:
            old = self._slot
            self._slot = new_slot
            close_old = False
            if old is not None:
                old.retired = True
                close_old = old.leases == 0
        pause_ms = (time.perf_counter() - started) * 1000
        if old is not None and close_old:
            self._close(old)
        return pause_ms

    def _remember(self, event: str, path: str, version: str | None, error: str | None) -> None:
        entry = {
            "event": event,
            "path": path,
            "version": version,
            "error": error,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._state.history = (self._state.history + [entry])[-10:]

    @staticmethod
    def _close(slot: _Slot[Any]) -> None:
        try:
            slot.bundle.close()
        except Exception:  # closing must never take a request down with it
            log.exception("closing bundle %s failed", slot.bundle.version)


def get_holder() -> ModelHolder[Any]:
    """The serving app's model holder (in a request or app context); the app's holder makes
    `app.recognition.index.bundle.Bundle`s, which this layer does not import."""
    from flask import current_app

    holder: ModelHolder[Any] = current_app.extensions["model"]
    return holder
