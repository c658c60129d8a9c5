"""Rendered-photo benchmark: every catalogued printing photographed at four card heights.

For each printing of the eval catalogue whose reference scan is at least --min-height px
tall, a photo is rendered from the scan (seeded per printing and height): the card on a
textured table (wood grain or cloth), random perspective and rotation, Gaussian blur
sigma 0.4-1.3 px, a glare band across the card, sensor noise, JPEG quality 70-92. The card
is --heights px tall in the photo (500, 700, 1000, 1400 by default), the photo about 1.35x
the card's height. Each photo is decoded, recognised and its printing settled as `POST /infer`
does it, through the same entry point (`app.recognition.service`'s `decode_upload` and
`recognise`, by `bench.common.recognise_upload`, with /infer's default time budget and the
collector line read by the engine of `collector_line.tesseract.load_reader`; the HTTP layer
adds only its own overhead) in a serving process, against a bundle built from the eval
catalogue with the default profile (cached per parameter hash in --cache-dir), and
classified:

- card right: the photographed card (its name), whichever printing was answered;
- printing right: the photographed printing itself (flagged `ambiguous_printing` or not);
- other printing: the same card name, another printing (a reprint that shares the art);
- WRONG card: another card, with confidence (the error to avoid);
- none: no answer (404).

Without the OCR model the line is not read (the output says so) and "printing right" is the
appearance's answer alone. Every photo not answered with its printing is diagnosed: the
descriptors its reference keeps in the index, and per query pass its votes, its rank by
votes, RANSAC inliers and art correlation.

`--distractors N` recognises against the eval catalogue plus the first N synthetic printings
of the scale benchmark (`bench/scale.py`: ../shared/tools/distractors.py, seed
20261127, generated once into --distractors-dir and shared with it); the photos are the same.

    python -m bench.renders [--heights 500,700,1000,1400] [--limit N] [--stride K]
                            [--seed S] [--distractors N] [--workers W]
                            [--tint T] [--cache-dir DIR] [--set name=json ...]

Skips with a message when the eval set is absent (the scans are third-party artwork and are
read at run time only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    DATA_DIR,
    EVAL_DIR,
    MAX_IMAGE_PIXELS,
    RESULTS_DIR,
    eval_set_missing,
    middle,
    override,
    recognise_upload,
    serve_in_subprocess,
    write_json,
)
from bench.scale import SEED as SCALE_SEED
from bench.scale import ensure_distractors, subset

SEED = 20261129
HEIGHTS = (500, 700, 1000, 1400)
BUNDLE_CONTENT = "layout_key"  # a cached bundle built before the id map had these is rebuilt


def _log(message: str) -> None:
    print(f"[renders] {message}", file=sys.stderr, flush=True)


# -- rendering --------------------------------------------------------------------------------
def _table(rng: Any, width: int, height: int) -> Any:
    """A textured table: wood grain (stripes + grain) or woven cloth, random tint."""
    import cv2
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        period = rng.uniform(12, 40)
        tone = 140 + 30 * np.sin(xx / period + 3 * np.sin(yy / rng.uniform(60, 160)))
    else:
        period = rng.uniform(3, 8)
        tone = 130 + 20 * np.sin(xx / period) * np.sin(yy / period)
    grain = cv2.GaussianBlur(20 * rng.standard_normal((height, width), np.float32), (0, 0),
                             rng.uniform(0.8, 2.0))
    tone = tone + grain
    tint = rng.uniform(0.45, 1.0, 3).astype(np.float32)
    table: np.ndarray = np.clip(tone[..., None] * tint, 0, 255)
    return table


def render(card: Any, card_height: int, seed: int, tint: float = 0.0) -> bytes:
    """A JPEG photo of `card` (BGR scan) `card_height` px tall on a table (see module doc);
    `tint` > 0: under a colour cast, each channel's gain exp(uniform(-tint, tint)) (a white
    balance a camera got wrong), drawn after everything else (the untinted photo is the
    same)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    height = int(card_height * rng.uniform(1.25, 1.45))
    width = int(height * rng.uniform(0.7, 0.8))
    photo = _table(rng, width, height)
    h, w = card.shape[:2]
    scale = card_height / h
    local = (np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) - [w / 2, h / 2]) * scale
    local += rng.uniform(-0.06, 0.06, (4, 2)) * [w * scale, h * scale]  # perspective
    theta = np.deg2rad(rng.uniform(-12, 12) + (180 if rng.random() < 0.1 else 0))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = np.array([width / 2, height / 2]) + rng.uniform(-0.04, 0.04, 2) * [width, height]
    corners = (local @ rot.T + centre).astype(np.float32)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, corners)
    warped = cv2.warpPerspective(card, matrix, (width, height), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, (width, height)) > 127
    photo[mask] = warped[mask] * np.float32(rng.uniform(0.8, 1.1))  # exposure
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)  # a glare band across the card
    offset = ((xx - corners[:, 0].mean()) * np.float32(np.cos(angle))
              + (yy - corners[:, 1].mean()) * np.float32(np.sin(angle))
              - np.float32(rng.uniform(-0.3, 0.3) * card_height))
    width_px = np.float32(rng.uniform(0.03, 0.08) * card_height)
    band = np.float32(rng.uniform(0.25, 0.6)) * np.exp(-(offset**2) / (2 * width_px**2))
    photo = photo * (1 - band[..., None]) + 255 * band[..., None]
    photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.4, 1.3))
    photo += np.float32(rng.uniform(2, 6)) * rng.standard_normal(photo.shape, np.float32)
    if tint > 0:
        photo *= np.exp(rng.uniform(-tint, tint, 3)).astype(np.float32)
    ok, jpeg = cv2.imencode(".jpg", np.clip(photo, 0, 255).astype(np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 93))])
    assert ok
    return bytes(jpeg.tobytes())


