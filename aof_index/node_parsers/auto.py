"""Route each document to the chunker that suits its content (``strategy: auto``)."""

from __future__ import annotations

from typing import Any, ClassVar

from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from pydantic import PrivateAttr

from aof_index.node_parsers.base import ChunkerBase
from aof_index.node_parsers.strategies import MarkdownChunker, RecursiveChunker
from aof_index.node_parsers.window import TokenWindow

__all__ = ["ROUTES", "AutoChunker", "content_type"]

_MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdx")


def content_type(document: BaseNode) -> str:
    """``markdown`` or ``text``, from the file name, a declared type, or the content."""
    declared = document.metadata.get("content_type")
    if declared:
        return str(declared)
    name = str(document.metadata.get("file_name") or document.metadata.get("source") or "")
    if name.lower().endswith(_MARKDOWN_SUFFIXES):
        return "markdown"
    head = document.get_content(metadata_mode=MetadataMode.NONE)[:2000]
    if head.startswith("---\n") or any(line.startswith("# ") for line in head.splitlines()[:5]):
        return "markdown" if not name else "text"
    return "text"


ROUTES: dict[str, type[ChunkerBase]] = {"markdown": MarkdownChunker, "text": RecursiveChunker}
"""Content type → chunker class; ``text`` is the fallback."""


class AutoChunker(ChunkerBase):
    """Markdown-aware chunks for Markdown, recursive separators for everything else; the
    choice is recorded in each node's ``content_type`` metadata."""

    strategy: ClassVar[str] = "auto"
    _routes: dict[str, ChunkerBase] = PrivateAttr()

    def __init__(
        self,
        window: TokenWindow,
        chunk_size: int | None = None,
        chunk_overlap: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(window, chunk_size, chunk_overlap, **kwargs)
        self._routes = {
            kind: chunker(window, chunk_size, chunk_overlap) for kind, chunker in ROUTES.items()
        }

    def chunk(self, document: BaseNode) -> list[TextNode]:
        """Chunk ``document`` with the chunker its content type calls for."""
        kind = content_type(document)
        nodes = self._routes.get(kind, self._routes["text"]).chunk(document)
        for node in nodes:
            node.metadata["content_type"] = kind
            node.excluded_embed_metadata_keys.append("content_type")
            node.excluded_llm_metadata_keys.append("content_type")
        return nodes
