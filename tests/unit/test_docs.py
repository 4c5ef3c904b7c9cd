"""The docs stay true to the code: RUNNING.md documents every run-config key with pyproject's
default, and every relative link in README.md and docs/*.md points at an existing file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNING = ROOT / "docs" / "RUNNING.md"
TYPES = {bool: "bool", int: "int", float: "float", str: "str"}


def pyproject_config() -> dict:
    """`[tool.flwr.app.config]` as Flower reads it."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def documented_keys() -> dict[str, tuple[str, str]]:
    """RUNNING.md's config table: key -> (type cell, default cell), from rows starting with a `key`."""
    rows = re.findall(r"^\| `([a-z][a-z0-9-]*)` \| (\w+) \| ([^|]*) \|", RUNNING.read_text(), re.MULTILINE)
    keys: dict[str, tuple[str, str]] = {}
    for key, kind, default in rows:
        assert key not in keys, f"RUNNING.md lists '{key}' twice"
        keys[key] = (kind, default.strip())
    return keys


def default_federation() -> list[str]:
    """Dataset ids of RUNNING.md's 'Default federation' table, in client order."""
    section = RUNNING.read_text().split("### Default federation", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| \d+ \| `([^`]+)` \|", section, re.MULTILINE)


def parse_default(cell: str, expected):
    """A documented default, read as the pyproject value's type: `1e-4`, `"auto"`, `auto`, `false`."""
    text = cell.strip("`").strip()
    if isinstance(expected, str):
        return text.strip("\"'")
    return tomllib.loads(f"v = {text}")["v"]


def test_running_md_documents_exactly_the_config_keys():
    """Every pyproject key has a row in RUNNING.md, and every row names a real key."""
    config, documented = pyproject_config(), documented_keys()
    assert sorted(set(config) - set(documented)) == [], "keys missing from docs/RUNNING.md"
    assert sorted(set(documented) - set(config)) == [], "docs/RUNNING.md lists keys pyproject.toml lacks"


def test_running_md_types_and_defaults_match_pyproject():
    """Each row's type and default equal pyproject's; `datasets` points at the default-federation table."""
    for key, (kind, cell) in documented_keys().items():
        value = pyproject_config()[key]
        assert kind == TYPES[type(value)], f"{key}: documented type {kind}, pyproject has {type(value).__name__}"
        if key == "datasets":
            assert default_federation() == [d.strip() for d in value.split(",")], "Default federation table"
            continue
        assert cell.startswith("`"), f"{key}: default cell should hold the value in backticks, got {cell!r}"
        documented = parse_default(cell, value)
        assert documented == value and type(documented) is type(value) or (
            isinstance(value, float) and float(documented) == value
        ), f"{key}: documented default {cell} != pyproject {value!r}"


def markdown_files() -> list[Path]:
    return [path for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if path.exists()]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path):
    """Relative Markdown links (not http(s)/mailto, not pure #anchors) point at existing files."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.DOTALL)
    targets = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    broken = [
        target
        for target in targets
        if not re.match(r"^(https?:|mailto:|#)", target)
        and not (doc.parent / target.split("#", 1)[0]).exists()
    ]
    assert broken == [], f"{doc.name}: broken relative links {broken}"
