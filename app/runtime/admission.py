"""A bound on recognitions in flight.

SIFT and FAISS are CPU-bound: more concurrent recognitions than cores only make every
request slower. Beyond the bound a request waits briefly for a slot, then gets 503 with
`Retry-After` so the proxy can retry elsewhere instead of queueing without end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.common import metrics


class Overloaded(Exception):
    """No recognition slot became free within the queue timeout."""


class Admission:
    """`on_idle` is what `when_idle` runs once no recognition is in flight (the service
    returns the freed SIFT working memory to the system there: see
    recognition.features.extraction.release_freed_memory). The view calls it after its
    response has been sent: run at the end of the slot, malloc_trim added 5-12 ms to every
    answer (measured)."""

    def __init__(
        self, slots: int, queue_timeout: float, on_idle: Callable[[], None] | None = None
    ) -> None:
        self.slots = slots
        self.queue_timeout = queue_timeout
        self._semaphore = threading.BoundedSemaphore(slots)
        self._on_idle = on_idle
        self._count_lock = threading.Lock()
        self.in_flight = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.queue_timeout):
            metrics.INFER_REFUSED.labels("busy").inc()
            raise Overloaded(f"all {self.slots} recognition slots busy")
        with self._count_lock:
            self.in_flight += 1
            metrics.INFER_IN_FLIGHT.inc()
        try:
            yield
        finally:
            with self._count_lock:
                self.in_flight -= 1
                metrics.INFER_IN_FLIGHT.dec()
            self._semaphore.release()

    def when_idle(self) -> None:
        """Run `on_idle` if no recognition is in flight now (one that starts meanwhile
        only waits for it: malloc_trim is thread-safe)."""
        with self._count_lock:
            idle = self.in_flight == 0
        if idle and self._on_idle is not None:
            self._on_idle()
