"""Import a release in the older design's layout by converting it to the current one.

The older layout (what the service this one replaces published):

    faiss_ivf.index   IVF-PQ whose ids are positions in id_map.json
    <name>.h5         one HDF5 group per card, named by its Scryfall id, holding
                        `descriptors`  float16 [n, 128]
                        `keypoints`    JSON text: a list of [x, y, ...] per descriptor
                                       (a string dataset, or the group attribute `keypoints`)
    id_map.json       a JSON array with ONE Scryfall id per descriptor, in FAISS order
    (no manifest.json)

Conversion: card rows follow the first appearance of each id in id_map.json (read as a
stream: the full catalogue's file is ~360 MB), each row takes its group's descriptors and
keypoints, and the bundle is written by `app.recognition.index.build.build_bundle` through the
references' `precomputed` hook (`app.common.reference.ReferenceImage`), so the FAISS index is
rebuilt (the old one is keyed by id_map positions, not descriptor rows, and has other
parameters) and the stop words, offsets and manifest are made exactly as for a bundle built
from images.

Descriptors. Values above 1 are raw SIFT (cv2's float SIFT, 0..255): rounded to uint8.
Values all <= 1 are RootSIFT r = sqrt(d / sum(d)) of an unknown SIFT vector d: the square
r^2 is d up to scale, so it is stored as round(r^2 * 255 / max(r^2)), the largest component
becoming 255. The service's `rootsift()` of that uint8 vector gives r back up to rounding:
components with r^2 < 0.5 / scale (tiny gradients) become 0, and float16 already cost ~3
significant digits; the cosine between the original and the round trip is > 0.99 (tested).

What the older layout does not hold, and what is assumed instead:
- the size of the image the keypoints were computed on (`ref_size`): group attributes
  `width`/`height` when present (with a reference image, keypoints are then rescaled onto
  the profile's own reference frame); else the profile's frame is assumed: a square of
  `ref_max_side` for a squashing profile (the older design squashed references to
  256x256), the reference image at the profile's size, or else the keypoints' bounding box.
  So an older release normally goes with RECOGNITION_PROFILE=legacy, the older design's
  settings; its descriptors are those of the older design whatever profile serves them;
- reference thumbnails for the photometric check: made from `load_image(card_id)` when the
  caller can supply the reference image (for example from the catalogue's image URLs); else
  blank, which only a profile deciding on inliers alone (`legacy`) can serve - converting
  for a photometric profile without images is refused;
- faces and card fields: face 0; name, set, collector number from `cards` (catalogue
  records) or the group attributes, else empty (the API then answers from the database).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from app.common.reference import ReferenceImage
from app.recognition.features.extraction import Features, prepare_gray
from app.recognition.index.build import build_bundle
from app.recognition.index.bundle import INDEX_FILE, MANIFEST_FILE, BundleError
from app.recognition.index.thumbnails import make_thumbnail
from app.recognition.params import FeatureParams

log = logging.getLogger(__name__)

ID_MAP_FILE = "id_map.json"  # the older layout's: one Scryfall id per descriptor


class LegacyImportError(RuntimeError):
    """An older-layout release that cannot be converted; the message says why."""


def find_legacy_release(root: Path) -> Path | None:
    """The shallowest directory under `root` in the older layout (see the module doc)."""
    for index in sorted(root.rglob(INDEX_FILE), key=lambda p: len(p.parts)):
        directory = index.parent
        if is_legacy_release(directory):
            return directory
    return None


def is_legacy_release(directory: Path) -> bool:
    if (directory / MANIFEST_FILE).exists():
        return False
    if not (directory / INDEX_FILE).is_file() or not (directory / ID_MAP_FILE).is_file():
        return False
    return _legacy_h5(directory) is not None


def _legacy_h5(directory: Path) -> Path | None:
    for path in sorted(directory.glob("*.h5")):
        try:
            with h5py.File(path, "r", locking=False) as h5:
                if any(isinstance(item, h5py.Group) for item in h5.values()):
                    return path
        except OSError:
            continue
    return None


def iter_json_strings(path: Path, chunk_size: int = 1 << 20) -> Iterator[str]:
    """The strings of a JSON array of strings, read in chunks (memory stays flat)."""
    decoder = json.JSONDecoder()
    buffer = ""
    started = False
    with path.open(encoding="utf-8") as fh:
        while True:
            chunk = fh.read(chunk_size)
            buffer += chunk
            pos = 0
            while True:
                while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                    pos += 1
                if not started:
                    if pos < len(buffer):
                        if buffer[pos] != "[":
                            raise LegacyImportError(f"{path}: not a JSON array of ids")
                        started = True
                        pos += 1
                        continue
                    break
                if pos < len(buffer) and buffer[pos] == "]":
                    return
                if pos >= len(buffer):
                    break
                try:
                    value, end = decoder.raw_decode(buffer, pos)
                except json.JSONDecodeError:
                    if not chunk:
                        raise LegacyImportError(f"{path}: truncated or malformed") from None
                    break  # the value continues in the next chunk
                if not isinstance(value, str):
                    raise LegacyImportError(f"{path}: an entry is not a Scryfall id: {value!r}")
                yield value
                pos = end
            buffer = buffer[pos:]
            if not chunk:
                raise LegacyImportError(f"{path}: the JSON array never ends (truncated)")


def descriptors_to_uint8(desc: np.ndarray) -> np.ndarray:
    """Older float16 descriptors -> the uint8 SIFT the service stores (see the module doc)."""
    d = np.asarray(desc, dtype=np.float32)
    if d.ndim != 2 or d.shape[1] != 128:
        raise LegacyImportError(f"descriptors of shape {d.shape}, expected (n, 128)")
    if not np.isfinite(d).all() or (d < 0).any():
        raise LegacyImportError("descriptors hold negative or non-finite values")
    if d.size == 0 or float(d.max()) > 1.0 + 1e-3:  # raw SIFT
        return np.clip(np.rint(d), 0, 255).astype(np.uint8)
    squared = d * d  # RootSIFT -> L1-normalised SIFT
    peak = squared.max(axis=1, keepdims=True)
    scale = np.divide(255.0, peak, out=np.zeros_like(peak), where=peak > 0)
    scaled: npt.NDArray[np.float32] = np.rint(squared * scale)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _keypoints(group: h5py.Group, count: int, name: str) -> np.ndarray:
    raw: Any = group.attrs.get("keypoints")
    if "keypoints" in group:
        raw = group["keypoints"][()]
    if raw is None:
        raise LegacyImportError(f"group {name}: no keypoints")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise LegacyImportError(f"group {name}: keypoints are not JSON ({exc})") from None
    try:
        points = np.array([[float(p[0]), float(p[1])] for p in raw], dtype=np.float32)
    except (TypeError, ValueError, IndexError) as exc:
        raise LegacyImportError(f"group {name}: keypoints are not [x, y, ...] ({exc})") from None
    points = points.reshape(-1, 2)
    if len(points) != count:
        raise LegacyImportError(f"group {name}: {len(points)} keypoints for {count} descriptors")
    return points


def _attr_text(group: h5py.Group, name: str) -> str:
    value = group.attrs.get(name, "")
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def convert_legacy_release(
    source: Path,
    out_dir: Path,
    params: FeatureParams,
    *,
    cards: Mapping[str, Mapping[str, Any]] | None = None,
    load_image: Callable[[str], np.ndarray | None] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Convert the older-layout release in `source` into a bundle in `out_dir` built for
    `params` (the profile that will serve it); return its manifest."""
    h5_path = _legacy_h5(source)
    if h5_path is None or not (source / ID_MAP_FILE).is_file():
        raise LegacyImportError(f"{source} is not a release in the older layout")
    counts: dict[str, int] = {}
    for card_id in iter_json_strings(source / ID_MAP_FILE):
        counts[card_id] = counts.get(card_id, 0) + 1
    if not counts:
        raise LegacyImportError(f"{source / ID_MAP_FILE} names no card")
    if params.decision == "photometric" and load_image is None:
        raise LegacyImportError(_no_images(params, len(counts), next(iter(counts))))
    cards = cards or {}
    errors: list[str] = []
    blank_thumb = np.zeros((params.thumb_height, params.thumb_width), np.uint8)
    missing_thumbs: list[str] = []

    with h5py.File(h5_path, "r", locking=False) as h5:
        absent = [card_id for card_id in counts if card_id not in h5]
        if absent:
            raise LegacyImportError(
                f"{len(absent)} card(s) of id_map.json have no group in {h5_path.name}, "
                f"e.g. {absent[0]}"
            )

        def features_of(card_id: str) -> tuple[Features, np.ndarray]:
            try:
                return _features_of(card_id)
            except Exception as exc:
                errors.append(f"{card_id}: {exc}")
                raise

        def _features_of(card_id: str) -> tuple[Features, np.ndarray]:
            group = h5[card_id]
            desc = descriptors_to_uint8(group["descriptors"][()])
            if len(desc) != counts[card_id]:
                log.warning("legacy import: %s has %d descriptors, id_map.json names it %d "
                            "times", card_id, len(desc), counts[card_id])
            points = _keypoints(group, len(desc), card_id)
            image = load_image(card_id) if load_image is not None else None
            gray = prepare_gray(image, params, "reference") if image is not None else None
            width, height = group.attrs.get("width"), group.attrs.get("height")
            if width is not None and height is not None and gray is not None:
                # the keypoints' frame is known: map it onto this profile's reference frame
                # (both are resizes of the whole card)
                points = points * np.array(
                    [gray.shape[1] / float(width), gray.shape[0] / float(height)], np.float32
                )
                width, height = gray.shape[1], gray.shape[0]
            elif width is None or height is None:
                if params.squash:
                    width = height = params.ref_max_side
                elif gray is not None:
                    height, width = gray.shape
                else:
                    top = points.max(axis=0) if len(points) else np.ones(2)
                    width, height = int(np.ceil(top[0])) + 1, int(np.ceil(top[1])) + 1
            placeholder = np.broadcast_to(np.zeros((), np.uint8), (int(height), int(width)))
            color = image if image is not None and image.ndim == 3 else None
            features = Features(points, desc, (1.0, 1.0), placeholder, color=color)
            if gray is None:
                missing_thumbs.append(card_id)
                return features, blank_thumb
            return features, make_thumbnail(Features(points, desc, (1.0, 1.0), gray), params)

        def no_load() -> np.ndarray:
            raise LegacyImportError("an older-layout release has no images")

        def refs() -> Iterator[ReferenceImage]:
            for card_id in counts:
                group = h5[card_id]
                record = cards.get(card_id, {})
                yield ReferenceImage(
                    card_id=card_id,
                    face=0,
                    name=str(record.get("name") or _attr_text(group, "name")),
                    set=str(record.get("set_code") or record.get("set")
                            or _attr_text(group, "set")),
                    collector_number=str(record.get("collector_number")
                                         or _attr_text(group, "collector_number")),
                    illustration_id=record.get("illustration_id"),
                    load=no_load,
                    extra={"set_name": record.get("set_name") or _attr_text(group, "set_name")},
                    precomputed=functools.partial(features_of, card_id),
                )

        try:
            manifest = build_bundle(refs(), out_dir, params, progress=progress, workers=workers)
        except BundleError as exc:
            raise LegacyImportError(errors[0] if errors else str(exc)) from None
    if errors:
        raise LegacyImportError(
            f"{len(errors)} card(s) of the older release could not be read: {errors[0]}"
        )
    if missing_thumbs and params.decision == "photometric":
        raise LegacyImportError(_no_images(params, len(missing_thumbs), missing_thumbs[0]))
    log.info("legacy import: %s converted to %s (%s)", source, manifest["version"],
             manifest["counts"])
    return manifest


def _no_images(params: FeatureParams, count: int, example: str) -> str:
    return (
        f"the '{params.decision}' decision of this profile compares photos with reference "
        f"images, which an older-layout release does not hold; {count} card(s) have no image "
        f"(e.g. {example}): refresh the catalogue first so that their images can be fetched, "
        "or serve the release with RECOGNITION_PROFILE=legacy"
    )