def printings(eval_dir: Path, min_height: int) -> list[dict[str, Any]]:
    """Every indexed printing (face) of the eval catalogue with a scan >= min_height tall."""
    import cv2

    from app.catalog.records import catalog_images

    chosen = []
    for img in catalog_images(eval_dir / "cards.jsonl.gz"):
        image = cv2.imread(img.uri, cv2.IMREAD_UNCHANGED)
        if image is not None and image.shape[0] >= min_height:
            chosen.append({"id": img.card_id, "face": img.face, "name": img.name,
                           "set": img.set, "number": img.collector_number, "uri": img.uri})
    return chosen


# -- serving process --------------------------------------------------------------------------
def classify(answer: dict[str, Any] | None, card: dict[str, Any]) -> str:
    """right / other printing / WRONG / none of one answer (`answer`: the answered card)."""
    if answer is None:
        return "none"
    if answer["id"] == card["id"]:
        return "right"
    return "other printing" if answer["name"] == card["name"] else "WRONG"


def serve(bundle_dir: Path, eval_dir: Path, heights: list[int], seed: int, limit: int,
          min_height: int, stride: int, overrides: list[str], budget_ms: int,
          read_line: bool, tint: float = 0.0) -> dict[str, Any]:
    """Render, recognise and settle every photo in this process as POST /infer does; one
    row per photo. `overrides` (name=json) change query-time knobs of the bundle's
    parameters."""
    import cv2

    from app.recognition import service
    from app.recognition.collector_line.tesseract import load_reader
    from app.recognition.features.extraction import configure_threads
    from app.recognition.index.bundle import Bundle, manifest_params, read_manifest
    from app.recognition.match.explain import why_not

    configure_threads(1)
    own = manifest_params(read_manifest(bundle_dir))
    bundle = Bundle.open(bundle_dir, expected_params=override(own, overrides, "default"))
    reader, reader_detail = load_reader() if read_line else (None, "not asked (--no-read)")
    slots = {(e["id"], e["face"]): n for n, e in enumerate(bundle.iter_entries()) if e}
    cards = printings(eval_dir, min_height)[::stride]
    if limit:
        cards = cards[:limit]
    rows = []
    started = time.perf_counter()
    for n, card in enumerate(cards):
        scan = cv2.imread(card["uri"], cv2.IMREAD_COLOR)
        for height in heights:
            key = int(hashlib.sha256(f"{seed}:{card['id']}:{card['face']}:{height}".encode())
                      .hexdigest()[:8], 16)
            data = render(scan, height, key, tint)
            start = time.perf_counter()
            found = recognise_upload(bundle, data, reader,
                                     deadline=start + budget_ms / 1000 if budget_ms else None)
            rec = found.searched
            appearance = found.answers[0].appearance if found.answers else None
            source = found.answers[0].evidence.source if found.answers else "appearance"
            ms = (time.perf_counter() - start) * 1000
            match = rec.match
            outcome = classify(match.card if match else None, card)
            row = {"id": card["id"], "name": card["name"], "set": card["set"],
                   "number": card["number"], "height": height, "outcome": outcome,
                   "appearance": classify(appearance, card),
                   "source": source,
                   "answer": f"{match.card['name']} ({match.card['set']} "
                             f"{match.card['collector_number']})" if match else None,
                   "ambiguous": rec.ambiguous_printing,
                   "confidence": match.confidence if match else None,
                   "mirrored": rec.mirrored, "passes": rec.timings_ms.get("passes"),
                   "budget_stop": bool(rec.timings_ms.get("budget_stop")),
                   "ms": round(ms, 1)}
            if outcome != "right" and (card["id"], card["face"]) in slots:
                decoded = service.decode_upload(data, bundle.params,
                                                max_pixels=MAX_IMAGE_PIXELS)
                row["why"] = why_not(bundle, decoded.image, slots[(card["id"], card["face"])])
            rows.append(row)
        if (n + 1) % 50 == 0:
            _log(f"{n + 1}/{len(cards)} printings in {time.perf_counter() - started:.0f} s")
    bundle.close()
    return {"rows": rows, "printings": len(cards), "reader": reader is not None,
            "reader_detail": reader_detail}


