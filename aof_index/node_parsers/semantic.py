"""Semantic chunks: sentences grouped by meaning, cut where the topic changes.

``spec.chunking.semantic``: the text is split into sentences (exact character ranges), all
of them are embedded in one batch, and a new group starts where a sentence's cosine
similarity to the *running mean of the current group* drops below ``threshold``.

Why the group mean rather than the previous sentence: with small sentence-embedding models
(all-MiniLM-L6-v2) two neighbouring sentences of one topic often score below 0.5 (one talks
about a command, the next about its output), so neighbour-to-neighbour comparison breaks
far too often; the mean of the sentences so far is a steadier picture of the topic, and a
sentence about something else still falls below it.

Groups smaller than ``min_chunk_size`` tokens merge into their more similar neighbour
(when the merge still fits ``max_chunk_size``); groups larger than ``max_chunk_size`` are
cut by :class:`~aof_index.node_parsers.base.ChunkerBase` at paragraph, line and sentence
boundaries, so, unlike LlamaIndex's ``SemanticSplitterNodeParser``, no chunk ever exceeds
the embedding model's window.  Sizes are in tokens of the model's own tokenizer.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, ClassVar

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode
from numpy.typing import NDArray
from pydantic import Field, PrivateAttr

from aof_index.node_parsers.base import ChunkerBase, Piece, metadata_header
from aof_index.node_parsers.packing import Ranges, TokenIndex, trim
from aof_index.node_parsers.window import TokenWindow

__all__ = ["SemanticChunker", "split_sentences"]

# A sentence ends at . ! or ? (plus closing quotes or brackets) followed by white space and
# something that is not a lower-case letter, so "e.g. the" and "v1.2" stay whole.
_SENTENCE_END = re.compile(r"""[.!?]+["'”’)\]]*(?=\s+[^a-z\s])""")
# Blank lines end a sentence too (paragraphs, headings, list blocks).
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# A fenced code block (Markdown) is one unit: its dots and blank lines end no sentence.
_FENCED = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[^\n]*\n.*?^[ \t]{0,3}\1[ \t]*$", re.M | re.S)


def split_sentences(text: str) -> Ranges:
    """Exact ``(start, end)`` ranges of the sentences of ``text``, without surrounding
    white space, in order.  A fenced code block is one sentence of its own."""
    fences = [(m.start(), m.end()) for m in _FENCED.finditer(text)]
    cuts = {0, len(text)}
    cuts.update(m.end() for m in _SENTENCE_END.finditer(text))
    cuts.update(m.start() for m in _BLANK_LINE.finditer(text))
    cuts = {c for c in cuts if not any(s < c < e for s, e in fences)}
    cuts.update(c for fence in fences for c in fence)
    bounds = sorted(cuts)
    out: Ranges = []
    for start, end in itertools.pairwise(bounds):
        start, end = trim(text, start, end)
        if start < end:
            out.append((start, end))
    return out


