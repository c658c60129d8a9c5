"""Card records in both stores: migrations, upserts, and a failed batch loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.catalog.postgres_store import PostgresStore
from app.catalog.sqlite_store import SqliteStore
from app.catalog.store import CatalogStore, card_row
from tests.support.environment import REPOSITORY


def _card(n: int, **extra: Any) -> dict[str, Any]:
    card = {
        "id": f"00000000-0000-0000-0000-{n:012d}",
        "oracle_id": f"o-{n}",
        "name": f"Card {n}",
        "lang": "en",
        "layout": "normal",
        "set": "tst",
        "set_name": "Test Set",
        "collector_number": str(n),
        "finishes": ["nonfoil", "foil"],
        "prices": {"usd": f"{n}.00", "eur": None},
        "image_uris": {"normal": f"https://img.example/{n}.jpg"},
        "games": ["paper"],
        "digital": False,
        "released_at": "2024-01-01",
        "illustration_id": f"ill-{n}",
    }
    card.update(extra)
    return card


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogStore]:
    made: CatalogStore
    if request.param == "sqlite":
        made = SqliteStore(tmp_path / "catalog.sqlite3")
    else:
        db = request.getfixturevalue("pg_database")
        made = PostgresStore(db, maxconn=4)
    made.migrate()
    yield made
    made.close()


def test_migrate_is_idempotent(store: CatalogStore) -> None:
    assert store.migrate() == store.migrate()
    store.ping()


def test_upsert_and_read_back(store: CatalogStore) -> None:
    assert store.upsert_cards(card_row(_card(n)) for n in range(5)) == 5
    assert store.count_cards() == 5
    got = store.get_cards([_card(2)["id"], "missing"])
    assert list(got) == [_card(2)["id"]]
    row = got[_card(2)["id"]]
    assert row["name"] == "Card 2"
    assert row["finishes"] == ["nonfoil", "foil"]
    assert row["prices"] == {"usd": "2.00", "eur": None}
    assert row["set_code"] == "tst" and row["digital"] is False


def test_reads_do_not_wait_for_a_refresh_writing(store: CatalogStore) -> None:
    """A refresh writes every card record in one transaction; meanwhile /infer reads card
    metadata and /readyz pings. Reads must answer at once with the last committed records
    (SQLite: they began with BEGIN IMMEDIATE and waited up to the 30 s busy timeout)."""
    import threading
    import time

    store.upsert_cards(card_row(_card(n)) for n in range(3))
    writing, finish = threading.Event(), threading.Event()

    def slow_rows() -> Iterator[dict[str, Any]]:
        for n in range(3, 2500):  # past one batch: rows really written in the transaction
            if n == 2400:
                writing.set()
                finish.wait(20)
            yield card_row(_card(n, name=f"New {n}"))

    writer = threading.Thread(target=store.upsert_cards, args=(slow_rows(),))
    writer.start()
    try:
        assert writing.wait(10)
        answers: dict[str, Any] = {}

        def read() -> None:
            started = time.monotonic()
            store.ping()
            answers["cards"] = store.get_cards([_card(1)["id"], _card(5)["id"]])
            answers["count"] = store.count_cards()
            answers["runs"] = store.recent_runs(1)
            answers["seconds"] = time.monotonic() - started

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=5)
        assert not reader.is_alive(), "a read waited for the writer"
        assert answers["seconds"] < 2
        assert list(answers["cards"]) == [_card(1)["id"]]  # not the uncommitted rows
        assert answers["count"] == 3
    finally:
        finish.set()
        writer.join(timeout=30)
    assert store.count_cards() == 2500


def test_upsert_updates_existing_rows(store: CatalogStore) -> None:
    store.upsert_cards([card_row(_card(1))])
    store.upsert_cards([card_row(_card(1, prices={"usd": "9.99"}))])
    assert store.count_cards() == 1
    assert store.get_cards([_card(1)["id"]])[_card(1)["id"]]["prices"] == {"usd": "9.99"}


def test_failure_mid_upsert_leaves_previous_records(store: CatalogStore) -> None:
    store.upsert_cards(card_row(_card(n)) for n in range(3))

    def rows() -> Iterator[dict[str, Any]]:
        yield card_row(_card(0, prices={"usd": "changed"}))
        yield card_row(_card(10))
        raise RuntimeError("download cut off")

    with pytest.raises(RuntimeError):
        store.upsert_cards(rows(), batch_size=1)
    assert store.count_cards() == 3
    assert store.get_cards([_card(0)["id"]])[_card(0)["id"]]["prices"]["usd"] == "0.00"


def test_double_faced_card_row(store: CatalogStore) -> None:
    faces = [
        {"name": "Front", "illustration_id": "ill-f", "image_uris": {"normal": "f.jpg"}},
        {"name": "Back", "illustration_id": "ill-b", "image_uris": {"normal": "b.jpg"}},
    ]
    card = _card(7, card_faces=faces, image_uris=None, illustration_id=None)
    store.upsert_cards([card_row(card)])
    row = store.get_cards([card["id"]])[card["id"]]
    assert row["card_faces"][1]["name"] == "Back"
    assert row["illustration_id"] == "ill-f"


def test_sets_and_refresh_runs(store: CatalogStore) -> None:
    assert store.upsert_sets([{"code": "tst", "name": "Test", "set_type": "core"}]) == 1
    run_id = store.start_run("host-a")
    store.finish_run(run_id, "failed", {"cards": 0}, "bulk download truncated")
    runs = store.recent_runs()
    assert runs[0]["id"] == run_id
    assert runs[0]["status"] == "failed" and runs[0]["error"] == "bulk download truncated"
    assert runs[0]["counts"] == {"cards": 0}


def test_postgres_down_raises_on_ping() -> None:
    store = PostgresStore({"host": "127.0.0.1", "port": 1, "dbname": "x", "connect_timeout": 1})
    with pytest.raises(Exception, match="connect"):
        store.ping()
    store.close()


def test_processes_opening_a_new_sqlite_file_together(tmp_path: Path) -> None:
    """Switching a new file to WAL answered "database is locked" without waiting (7 of 15
    three-process races before the fix): two replicas of `make run` start together."""
    import subprocess
    import sys
    import time

    code = (
        "import sys, time; from pathlib import Path\n"
        "from app.catalog.sqlite_store import SqliteStore\n"
        "go = float(sys.argv[2])\n"
        "while time.time() < go: time.sleep(0.001)\n"
        "s = SqliteStore(Path(sys.argv[1])); s.migrate()\n"
        "s.finish_run(s.start_run('x'), 'ok', {})\n"
    )
    root = REPOSITORY
    for attempt in range(3):
        db = tmp_path / f"race-{attempt}.sqlite3"
        go = str(time.time() + 1.5)
        procs = [
            subprocess.Popen([sys.executable, "-c", code, str(db), go], cwd=root)
            for _ in range(3)
        ]
        assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
        store = SqliteStore(db)
        assert len(store.recent_runs(10)) == 3
        store.close()
