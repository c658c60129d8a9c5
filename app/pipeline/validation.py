"""Validating a new bundle before it may be promoted: step 5 of the refresh, after the build.

A sample of the catalogue's reference images, each made into a plausible photo (`perturb`),
must be recognised as its own printing - or its picture's, by Scryfall's illustration_id -
at REFRESH_MIN_HIT_RATE or better; an empty bundle, or one much smaller than the served
release (an upstream accident, not a policy change), is refused outright.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.pipeline.refresh_options import RefreshError, RefreshOptions
from app.pipeline.selection import Face
from app.recognition.index.bundle import Bundle
from app.recognition.match.card import recognize
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)


def perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible photo of a reference: on a background, perspective-warped, blurred,
    with a brightness/contrast change."""
    h, w = image.shape[:2]
    margin = 0.2
    cw, ch = int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))
    canvas = np.full((ch, cw, 3), rng.integers(60, 160), np.uint8)
    ox, oy = w * margin, h * margin

    def jitter() -> float:
        return float(rng.uniform(-0.06, 0.06) * w)

    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    dst = np.array(
        [
            [ox + jitter(), oy + jitter()],
            [ox + w + jitter(), oy + jitter()],
            [ox + w + jitter(), oy + h + jitter()],
            [ox + jitter(), oy + h + jitter()],
        ],
        dtype=np.float32,
    )
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(
        image, matrix, (cw, ch), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT
    )
    warped = cv2.GaussianBlur(warped, (0, 0), float(rng.uniform(0.6, 1.2)))
    alpha, beta = float(rng.uniform(0.85, 1.15)), float(rng.uniform(-15, 15))
    return cv2.convertScaleAbs(warped, alpha=alpha, beta=beta)


def validate(
    built: Path,
    samples: list[tuple[Face, np.ndarray]],
    manifest: dict[str, Any],
    before: int,
    params: FeatureParams,
    options: RefreshOptions,
    counts: dict[str, Any],
) -> None:
    """Raise RefreshError unless the bundle in `built` may be promoted; `before` is the
    served release's card count (0: no yardstick)."""
    opts = options
    cards = int(manifest["counts"]["cards"])
    if cards == 0:
        raise RefreshError("the new bundle is empty; refusing to promote")
    if before and cards < opts.min_size_ratio * before:
        raise RefreshError(
            f"the new bundle has {cards} faces, the current release {before}: below "
            f"{opts.min_size_ratio:.0%}; refusing to promote"
        )
    if not samples:
        raise RefreshError("no reference image could be fetched for validation")
    bundle = Bundle.open(built, expected_params=params)
    rng = np.random.default_rng(0)
    hits = 0
    misses: list[str] = []
    try:
        for face, image in samples:
            result = recognize(bundle, perturb(image, rng))
            match = result.match
            expected = face.image
            ok = match is not None and (
                (match.card["id"] == expected.card_id
                 and int(match.card.get("face", 0)) == expected.face)
                or (expected.illustration_id is not None
                    and match.card.get("illustration_id") == expected.illustration_id)
            )
            if ok:
                hits += 1
            else:
                misses.append(f"{expected.card_id}/{expected.face}")
    finally:
        bundle.close()
    rate = hits / len(samples)
    counts["validation"] = {"sample": len(samples), "hits": hits, "hit_rate": round(rate, 3)}
    log.info("refresh: validation %d/%d = %.1f%%", hits, len(samples), 100 * rate)
    if rate < opts.min_hit_rate:
        raise RefreshError(
            f"validation hit rate {rate:.1%} below {opts.min_hit_rate:.0%} "
            f"(missed {', '.join(misses[:10])}); refusing to promote"
        )
