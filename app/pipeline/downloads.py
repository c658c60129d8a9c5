"""Reference images: fetched concurrently (bounded), retried, size-capped, decoded safely.

Also the feature cache that makes refreshes incremental: the features of one card face are
stored under a key made of its image URL (Scryfall's URLs carry a `?<timestamp>` version
stamp that changes when the image does) and the feature parameters, so an unchanged printing
is never downloaded nor extracted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

import numpy as np
import requests

from app.pipeline.scryfall import RETRY_STATUS, retry_after, user_agent
from app.recognition.features.extraction import Features
from app.recognition.params import BUILD_FIELDS, FeatureParams

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class ImageFetchError(RuntimeError):
    """An image that could not be fetched (after retries) or is not acceptable."""


class MissingImage(ImageFetchError):
    """The image does not exist (HTTP 404/410, or no such local file)."""


class ImageFetcher:
    """Fetch image bytes from http(s) URLs, `file:` URLs or local paths."""

    def __init__(
        self,
        *,
        session: requests.Session | None = None,
        max_bytes: int = 15 * 1024 * 1024,
        tries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        timeout: tuple[float, float] = (10.0, 60.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session or requests.Session()
        self.session.headers.update(
            {"User-Agent": user_agent(), "Accept": "image/*;q=0.9,*/*;q=0.8"}
        )
        self.max_bytes = max_bytes
        self.tries = max(1, tries)
        self.backoff = backoff
        self.max_wait = max_wait
        self.timeout = timeout
        self._sleep = sleep

    def close(self) -> None:
        self.session.close()

    def fetch(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        if parsed.scheme in ("http", "https"):
            return self._fetch_http(uri)
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise MissingImage(f"{uri}: no such file") from None
        if size > self.max_bytes:
            raise ImageFetchError(f"{uri}: {size} bytes, over the {self.max_bytes} byte cap")
        return path.read_bytes()

    def _fetch_http(self, url: str) -> bytes:
        last = ""
        for attempt in range(1, self.tries + 1):
            wait_s = min(self.max_wait, self.backoff * 2 ** (attempt - 1))
            try:
                with self.session.get(url, timeout=self.timeout, stream=True) as response:
                    status = response.status_code
                    if status in (404, 410):
                        raise MissingImage(f"{url}: HTTP {status}")
                    if status < 400:
                        declared = response.headers.get("Content-Length", "")
                        if declared.isdigit() and int(declared) > self.max_bytes:
                            raise ImageFetchError(
                                f"{url}: {declared} bytes, over the {self.max_bytes} byte cap"
                            )
                        body = bytearray()
                        for chunk in response.iter_content(1 << 16):
                            body.extend(chunk)
                            if len(body) > self.max_bytes:
                                raise ImageFetchError(
                                    f"{url}: over the {self.max_bytes} byte cap"
                                )
                        return bytes(body)
                    if status not in RETRY_STATUS:
                        raise ImageFetchError(f"{url}: HTTP {status}")
                    last = f"HTTP {status}"
                    hinted = retry_after(response)
                    if hinted is not None:
                        wait_s = min(self.max_wait, max(wait_s, hinted))
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.tries:
                self._sleep(wait_s)
        raise ImageFetchError(f"{url}: failed after {self.tries} tries ({last})")


def bounded_map(
    func: Callable[[T], R], items: Iterable[T], workers: int
) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Run `func` over `items` on at most `workers` threads, with at most 2*workers queued;
    yield (item, result, error) in completion order. Memory stays bounded."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="images") as pool:
        pending: dict[Future[R], T] = {}

        def fill() -> None:
            while len(pending) < 2 * workers:
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                pending[pool.submit(func, item)] = item

        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                error = future.exception()
                yield item, (None if error else future.result()), error
            fill()


def _or_empty(values: np.ndarray | None, count: int) -> np.ndarray:
    """Keypoint attribute as stored: zeros when a source (older import) has none."""
    return np.zeros(count, np.float32) if values is None else values.astype(np.float32)


# -- feature cache -------------------------------------------------------------------------
def params_digest(params: FeatureParams) -> str:
    """Short digest of the parameters that shape a bundle (a change means a rebuild)."""
    data = {name: params.to_dict()[name] for name in BUILD_FIELDS}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def extraction_digest(params: FeatureParams) -> str:
    """Short digest of the extraction parameters only (the feature cache's key): a change
    of index or decision parameters rebuilds the index without re-extracting 100k images."""
    data = json.dumps(params.extraction_dict(), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def image_version(uri: str) -> str:
    """What identifies the image content: the URL (with its version stamp) for remote images,
    the path plus size and modification time for local files."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return uri
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
    try:
        st = path.stat()
    except OSError:
        return f"{path}|missing"
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


class FeatureCache:
    """One `.npz` per image version under `<root>/<extraction digest>/<aa>/<key>.npz`."""

    def __init__(self, root: Path, params: FeatureParams) -> None:
        self.params = params
        self.dir = root / extraction_digest(params)
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(uri: str) -> str:
        return hashlib.sha256(image_version(uri).encode()).hexdigest()[:32]

    def path(self, key: str, described: bool = True) -> Path:
        """An entry's file: `<key>.npz` with SIFT features, `<key>.thumb.npz` with the
        thumbnails only (a printing whose picture another printing's features stand for,
        `recognition.index.pictures`)."""
        return self.dir / key[:2] / (f"{key}.npz" if described else f"{key}.thumb.npz")

    def has(self, key: str) -> bool:
        """Whether the cache holds the image's features (not only its thumbnails)."""
        return self.path(key).is_file()

    def has_any(self, key: str) -> bool:
        """Whether the cache holds the image's thumbnails (with or without features)."""
        return self.has(key) or self.path(key, described=False).is_file()

    def put(self, key: str, features: Features, thumb: np.ndarray,
            color: np.ndarray | None = None, *, described: bool = True) -> None:
        """Keep a reference's features, its thumbnail and its colour thumbnail (if any);
        `described=False`: thumbnails only (features without descriptors)."""
        path = self.path(key, described)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        arrays: dict[str, np.ndarray] = {
            "keypoints": features.keypoints,
            "descriptors": features.descriptors,
            "sizes": _or_empty(features.sizes, len(features.keypoints)),
            "responses": _or_empty(features.responses, len(features.keypoints)),
            "thumb": thumb,
            "size": np.asarray(features.gray.shape[:2], dtype=np.int64),  # (h, w)
            "scale": np.asarray(features.scale, dtype=np.float64),
        }
        if color is not None:
            arrays["color"] = color
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)

    def get(self, key: str) -> tuple[Features, np.ndarray]:
        """(features, thumbnail) as `build_bundle` needs them. `gray` is a zero-stride
        placeholder of the right shape: only its shape is used for cached references; `color`
        is the colour thumbnail (`recognition.index.thumbnails.make_color_thumbnail` keeps it
        as it is). An entry of thumbnails only has no keypoints."""
        path = self.path(key)
        if not path.is_file():
            path = self.path(key, described=False)
        with np.load(path) as data:
            height, width = (int(v) for v in data["size"])
            sx, sy = (float(v) for v in data["scale"])
            features = Features(
                keypoints=data["keypoints"].astype(np.float32, copy=False),
                descriptors=data["descriptors"].astype(np.uint8, copy=False),
                scale=(sx, sy),
                gray=np.broadcast_to(np.zeros((), np.uint8), (height, width)),
                sizes=data["sizes"].astype(np.float32, copy=False),
                responses=data["responses"].astype(np.float32, copy=False),
                color=data["color"].astype(np.uint8, copy=False) if "color" in data else None,
            )
            return features, data["thumb"].astype(np.uint8, copy=False)

    def prune(self, keep: set[str]) -> int:
        """Delete entries not in `keep` (and other parameter sets' directories); return count."""
        removed = 0
        for sub in self.dir.iterdir() if self.dir.exists() else ():
            if not sub.is_dir():
                continue
            for entry in sub.iterdir():
                if entry.name.split(".", 1)[0] not in keep:
                    entry.unlink(missing_ok=True)
                    removed += 1
        for other in self.dir.parent.iterdir():
            if other.is_dir() and other != self.dir:
                shutil.rmtree(other, ignore_errors=True)
        return removed
