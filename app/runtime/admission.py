"""A bound on recognitions in flight.

SIFT and FAISS are CPU-bound: more concurrent recognitions than cores only make every
request slower. Beyond the bound a request waits briefly for a slot, then gets 503 with
`Retry-After` so the proxy can retry elsewhere instead of queueing without end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Overloaded(Exception):
    """No recognition slot became free within the queue timeout."""


class Admission:
    def __init__(self, slots: int, queue_timeout: float) -> None:
        self.slots = slots
        self.queue_timeout = queue_timeout
        self._semaphore = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=self.queue_timeout):
            raise Overloaded(f"all {self.slots} recognition slots busy")
        try:
            yield
        finally:
            self._semaphore.release()
