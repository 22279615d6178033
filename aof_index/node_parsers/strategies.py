"""The simple strategies: fixed token windows, recursive separators, Markdown sections."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from llama_index.core.schema import BaseNode
from pydantic import Field

from aof_index.node_parsers.base import ChunkerBase, Piece
from aof_index.node_parsers.markdown_sections import split_front_matter, split_sections
from aof_index.node_parsers.packing import DEFAULT_SEPARATORS

__all__ = ["FixedChunker", "MarkdownChunker", "RecursiveChunker"]


class FixedChunker(ChunkerBase):
    """Windows of ``chunk_size`` tokens with ``chunk_overlap`` (``spec.chunking.fixed``)."""

    strategy: ClassVar[str] = "fixed"

    def separators(self) -> Sequence[str]:
        """None: cut at token boundaries only."""
        return ()


class RecursiveChunker(ChunkerBase):
    """Split at the first separator that helps, recursively (``spec.chunking.recursive``)."""

    strategy: ClassVar[str] = "recursive"
    separator_list: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SEPARATORS),
        description="Separators, best boundary first.",
    )

    def separators(self) -> Sequence[str]:
        """The configured separators."""
        return self.separator_list


_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")
_TABLE_ROW = re.compile(r"^\s*\|")
_METADATA_SHARE = 4
"""A heading path or title from the content takes at most 1/4 of the window."""


class MarkdownChunker(ChunkerBase):
    """Heading-aware Markdown chunks (``spec.chunking.markdown``).

    Each chunk carries its heading path (``Pods / Pod lifecycle``) as ``heading`` metadata,
    which the embedder sees too. Fenced code blocks and tables are kept whole unless one
    alone exceeds the chunk size, then cut between lines. Front matter becomes metadata
    (its ``title``), never chunk text.
    """

    strategy: ClassVar[str] = "markdown"
    respect_headers: bool = Field(default=True, description="Chunk within heading sections.")
    respect_code_blocks: bool = Field(default=True, description="Keep code blocks whole.")

    def pieces(self, text: str, document: BaseNode) -> list[Piece]:
        """Sections, then paragraphs, code blocks and tables inside each."""
        front, body = split_front_matter(text)
        base: dict[str, Any] = {}
        if front.get("title") and not document.metadata.get("title"):
            base["title"] = self._shortened("title", str(front["title"]))
        out: list[Piece] = []
        sections = split_sections(text, body) if self.respect_headers else []
        if not sections:
            return self._blocks(text, body, len(text), base)
        for section in sections:
            heading = self._shortened("heading", section.heading_path)
            meta = {**base, "heading": heading} if heading else base
            out.extend(self._blocks(text, section.start, section.start + len(section.text), meta))
        return out

    def _shortened(self, key: str, value: str) -> str:
        """``value`` cut to a quarter of the window as ``key: value`` metadata, ending in
        ``…`` when cut.

        Only the metadata copy is cut (the heading line stays in the chunk text): a long
        heading or front-matter title would otherwise leave no room for text in the window.
        """
        budget = max(1, self.window.max_tokens // _METADATA_SHARE)
        if self.window.count(f"{key}: {value}") <= budget:
            return value
        spans = self.window.spans(value)
        keep = min(len(spans), budget - self.window.count(f"{key}: …"))
        while keep > 0:
            short = value[: spans[keep - 1][1]].rstrip() + "…"
            if self.window.count(f"{key}: {short}") <= budget:
                return short
            keep -= max(1, keep // 10)
        return "…"

    def _blocks(self, text: str, start: int, end: int, meta: dict[str, Any]) -> list[Piece]:
        """Prose, fenced code blocks and tables between ``start`` and ``end``."""
        if not self.respect_code_blocks:
            return [Piece(start, end, meta)]
        pieces: list[Piece] = []
        kind, block_start, fence = "prose", start, ""
        offset = start
        for line in text[start:end].splitlines(keepends=True):
            fence_match = _FENCE.match(line)
            if kind == "code":
                closing = fence_match.group(1) if fence_match else ""
                if closing[:1] == fence[0] and len(closing) >= len(fence):
                    pieces.append(Piece(block_start, offset + len(line), meta, ("\n",)))
                    kind, block_start = "prose", offset + len(line)
            elif fence_match:
                if offset > block_start:
                    pieces.append(self._piece(kind, block_start, offset, meta))
                kind, block_start, fence = "code", offset, fence_match.group(1)
            else:
                is_row = bool(_TABLE_ROW.match(line))
                line_kind = "table" if is_row else "prose"
                if line_kind != kind:
                    if offset > block_start:
                        pieces.append(self._piece(kind, block_start, offset, meta))
                    kind, block_start = line_kind, offset
            offset += len(line)
        if end > block_start:
            pieces.append(self._piece(kind, block_start, end, meta))
        return pieces

    @staticmethod
    def _piece(kind: str, start: int, end: int, meta: dict[str, Any]) -> Piece:
        return Piece(start, end, meta, ("\n",) if kind in {"code", "table"} else None)
