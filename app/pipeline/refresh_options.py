"""The refresh's options and records: what one run is asked to do (`RefreshOptions`: the
printings policy - Scryfall's `lang`, `set` and `layout` - and the knobs of fetching,
building and validation), what it answers (`RefreshResult`) and the error that stops it
before promotion (`RefreshError`).

Shared by every module of the refresh (selection, extraction, building, validation, state),
so none of them imports the run itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.common.settings import DEFAULT_EXCLUDED_LAYOUTS, Settings

# Layouts that are not cards one would scan (REFRESH_EXCLUDED_LAYOUTS, RefreshOptions).
EXCLUDED_LAYOUTS = frozenset(DEFAULT_EXCLUDED_LAYOUTS)


class RefreshError(RuntimeError):
    """A refresh that must not promote; the message says why."""


@dataclass(frozen=True)
class RefreshOptions:
    """Knobs of one refresh. Defaults suit the nightly job on Scryfall's default_cards."""

    langs: tuple[str, ...] = ("en",)  # empty: every language
    sets: tuple[str, ...] = ()  # Scryfall set codes to index; empty: every set
    exclude_layouts: frozenset[str] = EXCLUDED_LAYOUTS
    catalog_file: Path | None = None  # a local catalogue instead of Scryfall's bulk data
    force: bool = False  # rebuild even when updated_at has not moved
    image_workers: int = 6
    build_workers: int = 2
    max_image_bytes: int = 15 * 1024 * 1024
    max_missing_fraction: float = 0.05
    validation_sample: int = 40
    min_hit_rate: float = 0.85
    min_size_ratio: float = 0.9  # refuse a catalogue smaller than this x the current one
    prune_cache: bool = True  # drop cached features of printings no longer indexed
    incremental: bool = True  # extend the current release when few printings changed
    max_incremental_change: float = 0.2  # ... at most this fraction (else a full build)
    progress: bool = True
    # retry/rate knobs (tests make them tiny)
    retry_tries: int = 5
    retry_backoff: float = 1.0
    retry_max_wait: float = 60.0
    api_interval: float = 0.15

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> RefreshOptions:
        """The printings policy of REFRESH_LANGS, REFRESH_SETS, REFRESH_EXCLUDED_LAYOUTS and
        REFRESH_MIN_HIT_RATE (what scheduled runs use), with `changes` on top."""
        values: dict[str, Any] = {
            "langs": tuple(settings.refresh_langs),
            "sets": tuple(settings.refresh_sets),
            "exclude_layouts": frozenset(settings.refresh_excluded_layouts),
            "min_hit_rate": settings.refresh_min_hit_rate,
        }
        values.update(changes)
        return cls(**values)

    def selection_policy(self) -> dict[str, list[str]]:
        """What decides which printings are indexed, as REFRESH_LANGS, REFRESH_SETS and
        REFRESH_EXCLUDED_LAYOUTS hold it (sorted; empty: every language, every set)."""
        return {"langs": sorted(self.langs), "sets": sorted(self.sets),
                "exclude_layouts": sorted(self.exclude_layouts)}

    def selection_digest(self) -> str:
        """What decides which printings are indexed: a change (REFRESH_SETS widened, another
        language) makes the next run rebuild even when Scryfall's file has not moved."""
        return hashlib.sha256(json.dumps(self.selection_policy()).encode()).hexdigest()[:16]


@dataclass
class RefreshResult:
    status: str  # succeeded | skipped | failed
    counts: dict[str, Any] = field(default_factory=dict)
    release: str | None = None
    error: str | None = None
    run_id: int | None = None

    def summary(self) -> str:
        text = f"refresh {self.status}"
        if self.error and self.error.startswith(self.status):
            text = "refresh"  # "skipped: another replica holds ..." says it already
        if self.release:
            text += f": serving {self.release}"
        if self.error:
            text += f": {self.error}"
        return f"{text} {json.dumps(self.counts, default=str)}"
