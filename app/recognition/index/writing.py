"""The last step of a build: the FAISS index, the id map, then the manifest with every
file's checksum, each written to a temporary name and moved into place; and the fresh
directory a bundle is built into."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss

from app.recognition.index.bundle import (
    FORMAT_VERSION,
    ID_MAP_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    STOPWORDS_FILE,
    BundleError,
    sha256_file,
    shard_name,
)
from app.recognition.index.training import factory
from app.recognition.params import FeatureParams


def write_index(index: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def _write_id_map(path: Path, entries: list[dict[str, Any] | None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def finish(
    out_dir: Path,
    params: FeatureParams,
    index: Any,
    entries: list[dict[str, Any] | None],
    shard_count: int,
    shard_slots: int,
    counts: dict[str, Any],
    timings: dict[str, float],
    started: float,
    parent: str | None,
) -> dict[str, Any]:
    """Write the id map, then the manifest (every file's checksum; a version named by the
    build time and a hash of those checksums) last; returns the manifest."""
    _write_id_map(out_dir / ID_MAP_FILE, entries)
    names: list[str] = [INDEX_FILE, ID_MAP_FILE]
    names += [shard_name(i) for i in range(shard_count)]
    if (out_dir / STOPWORDS_FILE).exists():
        names.append(STOPWORDS_FILE)
    files: dict[str, dict[str, Any]] = {
        name: {"sha256": sha256_file(out_dir / name), "bytes": (out_dir / name).stat().st_size}
        for name in names
    }
    built_at = datetime.now(UTC)
    short = hashlib.sha256("".join(str(f["sha256"]) for f in files.values()).encode()
                           ).hexdigest()
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": release_version(built_at, short),
        "built_at": built_at.isoformat(),
        "build_seconds": round(time.perf_counter() - started, 2),
        "extract_seconds": round(timings.get("extract", 0.0), 2),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "parent": parent,
        "params": params.to_dict(),
        "index": {
            "type": type(index).__name__,
            "factory": factory(int(index.nlist), params),
            "nlist": int(index.nlist),
            "pq_m": params.pq_m,
            "pq_nbits": params.pq_nbits,
            "by_residual": params.pq_residual,
        },
        "counts": {
            "cards": sum(1 for e in entries if e is not None),
            "slots": len(entries),
            # vectors in the index: the descriptors kept, and `padding_vectors` far vectors
            # that fill the lists' last blocks (mapped_lists.far_code)
            "indexed_descriptors": int(index.ntotal),
            **counts,
        },
        "shard_slots": shard_slots,
        "shards": [shard_name(i) for i in range(shard_count)],
        "files": files,
    }
    tmp = out_dir / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST_FILE)
    return manifest


def release_version(built_at: datetime, digest: str) -> str:
    """A release's name: its build time, then a digest of its files. Releases are ordered by
    name (promotion refuses an older one, rollback takes the one before), so the time is to
    the microsecond: to the second, two refreshes within one second were ordered by their
    digest, and the later one could be refused as older (seen in the suite)."""
    return f"{built_at:%Y%m%dT%H%M%S%fZ}-{digest[:10]}"


def fresh_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"{out_dir} is not empty; a bundle is built into a fresh directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir

