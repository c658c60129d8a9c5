"""Scale benchmark: the 720 real printings of ../shared/eval plus N synthetic ones, built with
the real `flask build-index`, then every photo of the eval set sent to the real server.

For each N (and profile): build wall time and peak RSS (the build-index process), bundle
bytes per printing, the time to rebuild after adding 1% more printings (an incremental
refresh), serving peak RSS with 1 and 2 requests in flight and the private memory of the
serving process (what a second replica on the same host adds: the mapped index is shared
through the page cache), HTTP p50/p95 per photo group, right answers and false accepts.

Synthetic printings come from ../shared/tools/distractors.py (generated once into
--distractors, reused). The feature cache under --work is kept between runs, so a rerun
only re-indexes; the first (cold) build of each N is recorded in --work/cold-builds.json
and reported beside the warm one.

    python -m bench.eval --scale 10000 --scale 100000 [--distractors DIR] [--seed S]
    python -m bench.scale --scale 10000 ...            (the same)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import (
    DATA_DIR,
    EVAL_DIR,
    RESULTS_DIR,
    ROOT,
    eval_set_missing,
    free_port,
    load_labels,
    median_run,
    percentile,
    wait_ready,
    write_json,
)

SEED = 20261207
TWINS = 0.52  # the real catalogue's share of printings that share their picture (issue 25)


def _log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- catalogue -------------------------------------------------------------------------------
def ensure_distractors(eval_dir: Path, out: Path, count: int, seed: int,
                       twins: float = TWINS) -> Path:
    """OUT/cards.jsonl.gz with at least `count` distractor printings after the eval
    catalogue; with `twins`, the real reprint structure (distractors.py counts pictures:
    about count * (1 - 0.63 * twins) of them, 3% more for the spread)."""
    cards = out / "cards.jsonl.gz"
    have = 0
    if cards.exists():
        with gzip.open(cards, "rt", encoding="utf-8") as fh:
            have = sum(1 for _ in fh) - _eval_count(eval_dir)
    if have >= count:
        return cards
    tool = eval_dir.parent / "tools" / "distractors.py"
    pictures = int(count * (1 - 0.63 * twins) * 1.03) + 10
    _log(f"generating {pictures} distractor pictures (twins {twins}) into {out} "
         f"(seed {seed}) ...")
    subprocess.run([sys.executable, str(tool), str(eval_dir), str(out), str(pictures),
                    "--seed", str(seed), "--twins", str(twins)], check=True)
    return cards


def _eval_count(eval_dir: Path) -> int:
    with gzip.open(eval_dir / "cards.jsonl.gz", "rt", encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def subset(cards: Path, eval_dir: Path, n: int) -> Path:
    """The eval catalogue + the first n distractors, next to the images they name."""
    path = cards.parent / f"cards-{n}.jsonl.gz"
    if path.exists():
        return path
    keep = _eval_count(eval_dir) + n
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(cards, "rt", encoding="utf-8") as src, gzip.open(tmp, "wt",
                                                                    encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= keep:
                break
            dst.write(line)
    os.replace(tmp, path)
    return path


# -- building --------------------------------------------------------------------------------
def env_for(work: Path, resources: Path, profile: str) -> dict[str, str]:
    """Each run its own resources and catalogue database; one feature cache for all N."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POSTGRES_", "REDIS_", "INFER_", "RESOURCE_BUNDLE"))}
    data = resources.parent / "data"
    data.mkdir(parents=True, exist_ok=True)
    shared = work / "features"
    shared.mkdir(parents=True, exist_ok=True)
    if not (data / "features").exists():
        (data / "features").symlink_to(shared)
    env.update({
        "RESOURCES_DIR": str(resources),
        "SCRYFALL_DATA_DIR": str(data),
        "RECOGNITION_PROFILE": profile,
        "REFRESH_ENABLED": "false",
        "LOG_LEVEL": "INFO",
        "FLASK_ENV": "development",
        "INFER_AUTH": "disabled",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def build(catalog: Path, env: dict[str, str], log_path: Path) -> dict[str, Any]:
    """Run `flask build-index` as an operator would; wall time and the process's peak RSS."""
    start = time.perf_counter()
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "build-index", "--catalog",
             str(catalog), "--workers", "2", "--keep-cache"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"build-index failed; see {log_path}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _current(resources: Path) -> Path:
    return (resources / "run").resolve()


# -- serving ---------------------------------------------------------------------------------
def _proc_kb(pid: int, field: str, name: str = "status") -> int:
    total = 0
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field):
                total += int(line.split()[1])
    except OSError:
        return 0
    return total


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def start_server(env: dict[str, str], timeout: float = 600) -> tuple[subprocess.Popen[bytes],
                                                                     str, float]:
    """`python -m app` on a free loopback port: (process, URL, seconds until /readyz said
    ready). The caller terminates it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # as in the Docker image: glibc keeps at most 2 malloc arenas
    server_env = {**env, "PORT": str(port), "LOG_LEVEL": "warning", "MALLOC_ARENA_MAX": "2"}
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=server_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, server, timeout)
    except RuntimeError:
        server.terminate()
        raise
    return server, url, time.perf_counter() - started


def _private_kb(pid: int) -> int:
    """What the process alone holds (smaps_rollup Private_*): pages of a file another
    process maps too are shared, not private."""
    return _proc_kb(pid, "Private_", "smaps_rollup")


def serve_http(env: dict[str, str], eval_dir: Path, repeat: int, second: bool = True
               ) -> dict[str, Any]:
    """Start `python -m app` on loopback and POST every photo; memory of the serving
    process (gunicorn's worker) read from /proc; then (`second`) a second serving process on
    the same release files (a replica or pod on the same host), sent every photo too: what
    it adds is its private memory."""
    server, url, _ = start_server(env)
    try:
        workers = _children(server.pid) or [server.pid]
        worker = workers[0]
        rss_ready = _proc_kb(worker, "VmRSS:")
        photos = load_labels(eval_dir)
        session = requests.Session()

        def post(data: bytes, multi: bool = False) -> tuple[float, dict[str, Any], int]:
            start = time.perf_counter()
            response = session.post(f"{url}/infer",
                                    files={"roi_image": ("p.jpg", data, "image/jpeg")},
                                    data={"multi": "true"} if multi else None, timeout=120)
            return (time.perf_counter() - start) * 1000, response.json(), response.status_code

        results = []
        for entry in photos:
            data = (eval_dir / entry["photo"]).read_bytes()
            ms, body, status = median_run([post(data) for _ in range(repeat)],
                                          key=lambda r: r[0])
            multi: dict[str, Any] = {}
            if entry["kind"] == "multi":  # and every card of it (POST /infer multi=true)
                multi_ms, scene, _ = median_run([post(data, True) for _ in range(repeat)],
                                                key=lambda r: r[0])
                multi = {"multi_ms": round(multi_ms, 1),
                         "multi_ids": [c["predicted_card_id"] for c in scene.get("cards", [])]}
            results.append({**entry, **multi, "ms": round(ms, 1), "status": status,
                            "answer": body.get("predicted_card_id") if status == 200 else None,
                            "answer_label": (f"{body.get('predicted_card_name')} {body.get('set')} "
                                             f"{body.get('collector_number')}"
                                             if status == 200 else "no match"),
                            "confidence": body.get("confidence"),
                            "timings_ms": body.get("timings_ms")})
        peak_1 = _proc_kb(worker, "VmHWM:")
        private_1 = _proc_kb(worker, "Private_", "smaps_rollup")
        blobs = [(eval_dir / e["photo"]).read_bytes() for e in photos]

        def client(part: list[bytes]) -> None:
            own = requests.Session()
            for data in part:
                own.post(f"{url}/infer", files={"roi_image": ("p.jpg", data, "image/jpeg")},
                         timeout=120)

        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(blobs[i::2],)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        concurrent_ms = (time.perf_counter() - start) * 1000 / len(blobs)
        if not second:
            return {"photos": results, "ms_per_photo_2_concurrent": round(concurrent_ms, 1),
                    "rss_ready_mb": round(rss_ready / 1024, 1),
                    "peak_rss_2_mb": round(_proc_kb(worker, "VmHWM:") / 1024, 1)}
        other_server, second_url, _ = start_server(env)
        try:
            client_session = requests.Session()
            for data in blobs:
                client_session.post(f"{second_url}/infer",
                                    files={"roi_image": ("p.jpg", data, "image/jpeg")},
                                    timeout=120)
            other = (_children(other_server.pid) or [other_server.pid])[0]
            second_private = _private_kb(other)
            second_rss = _proc_kb(other, "VmRSS:")
            first_private = _private_kb(worker)  # with the second alive: what it shares
        finally:
            other_server.terminate()
            other_server.wait(timeout=60)
        return {
            "second_private_mb": round(second_private / 1024, 1),
            "second_rss_mb": round(second_rss / 1024, 1),
            "first_private_with_second_mb": round(first_private / 1024, 1),
            "photos": results,
            "rss_ready_mb": round(rss_ready / 1024, 1),
            "peak_rss_1_mb": round(peak_1 / 1024, 1),
            "peak_rss_2_mb": round(_proc_kb(worker, "VmHWM:") / 1024, 1),
            "private_1_mb": round(private_1 / 1024, 1),
            "private_2_mb": round(_proc_kb(worker, "Private_", "smaps_rollup") / 1024, 1),
            "ms_per_photo_2_concurrent": round(concurrent_ms, 1),
        }
    finally:
        server.terminate()
        server.wait(timeout=60)


def archive_to_ready(release: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """The release archive a new replica downloads (`RESOURCE_BUNDLE_URL`): its size, and
    the time from starting a server with an empty RESOURCES_DIR to /readyz ready (download
    from a file: URL, unpack, verify every checksum, open)."""
    from app.pipeline.bootstrap import make_release_archive
    from app.recognition.index.bundle import sha256_file

    archive = make_release_archive(release, work / "release.tar.gz")
    digest = sha256_file(archive)
    fresh = work / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh_env = env_for(work, fresh / "resources", env["RECOGNITION_PROFILE"])
    fresh_env["RESOURCE_BUNDLE_URL"] = f"file://{archive}#sha256={digest}"
    try:
        server, _, seconds = start_server(fresh_env, timeout=1800)
        server.terminate()
        server.wait(timeout=60)
    finally:
        size = archive.stat().st_size
        archive.unlink(missing_ok=True)
        shutil.rmtree(fresh, ignore_errors=True)
    return {"archive_mb": round(size / 1e6, 1), "download_to_ready_s": round(seconds, 1)}


def other_benchmarks(release: Path, catalog: Path, eval_dir: Path, out_dir: Path,
                     stride: int = 1) -> dict[str, str]:
    """Twin printings decided by their line (bench/twins.py) and rendered photos of the
    eval catalogue's printings at 700 and 1000 px (bench/renders.py), against the release:
    their tables as printed."""
    tables = {}
    for name, command in (
        ("twins", [sys.executable, "-m", "bench.twins", "--bundle",
                   str(release), "--catalog", str(catalog),
                   "--out", str(out_dir / "twins.json")]),
        ("renders", [sys.executable, "-m", "bench.renders", "--bundle",
                     str(release), "--eval-dir", str(eval_dir), "--heights", "700,1000",
                     "--stride", str(stride), "--out", str(out_dir / "renders.json")]),
    ):
        _log(f"{name} on {release.name} ...")
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        tables[name] = done.stdout
        print(done.stdout, flush=True)
    return tables


def summarise(served: dict[str, Any]) -> dict[str, Any]:
    photos = served["photos"]
    single = [p for p in photos if p["kind"] != "multi"]
    cat = [p for p in photos if p["kind"] == "catalogued"]
    out = [p for p in photos if p["kind"] == "out"]
    groups = {"webcam": [p for p in single if p["group"] == "webcam"],
              "phone": [p for p in single if p["group"] == "phone"],
              "out-of-catalogue": out, "all single-card": single}
    multi = [p for p in photos if "multi_ids" in p]
    return {
        "multi_found": sum(len(set(p["truth"]) & set(p["multi_ids"])) for p in multi),
        "multi_of": sum(len(p["truth"]) for p in multi),
        "multi_reported": sum(len(p["multi_ids"]) for p in multi),
        "multi_ms": [p["multi_ms"] for p in multi],
        "right": sum(p["answer"] == p["truth"][0] for p in cat), "right_of": len(cat),
        "false_accepts": sum(p["answer"] is not None for p in out), "false_of": len(out),
        "latency": {name: {"p50": percentile([p["ms"] for p in g], 0.5),
                           "p95": percentile([p["ms"] for p in g], 0.95), "n": len(g)}
                    for name, g in groups.items()},
    }


# -- one N -----------------------------------------------------------------------------------
def run_scale(n: int, profile: str, args: argparse.Namespace, cards: Path, eval_dir: Path
              ) -> dict[str, Any]:
    work = Path(args.work)
    base = subset(cards, eval_dir, n)
    grown = subset(cards, eval_dir, n + max(1, n // 100))
    resources = work / f"{profile}-{n}" / "resources"
    saved = resources.parent / "builds.json"
    if args.reuse and saved.exists() and (resources / "run").exists():
        _log(f"{profile} N={n}: reusing the builds of {saved} (--reuse); serving ...")
        env = env_for(work, resources, profile)
        result: dict[str, Any] = json.loads(saved.read_text())
        served = serve_http(env, eval_dir, args.repeat)
        result.update({"serve": {k: v for k, v in served.items() if k != "photos"},
                       "photos": served["photos"], "summary": summarise(served)})
        _more(result, args, resources, base, eval_dir, env)
        return result
    shutil.rmtree(resources.parent, ignore_errors=True)
    resources.mkdir(parents=True)
    env = env_for(work, resources, profile)
    log_path = resources.parent / "build.log"
    _log(f"{profile} N={n}: build-index on {base.name} (log {log_path}) ...")
    built = build(base, env, log_path)
    release = _current(resources)
    manifest = json.loads((release / "manifest.json").read_text())
    bundle_bytes = sum(f["bytes"] for f in manifest["files"].values())
    cards_n = manifest["counts"]["cards"]
    refresh_counts = _last_counts(log_path)
    cold_path = work / "cold-builds.json"
    cold = json.loads(cold_path.read_text()) if cold_path.exists() else {}
    key = f"{profile}-{n}"
    # a cold build extracts every picture's reference and makes the others' thumbnails
    fresh = refresh_counts.get("extracted", 0) + refresh_counts.get("thumbnails", 0)
    if fresh >= 0.9 * cards_n:
        cold[key] = {**built, "extracted": refresh_counts.get("extracted"),
                     "build_timings_s": manifest.get("timings_s"),
                     "when": time.strftime("%Y-%m-%d %H:%M")}
        cold_path.write_text(json.dumps(cold, indent=1))
    _log(f"{profile} N={n}: built in {built['wall_s']} s; +1% -> {grown.name} ...")
    grown_build = build(grown, env, log_path)
    grown_manifest = json.loads((_current(resources) / "manifest.json").read_text())
    _log(f"{profile} N={n}: +1% rebuilt in {grown_build['wall_s']} s; serving ...")
    result = {
        "profile": profile, "n": n, "cards": cards_n,
        "build": built, "build_counts": refresh_counts, "cold_build": cold.get(key),
        "build_timings_s": manifest.get("timings_s"),
        "index": manifest["index"], "counts": manifest["counts"],
        "bundle_bytes": bundle_bytes,
        "bundle_bytes_per_printing": round(bundle_bytes / max(1, cards_n)),
        "files": {k: v["bytes"] for k, v in manifest["files"].items()},
        "grow": {**grown_build, "kind": _last_counts(log_path).get("build"),
                 "cards": grown_manifest["counts"]["cards"],
                 "timings_s": grown_manifest.get("timings_s"),
                 "linked_shards": grown_manifest["counts"].get("linked_shards")},
    }
    saved.write_text(json.dumps(result, indent=1))
    served = serve_http(env, eval_dir, args.repeat)
    result.update({"serve": {k: v for k, v in served.items() if k != "photos"},
                   "photos": served["photos"], "summary": summarise(served)})
    _more(result, args, resources, base, eval_dir, env)
    return result


def _more(result: dict[str, Any], args: argparse.Namespace, resources: Path, catalog: Path,
          eval_dir: Path, env: dict[str, str]) -> None:
    """The archive a new replica downloads, then the twins and renders benchmarks."""
    release = _current(resources)
    if args.compare_threads:
        result["threads"] = compare_threads(env, eval_dir, args)
    if not args.no_archive:
        result["archive"] = archive_to_ready(release, resources.parent, env)
    if not args.no_renders:
        result["tables"] = other_benchmarks(release, catalog, eval_dir, resources.parent,
                                           args.renders_stride)


def compare_threads(env: dict[str, str], eval_dir: Path, args: argparse.Namespace
                    ) -> dict[str, Any]:
    """The same server with each RECOGNITION_THREADS value, one after the other in one run:
    HTTP p50/p95 one request at a time, and ms per photo with 2 in flight."""
    out: dict[str, Any] = {}
    for threads in args.compare_threads.split(","):
        _log(f"RECOGNITION_THREADS={threads}: serving ...")
        served = serve_http({**env, "RECOGNITION_THREADS": threads.strip()}, eval_dir,
                            args.repeat, second=False)
        summary = summarise(served)
        out[threads.strip()] = {
            "latency": summary["latency"], "right": summary["right"],
            "false_accepts": summary["false_accepts"],
            "ms_per_photo_2_concurrent": served["ms_per_photo_2_concurrent"],
            "peak_rss_2_mb": served["peak_rss_2_mb"],
        }
    return out


def _last_counts(log_path: Path) -> dict[str, Any]:
    """The counts JSON of the last 'refresh succeeded' line of build-index's output."""
    for line in reversed(log_path.read_text().splitlines()):
        if line.startswith("refresh succeeded") and "{" in line:
            try:
                counts: dict[str, Any] = json.loads(line[line.index("{"):])
                return counts
            except ValueError:
                return {}
    return {}


def print_tables(results: list[dict[str, Any]]) -> None:
    for r in results:
        s = r["summary"]
        cold = r.get("cold_build") or {}
        lat = s["latency"]
        rows = [
            ("printings", r["cards"]),
            ("index", r["index"].get("factory")),
            ("indexed descriptors", r["counts"]["indexed_descriptors"]),
            ("build wall s (this run)", r["build"]["wall_s"]),
            ("  images extracted / cached", f"{r['build_counts'].get('extracted')} / "
                                            f"{r['build_counts'].get('cached')}"),
            ("  ms per printing", round(1000 * r["build"]["wall_s"] / r["cards"], 1)),
            ("build peak RSS MB", r["build"]["peak_rss_mb"]),
            ("cold build wall s (from images)", cold.get("wall_s")),
            ("  ms per printing", round(1000 * cold["wall_s"] / r["cards"], 1)
             if cold.get("wall_s") else None),
            ("  peak RSS MB", cold.get("peak_rss_mb")),
            ("bundle bytes per printing", r["bundle_bytes_per_printing"]),
            ("bundle MB", round(r["bundle_bytes"] / 1e6, 1)),
            ("rebuild after +1% s", f"{r['grow']['wall_s']} ({r['grow']['kind']})"),
            ("serving RSS MB, ready", r["serve"]["rss_ready_mb"]),
            ("serving peak RSS MB, 1 in flight", r["serve"]["peak_rss_1_mb"]),
            ("serving peak RSS MB, 2 in flight", r["serve"]["peak_rss_2_mb"]),
            ("private MB (the process alone)", r["serve"]["private_2_mb"]),
            ("a 2nd serving process adds, private MB", r["serve"].get("second_private_mb")),
            ("  its RSS MB", r["serve"].get("second_rss_mb")),
            ("references indexed (pictures)", r["counts"].get("references")),
            ("release archive MB", (r.get("archive") or {}).get("archive_mb")),
            ("  download to ready s", (r.get("archive") or {}).get("download_to_ready_s")),
            ("throughput ms/photo, 2 at a time", r["serve"]["ms_per_photo_2_concurrent"]),
        ]
        for name in ("webcam", "phone", "out-of-catalogue", "all single-card"):
            rows.append((f"HTTP p50 / p95 ms, {name} (n={lat[name]['n']})",
                         f"{lat[name]['p50']} / {lat[name]['p95']}"))
        for threads, t in (r.get("threads") or {}).items():
            single, out = t["latency"]["all single-card"], t["latency"]["out-of-catalogue"]
            rows += [(f"RECOGNITION_THREADS={threads}: p50 / p95 ms",
                      f"{single['p50']} / {single['p95']}"),
                     ("  out-of-catalogue p50 / p95 ms", f"{out['p50']} / {out['p95']}"),
                     ("  ms/photo 2 at a time, peak RSS MB",
                      f"{t['ms_per_photo_2_concurrent']}, {t['peak_rss_2_mb']}")]
        rows += [("right (catalogued single-card)", f"{s['right']}/{s['right_of']}"),
                 ("false accepts (out-of-catalogue)", f"{s['false_accepts']}/{s['false_of']}")]
        if s.get("multi_of"):
            rows += [("multi=true: found / reported / in photo",
                      f"{s['multi_found']} / {s['multi_reported']} / {s['multi_of']}"),
                     ("multi=true: HTTP ms per photo", " ".join(map(str, s["multi_ms"])))]
        print(f"\n## N = {r['n']} distractors, profile {r['profile']}")
        print(f"| {'metric':42} | {'value':>28} |\n|{'-' * 44}|{'-' * 30}|")
        for name, value in rows:
            print(f"| {name:42} | {str(value):>28} |")
        wrong = [p for p in r["photos"] if p["kind"] in ("catalogued", "out")
                 and p["answer"] != (p["truth"][0] if p["truth"] else None)]
        for p in wrong:
            print(f"   wrong: {p['photo']} ({p['truth_label']}) -> {p['answer_label']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale",
                                     description="scale benchmark")
    parser.add_argument("--scale", type=int, action="append", required=True)
    parser.add_argument("--eval-dir", default=str(EVAL_DIR))
    parser.add_argument("--distractors", default=str(DATA_DIR / "bench-scale" / "twins"))
    parser.add_argument("--work", default=str(DATA_DIR / "bench-scale"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--twins", type=float, default=TWINS,
                        help="share of printings that share their picture (distractors.py)")
    parser.add_argument("--profiles", default="default")
    parser.add_argument("--legacy-at", type=int, default=10_000,
                        help="also run the legacy profile at this N (0: never)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-archive", action="store_true",
                        help="skip the release archive's size and download-to-ready time")
    parser.add_argument("--renders-stride", type=int, default=1,
                        help="render every Nth printing of the eval catalogue only")
    parser.add_argument("--no-renders", action="store_true",
                        help="skip the twins and renders benchmarks on the release")
    parser.add_argument("--compare-threads", default="",
                        help="serve again with each of these RECOGNITION_THREADS (e.g. 1,2)")
    parser.add_argument("--reuse", action="store_true",
                        help="serve the bundles a previous run built (measure again, no build)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "scale.json"))
    args = parser.parse_args(argv)
    eval_dir = Path(args.eval_dir).resolve()
    if eval_set_missing(eval_dir, "scale", "labels.csv", "cards.jsonl.gz"):
        return 0
    Path(args.work).mkdir(parents=True, exist_ok=True)
    top = max(args.scale)
    cards = ensure_distractors(eval_dir, Path(args.distractors), top + max(1, top // 100),
                               args.seed, args.twins)
    runs: list[tuple[int, str]] = []
    for n in sorted(args.scale):
        for profile in [p.strip() for p in args.profiles.split(",") if p.strip()]:
            runs.append((n, profile))
        if n == args.legacy_at and "legacy" not in args.profiles:
            runs.append((n, "legacy"))
    results = []
    out = Path(args.out)
    for n, profile in runs:
        results.append(run_scale(n, profile, args, cards, eval_dir))
        write_json(out, results)
        print_tables(results[-1:])
    print("\n# all runs")
    print_tables(results)
    by = {(r["n"], r["profile"]): r for r in results}
    for n in sorted(args.scale):
        ours, legacy = by.get((n, "default")), by.get((n, "legacy"))
        if ours and legacy:
            def ratio(a: float | None, b: float | None) -> str:
                return f"{a / b:.2f}x" if a and b else "-"
            lo, ll = ours["summary"]["latency"], legacy["summary"]["latency"]
            build_ratio = ratio(ours["build"]["wall_s"], legacy["build"]["wall_s"])
            bytes_ratio = ratio(ours["bundle_bytes_per_printing"],
                                legacy["bundle_bytes_per_printing"])
            p50_ratio = ratio(lo["all single-card"]["p50"], ll["all single-card"]["p50"])
            rss_ratio = ratio(ours["serve"]["peak_rss_2_mb"], legacy["serve"]["peak_rss_2_mb"])
            print(f"\nN={n} ours/legacy: build {build_ratio}, bytes/printing {bytes_ratio}"
                  f", p50 {p50_ratio}, peak RSS {rss_ratio}"
                  f", right {ours['summary']['right']} vs {legacy['summary']['right']}"
                  f", false accepts {ours['summary']['false_accepts']} vs "
                  f"{legacy['summary']['false_accepts']}")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
