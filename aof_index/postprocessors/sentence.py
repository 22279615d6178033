"""Re-score retrieved nodes by their best sentence's similarity to the query.

A chunk embedding averages everything the chunk says; a query (a question, a claim, an
error message) usually matches one sentence of it. :class:`SentenceSimilarityReranker`
embeds each candidate's sentences with the same bi-encoder (all-MiniLM-L6-v2 by default:
no cross-encoder, no LLM, nothing hosted) and mixes the best sentence similarity
("MaxSim" over sentences, as ColBERT does over tokens) into the first-stage score. Sentence
vectors are cached by text, so nodes that come back for later queries cost nothing.

:class:`PostprocessedRetriever` applies node postprocessors inside a retriever, so a
re-ranked pipeline is still a plain LlamaIndex retriever (evaluation, fusion, tools).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

__all__ = [
    "TUNED_SENTENCE_RERANK",
    "PostprocessedRetriever",
    "SentenceSimilarityReranker",
    "split_sentences",
]

TUNED_SENTENCE_RERANK: Mapping[str, Any] = MappingProxyType({"weight": 0.3, "rerank_top": 20})
"""Options chosen on BEIR SciFact's **train** split (809 queries; docs/benchmarks.md):
after z-score hybrid fusion, re-score the top 20 with weight 0.3. Every head size from
10 to 100 and weight from 0.2 to 0.6 scored within 0.004 of each other there; 20 keeps
the per-query cost at about 20 chunks' sentences (cached across queries)."""

