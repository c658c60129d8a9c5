"""The catalogue store of an app: made from the settings, attached to the app, found by views."""

from __future__ import annotations

from flask import Flask, current_app

from app.catalog.postgres_store import PostgresStore
from app.catalog.sqlite_store import SqliteStore
from app.catalog.store import CatalogStore
from app.common.settings import Settings


def make_store(settings: Settings) -> CatalogStore:
    """PostgreSQL when POSTGRES_HOST is set, else an SQLite file under SCRYFALL_DATA_DIR."""
    if settings.uses_postgres:
        return PostgresStore(
            {
                "host": settings.postgres_host,
                "port": settings.postgres_port,
                "user": settings.postgres_user,
                "password": settings.postgres_password,
                "dbname": settings.postgres_db,
                "connect_timeout": 5,
                "application_name": "descriptor-infer-service",
            },
            maxconn=max(4, settings.max_concurrent_infer + 2),
        )
    return SqliteStore(settings.scryfall_data_dir / "catalog.sqlite3")


def init_app(app: Flask) -> None:
    """Attach the store; no connection is made until first use (never before a fork)."""
    app.extensions["catalog"] = make_store(app.config["SETTINGS"])


def get_store() -> CatalogStore:
    store: CatalogStore = current_app.extensions["catalog"]
    return store
