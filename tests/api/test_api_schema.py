"""The spec against real answers: Schemathesis against /apispec_1.json (no 5xx, answers as the
spec documents them), and every example of the spec has exactly the keys of the answer the
request it documents really gets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from werkzeug.test import TestResponse

from app import create_app, create_serving_app
from app.catalog.access import make_store
from app.common.settings import Settings
from app.pipeline.refresh import run_refresh
from tests.support.apps import serve_bundle, shutdown
from tests.support.environment import isolated_config
from tests.support.fake_scryfall import FAST_REFRESH, FakeScryfall, card_image
from tests.support.synthetic import photograph


@pytest.fixture(scope="module")
def api_schema(
    tmp_path_factory: pytest.TempPathFactory, synthetic_bundles: dict[str, Path]
) -> Iterator[Any]:
    config = isolated_config(tmp_path_factory.mktemp("schema"))
    app = serve_bundle({**config, "LOG_LEVEL": "error"}, synthetic_bundles["A"])
    yield schemathesis.openapi.from_wsgi("/apispec_1.json", app)
    shutdown(app)


def _operations() -> list[str]:
    return ["GET /", "GET /healthz", "GET /readyz", "POST /infer"]


@pytest.mark.parametrize("label", _operations())
def test_api_matches_its_spec(api_schema: Any, label: str) -> None:
    # schemathesis's pytest plugin does not run under pytest 9 yet; drive its strategies
    # with hypothesis directly instead (same generation, same checks).
    operations = {op.ok().label: op.ok() for op in api_schema.get_all_operations()}
    assert set(_operations()) <= set(operations)
    operation = operations[label]
    # Random bytes in the upload field are schema-valid but are not an image: the documented
    # answer is 400/415, so "schema-valid data must be accepted" does not apply to uploads.
    excluded = [positive_data_acceptance] if label == "POST /infer" else []

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(excluded_checks=excluded)

    run()


# -- the spec's examples are real answers ---------------------------------------------------
TOKEN = "example-token"
SEEDS = list(range(1, 17))  # 16 printings of the fake's set tst (a bundle needs ~14)


@dataclass
class Answering:
    """Two real apps: one serving a release its own refresh built (card records, a recorded
    run, REFRESH_SETS=tst), one not started (no bundle: what a first start answers)."""

    served: Flask
    unready: Flask
    photo: bytes
    spec: dict[str, Any]


@pytest.fixture(scope="module")
def answering(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Answering]:
    base = tmp_path_factory.mktemp("examples")
    config = {**isolated_config(base), "INFER_API_TOKENS": TOKEN, "REFRESH_SETS": "tst",
              "MAX_CONTENT_LENGTH": "2000000", "LOG_LEVEL": "error"}
    with FakeScryfall() as fake:
        for seed in SEEDS:
            fake.add_card(seed, set_code="tst")
        config["SCRYFALL_API_URL"] = fake.url
        refresh_settings = Settings.from_env(config)
        store = make_store(refresh_settings)
        try:
            result = run_refresh(refresh_settings, store, replace(FAST_REFRESH, sets=("tst",)),
                                 reason="flask refresh")
        finally:
            store.close()
        assert result.status == "succeeded", result.summary()
    served = create_serving_app(config)
    unready = create_app(isolated_config(tmp_path_factory.mktemp("unready"))
                         | {"INFER_API_TOKENS": TOKEN, "LOG_LEVEL": "error"})
    try:
        served.extensions["prepare_thread"].join(timeout=60)
        assert served.extensions["model"].loaded, served.extensions["model"].state
        image, _ = photograph(card_image(SEEDS[0]), seed=1, rotation=5)
        ok, photo = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        spec = served.test_client().get("/apispec_1.json").get_json()
        yield Answering(served, unready, photo.tobytes(), spec)
    finally:
        shutdown(served)
        shutdown(unready)


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _image(data: bytes, **headers: str) -> Callable[[FlaskClient], TestResponse]:
    return lambda client: client.post("/infer", data=data,
                                      headers={"Content-Type": "image/jpeg", **headers})


def _noise() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (600, 430, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


# The request that produces each documented example: (app, request), by method, path and
# status; `photo` stands for a photo of a card of the served release.
EXAMPLE_REQUESTS: dict[tuple[str, str, str], tuple[str, Callable[[FlaskClient, bytes],
                                                                   TestResponse]]] = {
    ("get", "/", "200"): ("served", lambda c, photo: c.get("/")),
    ("get", "/healthz", "200"): ("served", lambda c, photo: c.get("/healthz")),
    ("get", "/readyz", "200"): ("served", lambda c, photo: c.get("/readyz")),
    ("get", "/readyz", "503"): ("unready", lambda c, photo: c.get("/readyz")),
    ("get", "/status", "200"): ("served", lambda c, photo: c.get("/status", headers=_auth())),
    ("get", "/status", "401"): ("served", lambda c, photo: c.get("/status")),
    ("get", "/status", "403"): ("served",
                                lambda c, photo: c.get("/status", headers=_auth("wrong"))),
    ("post", "/infer", "200"): ("served",
                                lambda c, photo: _image(photo, **_auth())(c)),
    ("post", "/infer", "400"): ("served", lambda c, photo: c.post(
        "/infer", data={}, headers=_auth(), content_type="multipart/form-data")),
    ("post", "/infer", "401"): ("served", lambda c, photo: _image(photo)(c)),
    ("post", "/infer", "403"): ("served", lambda c, photo: _image(photo, **_auth("wrong"))(c)),
    ("post", "/infer", "404"): ("served", lambda c, photo: _image(_noise(), **_auth())(c)),
    ("post", "/infer", "413"): ("served",
                                lambda c, photo: _image(b"\xff" * 2_000_001, **_auth())(c)),
    ("post", "/infer", "415"): ("served",
                                lambda c, photo: _image(b"not an image", **_auth())(c)),
    ("post", "/infer", "503"): ("unready", lambda c, photo: _image(photo, **_auth())(c)),
    # not a response's: the MultiRecognition definition's example (multi=true)
    ("post", "/infer?multi=true", "200"): ("served", lambda c, photo: c.post(
        "/infer?multi=true", data=photo, headers={"Content-Type": "image/jpeg", **_auth()})),
}


def documented_examples(spec: dict[str, Any]) -> dict[tuple[str, str, str], Any]:
    """Every JSON example of the spec: each response's (shared ones, `#/responses/...`,
    resolved), and MultiRecognition's, by method, path and status."""
    found: dict[tuple[str, str, str], Any] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if "$ref" in response:
                    response = spec["responses"][response["$ref"].rsplit("/", 1)[1]]
                example = response.get("examples", {}).get("application/json")
                if example is not None:
                    found[(method, path, str(status))] = example
    multi = spec["definitions"]["MultiRecognition"].get("example")
    if multi is not None:
        found[("post", "/infer?multi=true", "200")] = multi
    return found


