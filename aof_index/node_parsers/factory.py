"""Build the chunker a ``KnowledgeBase``'s ``spec.chunking`` describes.

Chunk sizes in the manifest are tokens of the embedding model.  The CRD's defaults (1000
tokens, 200 of overlap) exceed what small local models read (all-MiniLM-L6-v2: 254 content
tokens), so a size above the window is capped at the window (logged at INFO) and the
overlap keeps its ratio to the chunk size.  Nothing is ever truncated: text that does not
fit one chunk goes into the next.

Example:
    >>> from aof_index.build.memory import build_memory
    >>> memory = build_memory()                                          # doctest: +SKIP
    >>> chunking = knowledge_base.spec.chunking                          # doctest: +SKIP
    >>> chunker = build_chunker(chunking, memory.window, memory.embed_model)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from aof_index.errors import AofIndexError, ManifestIssue
from aof_index.node_parsers.auto import AutoChunker
from aof_index.node_parsers.base import ChunkerBase
from aof_index.node_parsers.strategies import FixedChunker, MarkdownChunker, RecursiveChunker
from aof_index.node_parsers.window import TokenWindow
from aof_index.spec.knowledge_base import (
    Chunking,
    FixedChunking,
    MarkdownChunking,
    RecursiveChunking,
    SemanticChunking,
)

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

__all__ = ["AUTO_OVERLAP", "CHUNKING_STRATEGIES", "DEFAULT_STRATEGY", "build_chunker"]

logger = logging.getLogger(__name__)

CHUNKING_STRATEGIES: Final = ("auto", "fixed", "recursive", "markdown", "semantic", "custom")
"""Strategy names :func:`build_chunker` knows: the CRD's five plus ``auto`` (ours)."""
DEFAULT_STRATEGY: Final = "auto"
"""The strategy used when there is no ``spec.chunking`` section at all."""
AUTO_OVERLAP: Final = 32
"""Tokens of overlap for ``auto`` (the same as the Memory's default node parser)."""

_FIELD = "spec.chunking"


def build_chunker(
    chunking: Chunking | None,
    window: TokenWindow,
    embed_model: BaseEmbedding | None = None,
    strategy: str | None = None,
    *,
    chunk_size: int | None = None,
) -> ChunkerBase:
    """The chunker of ``spec.chunking``, sized to the embedding model's ``window``.

    Args:
        chunking: the manifest's ``spec.chunking`` (``None``: no section, use ``auto``).
        window: the embedding model's tokenizer and window (``MemoryComponents.window``).
        embed_model: the embedding model; required by ``semantic`` only.
        strategy: overrides ``chunking.strategy`` (one of :data:`CHUNKING_STRATEGIES`).
        chunk_size: overrides the strategy's chunk size (tokens; e.g. from the CLI).

    Sizes above the window are capped at it (logged at INFO); overlap keeps its ratio to
    the manifest's chunk size.  ``auto`` overlaps by :data:`AUTO_OVERLAP` tokens.

    Raises :class:`AofIndexError` naming ``spec.chunking.strategy`` for an unknown strategy,
    for ``custom`` (needs an LLM; not implemented yet) and for ``semantic`` without an
    embedding model.
    """
    chosen = strategy or (chunking.strategy if chunking is not None else DEFAULT_STRATEGY)
    if chosen not in CHUNKING_STRATEGIES:
        raise AofIndexError(
            _issue(
                "strategy", f"unknown strategy; use one of {', '.join(CHUNKING_STRATEGIES)}", chosen
            )
        )
    if chosen == "custom":
        raise AofIndexError(
            _issue(
                "strategy",
                "custom chunking needs an LLM to choose the boundaries and is not implemented "
                "yet; use fixed, recursive, markdown, semantic or auto",
                chosen,
            )
        )
    if chosen == "semantic":
        return _semantic(chunking, window, embed_model, chunk_size)
    if chosen == "auto":
        size = _cap(window, "the requested chunk size", chunk_size) if chunk_size else None
        return _make(AutoChunker, window, chunk_size=size, chunk_overlap=AUTO_OVERLAP)
    if chosen == "markdown":
        markdown = (chunking.markdown if chunking else None) or MarkdownChunking()
        size, _ = _sized(window, "markdown.maxChunkSize", markdown.max_chunk_size, 0, chunk_size)
        return _make(
            MarkdownChunker,
            window,
            chunk_size=size,
            respect_headers=markdown.respect_headers,
            respect_code_blocks=markdown.respect_code_blocks,
        )
    if chosen == "fixed":
        fixed = (chunking.fixed if chunking else None) or FixedChunking()
        size, overlap = _sized(
            window, "fixed.chunkSize", fixed.chunk_size, fixed.overlap, chunk_size
        )
        return _make(FixedChunker, window, chunk_size=size, chunk_overlap=overlap)
    recursive = (chunking.recursive if chunking else None) or RecursiveChunking()
    size, overlap = _sized(
        window, "recursive.chunkSize", recursive.chunk_size, recursive.overlap, chunk_size
    )
    return _make(
        RecursiveChunker,
        window,
        chunk_size=size,
        chunk_overlap=overlap,
        separator_list=list(recursive.separators),
    )


