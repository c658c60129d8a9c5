"""Progress of long phases (extraction, indexing, downloads): a tqdm bar when stderr is a
terminal, otherwise one log line every few seconds - a log file or `docker logs` must not
fill with carriage-return bars. A leaf module: every layer may use it."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger("app.progress")


class Progress:
    """`with Progress("extracting", total=n, unit="img") as bar: bar.update(1)`."""

    def __init__(
        self,
        desc: str,
        *,
        total: int | None = None,
        unit: str = "it",
        enabled: bool = True,
        interval: float = 5.0,
        tty: bool | None = None,
    ) -> None:
        self.desc = desc
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.interval = interval
        self.done = 0
        self._started = time.monotonic()
        self._last = self._started
        self._bar: Any = None
        is_tty = sys.stderr.isatty() if tty is None else tty
        if enabled and is_tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False,
                             unit_scale=unit == "B")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._log("progress")

    def _log(self, event: str) -> None:
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", eta {max(0.0, (self.total - self.done) / rate):.0f} s"
        log.info("%s %s: %d%s %s in %.0f s (%.1f %s/s%s)", self.desc, event, self.done, of,
                 self.unit, elapsed, rate, self.unit, eta,
                 extra={"event": f"{self.desc}.{event}", "done": self.done, "total": self.total})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and time.monotonic() - self._started >= self.interval:
            self._log("done")