def _unit(vector: NDArray[np.float64]) -> NDArray[np.float64]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _cosine(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    return float(np.dot(_unit(a), _unit(b)))


class SemanticChunker(ChunkerBase):
    """Chunks of consecutive sentences about one topic (``spec.chunking.semantic``).

    Args:
        window: the embedding model's window (``token_window(embed_model)``).
        chunk_size: largest chunk in tokens; defaults to ``max_chunk_size``; both are capped
            at the window.
        chunk_overlap: tokens repeated between the pieces of a group cut for size.
        embed_model: the model that embeds the sentences (the Memory's own, usually).
        threshold: cosine similarity below which a sentence starts a new group.
        min_chunk_size: groups below this many tokens merge with their more similar
            neighbour.
        max_chunk_size: groups above this many tokens are cut (at most the window).

    Example:
        >>> from aof_index import build_memory  # doctest: +SKIP
        >>> memory = build_memory()  # doctest: +SKIP
        >>> embed = memory.embed_model  # doctest: +SKIP
        >>> chunker = SemanticChunker(memory.window, embed_model=embed)  # doctest: +SKIP
        >>> nodes = chunker.get_nodes_from_documents(documents)  # doctest: +SKIP
    """

    strategy: ClassVar[str] = "semantic"
    threshold: float = Field(
        default=0.5, ge=-1.0, le=1.0, description="Similarity below which a group ends."
    )
    min_chunk_size: int = Field(default=100, ge=0, description="Smallest group, in tokens.")
    max_chunk_size: int = Field(default=2000, ge=1, description="Largest group, in tokens.")
    _embed_model: BaseEmbedding = PrivateAttr()

    def __init__(
        self,
        window: TokenWindow,
        chunk_size: int | None = None,
        chunk_overlap: int = 0,
        *,
        embed_model: BaseEmbedding,
        threshold: float = 0.5,
        min_chunk_size: int = 100,
        max_chunk_size: int = 2000,
        **kwargs: Any,
    ) -> None:
        size = min(chunk_size or max_chunk_size, max_chunk_size)
        super().__init__(
            window,
            size,
            chunk_overlap,
            threshold=threshold,
            min_chunk_size=min_chunk_size,
            max_chunk_size=max_chunk_size,
            **kwargs,
        )
        self._embed_model = embed_model

    @property
    def embed_model(self) -> BaseEmbedding:
        """The model that embeds sentences to find topic changes."""
        return self._embed_model

    def pieces(self, text: str, document: BaseNode) -> list[Piece]:
        """One piece per semantic group, each with its own ``group`` key so the base never
        packs two groups into one chunk."""
        sentences = split_sentences(text)
        if len(sentences) < 2:
            return [Piece(s, e, group=0) for s, e in sentences]
        # One batch call per document, never one call per sentence.
        vectors = np.asarray(
            self._embed_model.get_text_embedding_batch([text[s:e] for s, e in sentences]),
            dtype=np.float64,
        )
        groups = self._break(vectors)
        tokens = TokenIndex.of(self.window.spans(text))
        header = self.window.count(metadata_header(document.metadata))
        groups = self._merge_small(groups, vectors, sentences, tokens, self.chunk_size - header)
        # Each group runs up to the next group's first sentence: exact, contiguous ranges.
        starts = [sentences[g[0]][0] for g in groups]
        ends = [*starts[1:], sentences[-1][1]]
        return [Piece(s, e, group=n) for n, (s, e) in enumerate(zip(starts, ends, strict=True))]

    def _break(self, vectors: NDArray[np.float64]) -> list[list[int]]:
        """Sentence indexes grouped where similarity to the running group mean drops."""
        groups: list[list[int]] = [[0]]
        total = vectors[0].copy()
        for i in range(1, len(vectors)):
            if _cosine(vectors[i], total) < self.threshold:
                groups.append([i])
                total = vectors[i].copy()
            else:
                groups[-1].append(i)
                total = total + vectors[i]
        return groups

    def _merge_small(
        self,
        groups: list[list[int]],
        vectors: NDArray[np.float64],
        sentences: Ranges,
        tokens: TokenIndex,
        budget: int,
    ) -> list[list[int]]:
        """Merge groups under ``min_chunk_size`` tokens into their more similar neighbour,
        smallest first, as long as the merge fits ``budget``."""

        def size(group: list[int]) -> int:
            return tokens.count(sentences[group[0]][0], sentences[group[-1]][1])

        def mean(group: list[int]) -> NDArray[np.float64]:
            return np.asarray(vectors[group].sum(axis=0), dtype=np.float64)

        groups = [list(g) for g in groups]
        while len(groups) > 1:
            small = sorted(
                (size(g), i) for i, g in enumerate(groups) if size(g) < self.min_chunk_size
            )
            for _, i in small:
                options = [
                    (_cosine(mean(groups[i]), mean(groups[j])), -j, j)
                    for j in (i - 1, i + 1)
                    if 0 <= j < len(groups)
                    and size(groups[min(i, j)] + groups[max(i, j)]) <= budget
                ]
                if options:
                    j = max(options)[2]
                    low, high = min(i, j), max(i, j)
                    groups[low : high + 1] = [groups[low] + groups[high]]
                    break
            else:
                break  # no small group can merge without exceeding the budget
        return groups
