"""The HTTP surface without a bundle: health, readiness, docs, and /infer's refusals."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app import create_app, create_serving_app
from tests.support.apps import LiveServer, shutdown


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_index_names_the_service_and_docs(client: FlaskClient) -> None:
    body = client.get("/").get_json()
    assert body["service"] == "descriptor-infer-service"
    assert body["docs"] == "/apidocs/"
    assert body["index_version"] is None


def test_readyz_is_503_with_a_reason_without_bundle(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["ready"] is False
    assert "no descriptor bundle loaded" in body["reason"]
    assert body["catalog"] == {"backend": "sqlite", "ok": True, "detail": "answering"}


def test_apidocs_and_spec(client: FlaskClient) -> None:
    assert client.get("/apidocs/").status_code == 200
    spec = client.get("/apispec_1.json").get_json()
    assert spec["swagger"] == "2.0"
    infer = spec["paths"]["/infer"]["post"]
    assert {"200", "400", "404", "413", "415", "503"} <= set(infer["responses"])
    assert "Recognition" in spec["definitions"]
    assert {"/healthz", "/readyz", "/"} <= set(spec["paths"])


def test_infer_without_bundle_is_503(client: FlaskClient) -> None:
    import cv2
    import numpy as np

    ok, jpeg = cv2.imencode(".jpg", np.full((400, 300, 3), 128, np.uint8))
    assert ok
    response = client.post(
        "/infer", data={"roi_image": (io.BytesIO(jpeg.tobytes()), "card.jpg")}
    )
    assert response.status_code == 503
    assert "No descriptor bundle loaded" in response.get_json()["error"]
    assert response.headers["Retry-After"]


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"data": {}}, 400, "No image"),
        ({"data": {"photo": (io.BytesIO(b"x"), "a.jpg")}}, 400, "'roi_image'"),
        ({"data": {"roi_image": (io.BytesIO(b""), "a.jpg")}}, 400, "empty"),
        ({"data": b"", "content_type": "image/jpeg"}, 400, "Empty request body"),
        ({"data": b"hello", "content_type": "text/plain"}, 415, "Unsupported content type"),
    ],
)
def test_infer_request_errors(
    client: FlaskClient, kwargs: dict[str, object], status: int, needle: str
) -> None:
    response = client.post("/infer", **kwargs)
    assert response.status_code == status
    assert needle in response.get_json()["error"]


def test_body_over_limit_is_413(base_config: dict[str, str]) -> None:
    app = create_app({**base_config, "MAX_CONTENT_LENGTH": "2048"})
    try:
        response = app.test_client().post(
            "/infer", data=b"\xff" * 4096, content_type="image/jpeg"
        )
        assert response.status_code == 413
        assert "2048" in response.get_json()["error"]
    finally:
        shutdown(app)


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert "error" in response.get_json()


class TestTokens:
    @pytest.fixture
    def app(self, base_config: dict[str, str]) -> Iterator[Flask]:
        application = create_app({**base_config, "INFER_API_TOKENS": "old-token,new-token"})
        yield application
        shutdown(application)

    def test_missing_token_is_401(self, client: FlaskClient) -> None:
        assert client.post("/infer").status_code == 401

    def test_wrong_token_is_403_and_not_logged(
        self, client: FlaskClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            response = client.post("/infer", headers={"Authorization": "Bearer guess-me"})
        assert response.status_code == 403
        assert "guess-me" not in caplog.text

    @pytest.mark.parametrize("token", ["old-token", "new-token"])
    def test_either_rotated_token_passes(self, client: FlaskClient, token: str) -> None:
        response = client.post("/infer", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 400  # past auth: now it is the missing image

    def test_health_routes_stay_open(self, client: FlaskClient) -> None:
        assert client.get("/healthz").status_code == 200


def test_request_log_line_and_request_id(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        response = client.get("/", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    (line,) = [r for r in caplog.records if r.name == "app.access"]
    assert line.getMessage().startswith("GET / 200 ")
    assert "ms" in line.getMessage()
    assert line.__dict__["request_id"] == "abc-123"  # set by the logging filter


def test_log_file_is_written(base_config: dict[str, str], tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "service.log"
    app = create_app({**base_config, "LOG_FILE_PATH": str(log_file), "LOG_LEVEL": "info"})
    try:
        app.test_client().get("/")
        for handler in logging.getLogger().handlers:
            handler.flush()
        assert "GET / 200" in log_file.read_text()
    finally:
        shutdown(app)
        shutdown(create_app(base_config))  # put the handlers back to stdout-only


def test_real_server_on_loopback(app: Flask) -> None:
    with LiveServer(app) as server:
        ready = requests.get(f"{server.url}/readyz", timeout=5)
        assert ready.status_code == 503
        assert json.loads(ready.text)["ready"] is False
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_cors_only_for_the_frontend_and_not_on_infer(base_config: dict[str, str]) -> None:
    app = create_app({**base_config, "FRONTEND_URL": "https://mtgscan.example"})
    try:
        client = app.test_client()
        ok = client.get("/readyz", headers={"Origin": "https://mtgscan.example"})
        assert ok.headers["Access-Control-Allow-Origin"] == "https://mtgscan.example"
        other = client.get("/readyz", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        infer = client.post("/infer", headers={"Origin": "https://mtgscan.example"})
        assert "Access-Control-Allow-Origin" not in infer.headers
    finally:
        shutdown(app)


def test_readyz_explains_a_failed_start_up(base_config: dict[str, str]) -> None:
    app = create_serving_app({**base_config, "BOOTSTRAP_MISSING_BUNDLE": "true"})
    try:
        app.extensions["prepare_thread"].join(timeout=30)
        body = app.test_client().get("/readyz").get_json()
        assert body["model"]["status"] == "failed"
        assert "bootstrap:" in body["reason"] and "build-index" in body["reason"]
    finally:
        shutdown(app)
