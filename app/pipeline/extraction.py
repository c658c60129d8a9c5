"""Features for new or changed images: step 4 of the refresh.

Only faces whose image version is not in the feature cache are fetched and extracted (the
cache makes refreshes incremental), with bounded concurrency; missing images are counted and
refused past `RefreshOptions.max_missing_fraction`. The validation sample's images are fetched
whatever the cache holds: validation recognises them.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import numpy as np

from app.common import metrics
from app.common.progress import Progress
from app.common.settings import Settings
from app.pipeline.downloads import FeatureCache, ImageFetcher, MissingImage, bounded_map
from app.pipeline.refresh_options import RefreshError, RefreshOptions
from app.pipeline.selection import Face
from app.recognition.decode.uploads import decode_image
from app.recognition.features.extraction import extract_features
from app.recognition.index import pictures
from app.recognition.index.thumbnails import make_color_thumbnail, make_thumbnail
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)


def extract_new_faces(
    faces: list[Face],
    cache: FeatureCache,
    fetcher: ImageFetcher,
    settings: Settings,
    params: FeatureParams,
    options: RefreshOptions,
    counts: dict[str, Any],
) -> list[tuple[Face, np.ndarray]]:
    """Fetch + extract what the cache lacks; also fetch the validation sample.

    One printing of each picture is extracted (SIFT); the picture's other printings
    are fetched for their thumbnails only, and extracted as well when their image does
    not agree with the picture's reference (app/recognition/index/pictures.py): a new printing of
    an indexed picture costs a download and a thumbnail, not a SIFT extraction."""
    opts = options
    rng = random.Random(len(faces))
    sample_keys = {
        f.key for f in rng.sample(faces, min(opts.validation_sample, len(faces)))
    }
    firsts, others = pictures.split(faces, lambda f: f.image.picture)
    done_counts = {"extracted": 0, "thumbnails": 0, "cached": 0, "missing": 0,
                   "image_errors": 0}
    guard = threading.Lock()
    samples: list[tuple[Face, np.ndarray]] = []
    signatures: dict[str, np.ndarray] = {}  # picture -> its reference's signature

    def extract(face: Face, image: np.ndarray, describe: bool) -> np.ndarray:
        features = extract_features(image, params, role="reference", describe=describe)
        thumb = make_thumbnail(features, params)
        cache.put(face.key, features, thumb, make_color_thumbnail(features, params),
                  described=describe)
        metrics.REFRESH_IMAGES.labels("fetched").inc()
        with guard:
            done_counts["extracted" if describe else "thumbnails"] += 1
        return thumb

    def reference_signature(picture: str) -> np.ndarray | None:
        with guard:
            if picture in signatures:
                return signatures[picture]
        reference = references.get(picture)
        if reference is None or not cache.has(reference.key):
            return None  # its image is missing: this printing is extracted itself
        signature = pictures.signature(cache.get(reference.key)[1])
        with guard:
            signatures[picture] = signature
        return signature

    def work(face: Face) -> np.ndarray | None:
        data = fetcher.fetch(face.image.uri)
        image = decode_image(data, max_pixels=settings.max_image_pixels)
        picture = face.image.picture
        if face in shared and not cache.has_any(face.key):
            known = reference_signature(picture) if picture else None
            thumb = extract(face, image, describe=False)
            if known is None or not pictures.agree(pictures.signature(thumb), known):
                extract(face, image, describe=True)
        elif face not in shared and not cache.has(face.key):
            extract(face, image, describe=True)
        return image if face.key in sample_keys else None

    references = {f.image.picture: f for f in firsts if f.image.picture}
    shared = set(others)
    # references first, to the end: their picture's other printings compare with them
    phases = [[f for f in firsts if f.key in sample_keys or not cache.has(f.key)],
              [f for f in others if f.key in sample_keys or not cache.has_any(f.key)]]
    done = ((face, image, error) for todo in phases
            for face, image, error in bounded_map(work, todo, max(1, opts.image_workers)))
    with Progress("images", total=sum(map(len, phases)), unit="img",
                  enabled=opts.progress) as bar:
        for face, image, error in done:
            bar.update(1)
            if isinstance(error, MissingImage):
                metrics.REFRESH_IMAGES.labels("missing").inc()
                done_counts["missing"] += 1
                log.warning("image missing for %s face %d: %s", face.image.card_id,
                            face.image.face, error)
            elif error is not None:
                metrics.REFRESH_IMAGES.labels("failed").inc()
                done_counts["image_errors"] += 1
                log.warning("image failed for %s face %d: %s", face.image.card_id,
                            face.image.face, error)
            elif image is not None:
                samples.append((face, image))
    done_counts["cached"] = (sum(1 for f in faces if cache.has_any(f.key))
                             - done_counts["extracted"] - done_counts["thumbnails"])
    metrics.REFRESH_IMAGES.labels("cached").inc(max(0, done_counts["cached"]))
    counts.update(done_counts)
    bad = done_counts["missing"] + done_counts["image_errors"]
    log.info("refresh: images done: %s", done_counts)
    if bad > opts.max_missing_fraction * len(faces):
        raise RefreshError(
            f"{bad} of {len(faces)} images missing or unreadable: over the "
            f"{opts.max_missing_fraction:.0%} allowed"
        )
    return samples
