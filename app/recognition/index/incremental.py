"""Extend the release before this one to the current catalogue (format in `bundle.py`; the
full build is `build.py`).

Incremental build (a nightly refresh that changes a few % of the printings): the trained
index of the previous release is reused; printings whose image key is unchanged keep their
slot, their indexed vectors and their shard (hard-linked when no slot of it changed); gone
printings leave an empty slot (their vectors stay, ignored, until a full build); new ones are
appended. Only new images are extracted. `incremental_plan` says when a full build is due
instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from app.common.progress import Progress
from app.common.reference import ReferenceImage
from app.recognition.index import mapped_lists, pictures
from app.recognition.index.build import omp_threads
from app.recognition.index.bundle import (
    FORMAT_VERSION,
    ID_MAP_FILE,
    INDEX_FILE,
    STOPWORDS_FILE,
    Bundle,
    BundleError,
    IdMap,
    manifest_params,
    read_manifest,
    shard_name,
)
from app.recognition.index.shards import Kept, ShardWriter
from app.recognition.index.spool import Pictures, Spool, picture_of
from app.recognition.index.stop_words import index_spool
from app.recognition.index.writing import finish, fresh_dir, write_index
from app.recognition.params import FeatureParams


def incremental_plan(previous: Path, keys: list[str | None], params: FeatureParams,
                     max_changed: float) -> str | None:
    """Why `previous` cannot be extended to the catalogue of `keys` (None when it can)."""
    try:
        manifest = read_manifest(previous)
    except BundleError as exc:
        return str(exc)
    try:
        old = manifest_params(manifest)
    except (KeyError, ValueError, TypeError):
        return "unreadable parameters"
    differ = old.build_differences(params)
    if differ:
        return f"parameters changed ({', '.join(differ)})"
    if manifest.get("format_version") != FORMAT_VERSION:
        # before format 4 every printing was its own picture, in lists each process copied
        return f"format {manifest.get('format_version')} release (this build writes " \
               f"format {FORMAT_VERSION})"
    if any(k is None for k in keys):
        return "references without image keys"
    slots = int(manifest["counts"]["slots"])
    cards = int(manifest["counts"]["cards"])
    if not cards:
        return "empty previous release"
    try:
        id_map = IdMap((previous / ID_MAP_FILE).read_bytes())
    except OSError as exc:
        return f"no readable id map ({exc})"
    old_keys = {e["key"] for e in id_map if e is not None}
    new_keys = set(keys)
    changed = len(new_keys - old_keys) + len(old_keys - new_keys)
    if changed > max_changed * cards:
        return f"{changed} of {cards} printings changed (over {max_changed:.0%})"
    empty = slots - cards + len(old_keys - new_keys)
    if empty > 0.2 * (slots + len(new_keys - old_keys)):
        return f"{empty} empty slots: time to compact"
    return None


def build_incremental(
    refs: Iterable[ReferenceImage],
    out_dir: Path,
    params: FeatureParams,
    previous: Path,
    *,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Extend the bundle at `previous` to exactly the printings of `refs` (see module doc).
    Only references whose key is new are prepared; the rest keep their slot and vectors."""
    with omp_threads(workers):
        return _build_incremental(refs, out_dir, params, previous, progress=progress,
                                  workers=workers)


class FullBuildNeeded(BundleError):
    """The previous release cannot be extended to this catalogue; the message says why."""


