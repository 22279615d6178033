"""The machinery every aof-index chunker shares.

A chunker only says where a document's natural units are (:meth:`ChunkerBase.pieces`:
sections, paragraphs, code blocks, functions, sentence groups).  This base then:

* packs neighbouring pieces of the same group (same metadata) up to the chunk size;
* splits any piece still too large at the best boundary (paragraph, line, sentence, word,
  then token), so **no chunk exceeds the embedding model's window**, metadata included;
* adds overlap from the previous chunk of the same group;
* makes nodes whose text is an exact slice of the document, with character offsets,
  line numbers, the strategy name, and ids ``uuid5(document id, chunk number)`` — the same
  document always yields the same ids.
"""

from __future__ import annotations

import bisect
import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from llama_index.core.node_parser import NodeParser
from llama_index.core.schema import (
    BaseNode,
    Document,
    MetadataMode,
    NodeRelationship,
    TextNode,
)
from pydantic import BaseModel, Field, PrivateAttr

from aof_index.node_parsers.packing import (
    DEFAULT_SEPARATORS,
    Ranges,
    TokenIndex,
    pack,
    split_range,
    trim,
)
from aof_index.node_parsers.window import TokenWindow

__all__ = [
    "CHUNKING_REVISION",
    "EMBEDDED_METADATA",
    "ChunkerBase",
    "Piece",
    "chunk_id",
    "metadata_header",
    "plain_settings",
]

CHUNKING_REVISION = 3
"""Bump when a change makes the chunkers cut differently: ingestion then re-chunks and
re-embeds every document instead of keeping chunks made the old way."""

EMBEDDED_METADATA = ("title", "heading")
"""Metadata keys the embedder and keyword index see in front of each chunk's text."""
_LLM_METADATA = ("title", "heading", "source", "symbol", "language")


_NOT_SETTINGS = frozenset({"callback_manager", "id_func", "include_prev_next_rel"})


def plain_settings(component: BaseModel) -> dict[str, Any]:
    """``component``'s pydantic fields as plain data; other values are named by their type."""
    out: dict[str, Any] = {}
    for name in type(component).model_fields:
        if name in _NOT_SETTINGS:
            continue
        value = getattr(component, name)
        try:
            json.dumps(value)
        except TypeError:
            value = type(value).__name__
        out[name] = value
    return out


