"""Recognition benchmark on the real-photo evaluation set (../shared/eval), per profile.

For each profile: build a bundle from the eval catalogue, then -- in a separate serving
process, so that build memory does not count -- open it and recognise every photo of labels.csv
(app.recognition.service, as POST /infer: median of --repeat runs per photo). Prints one table
with both profiles and the ratio ours/legacy, and writes the numbers as JSON. Then the photos
as users also send them: every single-card photo (and out-of-catalogue one) mirrored left-
right, as a front camera or a webcam preview takes it (JPEG), and every phone photo as a HEIC
copy (512 px grid tiles, like an iPhone's) and an AVIF copy (encoded once into --cache-dir or
bench-results/heic, x265 being slow); with the cost of the mirrored search on photos without a
match, measured side by side.

    python -m bench.eval [--eval-dir ../shared/eval] [--out bench-results/bench.json]
                         [--profiles default,legacy] [--set default.knn=8 ...]
    python -m bench.eval --scale 10000 [--scale 100000 ...]   (bench/scale.py)
    python -m bench.eval --reprints 4                          (bench/printings.py)

The modules of app/ are imported inside the functions: numpy, FAISS and OpenCV size their
thread pools when they load, after `threads_env`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import printings, scale
from bench.common import (
    EVAL_DIR,
    RESULTS_DIR,
    eval_set_missing,
    load_labels,
    median_run,
    override,
    percentile,
    recognise_upload,
    serve_in_subprocess,
    threads_env,
    write_json,
)


# -- serving process -------------------------------------------------------------------------
def serve(bundle_dir: Path, eval_dir: Path, repeat: int, threads: int,
          heic_cache: Path | None) -> dict[str, Any]:
    """Open the bundle and recognise every photo; runs in its own process (clean RSS)."""
    from app.recognition.collector_line.records import Evidence
    from app.recognition.collector_line.tesseract import load_reader
    from app.recognition.features.extraction import configure_threads
    from app.recognition.index.bundle import Bundle

    configure_threads(threads)
    # the collector line is read as POST /infer reads it (None: not installed, not read)
    reader, _ = load_reader()
    t0 = time.perf_counter()
    bundle = Bundle.open(bundle_dir)
    open_ms = (time.perf_counter() - t0) * 1000
    results = []

    def measure(data: bytes) -> tuple[float, float, Any, Any]:
        """decode + recognize + the collector line, as POST /infer does, the median of
        `repeat` runs: (ms, CPU ms, Recognition, collector-line Evidence)."""
        runs = []
        for _ in range(repeat):
            start, cpu = time.perf_counter(), time.process_time()
            outcome = recognise_upload(bundle, data, reader)
            rec = outcome.searched
            evidence = outcome.answers[0].evidence if outcome.answers else Evidence()
            runs.append(((time.perf_counter() - start) * 1000,
                         (time.process_time() - cpu) * 1000, rec, evidence))
        return median_run(runs, key=lambda r: r[0])

    for entry in load_labels(eval_dir):
        data = (eval_dir / entry["photo"]).read_bytes()
        ms, cpu_ms, rec, evidence = measure(data)
        accepted = [c for c in ([rec.match] if rec.match else []) + rec.alternatives
                    if c.confidence >= bundle.params.accept]
        multi: dict[str, Any] = {}
        if entry["kind"] == "multi":  # and every card of it, as POST /infer?multi=true
            scene_runs = []
            for _ in range(repeat):
                start = time.perf_counter()
                scene = recognise_upload(bundle, data, reader, multi=True)
                scene_runs.append(((time.perf_counter() - start) * 1000, scene))
            scene_ms, scene = median_run(scene_runs, key=lambda r: r[0])
            cards = [a.result for a in scene.answers if a.result.match]
            multi = {
                "multi_ids": [r.match.card["id"] for r in cards if r.match],
                "multi_labels": [f"{r.match.card['name']} {r.match.card['set']} "
                                 f"{r.match.card['collector_number']}"
                                 + (" (ambiguous)" if r.ambiguous_printing else "")
                                 for r in cards if r.match],
                "multi_ambiguous": [r.ambiguous_printing for r in cards],
                "multi_ms": round(scene_ms, 1),
                "multi_timings_ms": scene.timings_ms,
            }
        results.append({
            **entry,
            "answer": rec.match.card["id"] if rec.match else None,
            "answer_label": (f"{rec.match.card['name']} {rec.match.card['set']} "
                             f"{rec.match.card['collector_number']}" if rec.match else "no match"),
            "confidence": rec.match.confidence if rec.match else (
                rec.alternatives[0].confidence if rec.alternatives else 0.0),
            "accepted_ids": [c.card["id"] for c in accepted],
            "ambiguous": rec.ambiguous_printing,
            "same_art_ids": [c.card["id"] for c in rec.alternatives if c.same_art],
            "printing_evidence": evidence.as_json(),
            "read_line_ms": evidence.timings_ms.get("read_line"),
            **multi,
            "ms": round(ms, 1),
            "cpu_ms": round(cpu_ms, 1),  # both threads: shows contention on a shared machine
            "timings_ms": rec.timings_ms,
        })
    peak_sequential = _peak_rss_kb()
    # then 2 requests at a time (the machine has 2 cores): throughput and the memory of
    # two recognitions in flight
    blobs = [(eval_dir / e["photo"]).read_bytes() for e in load_labels(eval_dir)]

    def one(data: bytes) -> None:  # the card, without reading its line (as measured before)
        recognise_upload(bundle, data, None)

    configure_threads(1)  # the request threads are the parallelism now: no oversubscription
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, blobs))
    concurrent_ms = (time.perf_counter() - start) * 1000 / len(blobs)
    peak_concurrent = _peak_rss_kb()
    configure_threads(threads)
    copies = (  # decoding HEIC costs memory: its peak is reported apart
        _copies(bundle, eval_dir, measure, heic_cache) if heic_cache is not None else {})
    bundle.close()
    return {"open_ms": round(open_ms, 1), "peak_rss_mb": round(peak_sequential / 1024, 1),
            "peak_rss_2_concurrent_mb": round(peak_concurrent / 1024, 1),
            "peak_rss_with_copies_mb": round(_peak_rss_kb() / 1024, 1),
            "ms_per_photo_2_concurrent": round(concurrent_ms, 1), "photos": results,
            "copies": copies}


# -- the photos as users also send them --------------------------------------------------
def mirrored_copy(data: bytes) -> bytes:
    """The photo mirrored left-right, as a front camera or a webcam preview takes it (JPEG
    quality 95 of the decoded photo, EXIF orientation applied)."""
    import cv2

    from app.recognition.decode.uploads import decode_image

    image = decode_image(data, max_pixels=1 << 30)
    ok, out = cv2.imencode(".jpg", cv2.flip(image, 1), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(out.tobytes())


def phone_copy(data: bytes, cache: Path, fmt: str) -> bytes:
    """The photo as phones save it, encoded once into `cache` (x265 takes a minute or more
    for a 12-18 MP photo): "heic", HEIC in 512 px grid tiles like an iPhone's (pillow-heif,
    quality 80); "avif", AVIF (Pillow, quality 80, libaom speed 8)."""
    import cv2
    import pillow_heif
    from PIL import Image

    from app.recognition.decode.uploads import decode_image

    path = cache / f"{hashlib.sha256(data).hexdigest()[:16]}.{fmt}"
    if not path.exists():
        image = decode_image(data, max_pixels=1 << 30)
        rgb = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        if fmt == "heic":
            pillow_heif.from_pillow(rgb).save(partial, format="HEIF", quality=80, tile_size=512)
        else:
            rgb.save(partial, format="AVIF", quality=80, speed=8)
        partial.rename(path)
    return path.read_bytes()


def _copies(bundle: Any, eval_dir: Path,
            measure: Callable[[bytes], tuple[float, float, Any, Any]],
            heic_cache: Path) -> dict[str, list[dict[str, Any]]]:
    """Per copy kind, one row per photo: its answer and time. For every single-card and
    out-of-catalogue photo: `as_is`, the photo; `direct`, the photo without the mirrored
    search (the difference is what that search costs a photo without a match); `mirrored`,
    the photo mirrored. `heic`, `avif`: every phone photo in that format."""
    def row(entry: dict[str, Any], ms: float, rec: Any) -> dict[str, Any]:
        return {"photo": entry["photo"], "kind": entry["kind"], "truth": entry["truth"],
                "answer": rec.match.card["id"] if rec.match else None,
                "mirrored": rec.mirrored, "ms": round(ms, 1)}

    copies: dict[str, list[dict[str, Any]]] = {
        "as_is": [], "direct": [], "mirrored": [], "heic": [], "avif": []}
    entries = load_labels(eval_dir)
    with_mirror = bundle.params
    without = dataclasses.replace(with_mirror, mirror_search=False)
    # one photo at a time, the three back to back: on a shared machine the load changes
    # within minutes, and the cost of the mirrored search is the difference of two of them
    for entry in (e for e in entries if e["kind"] in ("catalogued", "out")):
        data = (eval_dir / entry["photo"]).read_bytes()
        ms, _, rec, _ = measure(data)
        copies["as_is"].append(row(entry, ms, rec))
        bundle.params = without
        try:
            ms, _, rec, _ = measure(data)
        finally:
            bundle.params = with_mirror
        copies["direct"].append(row(entry, ms, rec))
        ms, _, rec, _ = measure(mirrored_copy(data))
        copies["mirrored"].append(row(entry, ms, rec))
    for entry in (e for e in entries if e["group"] == "phone"):
        jpeg = (eval_dir / entry["photo"]).read_bytes()
        jpeg_ms = measure(jpeg)[0]  # again, next to its copies
        for fmt in ("heic", "avif"):
            data = phone_copy(jpeg, heic_cache, fmt)
            ms, _, rec, _ = measure(data)
            result = {**row(entry, ms, rec), "jpeg_ms": round(jpeg_ms, 1)}
            if entry["kind"] == "multi":
                scene = recognise_upload(bundle, data, None, multi=True)
                result["multi_ids"] = [a.result.match.card["id"] for a in scene.answers
                                       if a.result.match]
            copies[fmt].append(result)
    return copies


def _peak_rss_kb() -> int:
    """VmHWM of this process image. Not ru_maxrss: Linux carries that over fork+exec, so a
    child would report the RSS of the parent that built the bundle."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- summary ---------------------------------------------------------------------------------
