"""Decode uploaded bytes into an 8-bit BGR image, refusing bad input before it costs memory.

The container format is sniffed from its magic bytes and the declared dimensions are read from
the header, so that a 50000x50000 PNG bomb is refused (413) before a single pixel is decoded.
Big JPEGs are decoded at 1/2, 1/4 or 1/8 size by libjpeg's DCT scaling (IMREAD_REDUCED_*),
which is several times faster than decoding in full and resizing. HEIF (HEIC) and AVIF, the
formats phones save, are read by app/recognition/decode/heif.py, with the same checks and contract.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from app.recognition.decode import heif

MIN_SIDE = 32  # smaller than this cannot show a recognisable card


class ImageError(Exception):
    """An upload that is not a usable image; `status` is the HTTP status to answer."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAnImage(ImageError):
    status = 415


class UndecodableImage(ImageError):
    status = 400


class ImageTooLarge(ImageError):
    status = 413


class ImageTooSmall(ImageError):
    status = 400


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and the factor from its pixels back to the uploaded image's pixels."""

    image: np.ndarray  # BGR uint8, EXIF orientation applied
    reduction: int  # 1, 2, 4 or 8: multiply coordinates by this for the original image
    format: str


def sniff_format(data: bytes) -> str:
    """Container format from the magic bytes; raises NotAnImage for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    container = heif.sniff(data)
    if container is not None:
        return container
    raise NotAnImage("the upload is not a JPEG, PNG, WebP, BMP, TIFF, HEIF (HEIC) or AVIF image")


def declared_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) as declared by the header, without decoding; UndecodableImage if absent."""
    try:
        size = _HEADER_READERS[fmt](data)
    except (struct.error, IndexError, ValueError):
        size = None
    if size is None:
        raise UndecodableImage(f"the {fmt.upper()} header is damaged or truncated")
    return size


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int]]:
    """(marker, position) of each JPEG segment up to and including the first start of scan."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        yield marker, pos
        if marker == 0xDA:
            return
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for marker, pos in _jpeg_segments(data):
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    found: dict[int, int] = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"
            found[tag] = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


_HEADER_READERS = {
    "png": _png_size,
    "jpeg": _jpeg_size,
    "webp": _webp_size,
    "bmp": _bmp_size,
    "tiff": _tiff_size,
    "heif": heif.declared_size,
    "avif": heif.declared_size,
}
# Formats decoded by app/recognition/decode/heif.py (whole, then reduced by resizing).
_CONTAINERS = frozenset({"heif", "avif"})

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def decode(
    data: bytes, *, max_pixels: int = 50_000_000, max_side: int | None = None
) -> DecodedImage:
    """Decode with all checks; `max_side` lets a JPEG be decoded reduced down to about it.

    The pixel limit applies to the declared size, so the answer does not depend on the format.
    """
    if not data:
        raise NotAnImage("the upload is empty")
    fmt = sniff_format(data)
    width, height = declared_size(data, fmt)
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmall(f"the image is {width}x{height}; at least {MIN_SIDE} px are needed")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if _truncated(data, fmt):
        raise UndecodableImage(f"the {fmt.upper()} data is truncated")
    reduction = 1
    if (fmt == "jpeg" or fmt in _CONTAINERS) and max_side:
        while reduction < 8 and max(width, height) // (reduction * 2) >= max_side:
            reduction *= 2
    if fmt in _CONTAINERS:
        image = _decode_container(data, fmt, reduction, max_pixels)
    else:
        image = _decode_opencv(data, fmt, reduction)
    if min(image.shape[:2]) * reduction < MIN_SIDE:
        raise ImageTooSmall("the decoded image is too small to show a card")
    return DecodedImage(image=image, reduction=reduction, format=fmt)


def _truncated(data: bytes, fmt: str) -> bool:
    """JPEG and PNG have an end marker; decoders fill a cut-off image with grey instead of
    failing, which would be recognised as garbage rather than refused."""
    if fmt == "jpeg":
        # entropy-coded data stuffs every 0xFF, so an end marker after the first scan's start
        # exists only if the file is complete (trailers such as motion-photo video may follow)
        scan = next((pos for marker, pos in _jpeg_segments(data) if marker == 0xDA), None)
        return scan is None or data.find(b"\xff\xd9", scan) == -1
    if fmt == "png":
        return b"IEND" not in data[-64:]
    if fmt in _CONTAINERS:
        return heif.truncated(data)
    return False


def _decode_opencv(data: bytes, fmt: str, reduction: int) -> np.ndarray:
    """JPEG (reduced by libjpeg when `reduction` > 1), PNG, WebP, BMP, TIFF as 8-bit BGR."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, _REDUCED[reduction])
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise UndecodableImage(f"the {fmt.upper()} data could not be decoded")
    return _to_bgr8(image)


