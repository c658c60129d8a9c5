"""`flask --app app build-index` from a local catalogue; a server started afterwards serves it."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import cv2
import pytest

from app import create_app, create_serving_app
from tests.support.apps import shutdown
from tests.support.cards import synthetic_card_record
from tests.support.synthetic import make_card, photograph

SEEDS = list(range(100, 114))


def write_catalogue(folder: Path) -> Path:
    """A gzip JSON Lines catalogue like ../shared/eval's: image paths relative to the file."""
    (folder / "references").mkdir(parents=True)
    lines = []
    for seed in SEEDS:
        record = synthetic_card_record(seed)
        relative = f"references/{seed}.png"
        assert cv2.imwrite(str(folder / relative), make_card(seed))
        record["image_uris"] = {"large": relative, "normal": relative}
        lines.append(json.dumps(record))
    path = folder / "cards.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_build_index_then_a_new_server_serves_it(
    base_config: dict[str, str], tmp_path: Path
) -> None:
    catalogue = write_catalogue(tmp_path / "catalogue")
    app = create_app(base_config)
    try:
        result = app.test_cli_runner().invoke(
            args=["build-index", "--catalog", str(catalogue), "--workers", "2"]
        )
        assert result.exit_code == 0, result.output
        assert "succeeded" in result.output
        info = json.loads(app.test_cli_runner().invoke(args=["status"]).output)
        assert info["current_release"] is not None
        assert info["catalog"]["cards"] == len(SEEDS)
    finally:
        shutdown(app)

    served = create_serving_app(base_config)
    try:
        served.extensions["prepare_thread"].join(timeout=60)
        photo, _ = photograph(make_card(107), seed=3, rotation=12)
        ok, data = cv2.imencode(".jpg", photo)
        assert ok
        response = served.test_client().post(
            "/infer", data={"roi_image": (io.BytesIO(data.tobytes()), "p.jpg")}
        )
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["predicted_card_id"] == synthetic_card_record(107)["id"]
        assert body["prices"]["usd"] == "1.07" and body["metadata"] == "complete"
    finally:
        shutdown(served)


def test_build_index_refuses_an_unknown_profile(
    base_config: dict[str, str], tmp_path: Path
) -> None:
    catalogue = tmp_path / "cards.jsonl"
    catalogue.write_text("")
    app = create_app(base_config)
    try:
        result = app.test_cli_runner().invoke(
            args=["build-index", "--catalog", str(catalogue), "--profile", "nope"]
        )
        assert result.exit_code != 0
        assert "unknown profile 'nope'" in result.output
    finally:
        shutdown(app)
