"""Dependencies point one way: api -> pipeline/runtime -> catalog/recognition; the wiring that
starts the bootstrap and the schedule (app/startup.py, app/scheduler.py) sits on top."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
# package -> the app packages it must not import (function-local imports included)
FORBIDDEN = {
    "recognition": {"api", "pipeline", "runtime", "catalog", "startup", "scheduler"},
    "catalog": {"api", "pipeline", "runtime", "startup", "scheduler"},
    "runtime": {"api", "pipeline", "startup", "scheduler"},
    "pipeline": {"api", "runtime", "startup", "scheduler"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from app import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "app" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_layers_do_not_import_upwards_or_sideways() -> None:
    problems = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((APP / package).rglob("*.py")):
            bad = _imports(path) & forbidden
            if bad:
                problems.append(f"{path.relative_to(APP.parent)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)
