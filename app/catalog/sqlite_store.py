"""The embedded catalogue store: SQLite in WAL mode, one file under SCRYFALL_DATA_DIR (used
when POSTGRES_HOST is unset: a bare machine, tests, tools).

The SQL is the shared one of store.py (`?` placeholders by substitution); this module holds
the connections and transactions: one connection per thread, writers taking the write lock
up front, readers never waiting for a refresh's bulk write.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.catalog.store import CatalogStore


class SqliteStore(CatalogStore):
    """The embedded store: one file under SCRYFALL_DATA_DIR, a connection per thread."""

    placeholder = "?"
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout=30000")
            self._enable_wal(conn)
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    @staticmethod
    def _enable_wal(conn: sqlite3.Connection) -> None:
        """WAL lets readers (requests) and the writer (a refresh) work at once. Switching to
        it can answer "database is locked" at once, without waiting on busy_timeout, when
        another process opens the same new file at the same moment: retry for a while."""
        for _ in range(100):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        """Writers take the write lock up front (BEGIN IMMEDIATE: no deadlock upgrading a read
        lock); readers use a deferred transaction, which on WAL reads the last committed
        state without waiting for a writer (a refresh writes 100k records in one)."""
        conn = self._connection()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _insert_many(self, cursor: Any, template: str, rows: Sequence[Sequence[Any]]) -> None:
        marks = "(" + ", ".join("?" * len(rows[0])) + ")"
        cursor.executemany(template.format(values=marks), rows)

    def _run_script(self, cursor: Any, script: str) -> None:
        # executescript() would COMMIT our transaction; run statement by statement instead.
        for statement in script.split(";"):
            if statement.strip():
                cursor.execute(statement)

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
