"""Step 4 of a build: the per-card shards, h5 files of `shard_slots` slots each (format in
`bundle.py`): keypoints in fixed point, the encoded thumbnails, the reference's size, a hash
of its name and the slot of its picture's reference."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from app.recognition.index.bundle import KP_SCALE, name_hash


@dataclass
class Kept:
    """What a shard keeps of one indexed card."""

    keypoints: np.ndarray  # float32 [n,2], in `local` order
    thumb: bytes
    ref_size: tuple[float, float]
    entry: dict[str, Any]
    color: bytes = b""
    picture: int = -1  # slot of its picture's reference


class ShardWriter:
    """Accumulates the per-card data of one shard, then writes it as an h5 file."""

    def __init__(self) -> None:
        self.keypoints: list[np.ndarray] = []
        self.thumbs: list[bytes] = []
        self.colors: list[bytes] = []
        self.ref_size: list[tuple[float, float]] = []
        self.names: list[int] = []
        self.pictures: list[int] = []

    def add(self, keypoints: np.ndarray, thumb: bytes, ref_size: tuple[float, float],
            name: str | None, color: bytes = b"", picture: int = -1) -> None:
        fixed = np.clip(np.rint(keypoints * KP_SCALE), 0, 65535).astype(np.uint16)
        self.keypoints.append(fixed.reshape(-1, 2))
        self.thumbs.append(thumb)
        self.colors.append(color)
        self.ref_size.append(ref_size)
        self.names.append(name_hash(name) if name is not None else -1)
        self.pictures.append(picture)

    def add_kept(self, kept: Kept) -> None:
        self.add(kept.keypoints, kept.thumb, kept.ref_size, kept.entry["name"], kept.color,
                 kept.picture)

    def add_empty(self) -> None:
        self.add(np.zeros((0, 2), np.float32), b"", (0.0, 0.0), None)

    def __len__(self) -> int:
        return len(self.ref_size)

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        counts = [len(k) for k in self.keypoints]
        sizes = [len(t) for t in self.thumbs]
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("kp_offsets", data=np.concatenate([[0], np.cumsum(counts)])
                              .astype(np.int64))
            h5.create_dataset("keypoints", data=np.concatenate(self.keypoints)
                              if self.keypoints else np.zeros((0, 2), np.uint16))
            h5.create_dataset("thumb_offsets", data=np.concatenate([[0], np.cumsum(sizes)])
                              .astype(np.int64))
            h5.create_dataset("thumbs", data=np.frombuffer(b"".join(self.thumbs), np.uint8))
            colors = [len(c) for c in self.colors]
            h5.create_dataset("color_offsets", data=np.concatenate([[0], np.cumsum(colors)])
                              .astype(np.int64))
            h5.create_dataset("colors", data=np.frombuffer(b"".join(self.colors), np.uint8))
            h5.create_dataset("ref_size", data=np.asarray(self.ref_size, np.float32)
                              .reshape(-1, 2))
            h5.create_dataset("name_hash", data=np.asarray(self.names, np.int64))
            h5.create_dataset("picture", data=np.asarray(self.pictures, np.int64))
        os.replace(tmp, path)

