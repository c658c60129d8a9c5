"""Every knob of extraction, indexing, matching and decision, as one frozen value.

The parameter set is written into the bundle manifest. Query features must be made with the
same settings as the reference features, so `Bundle.open` refuses a bundle whose recorded
parameters differ from what the service expects, instead of silently matching apples to pears.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class FeatureParams:
    """Extraction + index + matching + decision settings (see PROFILES for the values used)."""

    # -- extraction ------------------------------------------------------------------------
    squash: bool = False  # True: resize to a square, ignoring aspect (the older design)
    ref_max_side: int = 560  # references are resized (up or down) to this longer side
    query_max_side: int = 960  # queries are only ever reduced to this longer side ...
    query_passes: tuple[int, ...] = (250_000, 520_000)  # ... and to these areas, coarse to
    #   fine: the next pass runs only when the previous found no confident match. SIFT's time
    #   and memory follow the pixel count (its pyramid starts at 2x the image: ~120 MB of
    #   float32 at 0.52 MP); most photos are settled by the cheap first pass
    ref_nfeatures: int = 4000  # SIFT's cap, by contrast: 800 let a busy text box take every
    #   keypoint of a card with dark or smooth art (Leyline of Resonance: 0 of 800 in the art,
    #   764 of 3,047 uncapped); features/selection.py then spreads the candidates over the card
    query_nfeatures: int = 1200  # 2000 -> 1200: search p95 -25%, no answer changed at 10k
    clahe_clip: float = 2.0  # 0 disables CLAHE
    clahe_grid: int = 8
    sift_contrast: float = 0.03
    sift_edge: float = 10.0
    sift_layers: int = 3
    thumb_width: int = 128  # stored reference thumbnail, for photometric verification
    thumb_height: int = 178

    thumb_format: str = "webp"  # how thumbnails are stored: "webp" or "jpg". The gray
    #   thumbnail of a CLAHE-equalised card is busy (text, hatching): at 128x178 px JPEG q90
    #   took 10.6 KB of a reference's 19 KB; WebP q80 6.6 KB at half JPEG q80's error (RMS
    #   3.8 vs 6.8 grey levels; 0.56 ms to decode instead of 0.19), measured on the 719 eval
    #   references (docs/design-notes.md, "Thumbnails")
    thumb_quality: int = 80  # encoder quality of the gray thumbnail
    color_quality: int = 90  # ... and of the colour one (64x89 px: WebP q90 2.8 KB, JPEG 3.5)
    color_scale: int = 2  # a colour thumbnail at 1/this of the thumbnail's size (64x89 px) is
    #                       stored too, for the art check's colour (features/layout.py); 0: none (a
    #                       bundle whose manifest does not name it was built without them)
    ref_candidates: int = 400  # descriptors per reference considered for the index: the best
    #                            by scale and contrast, spread over a grid (features/selection.py)
    ref_keep: int = 300  # ... of which at most this many non-stop-words are indexed (<= 1024)

    # -- index ----------------------------------------------------------------------------
    nlist: int = 0  # 0: chosen from the descriptor count at build time (recorded in manifest)
    coarse: str = "hnsw"  # coarse quantizer: "hnsw" (cost flat in nlist) or "flat"
    hnsw_ef: int = 16  # HNSW beam width when assigning vectors to lists (query and build)
    pq_m: int = 32  # sub-quantizers per code; code bytes = pq_m * pq_nbits / 8
    pq_nbits: int = 4  # 4: SIMD "fast-scan" PQ (IndexIVFPQFastScan), 5x faster to search
    #                    than 8-bit PQ at equal recall (measured); 8: classic IndexIVFPQ
    pq_residual: bool = False  # encode residuals: better codes, but a distance table per
    #                            probed list, which dominates the search on small lists
    train_per_list: int = 40  # coarse training sample = nlist * this (FAISS wants >= 39)
    nprobe: int = 6
    stop_radius: float = 0.10  # squared RootSIFT distance of a "near duplicate" (PQ noise
    #                            puts them at 0.05-0.1: 0.04 flagged 1.7% of candidates, 0.10
    #                            half, and halved the index at 100k with the same answers)
    stop_min_cards: int = 4  # a descriptor near-duplicated in >= this many OTHER cards of the
    #                          sample is a stop word: not indexed (0 disables)
    stop_sample_cards: int = 3000  # ... the sample: this many random cards (0: all)

    # -- voting ---------------------------------------------------------------------------
    knn: int = 8
    vote_ratio: float = 1.5  # neighbours with d^2 <= vote_ratio * d1^2 share the vote
    vote_max_dist: float = 0.5  # squared RootSIFT distance beyond which a neighbour is noise
    burst_norm: bool = True  # each query descriptor spreads ONE vote over distinct cards
    top_candidates: int = 6
    dense_candidates: int = 3  # ... and this many more by votes per indexed descriptor, so a
    dense_floor: int = 50  #     reference with few descriptors (smooth art) is verified too
    #                            (match.vote.dense_candidates); counts below the floor count as it
    early_stop_corr: float = 0.6  # once a candidate's art correlates this well, candidates
    early_stop_votes: float = 0.5  # with < this fraction of its votes are not verified
    max_printings: int = 12  # other printings of a clearly matched name verified in any case

    # -- geometric verification -----------------------------------------------------------
    # correspondences come from the index neighbours (no reference descriptors are stored)
    ransac_px: float = 6.0  # reprojection threshold, in query-feature pixels
    min_inliers: int = 10
    mirror_search: bool = True  # no match: search again as a mirrored photo (front cameras
    #                             and webcam previews mirror; see match.card._recognize_once)

    # -- decision -------------------------------------------------------------------------
    decision: str = "photometric"  # "photometric" | "inliers" (the older design)
    art_box: tuple[float, float, float, float] = (0.08, 0.11, 0.92, 0.56)  # x0, y0, x1, y1
    art_highpass: float = 4.0  # thumbnail px: the art is compared without its smooth part
    #   (layout.highpassed), so a glare band or a shadow across it is not held against the
    #   right card (rendered photos: right 0.5-0.64 with a glare band, 0.9-0.95 high-passed;
    #   wrong candidates' highest 0.86 -> 0.66). 0: the whole signal (before 2026-11-29)
    conf_center: float = 0.65  # art correlation at which confidence is 0.5 ...
    conf_margin: float = 0.25  # ... margin over the best other card's art at which it is 0.5
    conf_slope: float = 15.0  # steepness of the logistic calibration (match.decide.decide)
    accept: float = 0.5  # minimum art confidence of an answer
    color_check: bool = True  # the art check compares colour too, where the bundle has colour
    #                           thumbnails (layout.color_correlation) ...
    color_floor: float = 0.2  # ... and a colour correlation below this lowers the art
    #                           correlation by the shortfall (match.photometric.colored)
    # -- the printing among printings of one art (match/appearance.py) --------------------
    printing_diff: float = 0.8  # references "differ" at a pixel by this many deviations
    printing_min_px: int = 150  # fewer differing thumbnail pixels: the photo cannot tell
    printing_slope: float = 6.0  # evidence (-1..1) to log-odds of one printing over another
    printing_sure: float = 0.8  # a lower best printing probability is `ambiguous_printing`
    printing_highpass: float = 4.0  # printings are compared on detail finer than this
    #   (Gaussian sigma, thumbnail px): a glare band or shading over where they differ is
    #   gone (a glare over Reluctant Role Model 289's added figure answered 26, confidently,
    #   in the rendered-photo benchmark at 500 px); 0 compares plain grey levels

    # -- several cards in one photo (match/scene.py) --------------------------------------
    multi_max_side: int = 2400  # the photo is searched at more pixels than for one card ...
    multi_pixels: int = 2_000_000  # ... so that a card a tenth of its width still has
    multi_nfeatures: int = 6000  #     features enough
    multi_tile_pixels: int = 520_000  # ... tile by tile, in the memory of a one-card photo
    multi_max_cards: int = 20  # cards reported per photo at most
    multi_misses: int = 2  # rounds in a row that find no card end the search
    multi_candidates: int = 16  # candidates verified per round (more features, more noise)
    multi_knn: int = 12  # neighbours per descriptor: a small card has few features, and at
    #                      10k printings 8 left a sleeved one without enough correspondences

    def __post_init__(self) -> None:
        if self.thumb_format not in THUMB_FORMATS:
            raise ValueError(f"thumb_format {self.thumb_format!r}: one of "
                             f"{', '.join(THUMB_FORMATS)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        out["art_box"] = list(self.art_box)
        out["query_passes"] = list(self.query_passes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureParams:
        """Inverse of `to_dict`; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature parameters: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "art_box" in values:
            values["art_box"] = tuple(float(v) for v in values["art_box"])
        if "query_passes" in values:
            values["query_passes"] = tuple(int(v) for v in values["query_passes"])
        if "thumb_quality" in values and "thumb_format" not in values:
            # written before thumbnails had a format: JPEG, one quality for both
            values["thumb_format"] = "jpg"
            values.setdefault("color_quality", values["thumb_quality"])
        return cls(**values)

    def extraction_dict(self) -> dict[str, Any]:
        """The fields that shape reference features and thumbnails (what a feature cache is
        keyed by): index, voting and decision knobs can change without re-extracting."""
        return {name: getattr(self, name) for name in EXTRACTION_FIELDS}

    def differences(self, other: FeatureParams) -> list[str]:
        """Names of the fields whose values differ (for a readable refusal message)."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def serving_differences(self, other: FeatureParams) -> list[str]:
        """The differing fields without which a bundle cannot be searched at all: query
        features must be made like the reference features. A bundle differing only in other
        build fields (which descriptors were kept, the index layout) is served as it is
        until a refresh rebuilds it (see `Bundle.open`)."""
        return [name for name in SERVING_FIELDS if getattr(self, name) != getattr(other, name)]

    def build_differences(self, other: FeatureParams) -> list[str]:
        """The differing fields that shape what a bundle holds (extraction, selection,
        index): a bundle built with other values must be rebuilt. Query-time knobs (nprobe,
        voting, verification, decision) are the serving profile's own and may change freely."""
        return [name for name in BUILD_FIELDS if getattr(self, name) != getattr(other, name)]


