"""The real PostgreSQL and Redis on loopback (`make test` sources scripts/test-services.sh,
which starts or installs them and exports TEST_POSTGRES_* / TEST_REDIS_*)."""

from __future__ import annotations

import os
from typing import Any

import pytest

PG_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5432"))
PG_USER = os.environ.get("TEST_POSTGRES_USER", "postgres")
PG_PASSWORD = os.environ.get("TEST_POSTGRES_PASSWORD", "")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))


def pg_connect(dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        password=PG_PASSWORD,
        dbname=dbname,
        connect_timeout=3,
    )


def missing_service(reason: str) -> None:
    """Skip on a developer's machine without the servers; fail where they are required
    (CI exports TEST_REQUIRE_SERVICES=1: a suite that silently skipped the PostgreSQL and
    Redis halves would pass without testing them)."""
    if os.environ.get("TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)
