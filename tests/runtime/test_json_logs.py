"""LOG_FORMAT=json: every line of the log is one JSON object with the fields a collector
needs; progress comes as structured events; a bad LOG_FORMAT names itself."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import pytest
import requests

from app import create_app
from app.common.progress import Progress
from app.common.settings import Settings, SettingsError
from tests.support.apps import serve_bundle, shutdown
from tests.support.environment import REPOSITORY
from tests.support.synthetic import make_card, photograph


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # each line alone must parse


def test_json_log_lines_carry_request_fields(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path], tmp_path: Path
) -> None:
    log_file = tmp_path / "logs" / "service.log"
    config = {**base_config, "BOOTSTRAP_MISSING_BUNDLE": "true", "LOG_FORMAT": "json",
              "LOG_LEVEL": "info", "LOG_FILE_PATH": str(log_file)}
    app = serve_bundle(config, synthetic_bundles["A"])
    try:
        client = app.test_client()
        photo, _ = photograph(make_card(104), seed=2)
        ok, data = cv2.imencode(".jpg", photo)
        assert ok
        answer = client.post("/infer", headers={"X-Request-ID": "req-42"},
                             data={"roi_image": (io.BytesIO(data.tobytes()), "p.jpg")})
        assert answer.status_code == 200, answer.get_json()
        assert client.get("/readyz").status_code == 200
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            logging.getLogger("app.test").exception("it failed")
    finally:
        shutdown(app)

    entries = read_json_lines(log_file)
    for entry in entries:
        assert {"time", "level", "logger", "message", "request_id"} <= entry.keys(), entry
    access = [e for e in entries if e["logger"] == "app.access" and e["route"] == "/infer"]
    assert len(access) == 1
    line = access[0]
    body = answer.get_json()
    assert line["request_id"] == "req-42"
    assert line["method"] == "POST" and line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["card_id"] == body["predicted_card_id"]
    assert line["confidence"] == body["confidence"]
    ready = [e for e in entries if e["logger"] == "app.access" and e["route"] == "/readyz"]
    assert ready and "card_id" not in ready[0]
    loaded = [e for e in entries if e["logger"] == "app.runtime.model"]
    assert loaded and loaded[0]["request_id"] == "-"  # outside a request
    failed = next(e for e in entries if e["message"] == "it failed")
    assert failed["level"] == "ERROR" and "boom\nsecond line" in failed["exception"]


def test_text_format_stays_the_default(tmp_path: Path, base_config: dict[str, str]) -> None:
    log_file = tmp_path / "service.log"
    app = create_app({**base_config, "LOG_LEVEL": "info", "LOG_FILE_PATH": str(log_file)})
    try:
        app.test_client().get("/readyz")
    finally:
        shutdown(app)
    text = log_file.read_text()
    assert "GET /readyz 503" in text and not text.lstrip().startswith("{")


def test_progress_is_structured_events_in_json_mode(
    tmp_path: Path, base_config: dict[str, str]
) -> None:
    """Even on a terminal (tty=True) JSON mode logs events instead of drawing a bar."""
    log_file = tmp_path / "service.log"
    app = create_app({**base_config, "LOG_FORMAT": "json", "LOG_LEVEL": "info",
                      "LOG_FILE_PATH": str(log_file)})
    try:
        with Progress("images", total=4, unit="img", interval=0.0, tty=True) as bar:
            for _ in range(4):
                bar.update(1)
    finally:
        shutdown(app)
    events = [e for e in read_json_lines(log_file) if e["logger"] == "app.common.progress"]
    progress = [e for e in events if e["event"] == "images.progress"]
    assert [e["done"] for e in progress] == [1, 2, 3, 4]
    assert all(e["total"] == 4 and e["unit"] == "img" for e in progress)
    assert progress[-1]["eta_s"] == 0.0 and progress[0]["rate"] >= 0
    assert events[-1]["event"] == "images.done"


def test_bad_log_format_is_a_configuration_error() -> None:
    with pytest.raises(SettingsError, match="LOG_FORMAT must be one of text, json, got 'xml'"):
        Settings.from_env({"LOG_FORMAT": "xml"})
    done = subprocess.run([sys.executable, "-m", "app"], cwd=REPOSITORY, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LOG_FORMAT": "yaml",
                               "RESOURCES_DIR": "/nonexistent"})
    assert done.returncode == 2
    assert "configuration error: LOG_FORMAT must be one of text, json, got 'yaml'" in done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("server", ["python -m app", "gunicorn"])
def test_every_line_of_the_real_server_is_json(server: str, tmp_path: Path) -> None:
    """The served process, gunicorn's own lines included: `python -m app` (make run) and the
    Dockerfile's gunicorn command, which reads gunicorn.conf.py from its working directory."""
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_FORMAT": "json",
           "PORT": str(port), "RESOURCES_DIR": str(tmp_path / "r"),
           "SCRYFALL_DATA_DIR": str(tmp_path / "d"), "BOOTSTRAP_MISSING_BUNDLE": "false",
           "REFRESH_ENABLED": "false", "SCRYFALL_API_URL": "http://127.0.0.1:9"}
    command = [sys.executable, "-m", "app"] if server == "python -m app" else [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--worker-class",
        "gthread", "--workers", "1", "--threads", "4", "app:create_serving_app()"]
    process = subprocess.Popen(command, cwd=REPOSITORY, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):  # starting, or a busy machine
                pass
            assert process.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 503
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    entries = []
    for line in (out + err).splitlines():
        if line.strip():
            entries.append(json.loads(line))  # a line that is not JSON fails here
    loggers = {entry["logger"] for entry in entries}
    assert "gunicorn.error" in loggers, loggers  # "Starting gunicorn", "Booting worker"
    access = [e for e in entries if e["logger"] == "app.access"]
    assert [e["route"] for e in access] == ["/readyz"]  # /healthz is quiet at info
    assert access[0]["status"] == 503
