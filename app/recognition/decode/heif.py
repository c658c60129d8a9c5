"""HEIF (HEIC) and AVIF uploads: the ISO base media file format containers phones write.

iPhones save HEIC (HEVC-coded HEIF), and recent Android phones and browsers save AVIF (AV1 in
the same container). The container is read here just enough to name the format from its
`ftyp` brands and to find the primary image's declared size (its `ispe` property), so that the
pixel cap refuses an image before any pixel is decoded, as for the other formats. Decoding is
the well-kept libraries' job: pillow-heif (which bundles libheif and libde265) for HEIF, and
Pillow's own AVIF plugin (libavif, in Pillow's wheels since 11.2; pillow-heif 1.x dropped
AVIF for it).

Orientation: HEIF stores it as container transforms (`irot`, `imir`), which libheif applies
while decoding (pillow-heif then resets the EXIF tag so it is not applied twice); Pillow's AVIF
plugin turns them into the EXIF orientation, which `ImageOps.exif_transpose` applies.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import numpy as np
from PIL import Image

# Brands (ISO/IEC 23008-12, AV1 Image File Format) in the `ftyp` box: major or compatible.
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIF_BRANDS = frozenset({
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1",
    b"mif2",
})

Box = tuple[bytes, int, int]  # (type, payload start, box end) as offsets into the file


class DecodeError(Exception):
    """The container or its coded image could not be decoded (message from the library)."""


def sniff(data: bytes) -> str | None:
    """"avif" or "heif" from the `ftyp` box's brands, None for anything else."""
    if data[4:8] != b"ftyp":
        return None
    (size,) = struct.unpack(">I", data[:4])
    if size < 16:
        return None
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(size, len(data)) - 3, 4)}
    if brands & AVIF_BRANDS:
        return "avif"
    if brands & HEIF_BRANDS:
        return "heif"
    return None


def boxes(data: bytes, start: int, end: int) -> Iterator[Box]:
    """The boxes laid end to end in data[start:end]; ValueError when one overruns its parent
    (a damaged or truncated file)."""
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise ValueError("box header cut off")
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:  # the last box, to the end of its parent
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} overruns its parent")
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, parent: Box, kind: bytes, skip: int = 0) -> Box | None:
    """The first child box of `kind`; `skip` bytes of the parent's payload come first (the
    version and flags of a full box)."""
    return next((box for box in boxes(data, parent[1] + skip, parent[2]) if box[0] == kind), None)


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the primary image as displayed (after a quarter-turn `irot`), from
    the `meta` box, without decoding; None when the file declares none. Without a primary item
    or its associations, the largest `ispe` declared (tiles and thumbnails are smaller)."""
    meta = next((box for box in boxes(data, 0, len(data)) if box[0] == b"meta"), None)
    if meta is None:
        return None
    iprp = _child(data, meta, b"iprp", skip=4)
    ipco = _child(data, iprp, b"ipco") if iprp else None
    if ipco is None:
        return None
    properties = list(boxes(data, ipco[1], ipco[2]))
    chosen = [properties[i] for i in _primary_properties(data, meta, iprp, len(properties))]
    extents = [_ispe(data, box) for box in (chosen or properties) if box[0] == b"ispe"]
    if not extents:
        return None
    width, height = max(extents, key=lambda size: size[0] * size[1])
    quarter_turns = [data[box[1]] & 3 for box in chosen if box[0] == b"irot" and box[1] < box[2]]
    if quarter_turns and quarter_turns[0] % 2:
        width, height = height, width
    return width, height


def _ispe(data: bytes, box: Box) -> tuple[int, int]:
    width, height = struct.unpack(">II", data[box[1] + 4 : box[1] + 12])
    return int(width), int(height)


def _primary_properties(data: bytes, meta: Box, iprp: Box | None, count: int) -> list[int]:
    """Indices (0-based, into `ipco`) of the properties associated with the primary item."""
    pitm = _child(data, meta, b"pitm", skip=4)
    ipma = _child(data, iprp, b"ipma") if iprp else None
    if pitm is None or ipma is None:
        return []
    id_size = 2 if data[pitm[1]] == 0 else 4  # by the pitm box's version
    primary = int.from_bytes(data[pitm[1] + 4 : pitm[1] + 4 + id_size], "big")
    version, flags = data[ipma[1]], int.from_bytes(data[ipma[1] + 1 : ipma[1] + 4], "big")
    pos = ipma[1] + 4
    (entries,) = struct.unpack(">I", data[pos : pos + 4])
    pos += 4
    id_size, index_size = (2 if version < 1 else 4), (2 if flags & 1 else 1)
    for _ in range(entries):
        item = int.from_bytes(data[pos : pos + id_size], "big")
        associations = data[pos + id_size]
        pos += id_size + 1
        indices = [
            int.from_bytes(data[pos + i * index_size : pos + (i + 1) * index_size], "big")
            & (0x7FFF if index_size == 2 else 0x7F)
            for i in range(associations)
        ]
        pos += associations * index_size
        if item == primary:
            return [i - 1 for i in indices if 0 < i <= count]
    return []


def truncated(data: bytes) -> bool:
    """Whether a top-level box runs past the end of the file (a cut-off upload: libheif would
    say only that an item's data is missing)."""
    try:
        for _ in boxes(data, 0, len(data)):
            pass
    except (ValueError, struct.error):
        return True
    return False


class TooLarge(Exception):
    """The library reports more pixels than the limit (the container's own declaration was
    checked before; this catches an image whose `ispe` this reader did not find)."""


def decode(data: bytes, fmt: str, max_pixels: int, reduction: int = 1) -> np.ndarray:
    """The primary image as RGB uint8 (height x width x 3), orientation applied, shrunk by
    `reduction` (box filter); DecodeError when the library cannot decode it, TooLarge when
    opening (headers only) finds more than `max_pixels`. The plugin classes are opened
    directly, without Pillow's own (global) decompression-bomb limit: the limit is the
    service's MAX_IMAGE_PIXELS. Shrunk before any conversion, so that the full-size image
    exists once (a 18 MP HEIC: 55 MB), not once per step."""
    from PIL import ImageFile, ImageOps
    from PIL.AvifImagePlugin import AvifImageFile
    from pillow_heif.as_plugin import HeifImageFile

    opener: type[ImageFile.ImageFile] = AvifImageFile if fmt == "avif" else HeifImageFile
    try:
        with opener(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise TooLarge(f"{width}x{height}")
            image.load()
            shown: Image.Image = image.reduce(reduction) if reduction > 1 else image
            shown = ImageOps.exif_transpose(shown, in_place=False) if _oriented(shown) else shown
            return np.asarray(shown if shown.mode == "RGB" else shown.convert("RGB"))
    except (OSError, ValueError, RuntimeError, SyntaxError, EOFError, struct.error) as exc:
        raise DecodeError(str(exc) or type(exc).__name__) from exc


def _oriented(image: Image.Image) -> bool:
    """Whether an EXIF orientation other than 1 remains to be applied (AVIF's irot/imir)."""
    return bool(image.getexif().get(0x0112, 1) != 1)
