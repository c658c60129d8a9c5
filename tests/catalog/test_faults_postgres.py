"""The real PostgreSQL drops the service's connections: answers keep their metadata."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import pytest

from app.catalog.store import card_row
from tests.support.apps import serve_bundle, shutdown
from tests.support.cards import synthetic_card_record
from tests.support.services import pg_connect
from tests.support.synthetic import make_card, photograph


def _photo(seed: int) -> bytes:
    image, _ = photograph(make_card(seed), seed=seed)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def _terminate_connections(dbname: str) -> int:
    admin = pg_connect("postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        killed = int(cur.fetchone()[0])
    admin.close()
    return killed


@pytest.mark.postgres
def test_connections_killed_under_the_service(
    base_config: dict[str, str],
    pg_database: dict[str, Any],
    synthetic_bundles: dict[str, Path],
) -> None:
    config = {
        **base_config,
        "POSTGRES_HOST": pg_database["host"],
        "POSTGRES_PORT": str(pg_database["port"]),
        "POSTGRES_USER": pg_database["user"],
        "POSTGRES_PASSWORD": pg_database["password"] or "",
        "POSTGRES_DB": pg_database["dbname"],
    }
    app = serve_bundle(config, synthetic_bundles["A"])
    try:
        app.extensions["catalog"].upsert_cards(
            card_row(synthetic_card_record(s)) for s in range(100, 114)
        )
        client = app.test_client()
        photo = _photo(105)

        def infer() -> dict[str, Any]:
            response = client.post("/infer", data={"roi_image": (io.BytesIO(photo), "p.jpg")})
            assert response.status_code == 200, response.get_json()
            body: dict[str, Any] = response.get_json()
            assert body["predicted_card_id"] == synthetic_card_record(105)["id"]
            return body

        assert infer()["metadata"] == "complete"
        assert client.get("/readyz").status_code == 200
        assert _terminate_connections(pg_database["dbname"]) >= 1
        # Every pooled connection is dead now; they are replaced on checkout, so no answer
        # loses its metadata and readiness does not flap.
        assert client.get("/readyz").status_code == 200
        assert infer()["metadata"] == "complete"
        assert _terminate_connections(pg_database["dbname"]) >= 1
        assert infer()["metadata"] == "complete"
        assert infer()["prices"]["usd"] == "1.05"
    finally:
        shutdown(app)
