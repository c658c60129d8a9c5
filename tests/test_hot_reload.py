"""Promotions under load: no failed or mixed answer, and the new bundle served within 5 s."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import pytest
import requests

from app.pipeline import releases
from tests.conftest import (
    LiveServer,
    install_release,
    serve_bundle,
    shutdown,
    synthetic_card_record,
)
from tests.synthetic import make_card, photograph

PROMOTIONS = 20
CLIENTS = 4
# Bundle A holds cards 100-113, bundle B cards 106-119 (see conftest.synthetic_bundles).
PHOTO_SEEDS = {100: {"A"}, 110: {"A", "B"}, 116: {"B"}}


def _photo(seed: int) -> bytes:
    image, _ = photograph(make_card(seed), seed=seed, rotation=5)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


@pytest.mark.slow
def test_twenty_promotions_under_load(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path]
) -> None:
    resources = Path(base_config["RESOURCES_DIR"])
    versions = {
        name: json.loads((path / "manifest.json").read_text())["version"]
        for name, path in synthetic_bundles.items()
    }
    holds = {versions[name]: name for name in versions}
    app = serve_bundle(base_config, synthetic_bundles["A"], "0000-A")
    photos = {seed: _photo(seed) for seed in PHOTO_SEEDS}
    stop = threading.Event()
    answers: list[tuple[int, int, str | None, str | None]] = []
    errors: list[str] = []

    def client(worker: int) -> None:
        session = requests.Session()
        seeds = list(PHOTO_SEEDS)
        i = worker
        while not stop.is_set():
            seed = seeds[i % len(seeds)]
            i += 1
            try:
                response = session.post(
                    f"{server.url}/infer",
                    files={"roi_image": ("photo.jpg", photos[seed], "image/jpeg")},
                    timeout=30,
                )
            except requests.RequestException as exc:
                errors.append(f"connection error: {exc}")
                continue
            body = response.json()
            answers.append(
                (seed, response.status_code, body.get("index_version"),
                 body.get("predicted_card_id"))
            )

    try:
        with LiveServer(app) as server:
            threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
            for thread in threads:
                thread.start()
            delays = []
            for n in range(1, PROMOTIONS + 1):
                name = "B" if n % 2 else "A"
                release = install_release(resources, synthetic_bundles[name], f"{n:04d}-{name}")
                promoted = time.monotonic()
                releases.promote(resources, release)
                while True:
                    served = requests.get(f"{server.url}/", timeout=5).json()["index_version"]
                    if served == versions[name]:
                        break
                    assert time.monotonic() - promoted < 5.0, f"promotion {n} not served in 5 s"
                    time.sleep(0.05)
                delays.append(time.monotonic() - promoted)
                time.sleep(0.3)  # let requests run on this version too
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
    finally:
        stop.set()
        shutdown(app)

    assert not errors, errors[:3]
    statuses = Counter(status for _, status, _, _ in answers)
    assert all(status in (200, 404) for status in statuses), statuses
    served_versions = Counter(version for _, _, version, _ in answers)
    assert set(served_versions) == set(versions.values()), served_versions
    for seed, status, version, card_id in answers:
        assert version in holds, f"answer names unknown version {version}"
        in_bundle = holds[version] in PHOTO_SEEDS[seed]
        if in_bundle:
            assert status == 200 and card_id == synthetic_card_record(seed)["id"], (
                f"card {seed} on {holds[version]}: {status} {card_id}"
            )
        else:
            assert status == 404, f"card {seed} is not in {holds[version]} but got {card_id}"
    assert len(answers) >= PROMOTIONS * 2
    assert max(delays) < 5.0
