"""The default node parser: Markdown-aware, sentence-respecting, sized to the model's window.

Markdown documents are first cut at headings (code blocks kept whole where they fit), every
piece is then split on sentence boundaries by LlamaIndex's ``SentenceSplitter`` counting
tokens with the embedding model's own tokenizer, and a final check re-splits anything that
would still overflow the window, so no chunk is ever truncated by the embedder.

Node ids are ``uuid5(document id, chunk number)``: the same document yields the same ids,
which makes re-ingestion an upsert (and the ids are valid Qdrant point ids).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from llama_index.core.node_parser import NodeParser, SentenceSplitter, TokenTextSplitter
from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, TextNode
from pydantic import Field, PrivateAttr

from aof_index.node_parsers.markdown_sections import split_front_matter, split_sections
from aof_index.node_parsers.window import TokenWindow

__all__ = ["EMBEDDED_METADATA", "WindowedNodeParser", "chunk_id", "is_markdown"]

EMBEDDED_METADATA = ("title", "heading")
"""Metadata keys the embedder and keyword index see in front of each chunk's text."""
_LLM_METADATA = ("title", "heading", "source")
_MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdx")


def chunk_id(document_id: str, number: int) -> str:
    """Deterministic node id of the ``number``-th chunk of a document."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{document_id}#chunk-{number}"))


def is_markdown(node: BaseNode) -> bool:
    """Whether a document should be parsed as Markdown (by file name or declared type)."""
    name = str(node.metadata.get("file_name") or node.metadata.get("source") or "").lower()
    return name.endswith(_MARKDOWN_SUFFIXES) or node.metadata.get("content_type") == "markdown"


class WindowedNodeParser(NodeParser):
    """Split documents into chunks the embedding model reads whole.

    Args:
        window: the embedding model's tokenizer and window (see ``token_window``).
        chunk_size: target tokens per chunk, metadata included; capped at the window.
        chunk_overlap: tokens shared by neighbouring chunks of one section.
    """

    chunk_size: int = Field(description="Target tokens per chunk (metadata included).")
    chunk_overlap: int = Field(default=32, ge=0, description="Overlap in tokens.")
    _window: TokenWindow = PrivateAttr()
    _sentences: SentenceSplitter = PrivateAttr()
    _tokens: TokenTextSplitter = PrivateAttr()

    def __init__(
        self, window: TokenWindow, chunk_size: int | None = None, chunk_overlap: int = 32, **kw: Any
    ) -> None:
        size = min(chunk_size or window.target, window.max_tokens)
        super().__init__(chunk_size=size, chunk_overlap=min(chunk_overlap, size // 4), **kw)
        self._window = window
        tokenizer = window.tokenize
        self._sentences = SentenceSplitter(
            chunk_size=size, chunk_overlap=self.chunk_overlap, tokenizer=tokenizer
        )
        self._tokens = TokenTextSplitter(
            chunk_size=size, chunk_overlap=0, tokenizer=tokenizer, separator=" "
        )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofWindowedNodeParser"

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        out: list[BaseNode] = []
        for document in nodes:
            out.extend(self._split_document(document))
        return out

    def _pieces(self, document: BaseNode) -> list[tuple[str, str, int]]:
        """(heading path, text, offset) pieces of a document before size splitting."""
        text = document.get_content(metadata_mode=MetadataMode.NONE)
        if not is_markdown(document):
            return [("", text, 0)]
        front, body_start = split_front_matter(text)
        if front.get("title") and not document.metadata.get("title"):
            document.metadata["title"] = str(front["title"])
        return [(s.heading_path, s.text, s.start) for s in split_sections(text, body_start)]

    def _split_document(self, document: BaseNode) -> list[TextNode]:
        source_text = document.get_content(metadata_mode=MetadataMode.NONE)
        nodes: list[TextNode] = []
        for heading, text, offset in self._pieces(document):
            metadata = dict(document.metadata)
            if heading:
                metadata["heading"] = heading
            header = _metadata_header(metadata)
            cursor = offset
            for chunk in self._fit(text, header):
                start = source_text.find(chunk, cursor)
                if start < 0:  # the splitter normalised whitespace; keep the section start
                    start = cursor
                else:
                    cursor = start + max(1, len(chunk) - self.chunk_overlap * 4)
                nodes.append(self._node(document, len(nodes), chunk, metadata, start))
        return nodes

    def _fit(self, text: str, header: str) -> list[str]:
        """Sentence-split ``text`` so header + chunk fits the window; re-split any overflow."""
        budget = self._window.max_tokens - self._window.count(header)
        chunks: list[str] = []
        for chunk in self._sentences.split_text_metadata_aware(text, header):
            if self._window.count(chunk) <= budget:
                chunks.append(chunk)
            else:  # a "sentence" longer than the window, e.g. a minified line
                chunks.extend(self._tokens._split_text(chunk, chunk_size=budget))
        return [c for c in chunks if c.strip()]

    def _node(
        self, document: BaseNode, number: int, text: str, metadata: dict[str, Any], start: int
    ) -> TextNode:
        keys = list(metadata)
        return TextNode(
            id_=chunk_id(document.node_id, number),
            text=text,
            metadata=metadata,
            excluded_embed_metadata_keys=[k for k in keys if k not in EMBEDDED_METADATA],
            excluded_llm_metadata_keys=[k for k in keys if k not in _LLM_METADATA],
            start_char_idx=start,
            end_char_idx=start + len(text),
            relationships={NodeRelationship.SOURCE: document.as_related_node_info()},
        )


def _metadata_header(metadata: dict[str, Any]) -> str:
    """The metadata text LlamaIndex puts before a chunk in EMBED mode, plus its separator."""
    lines = [f"{k}: {metadata[k]}" for k in EMBEDDED_METADATA if metadata.get(k)]
    return "\n".join(lines) + "\n\n" if lines else ""
