"""The Scryfall client and the image fetcher against the local fake (never the real API)."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.catalog.records import face_images, iter_records
from app.pipeline.downloads import (
    FeatureCache,
    ImageFetcher,
    ImageFetchError,
    MissingImage,
    bounded_map,
)
from app.pipeline.scryfall import ScryfallClient, ScryfallError, verify_download
from app.recognition.params import DEFAULT
from tests.support.fake_scryfall import FakeScryfall


@pytest.fixture
def fake() -> Iterator[FakeScryfall]:
    with FakeScryfall() as server:
        server.add_card(1)
        server.add_card(2, faces=2, layout="transform")
        server.add_card(3, layout="adventure")
        yield server


class Sleeps(list[float]):
    """Records requested waits; sleeps a token amount so tests stay fast."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(0.001)


def client_for(fake: FakeScryfall, sleeps: Sleeps | None = None, **kw: Any) -> ScryfallClient:
    sleep = sleeps if sleeps is not None else Sleeps()
    return ScryfallClient(fake.url, backoff=0.01, api_interval=0.0, sleep=sleep, **kw)


def test_sends_a_descriptive_user_agent_and_accept(fake: FakeScryfall) -> None:
    client_for(fake).bulk_item("default_cards")
    _, headers = fake.requests[-1]
    assert headers["User-Agent"].startswith("MTGScan-descriptor-infer-service/")
    assert "(+" in headers["User-Agent"]
    assert headers["Accept"] == "application/json;q=0.9,*/*;q=0.8"


def test_bulk_item_prefers_jsonl_then_falls_back_then_fails_clearly(fake: FakeScryfall) -> None:
    client = client_for(fake)
    fake.bulk_format = "both"
    item = client.bulk_item("default_cards")
    assert item.format == "jsonl" and item.download_uri.endswith(".jsonl.gz")
    assert item.updated_at == fake.updated_at
    fake.bulk_format = "legacy"
    assert client.bulk_item("default_cards").format == "json"
    fake.bulk_format = "none"
    with pytest.raises(ScryfallError, match="neither jsonl_download_uri nor download_uri"):
        client.bulk_item("default_cards")
    with pytest.raises(ScryfallError, match="not offered"):
        client.bulk_item("all_cards")


@pytest.mark.parametrize("fmt", ["jsonl", "legacy"])
def test_downloads_stream_to_disk_verified_and_parse(
    fake: FakeScryfall, tmp_path: Path, fmt: str
) -> None:
    fake.bulk_format = fmt
    client = client_for(fake)
    item = client.bulk_item("default_cards")
    path = client.download_bulk(item, tmp_path)
    assert path.parent == tmp_path and not list(tmp_path.glob(".*part"))
    with path.open("rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"  # kept compressed in both formats
    records = list(iter_records(path))
    assert [r["id"] for r in records] == [c["id"] for c in fake.cards]
    faces = [f for r in records for f in face_images(r, tmp_path)]
    # normal: 1, transform: one per face, adventure: one image for the card
    assert [(f.card_id, f.face) for f in faces] == [
        (fake.cards[0]["id"], 0),
        (fake.cards[1]["id"], 0),
        (fake.cards[1]["id"], 1),
        (fake.cards[2]["id"], 0),
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "legacy"])
def test_truncated_gzip_download_fails_and_leaves_no_file(
    fake: FakeScryfall, tmp_path: Path, fmt: str
) -> None:
    fake.bulk_format = fmt
    fake.truncate_bulk = True
    client = client_for(fake)
    with pytest.raises(ScryfallError, match="truncated"):
        client.download_bulk(client.bulk_item("default_cards"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_verify_download_accepts_complete_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b'{"id": 1}\n'))
    verify_download(path)
    path.write_bytes(gzip.compress(b'{"id": 1}\n' * 1000)[:-10])
    with pytest.raises(ScryfallError):
        verify_download(path)


def test_429_then_success_honours_retry_after(fake: FakeScryfall) -> None:
    sleeps = Sleeps()
    fake.retry_after = "3"
    fake.queue_failures("/bulk-data", [429, 429])
    item = client_for(fake, sleeps, max_wait=5).bulk_item("default_cards")
    assert item.type == "default_cards"
    assert fake.count("/bulk-data") == 3
    assert sleeps == [3.0, 3.0]  # Retry-After wins over the (tiny) exponential backoff


