"""Relative links in README.md and docs/**/*.md point at files that exist, and their #anchors at headings.

Pure Python, no model, well under a second. A link is `[text](target)` or `![alt](target)` outside code
(fenced blocks and inline code spans are skipped). Targets with a scheme (http:, https:, mailto:, ...) are
not checked. A relative target is resolved against the linking file's directory; its `#anchor` must be a
heading of the target when the target is a markdown file (GitHub's slugs), or of the linking file for a
bare `#anchor`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _docs() -> list[Path]:
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def _prose_lines(text: str, spans: bool = False) -> Iterator[tuple[int, str]]:
    """Yields (line number, line) outside fenced code blocks, with inline code spans blanked (kept with spans: a
    heading's anchor keeps their text)."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        yield n, line if spans else _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def _slug(heading: str) -> str:
    """GitHub's heading anchor: rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").lower()
    out = []
    for ch in text:
        if ch in " -_" or ch.isalnum() or unicodedata.category(ch).startswith("M"):
            out.append("-" if ch == " " else ch)
    return "".join(out)


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    """The heading anchors of the markdown file `path` (read once per run: many links point at the same file)."""
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), spans=True):
        m = _HEADING.match(line)
        if not m:
            continue
        base = _slug(m.group(2))
        k = seen.get(base, 0)
        seen[base] = k + 1
        anchors.add(base if k == 0 else f"{base}-{k}")
    return frozenset(anchors)


def _broken(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for n, line in _prose_lines(path.read_text(encoding="utf-8")):
        for m in _LINK.finditer(line):
            target = m.group(1)
            if _SCHEME.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / unquote(file_part)).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{n}: {target}"
            if not dest.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in _anchors(dest):
                problems.append(f"{where} (no heading with that anchor)")
    return problems


def test_there_are_docs_to_check() -> None:
    assert (ROOT / "README.md").is_file()
    assert len(_docs()) >= 2


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    assert _broken(doc) == []


def test_checker_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n## Some `code` (x)\n", encoding="utf-8")
    doc = tmp_path / "b.md"
    doc.write_text(
        "[ok](a.md) [ok](a.md#top) [ok](a.md#some-code-x) [ok](#here) [web](https://x.invalid/y)\n"
        "`[skipped](nope.md)`\n```\n[skipped](nope.md)\n```\n# Here\n"
        "[bad](missing.md) [bad](a.md#nope) ![bad](img/none.png)\n",
        encoding="utf-8",
    )
    found = _broken(doc, root=tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "missing.md (no such file)",
        "a.md#nope (no heading with that anchor)",
        "img/none.png (no such file)",
    ]
