"""GET /metrics over real HTTP: requests, recognitions, refusals, a refresh and a swap move
the counters and histograms they should (deltas: the metrics are process-wide)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.pipeline.refresh import run_refresh
from tests.support.apps import LiveServer, serve_bundle, shutdown
from tests.support.environment import REPOSITORY
from tests.support.fake_scryfall import FAST_REFRESH, FakeScryfall
from tests.support.synthetic import make_card, photograph

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def post(url: str, data: bytes) -> requests.Response:
    return requests.post(f"{url}/infer", files={"roi_image": ("p.jpg", io.BytesIO(data))},
                         timeout=60)


def test_metrics_move_with_requests_refusals_a_refresh_and_a_swap(
    base_config: dict[str, str], synthetic_bundles: dict[str, Path]
) -> None:
    config = {**base_config, "BOOTSTRAP_MISSING_BUNDLE": "true", "MAX_CONCURRENT_INFER": "1",
              "INFER_QUEUE_TIMEOUT": "0", "INFER_API_TOKENS": "s3cret"}
    app = serve_bundle(config, synthetic_bundles["A"])
    holder = app.extensions["model"]
    old_version = holder.state.version
    auth = {"Authorization": "Bearer s3cret"}
    try:
        with LiveServer(app) as server, FakeScryfall() as fake:
            url = server.url
            before = scrape(url)
            assert value(before, "mtgscan_bundle_info", version=old_version) == 1

            photo, _ = photograph(make_card(103), seed=5)
            noise = cv2.GaussianBlur(
                np.random.default_rng(1).integers(0, 255, (600, 800, 3), dtype=np.uint8),
                (0, 0), 3)
            files = {"roi_image": ("p.jpg", io.BytesIO(jpeg(photo)))}
            match = requests.post(f"{url}/infer", files=files, headers=auth, timeout=60)
            assert match.status_code == 200, match.text
            files = {"roi_image": ("p.jpg", io.BytesIO(jpeg(noise)))}
            assert requests.post(f"{url}/infer", files=files, headers=auth,
                                 timeout=60).status_code == 404
            assert requests.post(f"{url}/infer", data=b"", headers={
                **auth, "Content-Type": "image/jpeg"}, timeout=10).status_code == 400
            assert post(url, jpeg(noise)).status_code == 401  # no token
            assert requests.get(f"{url}/no/such/page/123", timeout=10).status_code == 404

            # every slot taken: the next recognition is refused with 503
            with app.extensions["admission"].slot():
                busy = scrape(url)
                files = {"roi_image": ("p.jpg", io.BytesIO(jpeg(photo)))}
                refused = requests.post(f"{url}/infer", files=files, headers=auth, timeout=30)
                assert refused.status_code == 503
            assert value(busy, "mtgscan_infer_in_flight") == 1

            for seed in range(1, 17):
                fake.add_card(seed)
            settings = app.config["SETTINGS"]
            settings = type(settings).from_env({**config, "SCRYFALL_API_URL": fake.url})
            result = run_refresh(settings, app.extensions["catalog"], FAST_REFRESH,
                                 on_promoted=holder.load)
            assert result.status == "succeeded", result.error
            after = scrape(url)
    finally:
        shutdown(app)

    requests_total = "mtgscan_http_requests_total"
    for status in ("200", "404", "400", "401", "503"):
        assert delta(before, after, requests_total, route="/infer", method="POST",
                     status=status) == 1, status
    assert delta(before, after, requests_total, route="unmatched", method="GET",
                 status="404") == 1
    assert delta(before, after, requests_total, route="/metrics", method="GET",
                 status="200") == 2  # the scrape inside the slot, and the first one
    assert delta(before, after, "mtgscan_http_request_duration_seconds_count",
                 route="/infer", method="POST") == 5
    assert delta(before, after, "mtgscan_http_request_duration_seconds_sum",
                 route="/infer", method="POST") > 0
    assert delta(before, after, "mtgscan_http_request_duration_seconds_bucket",
                 route="/infer", method="POST", le="+Inf") == 5
    assert value(after, "mtgscan_http_requests_in_flight") == 1  # the scrape itself

    # two recognitions ran (the match and the no-match); 400/401/503 never reached one
    for stage in ("decode", "features", "search", "verify", "total"):
        assert delta(before, after, "mtgscan_recognition_stage_seconds_count",
                     stage=stage) == 2, stage
        assert delta(before, after, "mtgscan_recognition_stage_seconds_sum", stage=stage) > 0
    assert delta(before, after, "mtgscan_infer_answers_total", outcome="match") == 1
    assert delta(before, after, "mtgscan_infer_answers_total", outcome="no_match") == 1
    assert delta(before, after, "mtgscan_infer_refused_total", reason="busy") == 1
    assert value(after, "mtgscan_infer_in_flight") == 0

    # the refresh: one successful run under the lock, every image fetched, then a swap
    assert delta(before, after, "mtgscan_refresh_runs_total", outcome="succeeded") == 1
    assert delta(before, after, "mtgscan_refresh_duration_seconds_count",
                 outcome="succeeded") == 1
    assert delta(before, after, "mtgscan_refresh_duration_seconds_sum", outcome="succeeded") > 0
    assert delta(before, after, "mtgscan_update_lock_attempts_total", result="held") == 1
    assert value(after, "mtgscan_update_lock_held") == 0
    assert delta(before, after, "mtgscan_refresh_images_total", result="fetched") == 16
    assert delta(before, after, "mtgscan_bundle_swaps_total") == 1
    assert result.release is not None
    assert value(after, "mtgscan_bundle_info", version=result.release) == 1
    assert value(after, "mtgscan_bundle_info", version=old_version) == 0
    assert value(after, "mtgscan_bundle_printings") == 16
    assert value(after, "mtgscan_bundle_descriptors") == result.counts["bundle"][
        "indexed_descriptors"]
    assert 0 <= value(after, "mtgscan_bundle_last_swap_pause_seconds") < 1
    assert value(after, "mtgscan_refresh_last_success_timestamp_seconds") > 0


def test_metrics_need_no_token(base_config: dict[str, str]) -> None:
    from app import create_app

    app = create_app({**base_config, "INFER_API_TOKENS": "s3cret"})
    try:
        response = app.test_client().get("/metrics")
        assert response.status_code == 200
        assert b"mtgscan_http_requests_total" in response.data
        assert app.test_client().get("/status").status_code == 401
    finally:
        shutdown(app)


MULTIPROCESS = textwrap.dedent(
    """
    import json, sys
    from app import create_app
    app = create_app({cfg!r})
    client = app.test_client()
    client.get("/healthz")
    print(json.dumps(client.get("/metrics").get_data(as_text=True)))
    """
)


def test_multiprocess_mode_merges_the_values_of_every_process(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR: each process writes its values there and a scrape from any
    of them shows the sum (two processes here, one after the other, as two workers)."""
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
           "PYTHONPATH": str(REPOSITORY)}
    cfg = {"FLASK_ENV": "testing", "RESOURCES_DIR": str(tmp_path / "r"),
           "SCRYFALL_DATA_DIR": str(tmp_path / "d"), "BOOTSTRAP_MISSING_BUNDLE": "false",
           "REFRESH_ENABLED": "false", "LOG_LEVEL": "warning"}
    outputs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", MULTIPROCESS.format(cfg=cfg)], env=env,
                              cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert any(multiproc.glob("counter_*.db")), "no multiprocess value files were written"

    def healthz(text: str) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "mtgscan_http_requests_total" and sample.labels.get(
                        "route") == "/healthz":
                    return float(sample.value)
        return 0.0

    assert healthz(outputs[0]) == 1
    assert healthz(outputs[1]) == 2  # the first process's request is in the second's scrape


def test_metrics_view_is_served_by_the_real_server(base_config: dict[str, str]) -> None:
    """Plain urllib, as a scraper would: no client library's help."""
    from app import create_app

    app = create_app(base_config)
    try:
        with LiveServer(app) as server:
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
                text = response.read().decode()
        names = {family.name for family in text_string_to_metric_families(text)}
        for name in ("mtgscan_http_requests", "mtgscan_recognition_stage_seconds",
                     "mtgscan_infer_answers", "mtgscan_refresh_runs", "mtgscan_bundle_swaps",
                     "mtgscan_update_lock_held", "mtgscan_refresh_images"):
            assert name in names, name
    finally:
        shutdown(app)
