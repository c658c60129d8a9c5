"""Collector-line benchmark: reading accuracy and the exact printing among same-art twins.

Photos are rendered from the real reference scans of ../shared/eval (Duskmourn, 2015 frame:
`M 0194` / `DSK • EN`; Return to Ravnica, 2003 frame: `141/274` after the copyright): the card
on a textured table, with perspective, rotation, blur (sigma 0.4-1.3 px), a glare band,
noise and JPEG, at card heights of 400..1400 px. A third of the Duskmourn renders have the •
edited to a ★ (a foil), a third `EN` edited to `DE` (a German card the catalogue does not
hold). The catalogue is the eval catalogue plus `distractors.py --reprints 4` of every
photographed and rendered card (two other-frame reprints, two set-symbol/collector-line
twins); one of each rendered card's line twins is rendered too (its line is the only
difference). Every render is recognised and settled as POST /infer does it, through the same
entry point (`app.recognition.service`, by `bench.common.recognise_upload`), in a serving
process.

Per card height it reports:
- reading: set code, collector number, language and foil mark read right / wrong / refused;
- the exact printing: decided right (unflagged), flagged, WRONG (another printing or card
  unflagged), missed (no answer); German renders: flagged with `lang: de` or not;
- time added by reading (read_line), p50 / p95;
and decided right by kind of line (Duskmourn, Return to Ravnica, synthetic twins), and the
foil mark and language of 2015-frame lines from 800 px up (the issue's targets).

    python -m bench.collector_line [--eval-dir ../shared/eval] [--cards 70]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.common import (
    DATA_DIR,
    EVAL_DIR,
    RESULTS_DIR,
    eval_set_missing,
    open_served,
    recognise_upload,
    serve_in_subprocess,
    write_json,
)
from bench.printings import ensure_bundle

SEED = 20261129
HEIGHTS = (400, 600, 800, 1000, 1400)
TWIN_HEIGHTS = (800, 1400)


def _log(message: str) -> None:
    print(f"[collector-line] {message}", flush=True)


# -- rendering -------------------------------------------------------------------------------
def _star(center: tuple[float, float], radius: float) -> np.ndarray:
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else radius * 0.42
        angle = -np.pi / 2 + i * np.pi / 5
        points.append((center[0] + r * np.cos(angle), center[1] + r * np.sin(angle)))
    return np.array(points, np.int32)


def edit_line(card: np.ndarray, kind: str, reader: Any) -> np.ndarray | None:
    """The reference with its • drawn as a ★ ("foil") or `EN` written `DE` ("lang"), found
    with the service's own reading of the flat reference; None when the line is not found."""
    from app.recognition.collector_line.region import (
        CARD_ASPECT,
        MODERN_LINE,
        RECTIFIED_HEIGHT,
        rectify,
    )

    h, w = card.shape[:2]
    quad = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    gray = cv2.cvtColor(card, cv2.COLOR_BGR2GRAY)
    flat = rectify(gray, quad, MODERN_LINE)
    words = reader.read(flat)
    set_at = next((i for i, word in enumerate(words) if word.text.upper().startswith("DSK")),
                  None)
    lang_at = next((i for i, word in enumerate(words) if set_at is not None and i > set_at
                    and word.text.upper().startswith("EN")), None)
    if set_at is None or lang_at is None:
        return None
    scale = w / (RECTIFIED_HEIGHT * CARD_ASPECT)  # rectified px -> card px
    x_off, y_off = MODERN_LINE[0] * w, MODERN_LINE[1] * h
    out = card.copy()
    sx1 = words[set_at].box[2]
    lx0, ly0, lx1, ly1 = words[lang_at].box
    ground = [int(v) for v in np.median(card[int(y_off + ly0 * scale) - 2:
                                             int(y_off + ly1 * scale) + 2,
                                             int(x_off + sx1 * scale):
                                             int(x_off + lx0 * scale)].reshape(-1, 3), axis=0)]
    ink = (235, 235, 235) if np.mean(ground) < 110 else (20, 20, 20)
    top, bottom = int(y_off + ly0 * scale), int(y_off + ly1 * scale)
    if kind == "foil":
        x0, x1 = int(x_off + (sx1 + 4) * scale), int(x_off + (lx0 - 4) * scale)
        cv2.rectangle(out, (x0, top - 1), (x1, bottom + 1), ground, -1)
        cy = (top + bottom) / 2
        cv2.fillPoly(out, [_star(((x0 + x1) / 2, cy), (bottom - top) * 0.45)], ink,
                     cv2.LINE_AA)
    else:
        x0, x1 = int(x_off + lx0 * scale) - 1, int(x_off + lx1 * scale) + 1
        cv2.rectangle(out, (x0, top - 1), (x1, bottom + 1), ground, -1)
        size = (bottom - top) / 20.0
        cv2.putText(out, "DE", (x0, bottom), cv2.FONT_HERSHEY_SIMPLEX, size, ink,
                    max(1, round(size * 2.2)), cv2.LINE_AA)
    return out