def summarise(served: dict[str, Any], build: dict[str, Any]) -> dict[str, Any]:
    photos = served["photos"]
    cat = [p for p in photos if p["kind"] == "catalogued"]
    out = [p for p in photos if p["kind"] == "out"]
    multi = [p for p in photos if p["kind"] == "multi"]
    latency = {}
    for group in ("webcam", "phone", "other"):
        ms = [p["ms"] for p in photos if p["group"] == group]
        cpu = [p["cpu_ms"] for p in photos if p["group"] == group]
        latency[group] = {"p50": percentile(ms, 0.5), "p95": percentile(ms, 0.95),
                          "cpu_p50": percentile(cpu, 0.5), "n": len(ms)}
    return {
        "copies": _copy_summary(served),
        "top1": sum(p["answer"] == p["truth"][0] for p in cat),
        "top1_of": len(cat),
        "false_accepts": sum(p["answer"] is not None for p in out),
        "false_accepts_of": len(out),
        # calibration readouts: how far the threshold is from the closest right / wrong case
        "min_conf_right": min((p["confidence"] for p in cat if p["answer"] == p["truth"][0]),
                              default=None),
        "max_conf_out": max((p["confidence"] for p in out), default=None),
        "single_on_multi": sum(len(set(p["truth"]) & set(p["accepted_ids"])) for p in multi),
        "multi_found": sum(len(set(p["truth"]) & set(p.get("multi_ids", []))) for p in multi),
        "multi_of": sum(len(p["truth"]) for p in multi),
        "multi_extra": sum(len(p.get("multi_ids", [])) - len(set(p["truth"])
                                                         & set(p.get("multi_ids", [])))
                           for p in multi),
        "multi_ms": percentile([p["multi_ms"] for p in multi if "multi_ms" in p], 0.5),
        "multi_ms_per_card": percentile(
            [p["multi_ms"] / max(1, len(p["multi_ids"])) for p in multi if "multi_ms" in p],
            0.5),
        "latency_ms": latency,
        "peak_rss_mb": served["peak_rss_mb"],
        "peak_rss_2_concurrent_mb": served["peak_rss_2_concurrent_mb"],
        "ms_per_photo_2_concurrent": served["ms_per_photo_2_concurrent"],
        "bundle_open_ms": served["open_ms"],
        **build,
    }


