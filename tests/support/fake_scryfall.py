"""A fake Scryfall API + file host on 127.0.0.1, in a thread, for the pipeline tests.

The shapes (bulk-data items, card objects with top-level or per-face `image_uris`, paged
`/sets` lists) are copied from real API samples, reduced to the fields the service reads.
Card images are synthetic (seeded random shapes and text on a card-like frame), served as
JPEG at `/img/<id>-<face>.jpg?<version stamp>` like Scryfall's versioned image URLs.

Fault injection: `queue_failures(path_prefix, [429, 500, ...])` answers the next requests
to a path with those statuses (429 with Retry-After), `truncate_bulk`, `missing_images`,
`bulk_format` ("jsonl", "legacy", "both", "none"), `delay` per path prefix. `files` serves
other files at `/file/<name>` (a release archive, standing in for its host).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from app.pipeline.refresh_options import RefreshOptions

FAST_REFRESH = RefreshOptions(
    progress=False,
    retry_backoff=0.01,
    retry_max_wait=0.05,
    api_interval=0.0,
    image_workers=4,
    build_workers=2,
    validation_sample=10,
    max_missing_fraction=0.1,
)
"""Refresh options for tests against the fake: no waiting between retries or API calls."""


def card_image(seed: int, width: int = 360, height: int = 500) -> np.ndarray:
    """A synthetic card: frame, a title, random shapes as 'art', and text lines (BGR)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), rng.integers(40, 200, 3), np.uint8)
    cv2.rectangle(img, (0, 0), (width - 1, height - 1), (20, 20, 20), 14)
    art = img[40:280, 20 : width - 20]
    for _ in range(60):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        x, y = int(rng.integers(0, art.shape[1])), int(rng.integers(0, art.shape[0]))
        if kind == 0:
            cv2.circle(art, (x, y), int(rng.integers(4, 30)), color, -1)
        elif kind == 1:
            w, h = int(rng.integers(5, 50)), int(rng.integers(5, 50))
            cv2.rectangle(art, (x, y), (x + w, y + h), color, -1)
        else:
            end = (int(rng.integers(0, art.shape[1])), int(rng.integers(0, art.shape[0])))
            cv2.line(art, (x, y), end, color, int(rng.integers(1, 5)))
    for i in range(6):
        words = "".join(chr(int(c)) for c in rng.integers(65, 91, 14))
        cv2.putText(img, words, (28, 310 + 28 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (10, 10, 10), 1, cv2.LINE_AA)
    cv2.putText(img, f"CARD {seed}", (24, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (250, 250, 250), 2)
    return img


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return data.tobytes()


SETS = [
    {"code": "tst", "name": "Test Set", "set_type": "expansion", "released_at": "2024-01-05",
     "card_count": 0, "digital": False, "icon_svg_uri": "https://svgs.example/tst.svg"},
    {"code": "tdf", "name": "Test Faces", "set_type": "expansion",
     "released_at": "2024-03-01", "card_count": 0, "digital": False,
     "icon_svg_uri": "https://svgs.example/tdf.svg"},
    {"code": "tok", "name": "Test Tokens", "set_type": "token", "released_at": "2024-01-05",
     "card_count": 0, "digital": False, "icon_svg_uri": "https://svgs.example/tok.svg"},
]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that stops reading (size cap) is expected: no traceback on stderr."""


class FakeScryfall:
    """Start with `with FakeScryfall() as fake:`; build cards with `add_card(...)`."""

    def __init__(self) -> None:
        self.cards: list[dict[str, Any]] = []
        self.images: dict[str, int] = {}  # "<id>-<face>" -> seed
        self.bulk_format = "jsonl"
        self.truncate_bulk = False
        self.missing_images: set[str] = set()
        self.updated_at = "2026-08-01T09:00:00.000+00:00"
        self.failures: dict[str, list[int]] = defaultdict(list)
        self.delays: dict[str, float] = {}
        self.retry_after = "1"
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.files: dict[str, bytes] = {}  # /file/<name>: e.g. a release archive to serve
        self._guard = threading.Lock()
        self._jpeg_cache: dict[int, bytes] = {}
        self.server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeScryfall:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self._thread.join(timeout=10)
        self.server.server_close()

    # -- catalogue ---------------------------------------------------------------------
    def touch(self, updated_at: str | None = None) -> None:
        """Pretend Scryfall published a new bulk file."""
        self.updated_at = updated_at or time.strftime(
            "%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime(time.time() + len(self.requests))
        )

    def _image_uris(self, card_id: str, face: int, seed: int, stamp: int) -> dict[str, str]:
        key = f"{card_id}-{face}"
        self.images[key] = seed
        uri = f"{self.url}/img/{key}.jpg?{stamp}"
        sizes = ("small", "normal", "large", "png", "art_crop", "border_crop")
        return {size: uri for size in sizes}

    def add_card(
        self,
        seed: int,
        *,
        layout: str = "normal",
        lang: str = "en",
        digital: bool = False,
        set_code: str = "tst",
        stamp: int = 1700000000,
        faces: int = 1,
    ) -> dict[str, Any]:
        """A card object in Scryfall's shape. `faces=2` makes a transform (double-faced)
        card: `card_faces[].image_uris` and no top-level `image_uris`."""
        card_id = str(uuid.UUID(int=seed + 1))
        set_name = next(s["name"] for s in SETS if s["code"] == set_code)
        card: dict[str, Any] = {
            "object": "card",
            "id": card_id,
            "oracle_id": str(uuid.UUID(int=(seed + 1) << 64)),
            "name": f"Synthetic {seed}",
            "lang": lang,
            "released_at": "2024-01-05",
            "layout": layout,
            "image_status": "highres_scan",
            "games": ["arena", "mtgo"] if digital else ["paper", "mtgo"],
            "digital": digital,
            "finishes": ["nonfoil", "foil"],
            "set": set_code,
            "set_name": set_name,
            "set_type": "expansion",
            "collector_number": str(seed),
            "rarity": "common",
            "illustration_id": str(uuid.UUID(int=(seed + 1) << 32)),
            "prices": {"usd": "0.10", "usd_foil": None, "eur": "0.08", "tix": None},
        }
        if faces == 1:
            card["image_uris"] = self._image_uris(card_id, 0, seed, stamp)
        else:
            card.pop("illustration_id")
            card["name"] = " // ".join(f"Synthetic {seed}{'ab'[i]}" for i in range(faces))
            card["card_faces"] = [
                {
                    "object": "card_face",
                    "name": f"Synthetic {seed}{'ab'[i]}",
                    "type_line": "Creature",
                    "illustration_id": str(uuid.UUID(int=((seed + 1) << 32) + i)),
                    "image_uris": self._image_uris(card_id, i, seed * 1000 + 7 + i, stamp),
                }
                for i in range(faces)
            ]
        self.cards.append(card)
        return card

    # -- HTTP --------------------------------------------------------------------------
    def bulk_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "object": "bulk_data",
            "id": "e2ef41e3-5778-4bc2-af3f-78eca4dd9c23",
            "type": "default_cards",
            "updated_at": self.updated_at,
            "uri": f"{self.url}/bulk-data/e2ef41e3-5778-4bc2-af3f-78eca4dd9c23",
            "name": "Default Cards",
            "description": "Every card object on Scryfall in English or the printed language",
            "size": None,
        }
        stamp = "".join(ch for ch in self.updated_at[:19] if ch.isdigit())
        if self.bulk_format in ("jsonl", "both"):
            item["jsonl_download_uri"] = f"{self.url}/file/default-cards-{stamp}.jsonl.gz"
            item["compressed_size"] = None
        if self.bulk_format in ("legacy", "both"):
            item["download_uri"] = f"{self.url}/file/default-cards-{stamp}.json"
            item["content_type"] = "application/json"
            item["content_encoding"] = "gzip"
        return item

    def queue_failures(self, path_prefix: str, statuses: list[int]) -> None:
        with self._guard:
            self.failures[path_prefix].extend(statuses)

    def count(self, path_prefix: str) -> int:
        return sum(1 for path, _ in self.requests if path.startswith(path_prefix))

    def jpeg(self, seed: int) -> bytes:
        with self._guard:
            data = self._jpeg_cache.get(seed)
        if data is None:
            data = encode_jpeg(card_image(seed))
            with self._guard:
                self._jpeg_cache[seed] = data
        return data


def _make_handler(fake: FakeScryfall) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode())

        def _error(self, code: int, details: str) -> None:
            self._json(code, {"object": "error", "status": code, "details": details,
                              "code": "not_found" if code == 404 else "error"})

        def do_GET(self) -> None:  # noqa: N802
            parsed = urlparse(self.path)
            path = parsed.path
            with fake._guard:
                fake.requests.append((path, dict(self.headers.items())))
                status = None
                for prefix, queue in fake.failures.items():
                    if path.startswith(prefix) and queue:
                        status = queue.pop(0)
                        break
                delay = next((d for p, d in fake.delays.items() if path.startswith(p)), 0.0)
            if delay:
                time.sleep(delay)
            if status == 429:
                return self._send(429, b'{"object":"error","status":429}',
                                  headers={"Retry-After": fake.retry_after})
            if status is not None:
                return self._error(status, "injected failure")
            if path == "/bulk-data":
                return self._json(200, {"object": "list", "has_more": False,
                                        "data": [fake.bulk_item()]})
            if path == "/sets":
                page = int(parse_qs(parsed.query).get("page", ["1"])[0])
                data = SETS[:2] if page == 1 else SETS[2:]
                body: dict[str, Any] = {"object": "list", "has_more": page == 1, "data": data}
                if page == 1:
                    body["next_page"] = f"{fake.url}/sets?page=2"
                return self._json(200, body)
            if path.startswith("/file/"):
                if path.endswith(".jsonl.gz"):
                    raw = "".join(json.dumps(c) + "\n" for c in fake.cards).encode()
                    bulk = gzip.compress(raw)
                    if fake.truncate_bulk:
                        bulk = bulk[: len(bulk) // 2]
                    return self._send(200, bulk, "application/gzip")
                if path.endswith(".json"):
                    bulk = gzip.compress(json.dumps(fake.cards).encode())
                    if fake.truncate_bulk:
                        bulk = bulk[: len(bulk) // 2]
                    return self._send(200, bulk, "application/json",
                                      {"Content-Encoding": "gzip"})
                if path[len("/file/"):] in fake.files:
                    return self._send(200, fake.files[path[len("/file/"):]], "application/gzip")
                return self._error(404, "no such file")
            if path.startswith("/img/"):
                key = path[len("/img/"):].removesuffix(".jpg")
                if key in fake.missing_images or key not in fake.images:
                    return self._error(404, "no such image")
                return self._send(200, fake.jpeg(fake.images[key]), "image/jpeg")
            return self._error(404, "unknown endpoint")

    return Handler