def test_retry_after_is_capped(fake: FakeScryfall) -> None:
    sleeps = Sleeps()
    fake.retry_after = "3600"
    fake.queue_failures("/bulk-data", [429])
    client_for(fake, sleeps, max_wait=0.5).bulk_item("default_cards")
    assert sleeps == [0.5]


def test_500s_are_retried_with_backoff_then_give_up(fake: FakeScryfall) -> None:
    sleeps = Sleeps()
    fake.queue_failures("/bulk-data", [500, 503])
    assert client_for(fake, sleeps).bulk_item("default_cards").type == "default_cards"
    assert sleeps == [0.01, 0.02]
    fake.queue_failures("/bulk-data", [500] * 5)
    with pytest.raises(ScryfallError, match="after 5 tries: HTTP 500"):
        client_for(fake).bulk_item("default_cards")


def test_client_errors_are_not_retried(fake: FakeScryfall) -> None:
    fake.queue_failures("/bulk-data", [400])
    with pytest.raises(ScryfallError, match="HTTP 400"):
        client_for(fake).bulk_item("default_cards")
    assert fake.count("/bulk-data") == 1


def test_connection_errors_are_retried_and_reported() -> None:
    sleeps = Sleeps()
    client = ScryfallClient("http://127.0.0.1:9", backoff=0.01, api_interval=0, max_tries=3,
                            sleep=sleeps)
    with pytest.raises(ScryfallError, match="after 3 tries: ConnectionError"):
        client.bulk_item("default_cards")
    assert len(sleeps) == 2


def test_sets_follow_next_page(fake: FakeScryfall) -> None:
    codes = [s["code"] for s in client_for(fake).iter_sets()]
    assert codes == ["tst", "tdf", "tok"]
    assert fake.count("/sets") == 2


def test_api_calls_are_rate_limited(fake: FakeScryfall) -> None:
    client = ScryfallClient(fake.url, api_interval=0.05)
    started = time.monotonic()
    for _ in range(5):
        client.get_json("bulk-data")
    assert time.monotonic() - started >= 0.2
    assert client.api_calls == 5


def test_download_is_not_rate_limited_as_an_api_call(fake: FakeScryfall, tmp_path: Path) -> None:
    client = client_for(fake)
    item = client.bulk_item("default_cards")
    calls = client.api_calls
    client.download_bulk(item, tmp_path)
    assert client.api_calls == calls


# -- images --------------------------------------------------------------------------------
def test_image_fetcher_http_file_relative_and_missing(fake: FakeScryfall, tmp_path: Path) -> None:
    fetcher = ImageFetcher(backoff=0.001)
    uri = fake.cards[0]["image_uris"]["large"]
    data = fetcher.fetch(uri)
    assert data[:3] == b"\xff\xd8\xff"
    local = tmp_path / "card.jpg"
    local.write_bytes(data)
    assert fetcher.fetch(f"file://{local}") == data
    assert fetcher.fetch(str(local)) == data
    fake.missing_images.add(f"{fake.cards[0]['id']}-0")
    with pytest.raises(MissingImage):
        fetcher.fetch(uri)
    with pytest.raises(MissingImage):
        fetcher.fetch(str(tmp_path / "nope.jpg"))


def test_image_fetcher_retries_5xx_and_caps_size(fake: FakeScryfall) -> None:
    uri = fake.cards[0]["image_uris"]["large"]
    fake.queue_failures("/img/", [500, 502])
    assert ImageFetcher(backoff=0.001).fetch(uri)[:3] == b"\xff\xd8\xff"
    with pytest.raises(ImageFetchError, match="byte cap"):
        ImageFetcher(max_bytes=1000).fetch(uri)


def test_bounded_map_reports_errors_per_item() -> None:
    def work(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n * n

    results = {item: (res, err) for item, res, err in bounded_map(work, range(10), 3)}
    assert results[4] == (16, None)
    assert isinstance(results[3][1], ValueError)
    assert len(results) == 10


def test_feature_cache_key_follows_the_image_version(tmp_path: Path) -> None:
    a = FeatureCache.key("https://cards.example/large/x.jpg?1581395269")
    b = FeatureCache.key("https://cards.example/large/x.jpg?1700000000")
    assert a != b
    local = tmp_path / "img.jpg"
    local.write_bytes(b"1")
    before = FeatureCache.key(str(local))
    local.write_bytes(b"22")
    assert FeatureCache.key(str(local)) != before
    cache = FeatureCache(tmp_path / "features", DEFAULT)
    assert cache.dir.name and not cache.has(a)