def _build_incremental(
    refs: Iterable[ReferenceImage],
    out_dir: Path,
    params: FeatureParams,
    previous: Path,
    *,
    progress: bool,
    workers: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    out_dir = fresh_dir(out_dir)
    timings: dict[str, float] = {}
    old = Bundle.open(previous, expected_params=params)
    try:
        old_entries = list(old.iter_entries())
        by_key = {e["key"]: slot for slot, e in enumerate(old_entries) if e is not None}
        refs = list(refs)

        def stays(ref: ReferenceImage) -> bool:
            """Same image, same picture: keeps its slot. A printing whose picture changed
            moves (its slot is emptied, it is added again)."""
            slot = by_key.get(ref.key)
            return slot is not None and (old_entries[slot] or {}).get("picture") == (
                ref.extra.get("picture"))

        new_refs = [r for r in refs if not stays(r)]
        staying = {by_key[r.key] for r in refs if stays(r)}
        gone = [slot for slot, e in enumerate(old_entries) if e is not None
                and slot not in staying]
        orphans = [slot for slot in gone if int(old.picture[slot]) == slot
                   and any(int(old.picture[s]) == slot for s in staying)]
        if orphans:
            raise FullBuildNeeded(
                f"{len(orphans)} printing(s) indexed for a picture that other printings still "
                f"show are gone (slot {orphans[0]}): their pictures need a new reference")
        # entries: old ones (their metadata refreshed from refs), gone ones emptied
        entries: list[dict[str, Any] | None] = list(old_entries)
        changed_slots: set[int] = set(gone)
        for ref in refs:
            slot = by_key.get(ref.key)
            if slot in staying and entries[slot] != ref.id_entry():
                entries[slot] = ref.id_entry()  # same image, new metadata (id map only)
        for slot in gone:
            entries[slot] = None
        # the references already indexed for the pictures of new printings
        wanted_pictures = {picture_of(r) for r in new_refs} - {None}
        known = {
            str((entries[slot] or {})["picture"]): (slot,
                                                     pictures.signature(old.thumbnail(slot)))
            for slot in sorted(staying)
            if int(old.picture[slot]) == slot and old.kept[slot] > 0
            and (entries[slot] or {}).get("picture") in wanted_pictures
        }

        clock = time.perf_counter()
        index = faiss.read_index(str(previous / INDEX_FILE))
        scratch = (faiss.read_index(str(previous / STOPWORDS_FILE))
                   if (previous / STOPWORDS_FILE).exists() else None)
        # Vectors of gone printings stay in the index, under a slot the id map marks empty
        # (the query ignores its votes) until a full build compacts them away (see
        # incremental_plan). Not remove_ids: on fast-scan lists, vectors added after a
        # removal were found for 37% of queries instead of 100% (faiss 1.15, measured).
        timings["load"] = time.perf_counter() - clock

        clock = time.perf_counter()
        spool = Spool(out_dir, first_slot=len(entries))
        try:
            with Progress("extracting", total=len(new_refs), unit="img",
                          enabled=progress) as bar:
                shared = Pictures(params, spool, workers, bar, known)
                shared.add(new_refs)
            skipped = shared.skipped
            spool.close()
            if shared.undescribed_strays:
                raise FullBuildNeeded(
                    f"{shared.undescribed_strays} printing(s) differ from their picture's "
                    "reference and have no features of their own")
            timings["extract"] = time.perf_counter() - clock
            clock = time.perf_counter()
            added = len(spool.counts)
            new_kp: dict[int, Kept] = {}
            stats = {"stop_words": 0}
            additions = mapped_lists.Additions(index)
            for kept in index_spool(index, additions, scratch, spool, params, len(entries),
                                    False, stats):
                new_kp[len(entries)] = kept
                entries.append(kept.entry)
            padding = additions.close()
            timings["index"] = time.perf_counter() - clock
        finally:
            spool.remove()
        changed_slots.update(new_kp)

        # shards: hard-link those with no changed slot, rewrite the others
        clock = time.perf_counter()
        shard_slots = old.shard_slots
        shard_count = (len(entries) + shard_slots - 1) // shard_slots
        linked = 0
        for number in range(shard_count):
            lo, hi = number * shard_slots, min(len(entries), (number + 1) * shard_slots)
            name = shard_name(number)
            if (number < len(old.manifest["shards"])
                    and hi <= len(old_entries) and not any(s in changed_slots
                                                           for s in range(lo, hi))):
                os.link(previous / name, out_dir / name)
                linked += 1
                continue
            writer = ShardWriter()
            for slot in range(lo, hi):
                if slot in new_kp:
                    writer.add_kept(new_kp[slot])
                elif slot < len(old_entries) and (entry := entries[slot]) is not None:
                    writer.add(old.keypoints(slot), old.thumbnail_bytes(slot),
                               (float(old.ref_size[slot][0]), float(old.ref_size[slot][1])),
                               str(entry["name"]), old.color_bytes(slot),
                               int(old.picture[slot]))
                else:
                    writer.add_empty()
            writer.write(out_dir / name)
        timings["shards"] = time.perf_counter() - clock
        write_index(index, out_dir / INDEX_FILE)
        if scratch is not None:
            os.link(previous / STOPWORDS_FILE, out_dir / STOPWORDS_FILE)
        counts_out = {
            "candidates": int(old.manifest["counts"].get("candidates", 0)),
            "stop_words": int(old.manifest["counts"].get("stop_words", 0)) + stats["stop_words"],
            "skipped_images": skipped,
            "reused_cards": len(refs) - len(new_refs),
            "new_cards": added,
            "removed_cards": len(gone),
            "padding_vectors": int(old.manifest["counts"].get("padding_vectors", 0)) + padding,
            "linked_shards": linked,
            "references": int(old.manifest["counts"].get("references", 0)) + int(
                np.count_nonzero(np.asarray(spool.counts) > 0)),
            "shared_pictures": shared.shared,
            "picture_disagreements": shared.disagreed,
        }
        parent = old.version
    finally:
        old.close()
    return finish(out_dir, params, index, entries, shard_count, shard_slots, counts_out,
                  timings, started, parent)
