"""decode_image: format sniffing, header limits before decoding, normalisation to 8-bit BGR."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import cv2
import numpy as np
import pytest

from app.recognition.decode.uploads import (
    ImageTooLarge,
    ImageTooSmall,
    NotAnImage,
    UndecodableImage,
    declared_size,
    decode,
    decode_image,
)


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _photo(width: int = 120, height: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_jpeg_png_webp_bmp_tiff_decode_to_bgr8() -> None:
    for ext in (".jpg", ".png", ".webp", ".bmp", ".tiff"):
        data = _encode(_photo(), ext)
        assert declared_size(data, decode(data).format) == (120, 90), ext
        image = decode_image(data)
        assert image.shape == (90, 120, 3) and image.dtype == np.uint8, ext


def test_text_and_zip_are_not_images() -> None:
    with pytest.raises(NotAnImage) as err:
        decode_image(b"hello, this is not an image\n")
    assert err.value.status == 415
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("card.jpg", _encode(_photo(), ".jpg"))
    with pytest.raises(NotAnImage):
        decode_image(buffer.getvalue())
    with pytest.raises(NotAnImage):
        decode_image(b"")


def test_truncated_jpeg_and_png_are_undecodable() -> None:
    for ext in (".jpg", ".png"):
        data = _encode(_photo(400, 300), ext)
        with pytest.raises(UndecodableImage) as err:
            decode_image(data[: len(data) // 2])
        assert err.value.status == 400
    with pytest.raises(UndecodableImage):
        decode_image(b"\xff\xd8\xff\xe0\x00")  # JPEG magic, nothing else


def test_tiny_image_is_too_small() -> None:
    with pytest.raises(ImageTooSmall) as err:
        decode_image(_encode(np.zeros((1, 1, 3), np.uint8), ".png"))
    assert err.value.status == 400


def test_png_bomb_is_refused_from_its_header() -> None:
    """A PNG declaring 50000x50000 is refused before any pixel is decoded."""
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    with pytest.raises(ImageTooLarge) as err:
        decode_image(data)
    assert err.value.status == 413
    assert "50000x50000" in err.value.message


def test_sixteen_bit_png_with_alpha_and_grayscale() -> None:
    rgba16 = np.random.default_rng(1).integers(0, 65535, (60, 80, 4), dtype=np.uint16)
    image = decode_image(_encode(rgba16, ".png"))
    assert image.shape == (60, 80, 3) and image.dtype == np.uint8
    assert abs(int(image[0, 0, 0]) - int(rgba16[0, 0, 0] >> 8)) <= 1
    gray = np.random.default_rng(2).integers(0, 255, (60, 80), dtype=np.uint8)
    image = decode_image(_encode(gray, ".png"))
    assert image.shape == (60, 80, 3)
    assert np.array_equal(image[..., 0], gray)


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def test_exif_orientation_is_applied() -> None:
    jpeg = _encode(_photo(160, 100), ".jpg")
    assert decode_image(jpeg).shape[:2] == (100, 160)
    rotated = decode_image(_with_exif_orientation(jpeg, 6))  # "rotate 90 CW to display"
    assert rotated.shape[:2] == (160, 100)


def test_big_jpeg_is_decoded_reduced() -> None:
    big = cv2.resize(_photo(64, 48), (3200, 2400), interpolation=cv2.INTER_NEAREST)
    data = _encode(big, ".jpg")
    result = decode(data, max_side=700)
    assert result.reduction == 4
    assert result.image.shape[:2] == (600, 800)
    assert decode(data).reduction == 1
    with pytest.raises(ImageTooLarge):
        decode(data, max_pixels=1_000_000)


def test_reduced_decode_keeps_exif_orientation() -> None:
    big = cv2.resize(_photo(64, 48), (3200, 2400), interpolation=cv2.INTER_NEAREST)
    data = _with_exif_orientation(_encode(big, ".jpg"), 6)
    result = decode(data, max_side=700)
    assert result.reduction == 4
    assert result.image.shape[:2] == (800, 600)


def _container(image: np.ndarray, fmt: str, orientation: int = 1) -> bytes:
    """HEIF (pillow-heif) or AVIF (Pillow) bytes of a BGR image, with an EXIF orientation the
    encoder turns into the container's `irot`."""
    import pillow_heif
    from PIL import Image

    rgb = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    if fmt == "heif":
        pillow_heif.from_pillow(rgb).save(out, quality=90, exif=exif.tobytes())
    else:
        rgb.save(out, "AVIF", quality=90, exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["heif", "avif"])
def test_heif_and_avif_decode_with_orientation_and_reduction(fmt: str) -> None:
    """Sniffed from the bytes; size declared by the container; orientation applied (a quarter
    turn, and the top-left mark ends top-right); a big image reduced like a JPEG."""
    image = np.full((96, 160, 3), 90, np.uint8)
    image[:16, :24] = (0, 0, 255)  # a red mark at the stored image's top-left
    data = _container(image, fmt, orientation=6)
    assert decode(data).format == fmt
    assert declared_size(data, fmt) == (96, 160)  # as displayed
    shown = decode(data).image
    assert shown.shape == (160, 96, 3)
    red = np.argwhere((shown[..., 2] > 200) & (shown[..., 1] < 80))
    assert red[:, 0].max() < 30 and red[:, 1].min() > 96 - 30  # "rotate 90 CW to display"
    small = decode(data, max_side=40)  # reduced, and still turned
    assert small.reduction == 4 and small.image.shape == (40, 24, 3)
    red = np.argwhere((small.image[..., 2] > 150) & (small.image[..., 1] < 100))
    assert len(red) and red[:, 0].max() < 8 and red[:, 1].min() > 24 - 8
    big = cv2.resize(_photo(64, 48), (1280, 960), interpolation=cv2.INTER_NEAREST)
    reduced = decode(_container(big, fmt), max_side=300)
    assert reduced.reduction == 4 and reduced.image.shape == (240, 320, 3)
    with pytest.raises(ImageTooLarge):
        decode(_container(big, fmt), max_pixels=1_000_000)


def test_damaged_heif_is_undecodable() -> None:
    data = _container(_photo(160, 120), "heif")
    with pytest.raises(UndecodableImage, match="truncated"):
        decode(data[: len(data) - 100])
    with pytest.raises(UndecodableImage, match="HEIF"):
        decode(data[:32] + b"\x00\x00\x00\x10meta" + b"\xff" * 400)
