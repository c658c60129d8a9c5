"""The thumbnails a bundle keeps of each reference: the equalised gray image at the fixed
thumbnail size (the photometric check) and, with `color_scale`, a smaller colour one (the
art check's colour), encoded as `params.thumb_format` (JPEG or WebP). A refresh makes the
same thumbnails for the printings it does not extract (`pictures.py`)."""

from __future__ import annotations

import cv2
import numpy as np

from app.recognition.features.extraction import Features
from app.recognition.params import FeatureParams


def make_thumbnail(features: Features, params: FeatureParams) -> np.ndarray:
    """The reference's equalised gray image at the fixed thumbnail size (photometric check)."""
    return cv2.resize(
        features.gray, (params.thumb_width, params.thumb_height), interpolation=cv2.INTER_AREA
    )


def make_color_thumbnail(features: Features, params: FeatureParams) -> np.ndarray | None:
    """The reference in colour (BGR) at 1/`color_scale` of the thumbnail's size, for the art
    check's colour (features/layout.py); None without colour (a gray image, `color_scale` 0)."""
    if not params.color_scale or features.color is None:
        return None
    size = color_size(params)
    if features.color.shape[:2] == (size[1], size[0]):
        return features.color
    out: np.ndarray = cv2.resize(features.color, size, interpolation=cv2.INTER_AREA)
    return out


_QUALITY_FLAG = {"jpg": cv2.IMWRITE_JPEG_QUALITY, "webp": cv2.IMWRITE_WEBP_QUALITY}


def encode_thumbnail(image: np.ndarray, params: FeatureParams, quality: int) -> bytes | None:
    """A thumbnail as the bundle stores it (`params.thumb_format`; the reader's
    `cv2.imdecode` tells the formats apart, so shards of either kind mix). None when the
    encoder refuses it."""
    fmt = params.thumb_format
    ok, data = cv2.imencode(f".{fmt}", image, [_QUALITY_FLAG[fmt], quality])
    return data.tobytes() if ok else None


def color_size(params: FeatureParams) -> tuple[int, int]:
    """(width, height) of the colour thumbnail."""
    scale = max(1, params.color_scale)
    return max(1, round(params.thumb_width / scale)), max(1, round(params.thumb_height / scale))
