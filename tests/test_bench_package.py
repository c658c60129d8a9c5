"""bench/ is a package of benchmarks that import each other without a circle and nothing of the
test suite, each runnable as `python -m bench.<name>` (issue 26: they used to import each
other in a circle through sys.path, and one imported tests.conftest).

Read from the source with ast, as tests/test_architecture.py reads app/: function-local
imports count too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
# What the benchmarks share, and the package itself: not benchmarks, no `main`.
NOT_BENCHMARKS = {"bench", "bench.common"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(BENCH.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it, as absolute dotted names (`from bench
    import scale` names bench.scale; relative imports are resolved against `name`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def bench_graph() -> dict[str, set[str]]:
    """Module -> the other bench modules it imports."""
    names = modules()
    return {name: {other for other in imported(name, path) if other in names and other != name}
            for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_bench_modules_import_each_other_without_a_cycle() -> None:
    graph = bench_graph()
    assert {"bench.eval", "bench.scale", "bench.printings"} <= set(graph)
    assert "bench.scale" in graph["bench.eval"]  # the graph is read: eval dispatches --scale
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in bench/: " + " -> ".join(cycle or [])


def test_nothing_in_bench_imports_the_test_suite() -> None:
    found = {(name, ".".join(other.split(".")[:2])) for name, path in modules().items()
             for other in imported(name, path) if other.split(".")[0] == "tests"}
    assert not found, sorted(found)


@pytest.mark.parametrize("name", sorted(set(modules()) - NOT_BENCHMARKS))
def test_each_benchmark_imports_and_has_a_main(name: str) -> None:
    module = importlib.import_module(name)
    assert callable(getattr(module, "main", None)), f"{name} has no main()"
