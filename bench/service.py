"""Service-level benchmark: overload behaviour and the cost of a hot swap, on loopback.

Starts the real server (`python -m app`: gunicorn, one process, gthread) on 127.0.0.1 with a
bundle of the eval catalogue (../shared/eval), then
  1. load: 16 concurrent clients for 60 s -> statuses, connection errors, p50/p95 of the
     accepted requests (200/404), and whether every refusal was a 503 with Retry-After;
  2. swap: 4 clients while the bundle is promoted 10 times -> latency of requests that
     overlapped a swap vs the others, and the server's own measured swap pause.
Traffic goes only to 127.0.0.1, bounded in time. Prints a table and writes JSON.

    python -m bench.service [--eval-dir ../shared/eval] [--seconds 60] [--clients 16]
                            [--out FILE]

The requests are the eval set's webcam photos and one photo of a card it does not hold (a
404). The swaps alternate two bundles: A of the whole eval catalogue, B without every tenth
printing, so that every promotion loads an index that really differs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import app  # noqa: F401  (sets thread/decode environment before numpy loads)

# isort: split
import requests

from app.catalog.records import reference_images
from app.pipeline import releases
from app.recognition.index.build import build_bundle
from app.recognition.params import PROFILES
from bench.common import (
    EVAL_DIR,
    RESULTS_DIR,
    ROOT,
    eval_set_missing,
    free_port,
    load_labels,
    wait_ready,
    write_json,
)


def _photos(eval_dir: Path) -> list[bytes]:
    """The webcam photos of catalogued cards, and one photo of a card not catalogued."""
    labels = load_labels(eval_dir)
    chosen = [row for row in labels if row["group"] == "webcam" and row["kind"] == "catalogued"]
    stranger = next(row for row in labels if row["kind"] == "out")
    return [(eval_dir / row["photo"]).read_bytes() for row in [*chosen, stranger]]


def _build(eval_dir: Path, out: Path, keep: Any) -> None:
    refs = (ref for n, ref in enumerate(reference_images(eval_dir / "cards.jsonl.gz"))
            if keep(n))
    build_bundle(refs, out, PROFILES["default"], progress=False, workers=2)


def _install(resources: Path, bundle: Path, version: str) -> Path:
    """A copy of a built bundle stored as release `version` (not yet promoted)."""
    staged = releases.staging_dir(resources) / version
    shutil.copytree(bundle, staged)
    return releases.store_release(resources, staged, version, pending=False)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Server:
    def __init__(self, resources: Path, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PORT": str(self.port),
            "RESOURCES_DIR": str(resources),
            "SCRYFALL_DATA_DIR": str(data),
            "REFRESH_ENABLED": "false",
            "LOG_LEVEL": "warning",
            "FLASK_ENV": "development",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
        )

    def wait_ready(self, timeout: float = 120) -> None:
        wait_ready(self.url, self.process, timeout)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_clients(
    url: str, photos: list[bytes], clients: int, seconds: float, on_tick: Any = None
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(worker: int) -> None:
        session = requests.Session()
        n = worker
        while time.monotonic() < deadline:
            body = photos[n % len(photos)]
            n += 1
            start = time.monotonic()
            entry: dict[str, Any] = {"start": start}
            try:
                response = session.post(
                    f"{url}/infer",
                    files={"roi_image": ("photo.jpg", body, "image/jpeg")},
                    timeout=60,
                )
                entry.update(
                    status=response.status_code,
                    retry_after=response.headers.get("Retry-After"),
                    version=response.json().get("index_version"),
                )
            except requests.RequestException as exc:
                entry.update(status=None, error=str(exc))
            entry["end"] = time.monotonic()
            entry["ms"] = (entry["end"] - start) * 1000
            with lock:
                results.append(entry)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    if on_tick is not None:
        on_tick(deadline)
    for thread in threads:
        thread.join()
    return results


def load_test(url: str, photos: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    results = run_clients(url, photos, clients, seconds)
    statuses = Counter(str(r["status"]) for r in results)
    accepted = [r["ms"] for r in results if r["status"] in (200, 404)]
    bad_5xx = [r for r in results if (r["status"] or 0) >= 500 and not (
        r["status"] == 503 and r.get("retry_after"))]
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(results),
        "statuses": dict(statuses),
        "connection_errors": sum(1 for r in results if r["status"] is None),
        "bad_5xx": len(bad_5xx),
        "accepted_per_s": round(len(accepted) / seconds, 2),
        "accepted_p50_ms": round(_percentile(accepted, 0.5), 1),
        "accepted_p95_ms": round(_percentile(accepted, 0.95), 1),
    }


def swap_test(
    url: str, photos: list[bytes], resources: Path, bundles: dict[str, Path], swaps: int
) -> dict[str, Any]:
    swap_times: list[float] = []
    pauses: list[float] = []

    def promote_loop(deadline: float) -> None:
        time.sleep(2.0)
        for n in range(1, swaps + 1):
            name = "B" if n % 2 else "A"
            release = _install(resources, bundles[name], f"{n + 1:04d}-{name}")
            swap_times.append(time.monotonic())
            releases.promote(resources, release)
            time.sleep(1.5)
            model = requests.get(f"{url}/readyz", timeout=5).json()["model"]
            if model.get("last_swap_pause_ms") is not None:
                pauses.append(float(model["last_swap_pause_ms"]))

    results = run_clients(url, photos, 4, 2.0 + swaps * 1.7, on_tick=promote_loop)
    # a request "saw" a swap when it was in flight within 1 s after a promotion
    # (debounce 0.3 s + loading the new bundle happen in that window)
    near = [
        r for r in results
        if r["status"] in (200, 404)
        and any(r["start"] <= t + 1.0 and r["end"] >= t for t in swap_times)
    ]
    far = [r["ms"] for r in results if r["status"] in (200, 404) and r not in near]
    baseline = statistics.median(far) if far else float("nan")
    worst = max((r["ms"] for r in near), default=float("nan"))
    return {
        "swaps": swaps,
        "requests": len(results),
        "errors": sum(1 for r in results if r["status"] not in (200, 404)),
        "versions_seen": len({r.get("version") for r in results if r.get("version")}),
        "median_ms_away_from_swaps": round(baseline, 1),
        "worst_ms_near_a_swap": round(worst, 1),
        "worst_extra_ms_near_a_swap": round(worst - baseline, 1),
        "server_swap_pause_ms_max": round(max(pauses), 4) if pauses else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "service.json")
    args = parser.parse_args(argv)
    if eval_set_missing(args.eval_dir, "service", "cards.jsonl.gz", "labels.csv"):
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        base = Path(tmp)
        print("building two bundles of the eval catalogue ...", flush=True)
        bundles = {"A": base / "A", "B": base / "B"}
        _build(args.eval_dir, bundles["A"], lambda n: True)
        _build(args.eval_dir, bundles["B"], lambda n: n % 10 != 9)
        resources = base / "resources"
        releases.promote(resources, _install(resources, bundles["A"], "0001-A"))
        photos = _photos(args.eval_dir)
        server = Server(resources, base / "data")
        try:
            server.wait_ready()
            print(f"load: {args.clients} clients for {args.seconds:.0f} s ...", flush=True)
            load = load_test(server.url, photos, args.clients, args.seconds)
            print(f"swap: 4 clients, {args.swaps} promotions ...", flush=True)
            swap = swap_test(server.url, photos, resources, bundles, args.swaps)
        finally:
            server.stop()

    report = {"load": load, "swap": swap}
    write_json(args.out, report, indent=2)
    print()
    print("| load test (loopback, real server) | value |")
    print("|---|---|")
    for key, value in load.items():
        print(f"| {key} | {value} |")
    print()
    print("| hot swap under load | value |")
    print("|---|---|")
    for key, value in swap.items():
        print(f"| {key} | {value} |")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
