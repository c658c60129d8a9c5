"""What the last successful refresh was made from, in SCRYFALL_DATA_DIR/refresh_state.json:
Scryfall's bulk type and `updated_at`, the digests of the feature parameters and of the
printings policy (REFRESH_LANGS, REFRESH_SETS, REFRESH_EXCLUDED_LAYOUTS), that policy itself
(to say what changed), and the release it promoted.

The next run compares itself with it to do nothing when nothing moved, and start-up to
refresh at once when the printings policy was changed and the service restarted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.common.settings import Settings
from app.pipeline import releases
from app.pipeline.refresh_options import RefreshOptions

STATE_FILE = "refresh_state.json"

# the settings each part of the printings policy comes from, for messages
POLICY_SETTINGS = {"sets": "REFRESH_SETS", "langs": "REFRESH_LANGS",
                   "exclude_layouts": "REFRESH_EXCLUDED_LAYOUTS"}


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


@dataclass(frozen=True)
class Reselection:
    """The served release was built under another printings policy than the settings'."""

    release: str  # the served release's name
    change: str  # e.g. "REFRESH_SETS changed from rtr to dsk,rtr"


def reselected_release(settings: Settings) -> Reselection | None:
    """The served release and what changed when it was built under another printings policy
    than REFRESH_SETS, REFRESH_LANGS and REFRESH_EXCLUDED_LAYOUTS now say (the settings were
    changed, then the service restarted), else None (same policy, or not built here)."""
    state = load_state(settings.scryfall_data_dir)
    current = releases.current_release(settings.resources_dir)
    if current is None or state.get("release") != current.name or "selection" not in state:
        return None
    options = RefreshOptions.from_settings(settings)
    if state["selection"] == options.selection_digest():
        return None
    return Reselection(current.name, policy_change(state.get("policy"),
                                                   options.selection_policy()))


def policy_change(before: Any, now: dict[str, list[str]]) -> str:
    """Which settings of the printings policy changed, from what to what (an empty list of
    sets or languages is "all", of excluded layouts "none"); a state saved before the policy
    was recorded says only that it changed."""
    if not isinstance(before, dict):
        return "the printings policy (REFRESH_SETS, REFRESH_LANGS, REFRESH_EXCLUDED_LAYOUTS) " \
               "changed"

    def shown(key: str, values: Any) -> str:
        if not values:
            return "none" if key == "exclude_layouts" else "all"
        return ",".join(str(v) for v in values)

    changes = [f"{POLICY_SETTINGS[key]} changed from {shown(key, before.get(key))} to "
               f"{shown(key, now[key])}"
               for key in POLICY_SETTINGS if sorted(before.get(key) or []) != now[key]]
    return "; ".join(changes) or "the printings policy changed"


def current_card_count(resources: Path) -> int:
    current = releases.current_release(resources)
    if current is None:
        return 0
    try:
        manifest = json.loads((current / "manifest.json").read_text())
        return int(manifest["counts"]["cards"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