def _make(cls: type[ChunkerBase], window: TokenWindow, **fields: Any) -> ChunkerBase:
    """Construct a chunker through ``ChunkerBase.__init__`` (window first, then fields)."""
    return cls(window, **fields)


def _semantic(
    chunking: Chunking | None,
    window: TokenWindow,
    embed_model: BaseEmbedding | None,
    chunk_size: int | None,
) -> ChunkerBase:
    """The semantic chunker (``threshold``, ``minChunkSize``, ``maxChunkSize``)."""
    if embed_model is None:
        raise AofIndexError(
            _issue("strategy", "semantic chunking needs the embedding model", "semantic")
        )
    # Imported here: only this strategy needs it (and it embeds while chunking).
    from aof_index.node_parsers.semantic import SemanticChunker

    semantic = (chunking.semantic if chunking else None) or SemanticChunking()
    if semantic.model:
        logger.info(
            "%s.semantic.model %r is not used: sentences are embedded with the Memory's "
            "embedding model, the one that embeds the chunks",
            _FIELD,
            semantic.model,
        )
    size, _ = _sized(window, "semantic.maxChunkSize", semantic.max_chunk_size, 0, chunk_size)
    minimum = min(semantic.min_chunk_size, size)
    if minimum < semantic.min_chunk_size:
        logger.info(
            "%s.semantic.minChunkSize %d exceeds the capped maxChunkSize; using %d",
            _FIELD,
            semantic.min_chunk_size,
            minimum,
        )
    return _make(
        SemanticChunker,
        window,
        chunk_size=size,
        embed_model=embed_model,
        threshold=semantic.threshold,
        max_chunk_size=size,
        min_chunk_size=minimum,
    )


def _sized(
    window: TokenWindow, field: str, manifest: int, overlap: int, override: int | None
) -> tuple[int, int]:
    """``(size, overlap)`` for a strategy whose manifest says ``field: manifest``.

    ``override`` (``--chunk-size``) replaces the manifest's size; the result is capped at
    the window (logged at INFO).  Overlap keeps its ratio to the manifest's chunk size, so
    ``1000``/``200`` capped to 254 tokens overlaps by 50, not by 200.
    """
    where = "the requested chunk size" if override else f"{_FIELD}.{field}"
    size = _cap(window, where, override or manifest)
    return size, overlap if size == manifest else overlap * size // manifest


def _cap(window: TokenWindow, where: str, size: int) -> int:
    """``size`` capped at the window's ``max_tokens``, logging when the cap applies."""
    if size <= window.max_tokens:
        return size
    logger.info(
        "%s %d exceeds the embedding model's window of %d tokens; chunks are capped at %d "
        "tokens (longer text goes to the next chunk, nothing is dropped)",
        where,
        size,
        window.max_tokens,
        window.max_tokens,
    )
    return window.max_tokens


def _issue(field: str, message: str, value: object) -> str:
    return str(ManifestIssue(f"{_FIELD}.{field}", message, value=value))