def _decode_container(data: bytes, fmt: str, reduction: int, max_pixels: int) -> np.ndarray:
    """A HEIF or AVIF image as BGR, shrunk by `reduction` (their codecs have no reduced
    decoding like libjpeg's: decoded whole, then shrunk, so quads scale back the same way)."""
    try:
        rgb = heif.decode(data, fmt, max_pixels, reduction)
    except heif.TooLarge as exc:
        raise ImageTooLarge(f"the image is {exc} pixels; the limit is {max_pixels}") from None
    except heif.DecodeError as exc:
        raise UndecodableImage(f"the {fmt.upper()} data could not be decoded: {exc}") from None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    """Whatever the decoder gave (gray, 16-bit, alpha) as contiguous 8-bit BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def decode_image(
    data: bytes, *, max_pixels: int = 50_000_000, max_side: int | None = None
) -> np.ndarray:
    """Just the BGR image of `decode` (coordinates are reduced when a JPEG was reduced)."""
    return decode(data, max_pixels=max_pixels, max_side=max_side).image


_REDUCED_GRAY = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
                 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


class Photo:
    """The uploaded photo, decoded again at the resolution a small detail needs.

    Recognition works on a reduced copy (`decoded`); reading the tiny collector line needs
    more pixels of the card, so `gray_at_least` decodes the upload again in gray, reduced
    only as far as the card stays `card_px` tall (a JPEG at 1/2..1/8 by libjpeg's DCT
    scaling; any other format as recognition decoded it: PNG, WebP, BMP and TIFF whole, HEIF
    and AVIF reduced as a JPEG would have been).
    Decodes are kept for the request: the cards of one photo share them."""

    def __init__(self, data: bytes, decoded: DecodedImage, max_pixels: int) -> None:
        self.data = data
        self.decoded = decoded
        self.max_pixels = max_pixels
        self._gray: dict[int, np.ndarray] = {}

    def gray_at_least(self, card_px: float, upload_card_px: float) -> tuple[np.ndarray, int]:
        """(gray uint8 image, reduction): a decode in which a card `upload_card_px` tall in
        the upload is at least `card_px` tall, or the upload whole when it is smaller."""
        reduction = self.decoded.reduction  # other formats: the decode recognition used
        if self.decoded.format == "jpeg":  # (a HEIF is decoded whole, at a second's cost)
            reduction = 1
            while reduction < 8 and upload_card_px / (reduction * 2) >= card_px:
                reduction *= 2
        if reduction == self.decoded.reduction:
            if reduction not in self._gray:
                self._gray[reduction] = cv2.cvtColor(self.decoded.image, cv2.COLOR_BGR2GRAY)
        elif reduction not in self._gray:
            # the upload passed decode()'s checks; only the scale differs
            image = cv2.imdecode(np.frombuffer(self.data, np.uint8), _REDUCED_GRAY[reduction])
            if image is None:
                raise UndecodableImage(f"the {self.decoded.format.upper()} data could not "
                                       "be decoded again")
            self._gray[reduction] = image if image.dtype == np.uint8 else (
                cv2.cvtColor(_to_bgr8(image), cv2.COLOR_BGR2GRAY))
        return self._gray[reduction], reduction
