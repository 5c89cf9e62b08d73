"""The docs live in the repository and stay true to it: the README is a short front door
holding the exact test command CI runs, and every relative link in the docs resolves to
a file inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_BYTES = 10_240
TEST_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest"
)
DOCS = sorted(
    {
        README,
        *(ROOT / "docs").glob("*.md"),
        ROOT / "bench" / "README.md",
        ROOT / "CHANGELOG.md",
        ROOT / "policies" / "README.md",
        ROOT / "deploy" / "README.md",
    }
)

_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$|`[^`\n]*`", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
_EXTERNAL = ("http://", "https://", "mailto:")


def relative_links(markdown: str) -> list[str]:
    """The targets of the markdown links outside code, without external ones or anchors."""
    targets = (match.group(1) for match in _LINK.finditer(_CODE.sub("", markdown)))
    paths = (target.partition("#")[0] for target in targets if not target.startswith(_EXTERNAL))
    return [path for path in paths if path]


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[a](docs/design.md) and [b](../x.md#part)", ["docs/design.md", "../x.md"]),
        ("[web](https://example.com) [mail](mailto:a@b.c) [here](#anchor)", []),
        ('[t](a.md "title") [u](b.md)', ["a.md", "b.md"]),
        ("```\n[not](a-link.md)\n```\n`[nor](this.md)` [but](this.md)", ["this.md"]),
    ],
)
def test_relative_links_are_found_outside_code(markdown: str, expected: list[str]) -> None:
    assert relative_links(markdown) == expected


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    assert doc.is_file(), f"{doc.relative_to(ROOT)} is missing"
    broken = []
    for link in relative_links(doc.read_text(encoding="utf-8")):
        target = (doc.parent / link).resolve()
        if not target.is_relative_to(ROOT) or not target.exists():
            broken.append(link)
    assert broken == [], f"{doc.relative_to(ROOT)}: links to nothing in the repository"


def test_readme_is_a_front_door_with_the_test_command() -> None:
    assert README.stat().st_size <= README_MAX_BYTES
    assert TEST_COMMAND in README.read_text(encoding="utf-8").splitlines()
