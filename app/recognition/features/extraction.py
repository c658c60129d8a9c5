"""Feature extraction shared by the index build and the query path.

One function, `extract_features`, serves both roles so that references and queries can only
differ by the role-specific knobs of the SAME `FeatureParams` (size, feature count). cv2 SIFT
and CLAHE objects are not thread-safe, so each thread keeps its own (threading.local).
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass, replace
from typing import Any, Literal

import cv2
import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from app.recognition.features.selection import spread
from app.recognition.params import FeatureParams

Role = Literal["reference", "query"]

_local = threading.local()
TILE_OVERLAP = 48  # px of neighbourhood a tile reads around its core (SIFT's support)


@dataclass(frozen=True)
class Features:
    """Keypoints and descriptors of one image, and the image they were computed on.

    `scale` maps original image coordinates to feature coordinates (x * sx, y * sy); keypoints
    are in feature coordinates. `gray` is the CLAHE-equalised image the features come from, kept
    for photometric verification (queries) and thumbnails (references); `color` is the image
    in colour at the same size (BGR; the art check's colour), None for a gray image. A feature
    cache's reference holds its colour thumbnail there instead (only thumbnails are made of it).
    """

    keypoints: np.ndarray  # float32 (N, 2)
    descriptors: np.ndarray  # uint8 (N, 128)
    scale: tuple[float, float]
    gray: np.ndarray  # uint8 (h, w)
    sizes: np.ndarray | None = None  # float32 (N,): keypoint diameter (reference selection)
    responses: np.ndarray | None = None  # float32 (N,): DoG contrast
    mirrored: bool = False  # the features of the image mirrored left-right (see `mirror`)
    color: np.ndarray | None = None  # uint8 (h, w, 3) BGR


def configure_threads(n: int) -> None:
    """Bound OpenCV's and FAISS's own thread pools (request threads supply parallelism).

    BLAS (numpy's OpenBLAS, used by the exact re-rank) is pinned to ONE thread: its small
    products gain nothing from threads, and its spinning workers made a 250x100 product take
    8 ms instead of 0.1 ms on a busy 2-core machine (measured).
    """
    cv2.setNumThreads(max(1, n))
    faiss.omp_set_num_threads(max(1, n))
    threadpool_limits(limits=1, user_api="blas")
    _limit_malloc_arenas(2)


def _limit_malloc_arenas(count: int) -> None:
    """Cap glibc's per-thread malloc arenas. A recognition frees ~140 MB of SIFT pyramid that
    glibc keeps in the arena of the thread that used it: 6 request threads serving one
    request at a time grew to 550 MB RSS (measured), 265 MB with 2 arenas, at no latency
    cost. Best effort: only arenas created after this call are capped; the environment
    variable MALLOC_ARENA_MAX=2 set before start-up is the sure way."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, count)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


def release_freed_memory() -> None:
    """Give freed heap memory back to the system (glibc malloc_trim). A recognition frees
    ~100-200 MB of SIFT pyramid and decoded photo that glibc would otherwise keep mapped:
    an idle replica then holds only its own state, which is what one more replica on the
    host costs. Takes a few ms; called when no recognition is in flight."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def _sift(nfeatures: int, params: FeatureParams) -> cv2.SIFT:
    key = (nfeatures, params.sift_layers, params.sift_contrast, params.sift_edge)
    cache = getattr(_local, "sift", None)
    if cache is None:
        cache = _local.sift = {}
    sift = cache.get(key)
    if sift is None:
        sift = cv2.SIFT.create(
            nfeatures, params.sift_layers, params.sift_contrast, params.sift_edge, 1.6, cv2.CV_8U
        )
        cache[key] = sift
    return sift


def _clahe(params: FeatureParams) -> cv2.CLAHE:
    key = (params.clahe_clip, params.clahe_grid)
    cache = getattr(_local, "clahe", None)
    if cache is None:
        cache = _local.clahe = {}
    clahe = cache.get(key)
    if clahe is None:
        clahe = cv2.createCLAHE(params.clahe_clip, (params.clahe_grid, params.clahe_grid))
        cache[key] = clahe
    return clahe


def target_size(
    width: int, height: int, params: FeatureParams, role: Role, max_pixels: int | None = None
) -> tuple[int, int]:
    """Size the features are computed at: references fit `ref_max_side` (enlarged if small);
    queries are only reduced, to `query_max_side` and to `max_pixels` (default: the first of
    `query_passes`); `squash` ignores the aspect ratio."""
    side = params.ref_max_side if role == "reference" else params.query_max_side
    if params.squash:
        return side, side
    factor = side / max(width, height)
    if role == "query":
        area = max_pixels or params.query_passes[0]
        factor = min(1.0, factor, (area / (width * height)) ** 0.5)
    return max(1, round(width * factor)), max(1, round(height * factor))


def prepare_gray(
    image_bgr: np.ndarray, params: FeatureParams, role: Role, max_pixels: int | None = None
) -> np.ndarray:
    """Gray, resized and CLAHE-equalised image that SIFT runs on."""
    gray = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    height, width = gray.shape
    new_w, new_h = target_size(width, height, params, role, max_pixels)
    if (new_w, new_h) != (width, height):
        shrink = new_w * new_h < width * height
        gray = cv2.resize(
            gray, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        )
    if params.clahe_clip > 0:
        gray = _clahe(params).apply(gray)
    return gray


_Found = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # xy, descriptors, sizes, resp.


def _found(keypoints: Any, descriptors: np.ndarray | None) -> _Found:
    if descriptors is None or len(keypoints) == 0:
        return (np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8),
                np.zeros(0, np.float32), np.zeros(0, np.float32))
    return (
        np.array([kp.pt for kp in keypoints], dtype=np.float32),
        np.ascontiguousarray(descriptors, dtype=np.uint8),
        np.array([kp.size for kp in keypoints], dtype=np.float32),
        np.array([kp.response for kp in keypoints], dtype=np.float32),
    )


def _sift_once(
    gray: np.ndarray, nfeatures: int, params: FeatureParams, keep: int | None = None
) -> _Found:
    """SIFT keypoints and descriptors of one image. With `keep`, only the keypoints that
    `selection.spread` chooses are described, in its order: a reference's 4,000 keypoints
    are detected, its 400 candidates described (the same descriptors as describing all and
    choosing after, measured bit-identical on 200 eval references; 28% less SIFT time)."""
    sift = _sift(nfeatures, params)
    if keep is None:
        return _found(*sift.detectAndCompute(gray, None))
    keypoints = sift.detect(gray, None)
    if len(keypoints) == 0:
        return _found(keypoints, None)
    xy, _, sizes, responses = _found(keypoints, np.zeros((len(keypoints), 128), np.uint8))
    chosen = spread(xy, sizes, responses, gray.shape, keep)
    return _found(*sift.compute(gray, [keypoints[int(i)] for i in chosen]))


def _sift_tiled(
    gray: np.ndarray, nfeatures: int, params: FeatureParams, tile_pixels: int
) -> _Found:
    """SIFT over overlapping tiles of about `tile_pixels`, for large images: SIFT's pyramid
    starts at twice the image's size in float32, ~210 bytes per pixel (a 2.5 MP photo
    needed 526 MB at once, measured), a tile a fifth of that. Each tile keeps the keypoints
    of its core (the overlap gives them their neighbourhood) and its share of `nfeatures`."""
    height, width = gray.shape
    count = math.ceil(height * width / tile_pixels)
    cols = max(1, min(count, round(math.sqrt(count * width / height))))
    rows = math.ceil(count / cols)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    pad = TILE_OVERLAP
    parts: list[_Found] = []
    for r in range(rows):
        for c in range(cols):
            x0, x1, y0, y1 = xs[c], xs[c + 1], ys[r], ys[r + 1]
            px0, py0 = max(0, x0 - pad), max(0, y0 - pad)
            tile = gray[py0 : min(height, y1 + pad), px0 : min(width, x1 + pad)]
            share = math.ceil(nfeatures * (x1 - x0) * (y1 - y0) / (width * height) * 1.2)
            xy, desc, sizes, responses = _sift_once(tile, share, params)
            xy = xy + np.array([px0, py0], np.float32)
            core = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
            parts.append((xy[core], desc[core], sizes[core], responses[core]))
    xy, desc, sizes, responses = (np.concatenate([p[i] for p in parts]) for i in range(4))
    keep = np.argsort(-responses, kind="stable")[:nfeatures]
    return xy[keep], np.ascontiguousarray(desc[keep]), sizes[keep], responses[keep]


def extract_features(
    image_bgr: np.ndarray,
    params: FeatureParams,
    *,
    role: Role,
    max_pixels: int | None = None,
    tile_pixels: int | None = None,
    describe: bool = True,
) -> Features:
    """CLAHE -> SIFT on the role's working size; descriptors stay uint8 (RootSIFT is derived).
    A reference keeps only its `ref_candidates` best keypoints, spread over the card
    (`selection.spread`: what the index build considers), and only those are described.
    `max_pixels` selects the query pass (see `target_size`); an image of more than
    `tile_pixels` is searched tile by tile, in bounded memory (several-card photos).
    `describe=False` stops before SIFT: the gray and colour images only, for a printing
    whose picture is another printing's reference (`index/pictures.py`; 1/20 of the cost)."""
    height, width = image_bgr.shape[:2]
    gray = prepare_gray(image_bgr, params, role, max_pixels)
    nfeatures = params.ref_nfeatures if role == "reference" else params.query_nfeatures
    if not describe:
        xy, descriptors, sizes, responses = _found((), None)
    elif tile_pixels and gray.size > tile_pixels * 1.25:
        xy, descriptors, sizes, responses = _sift_tiled(gray, nfeatures, params, tile_pixels)
    else:
        keep = params.ref_candidates if role == "reference" else None
        xy, descriptors, sizes, responses = _sift_once(gray, nfeatures, params, keep)
    scale = (gray.shape[1] / width, gray.shape[0] / height)
    return Features(keypoints=xy, descriptors=descriptors, scale=scale, gray=gray,
                    sizes=sizes, responses=responses, color=_color_like(image_bgr, gray))


def _color_like(image_bgr: np.ndarray, gray: np.ndarray) -> np.ndarray | None:
    """The colour image at the size of the gray one SIFT ran on (None for a gray image)."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        return None
    height, width = gray.shape
    if image_bgr.shape[:2] == (height, width):
        return image_bgr
    shrink = width * height < image_bgr.shape[0] * image_bgr.shape[1]
    out: np.ndarray = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_AREA
                                 if shrink else cv2.INTER_LINEAR)
    return out


def _mirror_permutation() -> np.ndarray:
    """The columns `p` such that `descriptors[:, p]` describes each patch mirrored left-right.

    OpenCV's SIFT descriptor is 4x4 spatial cells (row-major) x 8 orientation bins, in the
    keypoint's frame: its columns run along the keypoint's orientation, its rows across it.
    A mirror turns that orientation into its mirror image, so the columns stay, the rows
    swap sides, and every gradient angle relative to the keypoint changes sign (bin o ->
    (8 - o) mod 8). Checked on the eval photos: descriptors extracted from cv2.flip(image, 1)
    and permuted descriptors of the image, at mirrored keypoints, lie a median squared
    RootSIFT distance of 0.002 apart (0.35 unpermuted); tests/recognition/test_mirror.py
    checks it too.
    """
    rows, cols, bins = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    source = (rows * 4 + cols) * 8 + bins
    target = ((3 - rows) * 4 + cols) * 8 + (8 - bins) % 8
    permutation = np.empty(128, np.intp)
    permutation[target.ravel()] = source.ravel()
    return permutation


MIRROR_PERMUTATION = _mirror_permutation()


def mirror(features: Features) -> Features:
    """The features of the image mirrored left-right, without extracting them again: SIFT is
    not mirror-invariant, but a mirrored patch's descriptor is a fixed permutation of its
    bins, and its keypoint lies at x' = width - 1 - x. `mirrored` says which way coordinates
    are (`match.geometry.card_quad` maps them back to the uploaded image's)."""
    keypoints = features.keypoints.copy()
    keypoints[:, 0] = (features.gray.shape[1] - 1) - keypoints[:, 0]
    return replace(
        features,
        keypoints=keypoints,
        descriptors=np.ascontiguousarray(features.descriptors[:, MIRROR_PERMUTATION]),
        gray=cv2.flip(features.gray, 1),
        color=None if features.color is None else cv2.flip(features.color, 1),
        mirrored=not features.mirrored,
    )


def rootsift(desc_u8: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root -> unit L2 vectors,
    so that the squared L2 distance is the Hellinger kernel distance (0..2)."""
    desc = desc_u8.astype(np.float32)
    norms = desc.sum(axis=1, keepdims=True)
    np.maximum(norms, 1e-6, out=norms)
    desc /= norms
    np.sqrt(desc, out=desc)
    return desc
