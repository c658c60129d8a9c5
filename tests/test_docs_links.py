"""Every file the repository cites is in it (issue 26: "Nothing in the repository cites a file
outside it").

After the tree was reorganised, docstrings and docs still named `collector_line.py`,
`exact_printing.py`, `ppocr.py` and `scripts/bench_*.py`, and cited a `figures.md` and
`../shared/notes` that a clone does not have. Checked here, in README.md, docs/*.md, the
modules of app/, bench/ and deploy/ and the build and deployment files:

- every relative markdown link names a file (and a heading, after `#`) that exists;
- every repository path (`app/...`, `bench/...`, `docs/...`, `deploy/...`, `scripts/...`,
  `tests/...`), backticked or not, names a file or directory that exists;
- every section cited by name (`docs/design-notes.md, "Thumbnails"`) is a heading of that file;
- nothing cites `figures.md`, `../shared/notes` or "the pitfalls" that only a notebook had.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest


def _repository() -> Path:
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file() and (folder / "app").is_dir():
            return folder
    raise RuntimeError("no repository root above this test")


ROOT = _repository()
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [
    path
    for folder in ("app", "bench", "deploy", "scripts")
    for path in sorted((ROOT / folder).rglob("*"))
    if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
]
BUILD_FILES = [
    ROOT / name
    for name in ("Makefile", "Dockerfile", ".dockerignore", ".env.example", "docker-compose.yml",
                 "gunicorn.conf.py", "pyproject.toml", "requirements.txt", "requirements-dev.txt")
]
CITING = [path for path in (*MARKDOWN, *SOURCES, *BUILD_FILES) if path.is_file()]

# A path inside the repository: a top-level folder of it, then path characters, ending on a
# word character (so that the sentence's full stop or a closing bracket is not part of it). A
# path right after `/`, `.` or a word (`../app/x`, `/app/data`, `myapp/`) is not one of ours.
REPOSITORY_PATH = re.compile(r"(?<![\w./-])((?:app|bench|docs|deploy|scripts|tests)/[\w./-]*\w)")
# [text](target): the target up to the first space or closing bracket
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# docs/x.md, "Section" (or docs/x.md "Section", README "Section"), once comment markers and
# line breaks are gone
SECTION_CITATION = re.compile(r"((?:docs/)?[\w-]+\.md|README),? \"([^\"]+)\"")
OUTSIDE = ("figures.md", "../shared/notes", "pitfalls about gunicorn")
# What reads like a path of ours and is not a file of the repository, each with its reason.
NOT_FILES = {
    "deploy/kubernetes/secrets.env": "copied from secrets.env.example by the operator, ignored",
    "deploy/descriptor-infer": "kubectl's name of the Deployment (deploy/<name>)",
}


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    yield from enumerate(_text(path).splitlines(), start=1)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces
    to hyphens (`` `../shared` `` -> `shared`, "First start" -> `first-start`)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _headings(path: Path) -> list[str]:
    headings: list[str] = []
    fenced = False
    for _, line in _lines(path):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            headings.append(match.group(1).strip())
    return headings


def _flattened(path: Path) -> str:
    """The text with line breaks, comment markers and docstring indentation folded into single
    spaces, so that a citation broken over two lines reads as one."""
    return re.sub(r"\s*\n\s*(?:#+(?=\s))?\s*", " ", _text(path))


def broken_links(path: Path) -> list[str]:
    broken: list[str] = []
    fenced = False
    for number, line in _lines(path):
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        for target in MARKDOWN_LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            name, _, anchor = target.partition("#")
            linked = (path.parent / name).resolve() if name else path
            where = f"{_relative(path)}:{number}: ({target})"
            if not linked.exists():
                broken.append(f"{where} names no file")
            elif anchor and linked.suffix == ".md" and anchor not in map(_slug, _headings(linked)):
                broken.append(f"{where} names no heading of {_relative(linked)}")
    return broken


def missing_paths(path: Path) -> list[str]:
    return [
        f"{_relative(path)}:{number}: {cited}"
        for number, line in _lines(path)
        for cited in REPOSITORY_PATH.findall(line)
        if cited not in NOT_FILES and not (ROOT / cited).exists()
    ]


def missing_sections(path: Path) -> list[str]:
    missing: list[str] = []
    for name, section in SECTION_CITATION.findall(_flattened(path)):
        if name == "README":
            name = "README.md"
        cited = ROOT / name if "/" in name or name == "README.md" else path.parent / name
        if not cited.is_file():
            continue  # a missing file is missing_paths' to report
        headings = [heading.lower() for heading in _headings(cited)]
        if not any(heading.startswith(section.lower()) for heading in headings):
            missing.append(f"{_relative(path)}: {name}, \"{section}\" is no heading of it")
    return missing


def test_the_files_checked_are_found() -> None:
    names = {_relative(path) for path in CITING}
    assert {"README.md", "docs/api.md", "docs/design-notes.md", "app/api/infer.py",
            "bench/common.py", "Dockerfile"} <= names


@pytest.mark.parametrize("path", MARKDOWN, ids=_relative)
def test_markdown_links_name_files_and_headings_that_exist(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", CITING, ids=_relative)
def test_repository_paths_cited_exist(path: Path) -> None:
    assert missing_paths(path) == []


@pytest.mark.parametrize("path", CITING, ids=_relative)
def test_sections_cited_by_name_are_headings(path: Path) -> None:
    assert missing_sections(path) == []


@pytest.mark.parametrize("path", CITING, ids=_relative)
def test_nothing_cites_notes_outside_the_repository(path: Path) -> None:
    text = _text(path)
    assert [name for name in OUTSIDE if name in text] == []


def test_the_checks_find_what_is_broken(tmp_path: Path) -> None:
    """The checks themselves: a link, a heading, a path and a section that do not exist are
    reported; those that exist are not."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[here](#title) [gone](no-such-file.md) [anchor](#no-such-heading)\n"
        f"[api]({(ROOT / 'docs' / 'api.md').as_posix()}#api)\n"
        "`app/recognition/ppocr.py` and app/api/infer.py; docs/api.md, \"No such section\",\n"
        "docs/design-notes.md, \"Thumbnails\"\n",
        encoding="utf-8",
    )
    links = broken_links(page)
    assert len(links) == 2
    assert "(no-such-file.md) names no file" in links[0]
    assert "(#no-such-heading) names no heading" in links[1]
    assert [cited.rsplit(": ", 1)[1] for cited in missing_paths(page)] == [
        "app/recognition/ppocr.py"]
    sections = missing_sections(page)
    assert len(sections) == 1 and "No such section" in sections[0]
