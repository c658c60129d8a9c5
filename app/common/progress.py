"""Progress of long phases (extraction, indexing, downloads): a tqdm bar when stderr is a
terminal, otherwise one log line every few seconds - a log file or `docker logs` must not
fill with carriage-return bars. Each line is also a structured event (`event`, `done`,
`total`, `unit`, `elapsed_s`, `rate`, `eta_s` fields): with LOG_FORMAT=json, which turns
bars off even on a terminal, a collector reads them as JSON keys. A leaf module: every layer
may use it."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger("app.common.progress")
_bars_allowed = True


def use_bars(allowed: bool) -> None:
    """False: log events even on a terminal (LOG_FORMAT=json; see logging_setup)."""
    global _bars_allowed
    _bars_allowed = allowed


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
        if enabled and is_tty and _bars_allowed:
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
        remaining = (
            round(max(0.0, (self.total - self.done) / rate), 1)
            if self.total and rate > 0 else None
        )
        eta = f", eta {remaining:.0f} s" if remaining is not None else ""
        log.info("%s %s: %d%s %s in %.0f s (%.1f %s/s%s)", self.desc, event, self.done, of,
                 self.unit, elapsed, rate, self.unit, eta,
                 extra={"event": f"{self.desc}.{event}", "done": self.done, "total": self.total,
                        "unit": self.unit, "elapsed_s": round(elapsed, 1),
                        "rate": round(rate, 2), "eta_s": remaining})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and time.monotonic() - self._started >= self.interval:
            self._log("done")
