"""Card records: PostgreSQL in production, SQLite when POSTGRES_HOST is unset.

One interface (`CatalogStore`), two dialects. The SQL is written once with `%s` placeholders
and a few per-dialect words; SQLite gets its `?` by substitution. Upserts run in batches
inside ONE transaction, so a refresh that fails half-way leaves the previous records intact.

This module holds what both dialects share: the schema and its migrations, the `cards` row
made from a Scryfall card object, and the SQL of cards, sets and refresh runs. The
connections are the dialects' own: sqlite_store.py and postgres_store.py.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from typing import Any

log = logging.getLogger(__name__)

# Columns of `cards` as (name, is_json). The API answers from these, recognition needs
# illustration_id / card_faces, and the pipeline uses image_key to skip unchanged images.
CARD_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("id", False),
    ("oracle_id", False),
    ("illustration_id", False),
    ("name", False),
    ("lang", False),
    ("layout", False),
    ("set_code", False),
    ("set_name", False),
    ("collector_number", False),
    ("finishes", True),
    ("prices", True),
    ("image_uris", True),
    ("card_faces", True),
    ("digital", False),
    ("games", True),
    ("released_at", False),
    ("image_key", False),
    ("updated_at", False),
)
SET_COLUMNS: tuple[str, ...] = ("code", "name", "set_type", "released_at", "card_count", "icon")


def _migrations(json_type: str, serial: str, boolean: str) -> list[str]:
    """Versioned schema, applied in order; never edit a shipped entry, append a new one."""
    return [
        f"""
        CREATE TABLE cards (
            id TEXT PRIMARY KEY,
            oracle_id TEXT, illustration_id TEXT, name TEXT NOT NULL, lang TEXT,
            layout TEXT, set_code TEXT, set_name TEXT, collector_number TEXT,
            finishes {json_type}, prices {json_type}, image_uris {json_type},
            card_faces {json_type}, digital {boolean}, games {json_type},
            released_at TEXT, image_key TEXT, updated_at TEXT NOT NULL
        );
        CREATE INDEX cards_illustration ON cards (illustration_id);
        CREATE TABLE sets (
            code TEXT PRIMARY KEY, name TEXT, set_type TEXT, released_at TEXT,
            card_count INTEGER, icon TEXT
        );
        CREATE TABLE refresh_runs (
            id {serial} PRIMARY KEY,
            started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
            counts {json_type}, error TEXT, host TEXT
        );
        """,
    ]


def card_row(card: dict[str, Any], image_key: str | None = None) -> dict[str, Any]:
    """Flatten a Scryfall card object into the `cards` columns."""
    faces = card.get("card_faces")
    illustration = card.get("illustration_id")
    if illustration is None and faces:
        illustration = faces[0].get("illustration_id")
    return {
        "id": card["id"],
        "oracle_id": card.get("oracle_id") or (faces[0].get("oracle_id") if faces else None),
        "illustration_id": illustration,
        "name": card.get("name") or "",
        "lang": card.get("lang"),
        "layout": card.get("layout"),
        "set_code": card.get("set"),
        "set_name": card.get("set_name"),
        "collector_number": card.get("collector_number"),
        "finishes": card.get("finishes") or [],
        "prices": card.get("prices") or {},
        "image_uris": card.get("image_uris") or {},
        "card_faces": faces,
        "digital": bool(card.get("digital", False)),
        "games": card.get("games") or [],
        "released_at": card.get("released_at"),
        "image_key": image_key,
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class CatalogStore(ABC):
    """Card, set and refresh-run records."""

    placeholder = "%s"
    json_type = "TEXT"
    serial = "INTEGER"
    boolean = "INTEGER"
    backend = "abstract"

    # -- connection plumbing (per dialect) ----------------------------------------------
    @abstractmethod
    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        """Yield a cursor inside a transaction: commit on success, roll back on error.
        `write=False` for reads, which must never wait for a refresh's bulk write."""

    @abstractmethod
    def _insert_many(self, cursor: Any, template: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run `template` (with a `{values}` slot for the VALUES list) for all rows."""

    @abstractmethod
    def _run_script(self, cursor: Any, script: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "%s" else text.replace("%s", self.placeholder)

    # -- schema ------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in place."""
        steps = _migrations(self.json_type, self.serial, self.boolean)
        with self._transaction() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            current = int(cur.fetchone()[0])
            for version, script in enumerate(steps, start=1):
                if version <= current:
                    continue
                log.info("catalogue %s: applying schema migration %d", self.backend, version)
                self._run_script(cur, script)
                cur.execute(
                    self._sql("INSERT INTO schema_migrations VALUES (%s, %s)"),
                    (version, datetime.now(UTC).isoformat(timespec="seconds")),
                )
        return len(steps)

    def ping(self) -> None:
        """Raise when the store does not answer."""
        with self._transaction(write=False) as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    # -- cards -------------------------------------------------------------------------
    def upsert_cards(self, rows: Iterable[dict[str, Any]], batch_size: int = 2000) -> int:
        """Insert or update card rows (see `card_row`) in one transaction; return the count."""
        names = [name for name, _ in CARD_COLUMNS]
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "id")
        template = (
            f"INSERT INTO cards ({', '.join(names)}) VALUES {{values}} "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        total = 0
        with self._transaction() as cur:
            for batch in _batches(rows, batch_size):
                values = [
                    tuple(
                        json.dumps(row[name]) if is_json else row[name]
                        for name, is_json in CARD_COLUMNS
                    )
                    for row in batch
                ]
                self._insert_many(cur, template, values)
                total += len(values)
        return total

    def get_cards(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Card rows by Scryfall id (JSON columns decoded); unknown ids are absent."""
        if not ids:
            return {}
        names = [name for name, _ in CARD_COLUMNS]
        marks = ", ".join(["%s"] * len(ids))
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(f"SELECT {', '.join(names)} FROM cards WHERE id IN ({marks})"),
                tuple(ids),
            )
            fetched = cur.fetchall()
        result: dict[str, dict[str, Any]] = {}
        for values in fetched:
            row = dict(zip(names, values, strict=True))
            for name, is_json in CARD_COLUMNS:
                if is_json and isinstance(row[name], str):
                    row[name] = json.loads(row[name])
            row["digital"] = bool(row["digital"])
            result[row["id"]] = row
        return result

    def count_cards(self) -> int:
        with self._transaction(write=False) as cur:
            cur.execute("SELECT COUNT(*) FROM cards")
            return int(cur.fetchone()[0])

    # -- sets --------------------------------------------------------------------------
    def upsert_sets(self, sets: Iterable[dict[str, Any]]) -> int:
        rows = [
            (
                s["code"],
                s.get("name"),
                s.get("set_type"),
                s.get("released_at"),
                s.get("card_count"),
                s.get("icon_svg_uri"),
            )
            for s in sets
        ]
        updates = ", ".join(f"{c} = excluded.{c}" for c in SET_COLUMNS if c != "code")
        template = (
            f"INSERT INTO sets ({', '.join(SET_COLUMNS)}) VALUES {{values}} "
            f"ON CONFLICT (code) DO UPDATE SET {updates}"
        )
        with self._transaction() as cur:
            if rows:
                self._insert_many(cur, template, rows)
        return len(rows)

    # -- refresh runs ------------------------------------------------------------------
    def start_run(self, host: str) -> int:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO refresh_runs (started_at, status, host) "
                    "VALUES (%s, 'running', %s) RETURNING id"
                ),
                (now, host),
            )
            return int(cur.fetchone()[0])

    def abandon_runs(self) -> int:
        """Mark runs still 'running' as failed (their process died: called by the next holder
        of the update lock, when no other run can be in progress); return how many."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE refresh_runs SET finished_at = %s, status = 'failed', "
                    "error = %s WHERE status = 'running'"
                ),
                (now, "interrupted: the process stopped before the run finished"),
            )
            return int(cur.rowcount or 0)

    def finish_run(
        self, run_id: int, status: str, counts: dict[str, Any], error: str | None = None
    ) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE refresh_runs SET finished_at = %s, status = %s, counts = %s, "
                    "error = %s WHERE id = %s"
                ),
                (now, status, json.dumps(counts), error, run_id),
            )

    def recent_runs(self, limit: int = 5) -> list[dict[str, Any]]:
        with self._transaction(write=False) as cur:
            cur.execute(
                self._sql(
                    "SELECT id, started_at, finished_at, status, counts, error, host "
                    "FROM refresh_runs ORDER BY id DESC LIMIT %s"
                ),
                (limit,),
            )
            fetched = cur.fetchall()
        keys = ("id", "started_at", "finished_at", "status", "counts", "error", "host")
        runs = [dict(zip(keys, values, strict=True)) for values in fetched]
        for run in runs:
            if isinstance(run["counts"], str):
                run["counts"] = json.loads(run["counts"])
        return runs