def key_differences(example: Any, real: Any, where: str = "") -> list[str]:
    """Where the example's keys are not the real answer's, recursively: objects are
    compared key by key, lists by their first items; a null on either side (a nullable
    field the real answer or the example leaves empty) is not compared further."""
    if isinstance(example, dict) and isinstance(real, dict):
        found = [f"{where}.{key}: in the example only" for key in example.keys() - real.keys()]
        found += [f"{where}.{key}: in the real answer only" for key in real.keys() - example.keys()]
        for key in example.keys() & real.keys():
            found += key_differences(example[key], real[key], f"{where}.{key}")
        return found
    if isinstance(example, list) and isinstance(real, list) and example and real:
        return key_differences(example[0], real[0], f"{where}[0]")
    if example is None or real is None:
        return []
    if isinstance(example, dict) != isinstance(real, dict):
        return [f"{where}: an object on one side only"]
    return []


def test_every_documented_example_has_its_request(answering: Answering) -> None:
    assert set(documented_examples(answering.spec)) == set(EXAMPLE_REQUESTS)


@pytest.mark.parametrize("case", sorted(EXAMPLE_REQUESTS), ids=" ".join)
def test_each_example_has_the_keys_of_the_real_answer(
    answering: Answering, case: tuple[str, str, str]
) -> None:
    example = documented_examples(answering.spec).get(case)
    assert example is not None, f"{case}: no example documented"
    which, send = EXAMPLE_REQUESTS[case]
    response = send(getattr(answering, which).test_client(), answering.photo)
    assert str(response.status_code) == case[2], response.get_data(as_text=True)
    real = response.get_json()
    assert not key_differences(example, real), (key_differences(example, real), real)
