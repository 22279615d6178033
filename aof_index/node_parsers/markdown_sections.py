"""Split Markdown into heading-delimited sections, keeping fenced code blocks whole.

Each section carries its heading path (``Pods / Pod lifecycle``) and its character offset in
the source, so chunks can cite where they come from.  YAML front matter (Hugo, Jekyll) is
lifted into metadata instead of being indexed as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["Section", "split_front_matter", "split_sections"]

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
# CRLF too (files edited on Windows), and a byte-order mark before the opening line.
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?\r?\n)---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Section:
    """A run of Markdown under one heading path."""

    headings: tuple[str, ...]
    text: str
    start: int
    """Offset of ``text`` in the document."""

    @property
    def heading_path(self) -> str:
        """Headings joined with `` / `` (empty before the first heading)."""
        return " / ".join(self.headings)


def split_front_matter(text: str) -> tuple[dict[str, Any], int]:
    """Return the front matter mapping and the offset where the body starts."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, 0
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}, 0
    return (data if isinstance(data, dict) else {}), match.end()


def split_sections(text: str, start: int = 0) -> list[Section]:
    """Split ``text[start:]`` at headings outside fenced code blocks."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    fence: str | None = None
    section_start = start
    offset = start

    def close(end: int) -> None:
        body = text[section_start:end]
        if body.strip():
            sections.append(Section(tuple(h for _, h in stack), body, section_start))

    for line in text[start:].splitlines(keepends=True):
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
        elif fence is None and (heading := _HEADING.match(line.rstrip("\n"))):
            close(offset)
            level = len(heading.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading.group(2).strip()))
            section_start = offset
        offset += len(line)
    close(len(text))
    return sections