def table(rows: list[dict[str, Any]], heights: list[int]) -> str:
    """Markdown table per card height: card right, printing right (of which flagged
    `ambiguous_printing`), another printing, WRONG card, none, ms p50 (recognise + settle)."""
    lines = ["| card height | photos | card right | printing right (flagged) | other printing "
             "| WRONG card | none | ms p50 |", "|---|---|---|---|---|---|---|---|"]
    for height in heights:
        mine = [r for r in rows if r["height"] == height]
        if not mine:
            continue
        count = {k: sum(r["outcome"] == k for r in mine)
                 for k in ("right", "other printing", "WRONG", "none")}
        card = count["right"] + count["other printing"]
        flagged = sum(r["outcome"] == "right" and r["ambiguous"] for r in mine)
        ms = middle(r["ms"] for r in mine)
        lines.append(f"| {height} px | {len(mine)} | {card} ({100 * card / len(mine):.1f}%) | "
                     f"{count['right']} ({100 * count['right'] / len(mine):.1f}%; {flagged}) | "
                     f"{count['other printing']} | {count['WRONG']} | {count['none']} | "
                     f"{ms:.0f} |")
    return "\n".join(lines)


def _why(row: dict[str, Any]) -> str:
    why = row.get("why")
    if not why:
        return ""
    parts = [f"kept {why['kept']}"]
    for n, p in enumerate(why["passes"], 1):
        if "votes" not in p:
            parts.append(f"pass {n}: no query features")
            continue
        parts.append(f"pass {n} ({p['size'][0]}x{p['size'][1]}, {p['query_descriptors']} "
                     f"desc): votes {p['votes']} rank {p['rank']}, inliers {p['inliers']}, "
                     f"art {p['art_corr']}")
    return "; ".join(parts)


# -- bundles ----------------------------------------------------------------------------------
def ensure_bundle(catalogue: Path, params: Any, cache_dir: Path, tag: str, workers: int
                  ) -> Path:
    """A bundle of `catalogue` built with `params`, cached in `cache_dir` by the parameters,
    what the id map holds and the catalogue (`tag`: "" for the eval catalogue). Keyed by the
    build fields only: a query-time knob (`--set nprobe=8`) reuses the bundle."""
    from app.catalog.records import reference_images
    from app.recognition.index.build import build_bundle
    from app.recognition.params import BUILD_FIELDS

    built = {name: params.to_dict()[name] for name in BUILD_FIELDS}
    digest = hashlib.sha256((json.dumps(built, sort_keys=True) + BUNDLE_CONTENT)
                            .encode()).hexdigest()
    bundle_dir = cache_dir / f"default-{digest[:10]}{tag}"
    if not (bundle_dir / "manifest.json").exists():
        shutil.rmtree(bundle_dir, ignore_errors=True)
        _log(f"building bundle of {catalogue} in {bundle_dir} ({workers} workers) ...")
        build_bundle(reference_images(catalogue), bundle_dir, params, progress=True,
                     workers=workers)
    return bundle_dir


