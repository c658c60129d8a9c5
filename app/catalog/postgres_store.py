"""The production catalogue store: PostgreSQL through psycopg2 (POSTGRES_HOST set).

The SQL is the shared one of store.py; this module holds the connection pool, made lazily in
the serving process, and the checked checkout that replaces connections PostgreSQL closed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from app.catalog.store import CatalogStore


class PostgresStore(CatalogStore):
    """PostgreSQL through a psycopg2 thread-safe pool, created lazily in the serving process.

    The pool is made on first use, never at import or before a fork (psycopg2 connections
    must not cross a fork).
    """

    json_type = "JSONB"
    serial = "BIGSERIAL"
    boolean = "BOOLEAN"
    backend = "postgresql"

    def __init__(self, dsn: dict[str, Any], minconn: int = 1, maxconn: int = 8) -> None:
        self.dsn = dsn
        self.minconn = minconn
        self.maxconn = maxconn
        self._pool: Any = None
        self._guard = threading.Lock()

    def _get_pool(self) -> Any:
        from psycopg2.pool import ThreadedConnectionPool

        with self._guard:
            if self._pool is None:
                self._pool = ThreadedConnectionPool(self.minconn, self.maxconn, **self.dsn)
            return self._pool

    def _checkout(self, pool: Any) -> Any:
        """A pooled connection that answers: PostgreSQL restarts and killed backends leave
        dead connections in the pool, found only on use. A `SELECT 1` on checkout (a loopback
        round trip) replaces them before a request's query fails on one."""
        import psycopg2

        for _ in range(self.maxconn + 1):
            conn = pool.getconn()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.rollback()
                return conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                pool.putconn(conn, close=True)
        return pool.getconn()  # let the caller's query raise the real error

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        """PostgreSQL readers see the last committed state (MVCC): a plain SELECT takes no
        lock a bulk upsert holds, so `write` changes nothing here."""
        pool = self._get_pool()
        conn = self._checkout(pool)
        broken = False
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:
                broken = True
            raise
        finally:
            pool.putconn(conn, close=broken or bool(conn.closed))

    def _insert_many(self, cursor: Any, template: str, rows: Sequence[Sequence[Any]]) -> None:
        from psycopg2.extras import execute_values

        execute_values(cursor, template.format(values="%s"), rows, page_size=len(rows))

    def _run_script(self, cursor: Any, script: str) -> None:
        cursor.execute(script)

    def close(self) -> None:
        with self._guard:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None
