"""Synthetic cards as the catalogue and the builder see them (the images: synthetic.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from app.common.reference import ReferenceImage
from app.recognition.features.extraction import configure_threads
from app.recognition.index.build import build_bundle
from app.recognition.index.bundle import Bundle
from app.recognition.params import PROFILES, FeatureParams
from tests.support.synthetic import make_card


def synthetic_card_record(seed: int) -> dict[str, Any]:
    """A Scryfall-shaped record for the synthetic card `seed` (tests/support/synthetic.py)."""
    return {
        "object": "card",
        "id": f"00000000-0000-4000-8000-{seed:012d}",
        "oracle_id": f"10000000-0000-4000-8000-{seed:012d}",
        "illustration_id": f"20000000-0000-4000-8000-{seed:012d}",
        "name": f"Synthetic Card {seed}",
        "lang": "en",
        "layout": "normal",
        "set": "syn",
        "set_name": "Synthetic Set",
        "collector_number": str(seed),
        "finishes": ["nonfoil", "foil"],
        "prices": {"usd": f"{seed / 100:.2f}", "usd_foil": None, "eur": None, "tix": None},
        "image_uris": {"normal": f"https://img.invalid/{seed}.jpg"},
        "games": ["paper"],
        "digital": False,
        "released_at": "2026-01-01",
    }


def build_synthetic_bundle(seeds: list[int], out_dir: Path) -> dict[str, Any]:
    """Build a real bundle of synthetic cards with the default profile."""
    refs = [
        ReferenceImage(
            card_id=record["id"],
            face=0,
            name=record["name"],
            set=record["set"],
            collector_number=record["collector_number"],
            illustration_id=record["illustration_id"],
            load=functools.partial(make_card, seed),
            extra={"set_name": record["set_name"], "finishes": record["finishes"]},
        )
        for seed, record in ((s, synthetic_card_record(s)) for s in seeds)
    ]
    return build_bundle(refs, out_dir, PROFILES["default"], progress=False, workers=2)


def opened_bundle(directory: Path, params: FeatureParams) -> Iterator[Bundle]:
    """The bundle in `directory`, open for a module's tests (`yield from` in a fixture),
    closed after them."""
    bundle = Bundle.open(directory, expected_params=params)
    try:
        yield bundle
    finally:
        bundle.close()


def built_bundle(refs: Iterable[ReferenceImage], directory: Path, params: FeatureParams
                 ) -> Iterator[Bundle]:
    """A bundle built from `refs` into `directory` (two threads, as a 2-core host), then
    `opened_bundle`."""
    configure_threads(2)
    build_bundle(list(refs), directory, params, progress=False, workers=2)
    yield from opened_bundle(directory, params)
