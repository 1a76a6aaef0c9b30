"""Every relative link in README.md, docs/*.md and systemd/README.md resolves.

The README is the front page and points into docs/; a moved file or a renamed heading
would otherwise leave a dead link nobody notices. A link resolves when its file exists
(relative to the document) and, if it has a ``#fragment``, the target document has a
heading whose GitHub anchor is that fragment.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "systemd" / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without code: fenced blocks, indented blocks and inline code hold no links."""
    text = _FENCE.sub("", text)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    return _CODE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    return {anchor(h) for h in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8")))}


def links(path: pathlib.Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(path.read_text(encoding="utf-8")))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: are not checked here


def test_the_documents_exist_and_link_somewhere() -> None:
    assert (ROOT / "docs" / "design.md") in DOCS and (ROOT / "docs" / "benchmarks.md") in DOCS
    assert links(ROOT / "README.md"), "README.md links nowhere: the link check would check nothing"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: pathlib.Path) -> None:
    dead = []
    for target in links(doc):
        file_part, _, fragment = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            dead.append(f"{target}: no such file {dest}")
        elif fragment and (dest.is_dir() or fragment not in anchors(dest)):
            dead.append(f"{target}: no heading with anchor #{fragment} in {dest}")
    assert not dead, f"dead links in {doc.relative_to(ROOT)}:\n" + "\n".join(dead)


def test_anchor_follows_github() -> None:
    assert anchor("Robustness: fuzzing, faults, soak") == "robustness-fuzzing-faults-soak"
    assert anchor("Tested under systemd as PID 1") == "tested-under-systemd-as-pid-1"
    assert anchor("The store: SQLite behind a protocol") == "the-store-sqlite-behind-a-protocol"
