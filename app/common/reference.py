"""What the catalogue tells recognition about one printing: the face image to index
(`ReferenceImage`), the frame it is printed in (`layout_key`) and the picture it shows
(`picture_key`).

Both sides use these: the catalogue computes the keys when it stores a Scryfall record, and the
bundle build reads them back. They live here, below both, so that the catalogue does not pull
in FAISS and h5py, nor recognition the catalogue's stores. Pure functions of Scryfall's fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Fields of a Scryfall card object (or of one face) that change what is printed around the
# same illustration. `promo_types` is taken whole: a stamp ("prerelease", "datestamped",
# "stamped", "planeswalkerstamped", "promopack") changes the picture, and a kind of foil
# that does not only costs one more reference.
PICTURE_FIELDS = ("illustration_id", "lang", "frame", "border_color", "frame_effects",
                  "full_art", "promo_types", "layout_key", "face")

def layout_key(record: dict[str, Any]) -> str:
    """What a printing's layout looks like, as a key: printings with equal keys share
    their frame. Scryfall's `layout` (split, saga, class, case, adventure, battle, ...),
    `frame` (1993, 1997, 2003, 2015, future), borderless or full art, and planeswalkers
    (their own layout under `layout: normal`)."""
    parts = [str(record.get("layout") or "normal"), str(record.get("frame") or "")]
    if record.get("border_color") == "borderless" or record.get("full_art"):
        parts.append("borderless")
    type_line = str(record.get("type_line") or "")
    if "Planeswalker" in type_line:
        parts.append("planeswalker")
    return "/".join(parts)



def picture_key(entry: Mapping[str, Any]) -> str | None:
    """A short key naming the picture a printing (face) shows, or None when the catalogue
    does not say (no `illustration_id`): such a printing is its own picture."""
    if not entry.get("illustration_id"):
        return None
    parts = []
    for name in PICTURE_FIELDS:
        value = entry.get(name)
        if isinstance(value, (list, tuple)):
            value = sorted(str(v) for v in value)
        parts.append(value)
    digest = hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=10)
    return digest.hexdigest()



@dataclass
class ReferenceImage:
    """One face image to index. `load` returns BGR uint8 and is called once, in a worker."""

    card_id: str
    face: int
    name: str
    set: str
    collector_number: str
    illustration_id: str | None
    load: Callable[[], np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)  # copied into id_map (set_name, ...)
    # Optional (features, thumbnail) from a feature cache (the nightly refresh's incremental
    # build); when set, build_bundle uses it instead of calling `load` and extracting again
    # (the features' `color`, when set, gives the colour thumbnail).
    precomputed: Callable[[], tuple[Any, np.ndarray]] | None = None
    key: str | None = None  # image version key: an incremental build reuses equal keys

    def id_entry(self) -> dict[str, Any]:
        return {
            **self.extra,
            "id": self.card_id,
            "face": self.face,
            "name": self.name,
            "set": self.set,
            "collector_number": self.collector_number,
            "illustration_id": self.illustration_id,
            "key": self.key,
        }
