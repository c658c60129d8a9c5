"""Ingest benchmark: a synthetic Scryfall bulk file into PostgreSQL and SQLite.

Generates N card objects (default 100,000; shaped and sized like Scryfall's default_cards
records, ~2.5 kB each, some double-faced) as gzip JSON Lines in a temporary directory, then
streams it through the same code the nightly refresh uses (records.iter_records ->
face_images -> store.card_row -> CatalogStore.upsert_cards, one transaction) into:

- PostgreSQL: TEST_POSTGRES_HOST/PORT/USER/PASSWORD (default 127.0.0.1:5432, user postgres),
  a scratch database created for the run and dropped after;
- SQLite: a file in the temporary directory.

Prints records/s and the resident memory before, during (sampled) and after each ingest, so a
memory that grows with the file shows. Target: >= 5,000 records/s into PostgreSQL.

    .venv/bin/python -m bench.ingest [--cards 100000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.catalog.postgres_store import PostgresStore
from app.catalog.records import face_images, iter_records
from app.catalog.sqlite_store import SqliteStore
from app.catalog.store import CatalogStore, card_row

LOREM = (
    "Flying, vigilance. Whenever this creature attacks, create a 1/1 white Spirit creature "
    "token with flying. At the beginning of your end step, if you control three or more "
    "creatures, draw a card. "
)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def synthetic_card(i: int) -> dict[str, Any]:
    card_id = str(uuid.UUID(int=i + 1))
    uri = f"https://cards.scryfall.io/large/front/{card_id[0]}/{card_id[1]}/{card_id}.jpg?17{i:08d}"
    card: dict[str, Any] = {
        "object": "card",
        "id": card_id,
        "oracle_id": str(uuid.UUID(int=(i % 30000) + 1 << 64)),
        "multiverse_ids": [400000 + i],
        "name": f"Bench Card {i}",
        "lang": "en" if i % 10 else "de",
        "released_at": "2024-01-05",
        "uri": f"https://api.scryfall.com/cards/{card_id}",
        "layout": "normal",
        "highres_image": True,
        "image_status": "highres_scan",
        "mana_cost": "{2}{W}{W}",
        "cmc": 4.0,
        "type_line": "Creature — Angel",
        "oracle_text": LOREM * 2,
        "colors": ["W"],
        "keywords": ["Flying", "Vigilance"],
        "legalities": {f: "legal" for f in ("standard", "pioneer", "modern", "legacy",
                                            "vintage", "commander", "pauper", "brawl")},
        "games": ["paper", "mtgo"],
        "finishes": ["nonfoil", "foil"],
        "digital": False,
        "rarity": "rare",
        "set": f"s{i % 300:03d}",
        "set_name": f"Bench Set {i % 300}",
        "set_type": "expansion",
        "collector_number": str(i % 400),
        "artist": "Bench Artist",
        "illustration_id": str(uuid.UUID(int=(i + 1) << 32)),
        "prices": {"usd": "0.25", "usd_foil": "1.10", "eur": "0.20", "tix": "0.02"},
        "related_uris": {"gatherer": "https://gatherer.wizards.com/x", "edhrec": "https://e/x"},
        "purchase_uris": {"tcgplayer": "https://tcg/x", "cardmarket": "https://cm/x"},
    }
    sizes = ("small", "normal", "large", "png", "art_crop", "border_crop")
    if i % 25 == 0:  # some double-faced cards
        card["layout"] = "transform"
        card["card_faces"] = [
            {"object": "card_face", "name": f"Bench Card {i}{s}", "oracle_text": LOREM,
             "image_uris": {k: uri.replace("front", "back" if s == "b" else "front")
                            for k in sizes}}
            for s in "ab"
        ]
    else:
        card["image_uris"] = {k: uri for k in sizes}
    return card


def write_bulk(path: Path, n: int) -> None:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=5) as fh:
        for i in range(n):
            fh.write(json.dumps(synthetic_card(i)) + "\n")


def ingest(store: CatalogStore, path: Path) -> dict[str, float | list[int]]:
    store.migrate()
    samples: list[float] = []
    base = path.parent

    def rows() -> Iterator[dict[str, Any]]:
        for n, record in enumerate(iter_records(path)):
            images = face_images(record, base)
            yield card_row(record, image_key="|".join(img.uri for img in images) or None)
            if n % 10000 == 0:
                samples.append(rss_mb())

    before = rss_mb()
    started = time.perf_counter()
    count = store.upsert_cards(rows())
    elapsed = time.perf_counter() - started
    after = rss_mb()
    assert store.count_cards() == count
    return {
        "records": count,
        "seconds": round(elapsed, 2),
        "records_per_s": round(count / elapsed),
        "rss_before_mb": round(before, 1),
        "rss_max_sampled_mb": round(max(samples), 1),
        "rss_after_mb": round(after, 1),
        "rss_samples_mb": [round(s) for s in samples],
    }


def pg_store() -> tuple[PostgresStore | None, str, Any]:
    import psycopg2

    dsn: dict[str, Any] = {
        "host": os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1"),
        "port": int(os.environ.get("TEST_POSTGRES_PORT", "5432")),
        "user": os.environ.get("TEST_POSTGRES_USER", "postgres"),
        "password": os.environ.get("TEST_POSTGRES_PASSWORD", ""),
    }
    name = f"mtgscan_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **dsn)
    except psycopg2.Error as exc:
        print(f"PostgreSQL not reachable ({exc}); skipping it", file=sys.stderr)
        return None, name, None
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return PostgresStore({**dsn, "dbname": name}), name, admin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        path = Path(tmp) / "default_cards.jsonl.gz"
        started = time.perf_counter()
        write_bulk(path, args.cards)
        print(f"generated {args.cards} cards in {time.perf_counter() - started:.1f} s: "
              f"{path.stat().st_size / 1e6:.1f} MB gzip")
        results: dict[str, Any] = {}
        store, name, admin = pg_store()
        if store is not None:
            try:
                results["postgresql"] = ingest(store, path)
                again = ingest(store, path)  # every row an update: the nightly case
                results["postgresql_update"] = {k: again[k] for k in ("seconds", "records_per_s")}
            finally:
                store.close()
                with admin.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.close()
        sqlite = SqliteStore(Path(tmp) / "catalog.sqlite3")
        try:
            results["sqlite"] = ingest(sqlite, path)
        finally:
            sqlite.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["peak_rss_mb"] = round(peak, 1)
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