# A sentence ends at . ! or ? followed by white space and an upper-case letter, a digit or
# an opening bracket; a blank line or a line break also ends one. A regex rather than a
# trained splitter (nltk punkt, spaCy): it needs no model data offline and it is
# deterministic; an occasional wrong split ("e.g. The") only adds a fragment.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])|\n+")
_MIN_CHARS = 3


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (see the module's regex); empty pieces are dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= _MIN_CHARS]


def _z(values: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float, float]:
    mean = float(values.mean())
    std = float(values.std())
    if std <= 0:
        return np.zeros_like(values), mean, 1.0
    return (values - mean) / std, mean, std


class SentenceSimilarityReranker(BaseNodePostprocessor):
    """Mix each candidate's best sentence similarity to the query into its score.

    For the first ``rerank_top`` nodes (in the order given, normally the retriever's
    ranking) the new score is ``(1 - weight) · z(first-stage score) + weight ·
    z(max over the node's sentences of cos(query, sentence))``, both z-scores (standard
    deviations from the mean) taken over those nodes; they are re-sorted by it. Nodes past
    ``rerank_top`` follow in their given order, scored on the same scale and capped below
    the lowest re-scored node. So the **score scale** is z-units relative to the query's
    re-scored candidates (0 = their average), the same kind of scale as the hybrid
    retriever's default z-score fusion, and a threshold on it means "this many standard
    deviations above the average candidate", not an absolute relevance.

    Sentences come from ``node.get_content(metadata_mode)`` (default ``EMBED``, the text
    the chunk embedding saw, so a ``title:`` line counts as a sentence) split by
    :func:`split_sentences`. The query vector is ``query_bundle.embedding`` when set, else
    ``embed_model.get_query_embedding``. Sentence vectors are kept in an LRU cache of
    ``cache_size`` sentences keyed by their text.

    Args:
        embed_model: The bi-encoder; use the vector index's own model.
        weight: Share of the sentence similarity in the new score, in [0, 1]; 0 keeps the
            first-stage order (and embeds nothing).
        rerank_top: How many leading nodes are re-scored.
        top_n: How many nodes to return (``None``: all).
        metadata_mode: Which node text is split into sentences.
        cache_size: Sentence vectors kept between queries.
    """

    embed_model: BaseEmbedding = Field(description="Embeds the query and the sentences.")
    weight: float = Field(default=0.5, ge=0.0, le=1.0)
    rerank_top: int = Field(default=30, ge=1)
    top_n: int | None = Field(default=None, ge=0)
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED)
    cache_size: int = Field(default=20_000, ge=0)

    _cache: OrderedDict[str, npt.NDArray[np.float32]] = PrivateAttr(default_factory=OrderedDict)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "SentenceSimilarityReranker"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("SentenceSimilarityReranker needs the query (query_bundle)")
        if not nodes or self.weight == 0:
            return self._cut(list(nodes))
        head, tail = nodes[: self.rerank_top], nodes[self.rerank_top :]
        query = query_bundle.embedding or self.embed_model.get_query_embedding(
            query_bundle.query_str
        )
        best = self._best_sentence_similarity(head, query)
        first = np.asarray(
            [hit.score if hit.score is not None else -rank for rank, hit in enumerate(head)],
            dtype=np.float64,
        )
        z_first, mean, std = _z(first)
        z_best, _, _ = _z(best)
        combined = (1 - self.weight) * z_first + self.weight * z_best
        order = sorted(range(len(head)), key=lambda i: (-combined[i], i))
        out = [NodeWithScore(node=head[i].node, score=float(combined[i])) for i in order]
        if tail:
            floor = float(combined.min()) if len(combined) else 0.0
            lowest_sentence = float(z_best.min()) if len(z_best) else 0.0
            previous = floor
            for hit in tail:
                raw = hit.score if hit.score is not None else float(mean - 3 * std)
                scaled = (1 - self.weight) * (raw - mean) / std + self.weight * lowest_sentence
                # Below every re-scored node, and never above the previous tail node.
                previous = min(scaled, math.nextafter(previous, -math.inf))
                out.append(NodeWithScore(node=hit.node, score=previous))
        return self._cut(out)

    def _cut(self, nodes: list[NodeWithScore]) -> list[NodeWithScore]:
        return nodes if self.top_n is None else nodes[: self.top_n]

    def _best_sentence_similarity(
        self, hits: Sequence[NodeWithScore], query: Sequence[float]
    ) -> npt.NDArray[np.float64]:
        """Per node: the highest cosine between the query and one of its sentences."""
        q = np.asarray(query, dtype=np.float32)
        q /= np.linalg.norm(q) or 1.0
        per_node = [
            split_sentences(hit.node.get_content(metadata_mode=self.metadata_mode)) for hit in hits
        ]
        vectors = self._vectors([s for sentences in per_node for s in sentences])
        best = np.full(len(hits), -1.0, dtype=np.float64)
        for i, sentences in enumerate(per_node):
            if sentences:
                best[i] = max(float(vectors[s] @ q) for s in sentences)
        return best

    def _vectors(self, sentences: list[str]) -> dict[str, npt.NDArray[np.float32]]:
        """Unit vectors of ``sentences``, from the cache or embedded in one batch."""
        keys = {s: hashlib.sha1(s.encode("utf-8")).hexdigest() for s in sentences}
        out: dict[str, npt.NDArray[np.float32]] = {}
        todo: list[str] = []
        for sentence, key in keys.items():
            cached = self._cache.get(key)
            if cached is None:
                todo.append(sentence)
            else:
                self._cache.move_to_end(key)
                out[sentence] = cached
        if todo:
            fresh = self.embed_model.get_text_embedding_batch(todo)
            for sentence, vector in zip(todo, fresh, strict=True):
                v = np.asarray(vector, dtype=np.float32)
                v /= np.linalg.norm(v) or 1.0
                out[sentence] = v
                if self.cache_size:
                    self._cache[keys[sentence]] = v
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out


class PostprocessedRetriever(BaseRetriever):
    """A retriever whose results go through node postprocessors, in order.

    Args:
        retriever: The first stage.
        postprocessors: Applied to its results with the same query bundle.
        callback_manager: LlamaIndex callback manager.
        verbose: LlamaIndex verbosity flag.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        postprocessors: Sequence[BaseNodePostprocessor],
        *,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        self.retriever = retriever
        self.postprocessors = list(postprocessors)
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = self.retriever.retrieve(query_bundle)
        for postprocessor in self.postprocessors:
            nodes = postprocessor.postprocess_nodes(nodes, query_bundle=query_bundle)
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = await self.retriever.aretrieve(query_bundle)
        for postprocessor in self.postprocessors:
            nodes = await postprocessor.apostprocess_nodes(nodes, query_bundle=query_bundle)
        return nodes
