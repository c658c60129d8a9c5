"""Promotions under load: no failed or mixed answer, and the new bundle served within 5 s."""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import requests

from app.pipeline import releases
from tests.support.apps import LiveServer, install_release, serve_bundle, shutdown
from tests.support.cards import synthetic_card_record
from tests.support.synthetic import make_card, photograph

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


def _truncate_index(release: Path) -> None:
    index = release / "faiss_ivf.index"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])


def _break_checksum(release: Path) -> None:
    manifest = json.loads((release / "manifest.json").read_text())
    name = next(iter(manifest["files"]))
    entry = manifest["files"][name]
    if isinstance(entry, dict):
        entry["sha256"] = "0" * 64
    else:
        manifest["files"][name] = "0" * 64
    (release / "manifest.json").write_text(json.dumps(manifest))


def _remove_features(release: Path) -> None:
    (release / "cards-00000.h5").unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(_truncate_index, "checksum"), (_break_checksum, "checksum"), (_remove_features, "missing")],
)
def test_corrupt_promotion_is_refused_and_the_old_bundle_keeps_answering(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path],
    damage: Callable[[Path], None], reason: str
) -> None:
    resources = Path(base_config["RESOURCES_DIR"])
    versions = {
        name: json.loads((path / "manifest.json").read_text())["version"]
        for name, path in synthetic_bundles.items()
    }
    app = serve_bundle(base_config, synthetic_bundles["A"], "0000-A")
    try:
        client = app.test_client()
        broken = install_release(resources, synthetic_bundles["B"], "0001-B")
        damage(broken)
        releases.promote(resources, broken)
        holder = app.extensions["model"]
        deadline = time.monotonic() + 5
        while holder.state.history[-1]["event"] != "refused":
            assert time.monotonic() < deadline, "the broken release was not even looked at"
            time.sleep(0.05)
        assert "refused" in holder.state.detail and reason in holder.state.detail
        response = client.post(
            "/infer", data={"roi_image": (io.BytesIO(_photo(100)), "p.jpg")}
        )
        assert response.status_code == 200
        body = response.get_json()
        assert body["index_version"] == versions["A"]
        assert body["predicted_card_id"] == synthetic_card_record(100)["id"]
        assert client.get("/readyz").status_code == 200
    finally:
        shutdown(app)