def chunk_id(document_id: str, number: int) -> str:
    """Deterministic node id of the ``number``-th chunk of a document."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{document_id}#chunk-{number}"))


def metadata_header(metadata: dict[str, Any]) -> str:
    """The text LlamaIndex puts before a chunk in EMBED mode (plus the blank line)."""
    lines = [f"{k}: {metadata[k]}" for k in EMBEDDED_METADATA if metadata.get(k)]
    return "\n".join(lines) + "\n\n" if lines else ""


@dataclass(frozen=True)
class Piece:
    """A natural unit of a document: ``text[start:end]``.

    Consecutive pieces with equal ``metadata`` and equal ``group`` form a group and may be
    packed into one chunk; ``separators`` says where the piece may be cut when it is too
    large on its own (``()`` means token windows only, e.g. inside a code block: lines
    first).  ``group`` keeps neighbouring pieces apart without putting anything in the
    nodes' metadata (the semantic chunker's topic groups).
    """

    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)
    separators: Sequence[str] | None = None
    group: int | None = None


class ChunkerBase(NodeParser):
    """Base class of the aof-index node parsers (see module docstring).

    Args:
        window: the embedding model's tokenizer and window (``token_window(embed_model)``).
        chunk_size: target tokens per chunk, metadata header included; capped at the window.
        chunk_overlap: tokens repeated from the previous chunk of the same group.
    """

    strategy: ClassVar[str] = "base"
    chunk_size: int = Field(description="Target tokens per chunk, metadata included.")
    chunk_overlap: int = Field(default=0, ge=0, description="Overlap in tokens.")
    _window: TokenWindow = PrivateAttr()

    def __init__(
        self,
        window: TokenWindow,
        chunk_size: int | None = None,
        chunk_overlap: int = 0,
        **kwargs: Any,
    ) -> None:
        size = max(8, min(chunk_size or window.target, window.max_tokens))
        super().__init__(chunk_size=size, chunk_overlap=min(chunk_overlap, size // 2), **kwargs)
        self._window = window

    @property
    def window(self) -> TokenWindow:
        """The embedding model's window this parser sizes chunks for."""
        return self._window

    def settings(self) -> dict[str, Any]:
        """What decides this parser's chunks: its class and every setting (for fingerprints).

        Values that are not plain data (an embedding model, callbacks) are named by type.
        """
        return {"parser": type(self).__name__, **plain_settings(self)}

    # -- what subclasses provide ------------------------------------------------------
    def pieces(self, text: str, document: BaseNode) -> list[Piece]:
        """Natural units of ``text`` (the document's content), in order."""
        return [Piece(0, len(text))]

    def separators(self) -> Sequence[str]:
        """Where oversized pieces may be cut, best boundary first."""
        return DEFAULT_SEPARATORS

    # -- the shared machinery ---------------------------------------------------------
    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        out: list[BaseNode] = []
        for document in nodes:
            out.extend(self.chunk(document))
        return out

    def _postprocess_parsed_nodes(
        self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]
    ) -> list[BaseNode]:
        """LlamaIndex's post-processing, keeping the exact offsets :meth:`chunk` set.

        LlamaIndex re-locates each node with ``str.find`` from just after the previous
        node's start, which lands on an earlier copy of repeated text (same lines in two
        code blocks, a repeated table row) and would give wrong offsets.
        """
        spans = {
            id(n): (n.start_char_idx, n.end_char_idx) for n in nodes if isinstance(n, TextNode)
        }
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for node in nodes:
            if isinstance(node, TextNode) and id(node) in spans:
                node.start_char_idx, node.end_char_idx = spans[id(node)]
        return nodes

    def chunk(self, document: BaseNode) -> list[TextNode]:
        """Chunk one document into nodes."""
        text = document.get_content(metadata_mode=MetadataMode.NONE)
        if not text.strip():
            return []
        tokens = TokenIndex.of(self._window.spans(text))
        line_starts = [0, *(i + 1 for i, ch in enumerate(text) if ch == "\n")]
        nodes: list[TextNode] = []
        for metadata, ranges in self._grouped(text, document, tokens):
            for start, end in ranges:
                nodes.append(
                    self._node(document, len(nodes), text, start, end, metadata, line_starts)
                )
        return nodes

    def _grouped(
        self, text: str, document: BaseNode, tokens: TokenIndex
    ) -> list[tuple[dict[str, Any], Ranges]]:
        groups: list[tuple[dict[str, Any], list[Piece]]] = []
        for piece in self.pieces(text, document):
            start, end = trim(text, piece.start, piece.end)
            if start >= end:
                continue
            piece = replace(piece, start=start, end=end)
            if (
                groups
                and groups[-1][0] == piece.metadata
                and groups[-1][1][-1].group == piece.group
            ):
                groups[-1][1].append(piece)
            else:
                groups.append((piece.metadata, [piece]))
        out = []
        for extra, pieces in groups:
            metadata = {**document.metadata, **extra}
            out.append((metadata, self._fit(text, pieces, metadata, tokens)))
        return out

    def _fit(
        self, text: str, pieces: list[Piece], metadata: dict[str, Any], tokens: TokenIndex
    ) -> Ranges:
        header_tokens = self._window.count(metadata_header(metadata))
        limit = self._window.max_tokens - header_tokens
        if limit < 8:
            raise ValueError(
                f"metadata header takes {header_tokens} of the model's "
                f"{self._window.max_tokens} tokens; shorten the title/heading metadata"
            )
        target = max(1, min(self.chunk_size - header_tokens, limit))
        ranges = self._split(text, pieces, target, tokens)
        if len(ranges) > 1 and self.chunk_overlap:
            # Only chunks that are really cut need room for the overlap they receive.
            ranges = self._split(text, pieces, max(1, target - self.chunk_overlap), tokens)
            # Verified before the overlap is added: an overlap then never reaches back past
            # the start of the previous chunk as finally cut, so chunks stay in order.
            ranges = self._verify(text, ranges, limit, tokens)
            return self._overlap(text, ranges, tokens, limit)
        return self._verify(text, ranges, limit, tokens)

    def _split(self, text: str, pieces: list[Piece], budget: int, tokens: TokenIndex) -> Ranges:
        ranges: Ranges = []
        for piece in pieces:
            seps = self.separators() if piece.separators is None else piece.separators
            ranges.extend(split_range(text, piece.start, piece.end, budget, tokens, seps))
        trimmed = (trim(text, s, e) for s, e in pack(text, ranges, budget, tokens))
        return [(s, e) for s, e in trimmed if s < e]

    def _overlap(self, text: str, ranges: Ranges, tokens: TokenIndex, limit: int) -> Ranges:
        """Start each range ``chunk_overlap`` tokens earlier, where the result still fits.

        The fit is checked on the real slice: an overlap starting inside a word tokenizes
        into more pieces than the document's token spans count.
        """
        if not self.chunk_overlap or len(ranges) < 2:
            return ranges
        out = [ranges[0]]
        for (prev_start, _), (start, end) in itertools.pairwise(ranges):
            new_start = tokens.back(start, self.chunk_overlap, prev_start)
            fits = new_start < start and self._window.count(text[new_start:end]) <= limit
            out.append((new_start, end) if fits else (start, end))
        return out

    def _verify(self, text: str, ranges: Ranges, limit: int, tokens: TokenIndex) -> Ranges:
        """Re-cut any range whose real token count exceeds ``limit``: counts taken from the
        document's token spans can differ by a token where a slice cuts a word."""
        out: Ranges = []
        for start, end in ranges:
            out.extend(self._cut_to_fit(text, start, end, limit, tokens, limit))
        return out

    def _cut_to_fit(
        self, text: str, start: int, end: int, limit: int, tokens: TokenIndex, size: int
    ) -> Ranges:
        if self._window.count(text[start:end]) <= limit:
            return [(start, end)]
        size = max(1, size - max(1, size // 10))  # shrinks every round: terminates
        out: Ranges = []
        for sub_start, sub_end in tokens.windows(start, end, size):
            sub_start, sub_end = trim(text, sub_start, sub_end)
            if sub_start < sub_end:
                out.extend(self._cut_to_fit(text, sub_start, sub_end, limit, tokens, size))
        return out

    def _node(
        self,
        document: BaseNode,
        number: int,
        text: str,
        start: int,
        end: int,
        metadata: dict[str, Any],
        line_starts: list[int],
    ) -> TextNode:
        meta = {
            **metadata,
            "strategy": self.strategy,
            "start_line": bisect.bisect_right(line_starts, start),
            "end_line": bisect.bisect_right(line_starts, max(start, end - 1)),
        }
        # Empty values are left out as metadata_header() leaves them out (LlamaIndex would
        # print "title: None", tokens the window budget did not count).
        keys = list(meta)
        embedded = [k for k in keys if k in EMBEDDED_METADATA and meta[k]]
        for_llm = [k for k in keys if k in _LLM_METADATA and meta[k]]
        return TextNode(
            id_=chunk_id(document.node_id, number),
            text=text[start:end],
            metadata=meta,
            excluded_embed_metadata_keys=[k for k in keys if k not in embedded],
            excluded_llm_metadata_keys=[k for k in keys if k not in for_llm],
            start_char_idx=start,
            end_char_idx=end,
            relationships={NodeRelationship.SOURCE: document.as_related_node_info()},
        )
