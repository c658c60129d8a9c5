"""POST /infer end to end: a real bundle, a real catalogue store, photos of synthetic cards."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.catalog.store import card_row
from tests.support.apps import serve_bundle, shutdown
from tests.support.cards import synthetic_card_record
from tests.support.synthetic import make_card, photograph


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


@pytest.fixture
def served_config(base_config: dict[str, str]) -> dict[str, str]:
    return {**base_config, "BOOTSTRAP_MISSING_BUNDLE": "true"}


def _start(config: dict[str, str], bundle: Path) -> Flask:
    application = serve_bundle(config, bundle)
    application.extensions["catalog"].upsert_cards(
        card_row(synthetic_card_record(seed)) for seed in range(100, 120)
    )
    return application


@pytest.fixture
def served_app(
    served_config: dict[str, str], synthetic_bundles: dict[str, Path]
) -> Iterator[Flask]:
    application = _start(served_config, synthetic_bundles["A"])
    yield application
    shutdown(application)


@pytest.fixture
def served(served_app: Flask) -> FlaskClient:
    return served_app.test_client()


def post(client: FlaskClient, data: bytes, field: str = "roi_image") -> Any:
    return client.post("/infer", data={field: (io.BytesIO(data), "photo.jpg")})


def test_ready_once_the_bundle_is_loaded(served: FlaskClient) -> None:
    body = served.get("/readyz").get_json()
    assert body["ready"] is True, body
    index = served.get("/").get_json()
    assert index["index_version"] == body["model"]["version"]
    assert index["index_loaded_at"]


def test_recognises_a_photo_with_full_metadata(served: FlaskClient) -> None:
    photo, corners = photograph(make_card(103), seed=1, rotation=8, blur=0.8)
    response = post(served, jpeg(photo))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    record = synthetic_card_record(103)
    assert body["predicted_card_id"] == record["id"]
    assert body["predicted_card_name"] == record["name"]
    assert body["set"] == "syn" and body["set_name"] == "Synthetic Set"
    assert body["collector_number"] == "103"
    assert body["finishes"] == ["nonfoil", "foil"]
    assert body["prices"]["usd"] == "1.03"
    assert body["image_uris"] == record["image_uris"]
    assert body["metadata"] == "complete"
    assert 0.5 <= body["confidence"] <= 1.0
    assert body["inliers"] >= 10
    assert body["index_version"] == served.get("/").get_json()["index_version"]
    assert set(body["timings_ms"]) >= {"decode", "total"}
    # the quad is where the card really is in the photo
    quad = np.array(body["quad"], dtype=np.float32)
    assert quad.shape == (4, 2)
    assert np.abs(quad - corners).max() < 0.05 * photo.shape[0]


@pytest.mark.parametrize("how", ["image_field", "raw_body", "upside_down", "png"])
def test_other_ways_of_sending(served: FlaskClient, how: str) -> None:
    photo, _ = photograph(make_card(101), seed=2, rotation=180 if how == "upside_down" else 0)
    if how == "image_field":
        response = post(served, jpeg(photo), field="image")
    elif how == "raw_body":
        response = served.post("/infer", data=jpeg(photo), content_type="image/jpeg")
    elif how == "png":
        ok, data = cv2.imencode(".png", photo)
        response = served.post("/infer", data=data.tobytes(), content_type="image/png")
    else:
        response = post(served, jpeg(photo))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["predicted_card_id"] == synthetic_card_record(101)["id"]


def test_card_not_in_catalogue_is_404(served: FlaskClient) -> None:
    photo, _ = photograph(make_card(555), seed=3)
    response = post(served, jpeg(photo))
    assert response.status_code == 404
    assert response.get_json()["error"] == "No matching card found."

    assert "indexed_sets" not in response.get_json()  # every set is indexed


def test_a_404_names_the_sets_a_limited_catalogue_indexes(
    served_config: dict[str, str], synthetic_bundles: dict[str, Path]
) -> None:
    """A newcomer who indexed a few sets (REFRESH_SETS) and sends a card of another set is
    told which sets the served bundle holds: the bundle's own, not the setting's (after
    REFRESH_SETS changes, the old bundle is served until the new one is built)."""
    application = _start({**served_config, "REFRESH_SETS": "rtr,dsk"}, synthetic_bundles["A"])
    try:
        photo, _ = photograph(make_card(555), seed=3)
        response = post(application.test_client(), jpeg(photo))
        assert response.status_code == 404
        body = response.get_json()
        assert body["indexed_sets"] == ["syn"]
        assert body["error"].startswith("No matching card found. The catalogue indexes only "
                                        "the sets syn (REFRESH_SETS)")
        assert body["index_version"]
    finally:
        shutdown(application)

def test_plain_background_is_404(served: FlaskClient) -> None:
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8), (0, 0), 3)
    assert post(served, jpeg(noise)).status_code == 404


def test_database_down_answers_from_the_bundle(
    served_config: dict[str, str], synthetic_bundles: dict[str, Path]
) -> None:
    config = {**served_config, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1",
              "POSTGRES_USER": "secretive_user"}
    application = serve_bundle(config, synthetic_bundles["A"])
    try:
        client = application.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "catalogue store (postgresql) not answering" in ready.get_json()["reason"]
        # the driver's text (host, port, user) stays in the log: /readyz is unauthenticated
        text = ready.get_data(as_text=True)
        assert "secretive_user" not in text and "127.0.0.1" not in text
        photo, _ = photograph(make_card(102), seed=4)
        response = post(client, jpeg(photo))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["metadata"] == "partial"
        assert body["predicted_card_id"] == synthetic_card_record(102)["id"]
        assert body["predicted_card_name"] == "Synthetic Card 102"
        assert body["set"] == "syn" and body["collector_number"] == "102"
    finally:
        shutdown(application)


def _documented(spec: dict[str, Any], name: str) -> set[str]:
    """The properties a definition documents, through allOf and $ref."""
    definition = spec["definitions"][name]
    props = set(definition.get("properties", {}))
    for part in definition.get("allOf", []):
        if "$ref" in part:
            props |= _documented(spec, part["$ref"].rsplit("/", 1)[-1])
        props |= set(part.get("properties", {}))
    return props


def test_spec_documents_what_infer_answers(served: FlaskClient) -> None:
    spec = served.get("/apispec_1.json").get_json()
    photo, _ = photograph(make_card(105), seed=5)
    body = post(served, jpeg(photo)).get_json()
    assert set(body) <= _documented(spec, "Recognition"), body
    assert body["ambiguous_printing"] is False
    assert all(isinstance(alt["same_art"], bool) for alt in body["alternatives"])
    assert json.dumps(body)  # plain JSON types only
    multi = served.post("/infer", data={"roi_image": (io.BytesIO(jpeg(photo)), "p.jpg"),
                                        "multi": "true"}).get_json()
    assert set(multi) <= _documented(spec, "MultiRecognition"), multi
    assert all(set(card) <= _documented(spec, "Card") for card in multi["cards"])


def _table_photo() -> bytes:
    from tests.support.synthetic import table

    photo, _ = table([(make_card(104), 0.25, 0.5, 0.55, 30.0),
                      (make_card(109), 0.72, 0.45, 0.5, -80.0),
                      (make_card(777), 0.5, 0.85, 0.25, 5.0)], seed=11, size=(1600, 1200))
    # under werkzeug's test client's 500 KB multipart threshold, beyond which it spools the
    # body to a temporary file that it never closes (a ResourceWarning, an error here)
    data = jpeg(photo, quality=80)
    assert len(data) < 500 * 1024
    return data


@pytest.mark.parametrize("how", ["form", "query"])
def test_multi_answers_every_card_in_the_photo(served: FlaskClient, how: str) -> None:
    """Card 777 is not in the catalogue: two cards, each with its own record and quad."""
    data = _table_photo()
    if how == "form":
        response = served.post("/infer", data={"roi_image": (io.BytesIO(data), "t.jpg"),
                                               "multi": "true"})
    else:
        response = served.post("/infer?multi=1", data=data, content_type="image/jpeg")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["count"] == 2 and len(body["cards"]) == 2
    wanted = {synthetic_card_record(s)["id"]: s for s in (104, 109)}
    assert {card["predicted_card_id"] for card in body["cards"]} == set(wanted)
    for card in body["cards"]:
        assert card["prices"]["usd"] == f"{wanted[card['predicted_card_id']] / 100:.2f}"
        assert len(card["quad"]) == 4 and card["confidence"] >= 0.5
        assert card["ambiguous_printing"] is False
    assert body["metadata"] == "complete" and body["index_version"]
    confidences = [card["confidence"] for card in body["cards"]]
    assert confidences == sorted(confidences, reverse=True)
    # without multi the same photo answers one card, as before
    single = post(served, data).get_json()
    assert single["predicted_card_id"] in wanted and "cards" not in single


def test_multi_with_no_catalogued_card_is_404(served: FlaskClient) -> None:
    photo, _ = photograph(make_card(555), seed=3)
    response = served.post("/infer?multi=true", data=jpeg(photo), content_type="image/jpeg")
    assert response.status_code == 404
    assert response.get_json()["error"] == "No matching card found."


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_bad_multi_value_is_400(served: FlaskClient, value: str) -> None:
    photo, _ = photograph(make_card(103), seed=1)
    response = served.post("/infer", data={"roi_image": (io.BytesIO(jpeg(photo)), "p.jpg"),
                                           "multi": value})
    assert response.status_code == 400
    assert response.get_json()["error"] == f"multi must be true or false, got '{value}'."


def test_time_budget_skips_the_finer_pass(synthetic_bundles: dict[str, Path]) -> None:
    """A photo of an unknown card runs every pass unless the budget says stop."""
    import time

    from app.recognition.index.bundle import Bundle
    from app.recognition.match.card import recognize

    photo, _ = photograph(make_card(777), seed=9)
    bundle = Bundle.open(synthetic_bundles["A"])
    try:
        unlimited = recognize(bundle, photo)
        assert unlimited.match is None
        assert unlimited.timings_ms["passes"] == len(bundle.params.query_passes)
        assert "budget_stop" not in unlimited.timings_ms
        hurried = recognize(bundle, photo, deadline=time.perf_counter() + 0.001)
        assert hurried.timings_ms["passes"] == 1
        assert hurried.timings_ms["budget_stop"] == 1
    finally:
        bundle.close()
