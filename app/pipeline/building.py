"""Building the new bundle from the feature cache: step 5 of the refresh.

The served release is extended (new printings appended to its inverted lists, gone ones left
as empty slots) when few printings changed - at most `max_incremental_change` of them, the
same feature parameters, every picture's indexed printing still there: the incremental plan
of app/recognition/index/incremental.py says why not otherwise - else the bundle is built
in full (k-means and PQ training included).
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from app.pipeline import releases
from app.pipeline.downloads import FeatureCache
from app.pipeline.refresh_options import RefreshOptions
from app.pipeline.selection import Face
from app.recognition.index.build import build_bundle
from app.recognition.index.incremental import (
    FullBuildNeeded,
    build_incremental,
    incremental_plan,
)
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)


def build_from_cache(
    faces: list[Face],
    cache: FeatureCache,
    out: Path,
    resources: Path,
    params: FeatureParams,
    options: RefreshOptions,
    counts: dict[str, Any],
) -> dict[str, Any]:
    """Extend the served release when few printings changed, else build in full."""

    def no_load() -> np.ndarray:
        raise RuntimeError("cached reference has no image")

    refs = [
        face.image.reference(no_load, functools.partial(cache.get, face.key), key=face.key)
        for face in faces
        if cache.has_any(face.key)  # else: missing image, counted already
    ]
    refs = list({ref.key: ref for ref in refs}.values())  # one slot per image
    opts = options
    previous = releases.current_release(resources)
    why = "disabled" if not opts.incremental else (
        "no release is served" if previous is None else incremental_plan(
            previous, [r.key for r in refs], params, opts.max_incremental_change))
    manifest: dict[str, Any] | None = None
    if why is None and previous is not None:
        log.info("refresh: extending release %s in %s", previous.name, out)
        try:
            manifest = build_incremental(refs, out, params, previous,
                                         progress=opts.progress,
                                         workers=max(1, opts.build_workers))
            counts["build"] = "incremental"
        except FullBuildNeeded as exc:  # e.g. a picture's indexed printing is gone
            why = str(exc)
            shutil.rmtree(out, ignore_errors=True)
    if manifest is None:
        log.info("refresh: full build in %s (not incremental: %s)", out, why)
        manifest = build_bundle(refs, out, params, progress=opts.progress,
                                workers=max(1, opts.build_workers), total=len(refs))
        counts["build"] = "full"
    counts["bundle"] = manifest["counts"]
    counts["build_timings_s"] = manifest.get("timings_s")
    return manifest