THUMB_FORMATS = ("jpg", "webp")  # what `index.thumbnails.encode_thumbnail` writes

EXTRACTION_FIELDS = (
    "squash", "ref_max_side", "ref_nfeatures", "clahe_clip", "clahe_grid", "sift_contrast",
    "sift_edge", "sift_layers", "thumb_width", "thumb_height", "color_scale",
)

BUILD_FIELDS = (
    *EXTRACTION_FIELDS, "thumb_format", "thumb_quality", "color_quality", "ref_candidates",
    "ref_keep", "nlist", "coarse", "pq_m", "pq_nbits", "pq_residual", "train_per_list",
    "stop_radius", "stop_min_cards", "stop_sample_cards",
)

# what a query must share with the references, and the coarse quantizer kind (its search
# parameters are of that kind); how many keypoints a reference offers the selection is the
# build's own business (a bundle built with another cap is served until rebuilt), and so is
# whether it stored colour thumbnails (without them the art check compares grey levels)
REFERENCE_ONLY_FIELDS = ("ref_nfeatures", "color_scale")
SERVING_FIELDS = (*(f for f in EXTRACTION_FIELDS if f not in REFERENCE_ONLY_FIELDS), "coarse")

DEFAULT = FeatureParams()

# The older design's published settings, run through the same code for comparison.
LEGACY = replace(
    DEFAULT,
    squash=True,
    ref_max_side=256,
    query_max_side=256,
    query_passes=(256 * 256,),
    ref_nfeatures=100,
    ref_candidates=100,
    ref_keep=100,
    query_nfeatures=250,
    clahe_clip=2.0,
    sift_contrast=0.04,
    nlist=256,
    coarse="flat",
    pq_m=8,
    pq_nbits=8,
    pq_residual=True,
    nprobe=10,
    stop_min_cards=0,
    knn=3,
    vote_ratio=1e9,
    vote_max_dist=4.0,
    burst_norm=False,
    top_candidates=10,
    dense_candidates=0,
    early_stop_votes=0.0,
    ransac_px=5.0,
    min_inliers=8,
    decision="inliers",
    mirror_search=False,
    color_scale=0,
    color_check=False,
)

PROFILES: dict[str, FeatureParams] = {"default": DEFAULT, "legacy": LEGACY}