def printed_mark(card: np.ndarray, reader: Any) -> bool | None:
    """The foil mark the clean scan itself shows (some of Scryfall's scans are of foils: a ★
    on a printing sold in both finishes), read flat at full resolution: the truth a photo of
    it is scored against."""
    from app.recognition.collector_line.foil_mark import foil_mark
    from app.recognition.collector_line.region import MODERN_LINE, rectify

    h, w = card.shape[:2]
    quad = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    flat = rectify(cv2.cvtColor(card, cv2.COLOR_BGR2GRAY), quad, MODERN_LINE)
    words = reader.read(flat)
    at = next((i for i, word in enumerate(words) if word.text.upper().startswith(
        ("DSK", "OSK"))), None)
    return foil_mark(flat, words, at) if at is not None else None


def render(card: np.ndarray, height: int, rng: np.random.Generator) -> np.ndarray:
    """A photo of `card` `height` px tall on a textured table (see the module doc)."""
    ch, cw = card.shape[:2]
    scale = height / ch
    photo_h, photo_w = int(height * 1.3), int(height * 1.3 * 0.8)
    base = rng.uniform(60, 200, 3)
    table = np.empty((photo_h, photo_w, 3), np.float32)
    table[:] = base
    grain = cv2.resize(rng.normal(0, 25, (photo_h // 8 + 1, photo_w // 8 + 1)).astype(
        np.float32), (photo_w, photo_h))
    table += grain[..., None] + rng.normal(0, 6, (photo_h, photo_w, 1)).astype(np.float32)
    w, h = cw * scale, ch * scale
    jitter = rng.uniform(-0.04, 0.04, (4, 2)) * np.array([w, h])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32) + jitter.astype(np.float32)
    angle = rng.uniform(-12, 12) + (180 if rng.random() < 0.2 else 0)
    center = np.array([photo_w / 2, photo_h / 2]) + rng.uniform(-0.05, 0.05, 2) * photo_h
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    placed = (np.c_[corners, np.ones(4)] @ rot.T + center - np.array([w / 2, h / 2]))
    src = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    warp = cv2.getPerspectiveTransform(src, placed.astype(np.float32))
    sheet = cv2.warpPerspective(card.astype(np.float32), warp, (photo_w, photo_h),
                                flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    mask = cv2.warpPerspective(np.ones((ch, cw), np.float32), warp, (photo_w, photo_h))
    photo = table * (1 - mask[..., None]) + sheet * mask[..., None]
    yy, xx = np.mgrid[0:photo_h, 0:photo_w].astype(np.float32)
    direction = rng.uniform(0, np.pi)
    offset = rng.uniform(-0.4, 0.4) * photo_h
    distance = (xx - photo_w / 2) * np.cos(direction) + (yy - photo_h / 2) * np.sin(
        direction) - offset
    glare = np.exp(-(distance / (0.06 * photo_h)) ** 2) * rng.uniform(30, 90)
    photo = photo + glare[..., None]
    photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.4, 1.3))
    photo += rng.normal(0, rng.uniform(2, 5), photo.shape).astype(np.float32)
    photo8 = np.clip(photo, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", photo8, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 93))])
    assert ok
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert decoded is not None
    return np.asarray(decoded)


# -- catalogue -------------------------------------------------------------------------------
def choose_cards(eval_dir: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """Duskmourn and Return to Ravnica printings with a 672x936 scan (60% / 40%)."""
    with gzip.open(eval_dir / "cards.jsonl.gz", "rt", encoding="utf-8") as fh:
        cards = [json.loads(line) for line in fh]
    rng = np.random.default_rng(seed)
    chosen: list[dict[str, Any]] = []
    for set_code, share in (("dsk", 0.6), ("rtr", 0.4)):
        pool = [c for c in cards if c["set"] == set_code and c.get("image_uris")]
        pool = [c for c in pool if _scan(eval_dir, c) is not None]
        picks = rng.choice(len(pool), size=min(len(pool), round(count * share)), replace=False)
        chosen += [pool[int(i)] for i in sorted(picks)]
    return chosen


def _scan(eval_dir: Path, card: dict[str, Any]) -> np.ndarray | None:
    image = cv2.imread(str(eval_dir / card["image_uris"]["large"]))
    return image if image is not None and image.shape[:2] == (936, 672) else None


def catalogue(eval_dir: Path, work: Path, cards: list[dict[str, Any]], seed: int) -> Path:
    """WORK/cards.jsonl.gz: the eval catalogue and 4 reprints of each photographed and
    rendered card (generated once)."""
    out = work / "cards.jsonl.gz"
    if not out.exists():
        labels = work / "rendered.csv"
        with labels.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["card_id"])
            writer.writerows([c["id"]] for c in cards)
        tool = eval_dir.parent / "tools" / "distractors.py"
        _log(f"generating 4 reprints of each photographed and rendered card in {work} ...")
        subprocess.run([sys.executable, str(tool), str(eval_dir), str(work), "0", "--seed",
                        str(seed), "--reprints", "4", "--labels", str(eval_dir / "labels.csv"),
                        "--labels", str(labels)], check=True)
    return out


# -- serving process -------------------------------------------------------------------------
def serve(bundle_dir: Path, plan_path: Path) -> list[dict[str, Any]]:
    from app.recognition.collector_line.records import Evidence
    from app.recognition.collector_line.settle import answer_finish

    bundle, reader = open_served(bundle_dir)
    results = []
    for item in json.loads(plan_path.read_text()):
        data = Path(item["path"]).read_bytes()
        start = time.perf_counter()
        found = recognise_upload(bundle, data, reader)
        done = time.perf_counter()
        rec = found.searched
        evidence = found.answers[0].evidence if found.answers else Evidence()
        match = rec.match
        results.append({
            **item,
            "answer": match.card["id"] if match else None,
            "answer_set": match.card.get("set") if match else None,
            "answer_name": match.card.get("name") if match else None,
            "ambiguous": rec.ambiguous_printing,
            "evidence": evidence.as_json(),
            "finish": answer_finish(evidence, match.card.get("finishes") if match else None),
            "read_ms": found.timings_ms.get("read_line") if rec.quad else None,
            # the CPU the reading took (one thread: Tesseract and OpenCV run in it), which
            # the other jobs of a shared machine do not inflate as they do wall time
            "read_cpu_ms": found.read_line_cpu_ms if rec.quad else None,
            "ms": round((done - start) * 1000, 1),
        })
    return results


# -- report ----------------------------------------------------------------------------------
def outcome(r: dict[str, Any]) -> str:
    if r["answer"] is None:
        return "missed"
    if r["variant"] == "lang":
        return "flagged" if r["ambiguous"] and r["evidence"]["lang"] == "de" else (
            "flagged" if r["ambiguous"] else "WRONG")
    if r["answer"] == r["truth"]:
        return "flagged" if r["ambiguous"] else "decided right"
    return "flagged" if r["ambiguous"] else "WRONG"


def reading(r: dict[str, Any], field: str) -> str:
    """right / wrong / refused for one field of the reading."""
    expected = r["expect"].get(field)
    got = r["evidence"].get(field)
    if expected is None:
        return "n/a"
    if got is None:
        return "refused"
    return "right" if str(got).lower().lstrip("0") == str(expected).lower().lstrip("0") else (
        "wrong")


def report(results: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    print("\nExact printing with twins (eval catalogue + 4 reprints of each card), by card "
          "height\n")
    print(f"{'height':>6} {'renders':>7} {'decided right':>13} {'flagged':>8} {'WRONG':>6} "
          f"{'missed':>6} | {'set':>11} {'number':>11} {'lang':>11} {'foil mark':>11} "
          f"| read p50/p95 ms, wall (CPU)")
    for height in sorted({r["height"] for r in results}):
        rows = [r for r in results if r["height"] == height and r["variant"] != "lang"]
        counts: dict[str, int] = defaultdict(int)
        for r in rows:
            counts[outcome(r)] += 1
        fields = {}
        for field in ("set", "collector_number", "lang", "foil_mark"):
            marks = [reading(r, field) for r in rows if r["answer"] is not None]
            marks = [m for m in marks if m != "n/a"]
            fields[field] = {k: marks.count(k) for k in ("right", "wrong", "refused")}
        times = sorted(r["read_ms"] for r in rows if r["read_ms"] is not None)
        p50 = times[len(times) // 2] if times else None
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))] if times else None
        cpu = sorted(r["read_cpu_ms"] for r in rows if r.get("read_cpu_ms") is not None)
        cpu50 = cpu[len(cpu) // 2] if cpu else None
        cpu95 = cpu[min(len(cpu) - 1, int(len(cpu) * 0.95))] if cpu else None
        table[str(height)] = {"renders": len(rows), **counts, "reading": fields,
                              "read_ms_p50": p50, "read_ms_p95": p95,
                              "read_cpu_ms_p50": cpu50, "read_cpu_ms_p95": cpu95}

        def cell(f: str, fields: dict[str, dict[str, int]] = fields) -> str:
            v = fields[f]
            total = sum(v.values())
            return f"{v['right']}/{total} {v['wrong']}w" if total else "-"

        print(f"{height:>6} {len(rows):>7} {counts['decided right']:>13} {counts['flagged']:>8} "
              f"{counts['WRONG']:>6} {counts['missed']:>6} | {cell('set'):>11} "
              f"{cell('collector_number'):>11} {cell('lang'):>11} {cell('foil_mark'):>11} | "
              f"{p50}/{p95} ({cpu50}/{cpu95})")
    print("\nDecided right by kind of line (German renders left out)")

    def kind_of(r: dict[str, Any]) -> str:
        if r["variant"] == "twin":
            return "synthetic set-symbol twins"
        return "Duskmourn, 2015 frame" if "set" in r["expect"] else (
            "Return to Ravnica, 2003 frame")

    for kind in ("Duskmourn, 2015 frame", "Return to Ravnica, 2003 frame",
                 "synthetic set-symbol twins"):
        cells = []
        for height in sorted({r["height"] for r in results}):
            rows = [r for r in results if r["height"] == height and r["variant"] != "lang"
                    and kind_of(r) == kind]
            if rows:
                cells.append(f"{height}: {sum(outcome(r) == 'decided right' for r in rows)}/"
                             f"{len(rows)}")
        print(f"  {kind}: {', '.join(cells)}")
        table[f"kind {kind}"] = cells
    modern = [r for r in results if r["height"] >= 800 and "lang" in r["expect"]
              and r["answer"] is not None]
    if modern:
        marks = [reading(r, "foil_mark") for r in modern if r["variant"] != "lang"]
        langs = [reading(r, "lang") for r in modern]
        print(f"\n2015-frame lines >= 800 px: foil mark right {marks.count('right')}/"
              f"{len(marks)} ({marks.count('wrong')} wrong), language right "
              f"{langs.count('right')}/{len(langs)} ({langs.count('wrong')} wrong)")
        table["modern_800_up"] = {"foil_mark": [marks.count("right"), len(marks)],
                                  "lang": [langs.count("right"), len(langs)]}
    german = [r for r in results if r["variant"] == "lang"]
    if german:
        print("\nGerman renders (EN edited to DE; no German printing catalogued): by height")
        for height in sorted({r["height"] for r in german}):
            rows = [r for r in german if r["height"] == height]
            flagged_de = sum(r["ambiguous"] and r["evidence"]["lang"] == "de" for r in rows)
            wrong = sum(outcome(r) == "WRONG" for r in rows)
            confident = sum(r["answer"] is not None and not r["ambiguous"] for r in rows)
            print(f"{height:>6} {len(rows):>3} renders: {flagged_de} flagged with lang de, "
                  f"{confident} answered unflagged, {wrong} wrong")
            table[f"de-{height}"] = {"renders": len(rows), "flagged_de": flagged_de,
                                     "unflagged": confident}
    foils = [r for r in results if r["variant"] == "foil" and r["height"] >= 800]
    if foils:
        right = sum(r["finish"] == "foil" for r in foils)
        print(f"\nfoil renders >= 800 px: finish 'foil' {right}/{len(foils)}")
        table["foil_finish_800_up"] = [right, len(foils)]
    for r in (r for r in results if outcome(r) == "WRONG"):
        print(f"WRONG: {r['name']} {r['variant']} {r['height']} px -> {r['answer_name']} "
              f"{r['answer_set']} (read {r['evidence']['text']!r})")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.collector_line",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", default=str(EVAL_DIR))
    parser.add_argument("--work", default=str(DATA_DIR / "bench-collector-line"))
    parser.add_argument("--cards", type=int, default=70)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS_DIR / "collector_line.json"))
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        print(json.dumps(serve(Path(args.serve[0]), Path(args.serve[1]))))
        return 0
    eval_dir = Path(args.eval_dir).resolve()
    if eval_set_missing(eval_dir, "collector-line", "labels.csv"):
        return 0
    from app.recognition.collector_line.tesseract import load_reader

    reader, detail = load_reader(second=False)  # for edit_line and printed_mark only
    if reader is None:
        print(f"collector-line bench skipped: {detail}")
        return 0
    work = Path(args.work).resolve() / f"s{args.seed}-c{args.cards}"
    (work / "renders").mkdir(parents=True, exist_ok=True)
    cards = choose_cards(eval_dir, args.cards, args.seed)
    cards_file = catalogue(eval_dir, work, cards, args.seed)
    twins: dict[str, dict[str, Any]] = {}
    with gzip.open(cards_file, "rt", encoding="utf-8") as fh:
        for line in fh:
            card = json.loads(line)
            if card.get("synthetic") == "reprint-footer" and card["reprint_of"] not in twins:
                twins[card["reprint_of"]] = card
    plan_path = work / "plan.json"
    if not plan_path.exists():
        _log(f"rendering {len(cards)} cards at {HEIGHTS} px ...")
        rng = np.random.default_rng(args.seed)
        plan = []
        for n, card in enumerate(cards):
            scan = _scan(eval_dir, card)
            assert scan is not None
            for k, height in enumerate(HEIGHTS):
                variant = ("plain", "foil", "lang")[(n + k) % 3] if card["set"] == "dsk" else (
                    "plain")
                edited = None if variant == "plain" else edit_line(scan, variant, reader)
                if edited is None:
                    variant = "plain"
                image = scan if edited is None else edited
                expect = {"set": card["set"], "collector_number": card["collector_number"],
                          "lang": "de" if variant == "lang" else "en",
                          "foil_mark": True if variant == "foil" else printed_mark(scan, reader)}
                if card["set"] == "rtr":
                    expect = {"collector_number": card["collector_number"]}
                path = work / "renders" / f"{card['id']}-{height}-{variant}.jpg"
                cv2.imwrite(str(path), render(image, height, rng),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                plan.append({"path": str(path), "truth": card["id"], "name": card["name"],
                             "height": height, "variant": variant, "expect": expect})
            twin = twins.get(card["id"])
            if twin is None:
                continue
            twin_scan = cv2.imread(str(work / twin["image_uris"]["large"]))
            assert twin_scan is not None
            for height in TWIN_HEIGHTS:
                path = work / "renders" / f"{twin['id']}-{height}-twin.jpg"
                cv2.imwrite(str(path), render(twin_scan, height, rng),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                plan.append({"path": str(path), "truth": twin["id"], "name": twin["name"],
                             "height": height, "variant": "twin",
                             "expect": {"set": twin["set"],
                                        "collector_number": twin["collector_number"],
                                        "lang": "en", "foil_mark": False}})
        plan_path.write_text(json.dumps(plan))
    bundle_dir = ensure_bundle(cards_file, work / "bundle", args.threads, _log)
    _log("recognising the renders in a serving process ...")
    results = serve_in_subprocess("bench.collector_line", [
        "--serve", str(bundle_dir), str(plan_path)])
    table = report(results)
    out = write_json(Path(args.out), {"table": table, "results": results})
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