def _outcomes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """right / wrong among catalogued single-card photos, false accepts among the others,
    and the latency of all of them."""
    cat = [r for r in rows if r["kind"] == "catalogued"]
    out = [r for r in rows if r["kind"] == "out"]
    ms = [r["ms"] for r in rows if r["kind"] in ("catalogued", "out")]
    return {
        "right": sum(r["answer"] == r["truth"][0] for r in cat),
        "wrong": sum(r["answer"] not in (None, r["truth"][0]) for r in cat),
        "of": len(cat),
        "false_accepts": sum(r["answer"] is not None for r in out),
        "out_of": len(out),
        "p50": percentile(ms, 0.5),
        "p95": percentile(ms, 0.95),
        "out_p50": percentile([r["ms"] for r in out], 0.5),
        "out_p95": percentile([r["ms"] for r in out], 0.95),
    }


def _copy_summary(served: dict[str, Any]) -> dict[str, Any]:
    """The normal photos, their mirrored copies, the same photos without the mirrored search,
    and the HEIC copies of the phone photos (answered like their JPEG?)."""
    photos, copies = served["photos"], served.get("copies", {})
    if not copies:
        return {}
    jpeg = {p["photo"]: p for p in photos}

    def like_jpeg(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {**_outcomes(rows), "photos": len(rows),
                "same_as_jpeg": sum(r["answer"] == jpeg[r["photo"]]["answer"]
                                    and set(r.get("multi_ids", []))
                                    == set(jpeg[r["photo"]].get("multi_ids", []))
                                    for r in rows),
                "ms": [r["ms"] for r in rows], "jpeg_ms": [r["jpeg_ms"] for r in rows]}

    return {
        "peak_rss_mb": served.get("peak_rss_with_copies_mb"),
        "normal": _outcomes(copies["as_is"]),
        "mirrored": {**_outcomes(copies["mirrored"]),
                     "flagged": sum(r["mirrored"] for r in copies["mirrored"])},
        "no_mirror_search": _outcomes(copies["direct"]),
        "heic": like_jpeg(copies["heic"]),
        "avif": like_jpeg(copies.get("avif", [])),
    }


def print_copies(profile: str, summary: dict[str, Any]) -> None:
    """The table of the photos as users also send them (one profile)."""
    if not summary:
        return
    print(f"\nPhotos as users also send them ({profile}): right / wrong / false accepts, ms")
    header = (f"{'photos':34} {'right':>7} {'wrong':>6} {'false acc.':>11} {'p50':>7} "
              f"{'p95':>7} {'out p50':>8} {'out p95':>8}")
    print(header)
    print("-" * len(header))
    labels = {"normal": "eval photos (as they are)",
              "mirrored": "mirrored copies",
              "no_mirror_search": "as they are, no mirrored search"}
    for key, label in labels.items():
        s = summary[key]
        print(f"{label:34} {s['right']:>3}/{s['of']:<3} {s['wrong']:>6} "
              f"{s['false_accepts']:>4}/{s['out_of']:<6} {s['p50']!s:>7} {s['p95']!s:>7} "
              f"{s['out_p50']!s:>8} {s['out_p95']!s:>8}")
    print(f"  mirrored copies answered with mirrored: true: {summary['mirrored']['flagged']}; "
          f"serving peak RSS after the copies: {summary['peak_rss_mb']} MB")
    for fmt in ("heic", "avif"):
        c = summary[fmt]
        print(f"{fmt.upper()} copies of the phone photos: {c['same_as_jpeg']}/{c['photos']} "
              f"answered like their JPEG (single and multi=true); right {c['right']}/{c['of']}, "
              f"wrong {c['wrong']}; ms {c['ms']} (JPEG {c['jpeg_ms']})")


def print_table(profiles: list[str], runs: dict[str, dict[str, Any]]) -> None:
    base, ref = profiles[0], (profiles[1] if len(profiles) > 1 else None)
    print("\nPer photo (answer / confidence / ms):")
    header = f"{'photo':28} {'truth':34}" + "".join(f" | {p:>44}" for p in profiles)
    print(header)
    print("-" * len(header))
    per_profile = {p: {r["photo"]: r for r in runs[p]["served"]["photos"]} for p in profiles}
    for photo in per_profile[base]:
        first = per_profile[base][photo]
        line = f"{Path(photo).name:28} {first['truth_label'][:34]:34}"
        for p in profiles:
            r = per_profile[p][photo]
            if r["kind"] == "multi":
                mark = f"{len(set(r['truth']) & set(r.get('multi_ids', [])))}/{len(r['truth'])}"
            else:
                right = r["answer"] == (r["truth"][0] if r["truth"] else None)
                mark = "ok" if right else "XX"
            label = (" + ".join(r.get("multi_labels", [])) if r["kind"] == "multi"
                     else r["answer_label"])
            ms = r.get("multi_ms", r["ms"])
            line += f" | {mark:2} {label[:25]:25} {r['confidence']:4.2f} {ms:6.0f}"
        print(line)

    # (label, the value shown from a run's summary, the summary key where there is one)
    rows: list[tuple[str, Callable[[dict[str, Any]], Any], str | None]] = [
        ("single-card top-1", lambda s: f"{s['top1']}/{s['top1_of']}", "top1"),
        ("out-of-catalogue accepted", lambda s: f"{s['false_accepts']}/{s['false_accepts_of']}",
         "false_accepts"),
        ("lowest confidence, right answers", lambda s: s["min_conf_right"], None),
        ("highest confidence, out-of-cat.", lambda s: s["max_conf_out"], None),
        ("IMG_5981 cards, single answer", lambda s: f"{s['single_on_multi']}/{s['multi_of']}",
         None),
        ("IMG_5981 cards found, multi=true", lambda s: f"{s['multi_found']}/{s['multi_of']}",
         "multi_found"),
        ("  ... extra cards reported", lambda s: s["multi_extra"], None),
        ("  ... ms per photo / per card",
         lambda s: f"{s['multi_ms']} / {s['multi_ms_per_card']}", None),
        ("webcam p50 ms", lambda s: s["latency_ms"]["webcam"]["p50"], None),
        ("webcam p95 ms", lambda s: s["latency_ms"]["webcam"]["p95"], None),
        ("webcam CPU p50 ms (2 threads)", lambda s: s["latency_ms"]["webcam"]["cpu_p50"], None),
        ("phone 12MP p50 ms", lambda s: s["latency_ms"]["phone"]["p50"], None),
        ("phone 12MP p95 ms", lambda s: s["latency_ms"]["phone"]["p95"], None),
        ("other photos p50 ms", lambda s: s["latency_ms"]["other"]["p50"], None),
        ("serving peak RSS MB", lambda s: s["peak_rss_mb"], None),
        ("  ... with 2 requests at a time", lambda s: s["peak_rss_2_concurrent_mb"], None),
        ("throughput ms/photo, 2 at a time", lambda s: s["ms_per_photo_2_concurrent"], None),
        ("bundle open ms", lambda s: s["bundle_open_ms"], None),
        ("bundle size MB", lambda s: s["bundle_mb"], None),
        ("build s", lambda s: s["build_s"], None),
        ("build images/s", lambda s: s["images_per_s"], None),
        ("descriptors (indexed)", lambda s: f"{s['descriptors']} ({s['indexed']})", None),
    ]
    print()
    header = f"{'metric':30}" + "".join(f" {p:>18}" for p in profiles)
    if ref:
        header += f" {'ratio ' + base + '/' + ref:>22}"
    print(header)
    print("-" * len(header))
    for label, fmt, _ in rows:
        values = [fmt(runs[p]["summary"]) for p in profiles]
        line = f"{label:30}" + "".join(f" {str(v):>18}" for v in values)
        if ref:
            line += f" {_ratio(values[0], values[1]):>22}"
        print(line)


def _ratio(a: Any, b: Any) -> str:
    def num(v: Any) -> float | None:
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str) and "/" in v:
            return float(v.split("/")[0])
        if isinstance(v, str) and "(" in v:
            return float(v.split()[0])
        return None

    x, y = num(a), num(b)
    if x is None or y is None:
        return "-"
    return f"{x / y:.2f}x" if y else ("=" if x == 0 else "inf")


