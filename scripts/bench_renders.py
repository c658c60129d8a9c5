"""Rendered-photo benchmark: every catalogued printing photographed at four card heights.

For each printing of the eval catalogue whose reference scan is at least --min-height px
tall, a photo is rendered from the scan (seeded per printing and height): the card on a
textured table (wood grain or cloth), random perspective and rotation, Gaussian blur
sigma 0.4-1.3 px, a glare band across the card, sensor noise, JPEG quality 70-92. The card
is --heights px tall in the photo (500, 700, 1000, 1400 by default), the photo about 1.35x
the card's height. Each photo is decoded and recognised as `POST /infer` does (imageio.decode,
matcher.recognize: the HTTP layer adds only its own overhead) in a serving process, against
a bundle built from the eval catalogue with the default profile (cached per parameter hash
in --cache-dir), and classified:

- right: the photographed printing;
- other printing: the same card name, another printing (a reprint that shares the art);
- WRONG: another card, with confidence (the error to avoid);
- none: no answer (404).

    python scripts/bench_renders.py [--heights 500,700,1000,1400] [--limit N] [--seed S]
                                    [--stride N] [--tint T] [--cache-dir DIR]
                                    [--set name=json ...]

Skips with a message when the eval set is absent (the scans are third-party artwork and are
read at run time only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
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
def serve(bundle_dir: Path, eval_dir: Path, heights: list[int], seed: int, limit: int,
          min_height: int, stride: int, overrides: list[str], tint: float = 0.0
          ) -> dict[str, Any]:
    """Render and recognise every photo in this process; one row per photo. `overrides`
    (name=json) change query-time knobs of the bundle's parameters."""
    import cv2
    from bench import _override

    from app.recognition.bundle import Bundle, manifest_params, read_manifest
    from app.recognition.features import configure_threads
    from app.recognition.imageio import decode
    from app.recognition.matcher import recognize

    configure_threads(1)
    own = manifest_params(read_manifest(bundle_dir))
    bundle = Bundle.open(bundle_dir, expected_params=_override(own, overrides, "default"))
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
            decoded = decode(data, max_side=bundle.params.query_max_side)
            rec = recognize(bundle, decoded.image, quad_scale=decoded.reduction)
            ms = (time.perf_counter() - start) * 1000
            if rec.match is None:
                outcome, answer = "none", None
            elif rec.match.card["id"] == card["id"]:
                outcome, answer = "right", rec.match.card["name"]
            elif rec.match.card["name"] == card["name"]:
                outcome, answer = "other printing", rec.match.card["name"]
            else:
                outcome, answer = "WRONG", rec.match.card["name"]
            rows.append({"id": card["id"], "name": card["name"], "set": card["set"],
                         "number": card["number"], "height": height, "outcome": outcome,
                         "answer": answer, "confidence": rec.match.confidence if rec.match
                         else None, "ms": round(ms, 1)})
        if (n + 1) % 50 == 0:
            _log(f"{n + 1}/{len(cards)} printings in {time.perf_counter() - started:.0f} s")
    bundle.close()
    return {"rows": rows, "printings": len(cards)}


def table(rows: list[dict[str, Any]], heights: list[int]) -> str:
    """Markdown table: per card height, right / other printing / WRONG / none and ms p50."""
    lines = ["| card height | photos | right | other printing | WRONG | none | ms p50 |",
             "|---|---|---|---|---|---|---|"]
    for height in heights:
        mine = [r for r in rows if r["height"] == height]
        if not mine:
            continue
        count = {k: sum(r["outcome"] == k for r in mine)
                 for k in ("right", "other printing", "WRONG", "none")}
        ms = sorted(r["ms"] for r in mine)[len(mine) // 2]
        lines.append(f"| {height} px | {len(mine)} | {count['right']} "
                     f"({100 * count['right'] / len(mine):.1f}%) | {count['other printing']} | "
                     f"{count['WRONG']} | {count['none']} | {ms:.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval"))
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
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "bench-renders"))
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "renders.json"))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    eval_dir = Path(args.eval_dir).resolve()
    heights = [int(h) for h in args.heights.split(",")]
    if args.serve:
        print(json.dumps(serve(Path(args.serve), eval_dir, heights, args.seed, args.limit,
                               args.min_height, args.stride, args.set, args.tint)))
        return 0
    if not (eval_dir / "cards.jsonl.gz").is_file():
        print(f"renders bench skipped: no evaluation catalogue at {eval_dir}")
        return 0
    from bench import _override

    from app.catalog.records import reference_images
    from app.recognition.builder import build_bundle
    from app.recognition.params import DEFAULT

    params = _override(DEFAULT, args.set, "default")
    # keyed by the parameters and by what the id map holds (layout keys since 2026-11-29)
    digest = hashlib.sha256((json.dumps(params.to_dict(), sort_keys=True) + BUNDLE_CONTENT)
                            .encode()).hexdigest()
    bundle_dir = Path(args.cache_dir) / f"default-{digest[:10]}"
    if not (bundle_dir / "manifest.json").exists():
        shutil.rmtree(bundle_dir, ignore_errors=True)
        _log(f"building bundle in {bundle_dir} ...")
        build_bundle(reference_images(eval_dir / "cards.jsonl.gz"), bundle_dir, params,
                     progress=True, workers=2)
    _log("rendering and recognising in a serving process ...")
    proc = subprocess.run(
        ["nice", sys.executable, __file__, "--serve", str(bundle_dir), "--eval-dir",
         str(eval_dir), "--heights", args.heights, "--seed", str(args.seed), "--limit",
         str(args.limit), "--min-height", str(args.min_height), "--stride", str(args.stride),
         "--tint", str(args.tint),
         *[f"--set={s}" for s in args.set]],
        check=True, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = served["rows"]
    print(f"rendered photos of {served['printings']} printings (scan >= {args.min_height} px), "
          f"seed {args.seed}{f', colour casts up to {args.tint}' if args.tint else ''}, "
          f"bundle {bundle_dir.name}:\n")
    print(table(rows, heights))
    misses = [r for r in rows if r["outcome"] != "right"]
    if misses:
        print("\nnot right:")
        for r in sorted(misses, key=lambda r: (r["height"], r["name"])):
            print(f"  {r['height']:>5} px  {r['name']} ({r['set']} {r['number']}): "
                  f"{r['outcome']}{' -> ' + r['answer'] if r['answer'] else ''}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": params.to_dict(), "seed": args.seed,
                               "heights": heights, **served}, indent=1))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
