"""Hostile uploads get their documented status, memory stays bounded, service keeps working."""

from __future__ import annotations

import http.client
import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from tests.support.apps import LiveServer, serve_bundle, shutdown
from tests.support.cards import synthetic_card_record
from tests.support.environment import isolated_config
from tests.support.synthetic import make_card, photograph

CARD = 104


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A small PNG whose header declares width x height pixels of 8-bit RGB."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 64) * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _card_photo(rotation: float = 4) -> np.ndarray:
    photo, _ = photograph(make_card(CARD), seed=11, rotation=rotation)
    return photo


def _pil_bytes(image: Image.Image, fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def cmyk_jpeg() -> bytes:
    rgb = Image.fromarray(cv2.cvtColor(_card_photo(), cv2.COLOR_BGR2RGB))
    return _pil_bytes(rgb.convert("CMYK"), "JPEG", quality=92)


def exif_rotated_jpeg() -> bytes:
    """Pixels stored rotated 90 degrees, with EXIF orientation 6 saying how to show them."""
    rgb = cv2.cvtColor(_card_photo(rotation=0), cv2.COLOR_BGR2RGB)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _pil_bytes(stored, "JPEG", quality=92, exif=exif)


def heic_rotated() -> bytes:
    """An iPhone-like HEIC: pixels stored rotated 90 degrees, the container's `irot` (written
    from EXIF orientation 6 by pillow-heif) saying how to show them."""
    rgb = cv2.cvtColor(_card_photo(rotation=0), cv2.COLOR_BGR2RGB)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _heif_bytes(stored, exif=exif.tobytes())


def _heif_bytes(image: Image.Image, **save: Any) -> bytes:
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_pillow(image).save(out, quality=90, **save)
    return out.getvalue()


def heic() -> bytes:
    return _heif_bytes(Image.fromarray(cv2.cvtColor(_card_photo(), cv2.COLOR_BGR2RGB)))


def avif() -> bytes:
    rgb = Image.fromarray(cv2.cvtColor(_card_photo(), cv2.COLOR_BGR2RGB))
    return _pil_bytes(rgb, "AVIF", quality=90)


def heic_declaring(width: int, height: int) -> bytes:
    """A real HEIC whose primary image's `ispe` box declares width x height."""
    data = bytearray(heic())
    at = data.index(b"ispe") + 8  # after the box type: version and flags, then the extents
    data[at : at + 8] = struct.pack(">II", width, height)
    return bytes(data)


def png16_alpha() -> bytes:
    bgr = _card_photo().astype(np.uint16) * 257
    alpha = np.full(bgr.shape[:2] + (1,), 65535, np.uint16)
    return _encode(np.concatenate([bgr, alpha], axis=2), ".png")


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("card.jpg", b"not really")
    return out.getvalue()


NOT_AN_IMAGE = "is not a jpeg, png, webp, bmp, tiff, heif (heic) or avif"
# name -> (body, content type or None for multipart, expected status, words in the error)
CORPUS: dict[str, tuple[bytes, str | None, int, str]] = {
    "truncated_jpeg": (_encode(_card_photo(), ".jpg")[:3000], None, 400, "truncated"),
    "png_bomb_50000x50000": (png_bomb(), None, 413, "50000x50000"),
    "text_named_jpg": (b"just some text, honest\n" * 20, None, 415, NOT_AN_IMAGE),
    "zip": (zip_bytes(), None, 415, NOT_AN_IMAGE),
    "one_pixel": (_encode(np.zeros((1, 1, 3), np.uint8), ".png"), None, 400, "1x1"),
    "ten_pixels": (_encode(np.zeros((10, 10, 3), np.uint8), ".jpg"), None, 400, "10x10"),
    "empty_raw_body": (b"", "image/jpeg", 400, "Empty request body"),
    "octet_stream_text": (b"hello" * 100, "application/octet-stream", 415, NOT_AN_IMAGE),
    "truncated_heic": (heic()[:3000], "image/heic", 400, "heif data is truncated"),
    "corrupt_heic": (heic()[:40] + bytes(range(256)) * 20, "image/heic", 400, "heif"),
    "heic_bomb_50000x50000": (heic_declaring(50_000, 50_000), None, 413, "50000x50000"),
}
# Valid images of the card in the bundle, in formats and encodings phones and scanners make.
VALID: dict[str, Callable[[], bytes]] = {
    "grayscale": lambda: _encode(cv2.cvtColor(_card_photo(), cv2.COLOR_BGR2GRAY), ".png"),
    "cmyk_jpeg": cmyk_jpeg,
    "png16_alpha": png16_alpha,
    "exif_rotated": exif_rotated_jpeg,
    "webp": lambda: _encode(_card_photo(), ".webp"),
    "bmp": lambda: _encode(_card_photo(), ".bmp"),
    "tiff": lambda: _encode(_card_photo(), ".tiff"),
    "heic_rotated": heic_rotated,
    "avif": avif,
}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, synthetic_bundles: dict[str, Path]
) -> Iterator[LiveServer]:
    app = serve_bundle(isolated_config(tmp_path_factory.mktemp("hostile")), synthetic_bundles["A"])
    with LiveServer(app) as live:
        yield live
    shutdown(app)