def distractor_catalogue(eval_dir: Path, out: Path, n: int) -> Path:
    """The eval catalogue + the first n distractors of the scale benchmark (generated by it
    or here, with its seed and its 1% margin so that it reuses them)."""
    cards = ensure_distractors(eval_dir, out, n + max(1, n // 100), SCALE_SEED)
    return subset(cards, eval_dir, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.renders",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", default=str(EVAL_DIR))
    parser.add_argument("--heights", default=",".join(map(str, HEIGHTS)))
    parser.add_argument("--min-height", type=int, default=600)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--limit", type=int, default=0, help="first N printings only")
    parser.add_argument("--stride", type=int, default=1,
                        help="every Nth printing only (a quicker, evenly spread sample)")
    parser.add_argument("--set", action="append", default=[],
                        help="override a parameter of the default profile: name=json-value")
    parser.add_argument("--tint", type=float, default=0.0,
                        help="colour casts: channel gains exp(uniform(-T, T)) (0: none)")
    parser.add_argument("--distractors", type=int, default=0,
                        help="recognise against the eval catalogue + N synthetic printings")
    parser.add_argument("--distractors-dir",
                        default=str(DATA_DIR / "bench-scale" / "twins"),
                        help="where the scale benchmark keeps its synthetic printings")
    parser.add_argument("--workers", type=int, default=2, help="bundle build threads")
    parser.add_argument("--budget-ms", type=int, default=1500,
                        help="recognition time budget per photo (/infer's default; 0: none)")
    parser.add_argument("--no-read", action="store_true",
                        help="do not read the collector line (the appearance's answer alone)")
    parser.add_argument("--build-only", action="store_true", help="build the bundle and stop")
    parser.add_argument("--bundle", default=None,
                        help="recognise against this built bundle (e.g. the scale "
                             "benchmark's release) instead of building one")
    parser.add_argument("--cache-dir", default=str(DATA_DIR / "bench-renders"))
    parser.add_argument("--out", default=None,
                        help="JSON results (default bench-results/renders[-dN].json)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    eval_dir = Path(args.eval_dir).resolve()
    heights = [int(h) for h in args.heights.split(",")]
    if args.serve:
        print(json.dumps(serve(Path(args.serve), eval_dir, heights, args.seed, args.limit,
                               args.min_height, args.stride, args.set, args.budget_ms,
                               not args.no_read, args.tint)))
        return 0
    if eval_set_missing(eval_dir, "renders", "cards.jsonl.gz"):
        return 0
    from app.recognition.params import DEFAULT

    params = override(DEFAULT, args.set, "default")
    catalogue, tag = eval_dir / "cards.jsonl.gz", ""
    if args.distractors:
        catalogue = distractor_catalogue(eval_dir, Path(args.distractors_dir), args.distractors)
        tag = f"-d{args.distractors}"
    if args.bundle:
        bundle_dir, tag = Path(args.bundle).resolve(), "-given"
    else:
        bundle_dir = ensure_bundle(catalogue, params, Path(args.cache_dir).resolve(), tag,
                                   args.workers)
    if args.build_only:
        print(f"bundle: {bundle_dir}")
        return 0
    _log("rendering, recognising and settling in a serving process ...")
    served = serve_in_subprocess("bench.renders", [
        "--serve", str(bundle_dir), "--eval-dir", str(eval_dir), "--heights", args.heights,
        "--seed", str(args.seed), "--limit", str(args.limit), "--min-height",
        str(args.min_height), "--stride", str(args.stride), "--tint", str(args.tint),
        "--budget-ms", str(args.budget_ms), *(["--no-read"] if args.no_read else []),
        *[f"--set={s}" for s in args.set]],
        nice=True, show_log=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = served["rows"]
    extra = f" + {args.distractors} distractors" if args.distractors else ""
    print(f"rendered photos of {served['printings']} printings (scan >= {args.min_height} px"
          f"{', --stride ' + str(args.stride) if args.stride > 1 else ''}), seed "
          f"{args.seed}{f', colour casts up to {args.tint}' if args.tint else ''}, catalogue: "
          f"eval{extra}, bundle {bundle_dir.name}")
    print("collector line: " + ("read as POST /infer reads it (" + served["reader_detail"]
                                + ")" if served["reader"] else
                                "NOT read (" + served["reader_detail"] + "): the printing is "
                                "the appearance's answer alone") + "\n")
    print(table(rows, heights))
    stops = sum(r["budget_stop"] for r in rows)
    if stops:
        print(f"\n{stops} photos stopped by the {args.budget_ms} ms time budget")
    misses = [r for r in rows if r["outcome"] != "right"]
    if misses:
        print("\nnot right (kept: the reference's indexed descriptors; per query pass: votes, "
              "rank by votes, inliers, art correlation of the reference verified alone):")
        for r in sorted(misses, key=lambda r: (r["outcome"], r["height"], r["name"])):
            print(f"  {r['height']:>5} px  {r['name']} ({r['set']} {r['number']}): "
                  f"{r['outcome']}{' -> ' + r['answer'] if r['answer'] else ''}"
                  f"{' flagged' if r['ambiguous'] else ''}"
                  f"{' conf ' + str(r['confidence']) if r['confidence'] is not None else ''}"
                  f" [{r['source']}]\n           {_why(r)}")
    out = write_json(Path(args.out or RESULTS_DIR / f"renders{tag}.json"), {
        "params": params.to_dict(), "seed": args.seed, "distractors": args.distractors,
        "stride": args.stride, "heights": heights, **served})
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
