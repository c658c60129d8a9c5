"""Dependencies point one way, by rank (README, "The tree"):

    common < catalog, recognition < pipeline, runtime < api < wiring < the factory (app/__init__)

and inside recognition: params < decode, features < index < match < collector_line < service.

A module imports only from a lower rank or from its own package; packages of one rank sit side
by side and do not import each other. Nothing imports a package's root (`from app import x`,
`from app.catalog import get_store`): names live in modules, and the tree says where. No
private name (`_x`) is imported across packages. Checked over every module of app/, function-local
imports included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# app/<package> -> rank; app/__init__.py (the factory) and app/__main__.py (the process) on top
RANKS = {"common": 0, "catalog": 1, "recognition": 1, "pipeline": 2, "runtime": 2, "api": 3,
         "wiring": 4, "__init__": 5, "__main__": 6}
RECOGNITION_RANKS = {"params": 0, "decode": 1, "features": 1, "index": 2, "match": 3,
                     "collector_line": 4, "service": 5}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    return ".".join(parts)


def _is_package(dotted: str) -> bool:
    return (APP.parent / dotted.replace(".", "/") / "__init__.py").is_file()


def _is_module(dotted: str) -> bool:
    base = APP.parent / dotted.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _place(dotted: str) -> tuple[str, str | None]:
    """(top package, recognition stage or None) of a module of app."""
    parts = dotted.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    stage = parts[2] if top == "recognition" and len(parts) > 2 else None
    return top, stage


def _imported(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module imported from, names) for every `app` import of a file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "app" or node.module.startswith("app."):
                yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "app" or alias.name.startswith("app."):
                    yield node.lineno, alias.name, []


def problems_of(path: Path) -> list[str]:
    """What is wrong with one file's imports (empty when it follows the rule)."""
    importer = _module_name(path)
    if importer.endswith(".__init__"):
        importer = importer[: -len(".__init__")]
    top, stage = _place(importer)
    where = path.relative_to(APP.parent)
    found = []
    for line, module, names in _imported(path):
        # what is really imported: modules named in `from pkg import mod`, else the module
        targets = [f"{module}.{n}" for n in names if _is_module(f"{module}.{n}")]
        others = [n for n in names if not _is_module(f"{module}.{n}")]
        if others and _is_package(module) and top != "__main__":
            found.append(f"{where}:{line} imports {others} from the package root {module}")
        if others or not names:
            targets.append(module)
        for target in targets:
            if target == "app" and top != "__main__":
                found.append(f"{where}:{line} imports the package root app")
                continue
            their_top, their_stage = _place(target)
            if their_top != top:
                if RANKS[their_top] >= RANKS[top]:
                    found.append(f"{where}:{line} imports {target} (rank {RANKS[their_top]} "
                                 f">= its own {RANKS[top]})")
            elif top == "recognition" and stage != their_stage:
                mine = RECOGNITION_RANKS.get(stage or "", -1)
                theirs = RECOGNITION_RANKS.get(their_stage or "", -1)
                if theirs >= mine:
                    found.append(f"{where}:{line} imports {target} (recognition stage "
                                 f"{their_stage} is not below {stage})")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private and module.rsplit(".", 1)[0] != importer.rsplit(".", 1)[0]:
            found.append(f"{where}:{line} imports private {private} from {module}")
    return found


def test_every_module_of_app_follows_the_ranks() -> None:
    problems = [p for path in sorted(APP.rglob("*.py")) for p in problems_of(path)]
    assert not problems, "\n".join(problems)


def test_every_package_of_app_has_a_rank() -> None:
    packages = {p.name for p in APP.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(RANKS), sorted(packages - set(RANKS))
    stages = {p.stem for p in (APP / "recognition").iterdir()
              if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}
    assert stages <= set(RECOGNITION_RANKS), sorted(stages - set(RECOGNITION_RANKS))


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        ("common/probe.py", "from app.api import errors\n", "rank 3 >= its own 0"),
        ("catalog/probe.py", "from app.recognition.index import bundle\n", "rank 1 >= its own 1"),
        ("recognition/index/probe.py", "def f():\n    from app.recognition.match import card\n",
         "stage match is not below index"),
        ("api/probe.py", "from app.catalog import get_store\n", "from the package root"),
        ("api/probe.py", "from app import metrics\n", "from the package root app"),
        ("wiring/probe.py", "from app.recognition.index.build import _Spool\n", "private"),
    ],
)
def test_an_upward_import_added_on_purpose_is_caught(
    relative: str, source: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the probe sits where the rule would find it, for as long as the check takes
    probe = APP / relative
    assert not probe.exists()
    probe.write_text(source, encoding="utf-8")
    try:
        found = problems_of(probe)
    finally:
        probe.unlink()
    assert any(expected in p for p in found), found


def deferred_imports_without_a_reason(path: Path) -> list[str]:
    """Function-local imports of app modules whose reason is not written above them: a
    comment on the line, or on the line above the block of imports it begins."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for function in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                alias.name for alias in node.names]
            if not any(n == "app" or n.startswith("app.") for n in names):
                continue
            row = node.lineno - 1
            if "#" in lines[row]:
                continue
            while row > 0 and lines[row - 1].strip().startswith(("from ", "import ")):
                row -= 1
            if row == 0 or not lines[row - 1].strip().startswith("#"):
                found.append(f"{path.relative_to(APP.parent)}:{node.lineno} {names[0]}")
    return found


def test_function_local_imports_say_why_they_wait() -> None:
    problems = [p for path in sorted(APP.rglob("*.py"))
                for p in deferred_imports_without_a_reason(path)]
    assert not problems, "\n".join(problems)
