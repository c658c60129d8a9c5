"""Scryfall API client: bulk-data discovery, verified streaming download, sets.

Scryfall asks API clients for a descriptive `User-Agent`, an `Accept` header, and a request
rate well under 10 per second; files on its file hosts (bulk data, images) are not rate
limited the same way, so only API calls go through the rate limiter here.

Bulk files come in two shapes (see the README of the pipeline):
- `jsonl_download_uri`: gzip-compressed JSON Lines served as `application/gzip` WITHOUT
  `Content-Encoding` (Scryfall's format since mid-2026) - we keep the gzip bytes as they are;
- `download_uri`: one JSON array served with HTTP `Content-Encoding: gzip` (the earlier
  format) - we also keep the still-compressed bytes (`decode_content=False`).

Either way the file on disk is verified before anything is parsed from it: a gzip stream must
reach its end-of-stream marker (a truncated download fails the run instead of ingesting half
a catalogue) and the byte count must match `Content-Length`.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from app.common.version import __version__

log = logging.getLogger(__name__)

REPO_URL = "https://github.com/mtgscan/descriptor-infer-service"  # placeholder
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1 << 20


def user_agent() -> str:
    return f"MTGScan-descriptor-infer-service/{__version__} (+{REPO_URL})"


class ScryfallError(RuntimeError):
    """The API or a download failed for good (after retries), or answered nonsense."""


@dataclass(frozen=True)
class BulkItem:
    """One `/bulk-data` entry, reduced to what the pipeline needs."""

    type: str
    updated_at: str
    download_uri: str
    format: str  # "jsonl" (gzip JSON Lines) or "json" (one JSON array, HTTP gzip)
    size: int | None = None


def retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), None if absent/bad."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _RateLimiter:
    """At most one call per `interval` seconds, across threads."""

    def __init__(self, interval: float, sleep: Callable[[float], None]) -> None:
        self.interval = interval
        self._sleep = sleep
        self._next = 0.0
        self._guard = threading.Lock()

    def wait(self) -> None:
        with self._guard:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            self._sleep(delay)


class ScryfallClient:
    """A small, polite client. `backoff`, `max_wait` and `sleep` exist so tests run fast."""

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        max_tries: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        api_interval: float = 0.15,  # ~6.7 API calls/s at most: well under Scryfall's 10/s
        timeout: tuple[float, float] = (10.0, 120.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.session = session or requests.Session()
        self.session.headers.update(
            {"User-Agent": user_agent(), "Accept": "application/json;q=0.9,*/*;q=0.8"}
        )
        self.max_tries = max(1, max_tries)
        self.backoff = backoff
        self.max_wait = max_wait
        self.timeout = timeout
        self._sleep = sleep
        self._limiter = _RateLimiter(api_interval, sleep)
        self.api_calls = 0

    def close(self) -> None:
        self.session.close()

    # -- plumbing ----------------------------------------------------------------------
    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return urljoin(self.base_url, path_or_url.lstrip("/"))

    def request(self, url: str, *, api: bool = True, stream: bool = False) -> requests.Response:
        """GET with retries on 429/5xx/connection errors, honouring Retry-After (bounded)."""
        last: str = ""
        for attempt in range(1, self.max_tries + 1):
            if api:
                self._limiter.wait()
                self.api_calls += 1
            wait = min(self.max_wait, self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.get(url, timeout=self.timeout, stream=stream)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                body = response.text[:300] if not stream else ""
                response.close()
                if response.status_code not in RETRY_STATUS:
                    raise ScryfallError(f"GET {url}: HTTP {response.status_code} {body}".strip())
                last = f"HTTP {response.status_code}"
                hinted = retry_after(response)
                if hinted is not None:
                    wait = min(self.max_wait, max(wait, hinted))
            if attempt < self.max_tries:
                log.warning(
                    "GET %s failed (%s); retry %d/%d in %.2f s",
                    url, last, attempt, self.max_tries - 1, wait,
                )
                self._sleep(wait)
        raise ScryfallError(f"GET {url} failed after {self.max_tries} tries: {last}")

    def get_json(self, path_or_url: str) -> Any:
        response = self.request(self.url(path_or_url))
        try:
            return response.json()
        except ValueError as exc:
            raise ScryfallError(f"GET {response.url}: not JSON ({exc})") from None

    # -- endpoints ---------------------------------------------------------------------
    def bulk_item(self, bulk_type: str) -> BulkItem:
        """The `/bulk-data` entry of `bulk_type`, preferring the gzip JSON Lines file."""
        listing = self.get_json("bulk-data")
        items = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(items, list):
            raise ScryfallError("GET /bulk-data: no `data` list in the answer")
        item = next((i for i in items if isinstance(i, dict) and i.get("type") == bulk_type), None)
        if item is None:
            known = ", ".join(sorted(str(i.get("type")) for i in items if isinstance(i, dict)))
            raise ScryfallError(f"bulk data type {bulk_type!r} not offered (offered: {known})")
        size = item.get("compressed_size") or item.get("size")
        if item.get("jsonl_download_uri"):
            uri, fmt = item["jsonl_download_uri"], "jsonl"
        elif item.get("download_uri"):
            uri, fmt = item["download_uri"], "json"
        else:
            raise ScryfallError(
                f"bulk data {bulk_type!r} has neither jsonl_download_uri nor download_uri"
            )
        return BulkItem(
            type=bulk_type,
            updated_at=str(item.get("updated_at") or ""),
            download_uri=uri,
            format=fmt,
            size=int(size) if isinstance(size, int) else None,
        )

    def iter_sets(self) -> Iterator[dict[str, Any]]:
        """Every set, following `has_more` / `next_page`."""
        url: str | None = self.url("sets")
        seen: set[str] = set()
        while url:
            if url in seen:
                raise ScryfallError(f"GET /sets: paging loops back to {url}")
            seen.add(url)
            page = self.get_json(url)
            yield from page.get("data") or []
            url = page.get("next_page") if page.get("has_more") else None

    def download_bulk(
        self, item: BulkItem, dest_dir: Path, progress: Callable[[int], None] | None = None
    ) -> Path:
        """Stream the bulk file to `dest_dir` (temp name, verified, renamed); return its path.

        The file keeps the bytes as sent, without undoing a gzip Content-Encoding, so that
        the gzip end-of-stream check sees truncation in both formats.
        """
        dest_dir.mkdir(parents=True, exist_ok=True)
        suffix = ".jsonl.gz" if item.format == "jsonl" else ".json.gz"
        final = dest_dir / f"{item.type}{suffix}"
        tmp = dest_dir / f".{item.type}{suffix}.{os.getpid()}.part"
        for attempt in range(1, self.max_tries + 1):
            try:
                self._download_once(item.download_uri, tmp, progress)
                verify_download(tmp)
                break
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                tmp.unlink(missing_ok=True)
                if attempt == self.max_tries:
                    raise ScryfallError(f"download of {item.download_uri} failed: {exc}") from None
                wait = min(self.max_wait, self.backoff * 2 ** (attempt - 1))
                log.warning("download interrupted (%s); retry in %.2f s", exc, wait)
                self._sleep(wait)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        os.replace(tmp, final)
        return final

    def _download_once(
        self, url: str, tmp: Path, progress: Callable[[int], None] | None
    ) -> None:
        response = self.request(url, api=False, stream=True)
        with response:
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            keep_raw = encoding in ("", "identity", "gzip", "x-gzip")
            expected = response.headers.get("Content-Length")
            written = 0
            with tmp.open("wb") as out:
                chunks = (
                    response.raw.stream(_CHUNK, decode_content=False)
                    if keep_raw
                    else response.iter_content(_CHUNK)
                )
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if keep_raw and expected is not None and expected.isdigit() and int(expected) != written:
            raise ScryfallError(
                f"download of {url} is incomplete: {written} of {expected} bytes"
            )
        log.info("downloaded %s: %d bytes", url, written)


def verify_download(path: Path) -> None:
    """Raise ScryfallError unless `path` is complete: a gzip file must decompress to its
    end-of-stream marker; a plain file must not be empty. (JSON is parsed to the end later,
    before anything is written to the catalogue.)"""
    with path.open("rb") as fh:
        magic = fh.read(2)
    if not magic:
        raise ScryfallError(f"{path.name}: the download is empty")
    if magic != b"\x1f\x8b":
        return
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(_CHUNK):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise ScryfallError(f"{path.name}: the gzip download is truncated or corrupt ({exc})") \
            from None
