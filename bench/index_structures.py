"""Index structures side by side: recall, search time and what a process holds of each.

Reference descriptors (RootSIFT) come from a feature cache (`data/.../features`, as the
scale benchmark keeps it); queries are the descriptors of the eval set's single-card photos,
extracted as `POST /infer` extracts them (first query pass). Each structure shares the coarse
quantizer's kind (IVF, HNSW32 over the centroids) and nlist; each index is written, read back
as serving reads it (`IO_FLAG_MMAP_IFC`), and searched one photo at a time on one thread with
k = 8 and nprobe 6 (the default profile's). Recall@8: the share of each query's 8 exact
nearest neighbours (flat search) among the 8 returned; 1-recall@1: the exact nearest one
first. "Copied" is the index's memory the process holds privately (anonymous pages, read in
`/proc/self/smaps` after the searches): a second process on the host pays it again.

    python -m bench.index_structures --features DIR [--cards 3000] [--photos 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import EVAL_DIR, eval_set_missing, load_labels, middle

STRUCTURES = ("PQ32x4fs (mapped layout)", "PQ32x4fs (block lists)", "PQ16x8", "SQ4")


def _anonymous_mb() -> float:
    total = 0
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            total += int(line.split()[1])
    return total / 1024


def main(argv: list[str] | None = None) -> int:
    import faiss

    from app.recognition.decode.uploads import decode
    from app.recognition.features.extraction import (
        configure_threads,
        extract_features,
        release_freed_memory,
        rootsift,
    )
    from app.recognition.index import mapped_lists
    from app.recognition.params import DEFAULT

    parser = argparse.ArgumentParser(prog="python -m bench.index_structures",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="a feature cache directory")
    parser.add_argument("--cards", type=int, default=3000)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--eval-dir", default=str(EVAL_DIR))
    args = parser.parse_args(argv)
    eval_dir = Path(args.eval_dir)
    files = sorted(Path(args.features).rglob("*.npz"))
    files = [f for f in files if not f.name.endswith(".thumb.npz")][: args.cards]
    if not files:
        print(f"index bench skipped: no feature cache (*.npz) under {args.features}")
        return 0
    if eval_set_missing(eval_dir, "index", "labels.csv"):
        return 0
    configure_threads(1)
    faiss.omp_set_num_threads(1)
    base = np.concatenate([rootsift(np.load(f)["descriptors"]) for f in files])
    photos = [e for e in load_labels(eval_dir) if e["kind"] != "multi"][: args.photos]
    queries = []
    for entry in photos:
        decoded = decode((eval_dir / entry["photo"]).read_bytes(), max_side=960)
        queries.append(rootsift(extract_features(decoded.image, DEFAULT, role="query")
                                .descriptors))
    truth = [faiss.knn(q, base, 8)[1] for q in queries]
    nlist = 1 << max(4, round(np.log2(4 * np.sqrt(len(base)))))
    rng = np.random.default_rng(0)
    train = base[rng.choice(len(base), min(len(base), max(65536, 40 * nlist)), replace=False)]
    print(f"{len(base)} reference descriptors of {len(files)} cards, {sum(map(len, queries))} "
          f"query descriptors of {len(queries)} photos, nlist {nlist}\n")
    print("| structure | bytes/vector | recall@8 | 1-recall@1 | search ms p50 / p95 per photo "
          "| copied into the process MB |\n|---|---|---|---|---|---|")
    for name in STRUCTURES:
        codes = name.split()[0]
        index = faiss.index_factory(128, f"IVF{nlist}_HNSW32,{codes}")
        index.train(train)  # the same sample, the same seeds: the same coarse centroids
        index.add(base)
        if "mapped" in name:
            mapped_lists.to_mapped(index)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index"
            faiss.write_index(index, str(path))
            del index
            release_freed_memory()  # what the build freed must not hide what loading takes
            before = _anonymous_mb()
            served = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
            params = faiss.SearchParametersIVF()
            params.nprobe = 6
            times, hits8, hits1 = [], 0, 0
            for q, t in zip(queries, truth, strict=True):
                start = time.perf_counter()
                _, found = served.search(q, 8, params=params)
                times.append((time.perf_counter() - start) * 1000)
                hits8 += sum(len(set(a) & set(b)) for a, b in zip(found, t, strict=True))
                hits1 += int((found[:, 0] == t[:, 0]).sum())
            copied = _anonymous_mb() - before
            size = path.stat().st_size / len(base)
            del served
        n = sum(map(len, queries))
        times.sort()
        print(f"| {name} | {size:.1f} | {hits8 / (8 * n):.3f} | {hits1 / n:.3f} | "
              f"{middle(times):.1f} / {times[int(0.95 * (len(times) - 1))]:.1f} | "
              f"{max(0.0, copied):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
