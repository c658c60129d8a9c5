"""What the last successful refresh was made from, in SCRYFALL_DATA_DIR/refresh_state.json:
Scryfall's bulk type and `updated_at`, the digests of the feature parameters and of the
printings policy (REFRESH_LANGS, REFRESH_SETS, REFRESH_EXCLUDED_LAYOUTS), and the release it
promoted.

The next run compares itself with it to do nothing when nothing moved, and start-up to
refresh at once when the printings policy was changed and the service restarted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from app.common.settings import Settings
from app.pipeline import releases
from app.pipeline.refresh_options import RefreshOptions

STATE_FILE = "refresh_state.json"


def load_state(data_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        return state
    except (OSError, ValueError):
        return {}


def save_state(data_dir: Path, state: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, data_dir / STATE_FILE)


def reselected_release(settings: Settings) -> str | None:
    """The served release's name when it was built under another printings policy than
    REFRESH_SETS, REFRESH_LANGS and REFRESH_EXCLUDED_LAYOUTS now say (the settings were
    changed, then the service restarted), else None (same policy, or not built here)."""
    state = load_state(settings.scryfall_data_dir)
    current = releases.current_release(settings.resources_dir)
    if current is None or state.get("release") != current.name or "selection" not in state:
        return None
    selection = RefreshOptions.from_settings(settings).selection_digest()
    return current.name if state["selection"] != selection else None


def current_card_count(resources: Path) -> int:
    current = releases.current_release(resources)
    if current is None:
        return 0
    try:
        manifest = json.loads((current / "manifest.json").read_text())
        return int(manifest["counts"]["cards"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