# -- driver ----------------------------------------------------------------------------------
def _dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.iterdir()) / 1e6, 1)


def run_profile(name: str, params: Any, eval_dir: Path, work: Path, args: argparse.Namespace
                ) -> dict[str, Any]:
    from app.catalog.records import reference_images
    from app.recognition.index.build import build_bundle

    digest = hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()
    bundle_dir = (Path(args.cache_dir) if args.cache_dir else work) / f"{name}-{digest[:10]}"
    if not (bundle_dir / "manifest.json").exists():
        shutil.rmtree(bundle_dir, ignore_errors=True)
        print(f"[{name}] building bundle in {bundle_dir} ...", flush=True)
        build_bundle(reference_images(eval_dir / "cards.jsonl.gz"), bundle_dir, params,
                     progress=True, workers=args.threads)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    cards = manifest["counts"]["cards"]
    build = {
        "build_s": manifest["build_seconds"],
        "images_per_s": round(cards / manifest["build_seconds"], 1),
        "bundle_mb": _dir_mb(bundle_dir),
        "cards": cards,
        "descriptors": manifest["counts"]["candidates"],
        "indexed": manifest["counts"]["indexed_descriptors"],
        "index": manifest["index"],
    }
    print(f"[{name}] recognising photos in a serving process ...", flush=True)
    served = serve_in_subprocess("bench.eval", [
        "--serve", str(bundle_dir.resolve()), "--eval-dir", str(eval_dir), "--repeat",
        str(args.repeat), "--threads", str(args.threads),
        "--heic-cache", str((Path(args.cache_dir or RESULTS_DIR) / "heic").resolve())],
        nice=True)
    return {"params": params.to_dict(), "served": served, "summary": summarise(served, build)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--scale" in argv:  # the catalogue-scale benchmark (bench/scale.py)
        return scale.main(argv)
    if "--reprints" in argv:  # printings sharing the art (bench/printings.py)
        return printings.main(argv)
    parser = argparse.ArgumentParser(prog="python -m bench.eval",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", default=str(EVAL_DIR))
    parser.add_argument("--out", default=str(RESULTS_DIR / "bench.json"))
    parser.add_argument("--profiles", default="default,legacy")
    parser.add_argument("--set", action="append", default=[],
                        help="override a parameter: [profile.]name=json-value")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs per photo (median kept)")
    parser.add_argument("--cache-dir", help="keep built bundles here, reused per parameter hash")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--heic-cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads_env(args.threads)
    eval_dir = Path(args.eval_dir).resolve()

    if args.serve:
        heic_cache = Path(args.heic_cache) if args.heic_cache else None  # None: no copies
        print(json.dumps(serve(Path(args.serve), eval_dir, args.repeat, args.threads,
                               heic_cache)))
        return 0
    if eval_set_missing(eval_dir, "eval", "labels.csv", "cards.jsonl.gz"):
        return 0

    from app.recognition.features.extraction import configure_threads
    from app.recognition.params import PROFILES

    configure_threads(args.threads)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in profiles:
            params = override(PROFILES[name], args.set, name)
            runs[name] = run_profile(name, params, eval_dir, Path(tmp), args)
    print_table(profiles, runs)
    for name in profiles:
        print_copies(name, runs[name]["summary"]["copies"])
    out = write_json(Path(args.out), {"profiles": runs, "threads": args.threads,
                                      "overrides": args.set})
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