def _post(server: LiveServer, body: bytes, content_type: str | None) -> requests.Response:
    if content_type is None:
        return requests.post(
            f"{server.url}/infer", files={"roi_image": ("card.jpg", body)}, timeout=60
        )
    return requests.post(
        f"{server.url}/infer", data=body, headers={"Content-Type": content_type}, timeout=60
    )


def _valid_request_succeeds(server: LiveServer) -> None:
    response = _post(server, _encode(_card_photo(), ".jpg"), None)
    assert response.status_code == 200, response.text
    assert response.json()["predicted_card_id"] == synthetic_card_record(CARD)["id"]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_input_gets_its_status(server: LiveServer, name: str) -> None:
    body, content_type, status, words = CORPUS[name]
    response = _post(server, body, content_type)
    assert response.status_code == status, response.text
    assert words.lower() in response.json()["error"].lower()
    _valid_request_succeeds(server)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_encodings_are_recognised(server: LiveServer, name: str) -> None:
    response = _post(server, VALID[name](), None)
    assert response.status_code == 200, f"{name}: {response.text}"
    assert response.json()["predicted_card_id"] == synthetic_card_record(CARD)["id"]


@pytest.mark.parametrize("content_type", ["image/heic", "application/octet-stream", None])
def test_heic_and_avif_are_answered_like_their_jpeg(
    server: LiveServer, content_type: str | None
) -> None:
    """The format is sniffed from the bytes, whatever the declared type; the same card and
    the same corners (in the upload's pixels) as the JPEG of the same photo."""
    jpeg = _post(server, _encode(_card_photo(), ".jpg"), None).json()
    for body in (heic(), avif()):
        answer = _post(server, body, content_type)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predicted_card_id"] == jpeg["predicted_card_id"]
        corners = np.array(answer.json()["quad"]) - np.array(jpeg["quad"])
        assert np.abs(corners).max() < 6, (answer.json()["quad"], jpeg["quad"])


def test_100_mb_body_is_refused_without_reading_it(server: LiveServer) -> None:
    """The server answers 413 from Content-Length alone, before the body arrives. Memory is
    measured by tracing allocations (the server runs in this process): the process's
    lifetime peak RSS, shared with the fixtures that built the bundle, could not show a
    buffered body."""
    tracemalloc.start()
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/infer")
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Content-Length", str(100 * 1024 * 1024))
    connection.endheaders()
    sent = 0
    try:
        for _ in range(100):
            connection.send(b"\xff" * (1024 * 1024))
            sent += 1
    except OSError:
        pass  # the server stopped reading after its 413: expected
    response = connection.getresponse()
    assert response.status == 413
    assert "too large" in json.loads(response.read())["error"]
    connection.close()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the test server drains what follows a 413 in 10 MB reads (werkzeug): ~20 MB at most;
    # a body read whole would peak at 100 MB
    assert peak < 40 * 2**20, f"allocations peaked at {peak / 2**20:.0f} MB (sent {sent} MB)"
    _valid_request_succeeds(server)


def test_memory_stays_bounded_over_the_corpus(server: LiveServer) -> None:
    """Hostile bodies leave nothing behind: the memory still allocated after three more
    rounds (traced, not the process's lifetime peak RSS) stays where the first left it."""
    for body, content_type, _, _ in CORPUS.values():
        _post(server, body, content_type)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            for body, content_type, _, _ in CORPUS.values():
                _post(server, body, content_type)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown_mb = (after - before) / 2**20
    assert grown_mb < 5, f"{grown_mb:.1f} MB still allocated after three rounds"
