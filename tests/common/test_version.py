"""One version: app/common/version.py. pyproject.toml reads it, and the API spec's examples
(which are YAML in docstrings, where it cannot be interpolated) must show the same."""

from __future__ import annotations

import re
import tomllib

from app.common.version import __version__
from tests.support.environment import REPOSITORY


def test_pyproject_reads_the_version_from_the_code() -> None:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "app.common.version.__version__"}


def test_the_spec_examples_show_the_running_version() -> None:
    shown = []
    for path in sorted((REPOSITORY / "app" / "api").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        shown += re.findall(r"version: (?:\{type: string, example: )?(\d+\.\d+\.\d+)", text)
    assert shown, "no version example found: the pattern no longer matches the specs"
    assert set(shown) == {__version__}
