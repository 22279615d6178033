"""Hybrid retrieval: a vector retriever and a BM25 keyword retriever, fused."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from aof_index_retrievers.fusion import (
    _FUSION_METHODS,
    _NORMALIZATIONS,
    FusionMethod,
    Normalization,
    fuse,
)
from aof_index_retrievers.keyword import BM25Index, BM25Retriever

__all__ = ["TUNED_HYBRID", "HybridRetriever"]

TUNED_HYBRID: Mapping[str, Any] = MappingProxyType(
    {
        "fusion": "linear",
        "normalization": "zscore",
        "semantic_weight": 0.5,
        "keyword_weight": 0.5,
    }
)
"""HybridRetriever options chosen on BEIR SciFact's **train** split (809 queries) for a
small local embedding model (all-MiniLM-L6-v2): z-score linear fusion, equal weights.
On train it beat min-max, DBSF and weighted RRF at every weight pair from 0.3/0.7 to
0.7/0.3; dense feedback and BM25 parameter changes moved it by 0.003 or less (see
docs/benchmarks.md). Pass as ``HybridRetriever(..., **TUNED_HYBRID)``."""

# Set by HybridRetriever itself on the vector retriever; not accepted in its kwargs.
_RESERVED_VECTOR_KWARGS = frozenset({"similarity_top_k", "filters"})


class HybridRetriever(BaseRetriever):
    """Semantic (vector) and keyword (BM25) retrieval fused into one ranking.

    Each side retrieves ``candidate_top_k`` nodes with the **same** metadata ``filters``;
    the two lists are fused by node id (see :mod:`aof_index_retrievers.fusion`) with the
    weights ``(semantic_weight, keyword_weight)`` and the top ``similarity_top_k`` are
    returned. A node found by both sides appears once, as the vector side's node object.
    A weight of 0 skips that side entirely: with ``semantic_weight=0`` the query is never
    embedded. ``aretrieve`` runs both sides concurrently.

    **Dense pseudo-relevance feedback** (``feedback_docs > 0``; Rocchio's method on the
    query vector): after the first fusion, the vectors of the top ``feedback_docs`` fused
    nodes are averaged, and the vector side is queried again with
    ``q' = q/|q| + feedback_weight · mean(v/|v|)`` (normalised); that second vector list
    is fused with the same keyword list. The hybrid ranking is more precise than the vector
    side alone, so its top nodes pull the query towards the relevant region of the
    embedding space; BM25 keeps the exact-term evidence. Costs one more vector query, and
    embedding the feedback nodes' texts when the vector store returns nodes without their
    embeddings (most do): about 2x a plain hybrid query on a CPU. With
    ``semantic_weight=0`` feedback is skipped. See docs/retrieval.md for the figures.

    **Threshold**: ``score_threshold`` drops fused results scoring below it. The fused
    score's scale depends on ``fusion``/``normalization`` (see
    :mod:`aof_index_retrievers.fusion`): with weights summing to 1, ``dbsf`` and
    ``minmax`` give about [0, 1] and ``zscore`` gives standard deviations above the
    candidates' mean. Like every fused score it is relative to the query's candidates.

    Args:
        vector_index: The vector index; its retriever is made with
            ``vector_index.as_retriever(similarity_top_k=candidate_top_k, filters=filters,
            **vector_retriever_kwargs)`` at each query, so nodes added to the index after
            this retriever was made are found too.
        keyword_index: The BM25 index over the same nodes.
        similarity_top_k: How many fused results to return.
        candidate_top_k: How many candidates each side retrieves (>= ``similarity_top_k``).
        semantic_weight: Weight of the vector side.
        keyword_weight: Weight of the keyword side.
        fusion: ``"linear"`` (weighted sum of normalised scores), ``"rrf"`` (weighted
            reciprocal rank fusion) or ``"maximal"`` (max of weighted normalised scores).
        normalization: Score normalisation for ``linear`` and ``maximal``: ``"zscore"``
            (default; on BEIR SciFact it beat ``"minmax"`` and weighted RRF at every weight
            tried, see docs/benchmarks.md), ``"dbsf"`` (distribution-based, mean ± 3σ
            onto [0, 1]), ``"minmax"`` or ``"none"``.
        rrf_k: The ``k`` of reciprocal rank fusion.
        filters: Metadata filters, applied on both sides before ranking.
        vector_retriever_kwargs: More keyword arguments for ``as_retriever`` (for example
            ``vector_store_query_mode``); not ``similarity_top_k`` or ``filters``.
        feedback_docs: How many top fused nodes feed the query vector back (0: off).
        feedback_weight: ``β`` of the feedback: the weight of the feedback nodes' mean
            (unit) vector against the unit query vector.
        score_threshold: Drop fused results scoring below this (``None``: keep all).
        callback_manager: LlamaIndex callback manager.
        verbose: LlamaIndex verbosity flag.
    """

    def __init__(
        self,
        vector_index: VectorStoreIndex,
        keyword_index: BM25Index,
        *,
        similarity_top_k: int = 5,
        candidate_top_k: int = 100,
        semantic_weight: float = 0.7,
        keyword_weight: float = 0.3,
        fusion: FusionMethod = "linear",
        normalization: Normalization = "zscore",
        rrf_k: float = 60,
        filters: MetadataFilters | None = None,
        vector_retriever_kwargs: Mapping[str, Any] | None = None,
        feedback_docs: int = 0,
        feedback_weight: float = 1.0,
        score_threshold: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if candidate_top_k < similarity_top_k:
            raise ValueError(
                f"candidate_top_k ({candidate_top_k}) must be >= similarity_top_k "
                f"({similarity_top_k}): each side must offer at least as many candidates"
            )
        extra = dict(vector_retriever_kwargs or {})
        reserved = sorted(_RESERVED_VECTOR_KWARGS & set(extra))
        if reserved:
            raise ValueError(
                f"vector_retriever_kwargs must not set {reserved}: HybridRetriever sets them "
                "from candidate_top_k and filters so both sides agree"
            )

        def make_vector_retriever() -> BaseRetriever:
            # Made per query: VectorStoreIndex.as_retriever snapshots the index's node ids
            # for stores that keep no text (SimpleVectorStore), which would hide nodes
            # inserted later.
            return vector_index.as_retriever(
                similarity_top_k=candidate_top_k, filters=filters, **extra
            )

        self._setup(
            vector_factory=make_vector_retriever,
            keyword_retriever=BM25Retriever(keyword_index, candidate_top_k, filters),
            similarity_top_k=similarity_top_k,
            semantic_weight=semantic_weight,
            keyword_weight=keyword_weight,
            fusion=fusion,
            normalization=normalization,
            rrf_k=rrf_k,
            feedback_docs=feedback_docs,
            feedback_weight=feedback_weight,
            embed_model=extra.get("embed_model", vector_index._embed_model),
            score_threshold=score_threshold,
            callback_manager=callback_manager,
            verbose=verbose,
        )
        self._candidate_top_k: int | None = candidate_top_k
        self._filters = filters

    @classmethod
    def from_retrievers(
        cls,
        vector_retriever: BaseRetriever,
        keyword_retriever: BaseRetriever,
        *,
        similarity_top_k: int = 5,
        semantic_weight: float = 0.7,
        keyword_weight: float = 0.3,
        fusion: FusionMethod = "linear",
        normalization: Normalization = "zscore",
        rrf_k: float = 60,
        feedback_docs: int = 0,
        feedback_weight: float = 1.0,
        embed_model: BaseEmbedding | None = None,
        score_threshold: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> HybridRetriever:
        """Fuse two arbitrary retrievers (any LlamaIndex ``BaseRetriever``).

        The caller configures them: give both the same metadata filters (otherwise a node
        excluded on one side can still come back from the other) and enough candidates
        each (their own top-k) for ``similarity_top_k`` fused results. Feedback
        (``feedback_docs > 0``) needs ``embed_model``, the vector side's embedding model:
        the query is embedded once by it and handed to the vector retriever as
        ``QueryBundle.embedding``, which the vector retriever must honour (LlamaIndex's
        ``VectorIndexRetriever`` does).
        """
        if feedback_docs > 0 and embed_model is None:
            raise ValueError("feedback_docs > 0 needs embed_model, the vector side's model")
        self = cls.__new__(cls)
        self._setup(
            vector_factory=lambda: vector_retriever,
            keyword_retriever=keyword_retriever,
            similarity_top_k=similarity_top_k,
            semantic_weight=semantic_weight,
            keyword_weight=keyword_weight,
            fusion=fusion,
            normalization=normalization,
            rrf_k=rrf_k,
            feedback_docs=feedback_docs,
            feedback_weight=feedback_weight,
            embed_model=embed_model,
            score_threshold=score_threshold,
            callback_manager=callback_manager,
            verbose=verbose,
        )
        self._candidate_top_k = None
        self._filters = None
        return self

    def _setup(
        self,
        *,
        vector_factory: Callable[[], BaseRetriever],
        keyword_retriever: BaseRetriever,
        similarity_top_k: int,
        semantic_weight: float,
        keyword_weight: float,
        fusion: FusionMethod,
        normalization: Normalization,
        rrf_k: float,
        feedback_docs: int,
        feedback_weight: float,
        embed_model: BaseEmbedding | None,
        score_threshold: float | None,
        callback_manager: CallbackManager | None,
        verbose: bool,
    ) -> None:
        if feedback_docs < 0:
            raise ValueError(f"feedback_docs must be >= 0, got {feedback_docs!r}")
        if not (math.isfinite(feedback_weight) and feedback_weight >= 0):
            raise ValueError(f"feedback_weight must be finite and >= 0, got {feedback_weight!r}")
        if score_threshold is not None and math.isnan(score_threshold):
            raise ValueError("score_threshold must be a number or None, not NaN")
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be >= 1, got {similarity_top_k}")
        sides = (("semantic_weight", semantic_weight), ("keyword_weight", keyword_weight))
        for name, weight in sides:
            if not weight >= 0:
                raise ValueError(f"{name} must be >= 0, got {weight!r}")
        if semantic_weight == 0 and keyword_weight == 0:
            raise ValueError("semantic_weight and keyword_weight are both 0: nothing to retrieve")
        if fusion not in _FUSION_METHODS:
            raise ValueError(f"fusion must be one of {_FUSION_METHODS}, got {fusion!r}")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}"
            )
        self._vector_factory = vector_factory
        self._keyword_retriever = keyword_retriever
        self._similarity_top_k = similarity_top_k
        self._semantic_weight = float(semantic_weight)
        self._keyword_weight = float(keyword_weight)
        self._fusion: FusionMethod = fusion
        self._normalization: Normalization = normalization
        self._rrf_k = rrf_k
        self._feedback_docs = int(feedback_docs)
        self._feedback_weight = float(feedback_weight)
        self._embed_model = embed_model
        self._score_threshold = score_threshold
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def similarity_top_k(self) -> int:
        """How many fused results a retrieval returns."""
        return self._similarity_top_k

    @property
    def weights(self) -> tuple[float, float]:
        """``(semantic_weight, keyword_weight)``."""
        return (self._semantic_weight, self._keyword_weight)

    @property
    def filters(self) -> MetadataFilters | None:
        """The filters both sides apply (``None`` when made with :meth:`from_retrievers`)."""
        return self._filters

    @property
    def feedback(self) -> tuple[int, float]:
        """``(feedback_docs, feedback_weight)``; ``feedback_docs == 0`` means off."""
        return (self._feedback_docs, self._feedback_weight)

    def _uses_feedback(self) -> bool:
        return self._feedback_docs > 0 and self._semantic_weight > 0

    def _fuse(
        self,
        vector: list[NodeWithScore] | None,
        keyword: list[NodeWithScore] | None,
        final: bool = True,
    ) -> list[NodeWithScore]:
        lists: list[list[NodeWithScore]] = []
        weights: list[float] = []
        if vector is not None:
            lists.append(vector)
            weights.append(self._semantic_weight)
        if keyword is not None:
            lists.append(keyword)
            weights.append(self._keyword_weight)
        fused = fuse(
            lists,
            self._fusion,
            weights=weights,
            k=self._rrf_k,
            normalization=self._normalization,
            top_n=self._similarity_top_k if final else None,
        )
        if final and self._score_threshold is not None:
            threshold = self._score_threshold
            fused = [hit for hit in fused if (hit.score or 0.0) >= threshold]
        return fused

    def _feedback_query(
        self, query_bundle: QueryBundle, vectors: Sequence[Sequence[float]]
    ) -> QueryBundle:
        """The query moved towards the mean of ``vectors`` (Rocchio, unit vectors)."""
        assert query_bundle.embedding is not None
        query = _unit(query_bundle.embedding)
        centroid = [0.0] * len(query)
        for vector in vectors:
            for i, value in enumerate(_unit(vector)):
                centroid[i] += value / len(vectors)
        moved = _unit([q + self._feedback_weight * c for q, c in zip(query, centroid, strict=True)])
        return QueryBundle(query_str=query_bundle.query_str, embedding=moved)

    def _feedback_texts(self, hits: Sequence[NodeWithScore]) -> tuple[list[int], list[str]]:
        """Positions and texts of the feedback nodes that carry no embedding."""
        missing = [i for i, hit in enumerate(hits) if not hit.node.embedding]
        texts = [hits[i].node.get_content(metadata_mode=MetadataMode.EMBED) for i in missing]
        return missing, texts

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self._uses_feedback():
            return self._retrieve_with_feedback(query_bundle)
        vector = (
            self._vector_factory().retrieve(query_bundle) if self._semantic_weight > 0 else None
        )
        keyword = (
            self._keyword_retriever.retrieve(query_bundle) if self._keyword_weight > 0 else None
        )
        return self._fuse(vector, keyword)

    def _retrieve_with_feedback(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        assert self._embed_model is not None
        if query_bundle.embedding is None:
            query_bundle = QueryBundle(
                query_str=query_bundle.query_str,
                custom_embedding_strs=query_bundle.custom_embedding_strs,
                embedding=self._embed_model.get_agg_embedding_from_queries(
                    query_bundle.embedding_strs
                ),
            )
        vector_retriever = self._vector_factory()
        vector = vector_retriever.retrieve(query_bundle)
        keyword = (
            self._keyword_retriever.retrieve(query_bundle) if self._keyword_weight > 0 else None
        )
        top = self._fuse(vector, keyword, final=False)[: self._feedback_docs]
        if not top:
            return self._fuse(vector, keyword)
        missing, texts = self._feedback_texts(top)
        embedded = iter(self._embed_model.get_text_embedding_batch(texts) if texts else [])
        vectors = [
            next(embedded) if i in missing else hit.node.embedding for i, hit in enumerate(top)
        ]
        expanded = self._feedback_query(query_bundle, [v for v in vectors if v])
        return self._fuse(vector_retriever.retrieve(expanded), keyword)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        async def nothing() -> None:
            return None

        if self._uses_feedback():
            return await self._aretrieve_with_feedback(query_bundle)
        vector, keyword = await asyncio.gather(
            self._vector_factory().aretrieve(query_bundle)
            if self._semantic_weight > 0
            else nothing(),
            self._keyword_retriever.aretrieve(query_bundle)
            if self._keyword_weight > 0
            else nothing(),
        )
        return self._fuse(vector, keyword)

    async def _aretrieve_with_feedback(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        assert self._embed_model is not None

        async def nothing() -> None:
            return None

        if query_bundle.embedding is None:
            query_bundle = QueryBundle(
                query_str=query_bundle.query_str,
                custom_embedding_strs=query_bundle.custom_embedding_strs,
                embedding=await self._embed_model.aget_agg_embedding_from_queries(
                    query_bundle.embedding_strs
                ),
            )
        vector_retriever = self._vector_factory()
        vector, keyword = await asyncio.gather(
            vector_retriever.aretrieve(query_bundle),
            self._keyword_retriever.aretrieve(query_bundle)
            if self._keyword_weight > 0
            else nothing(),
        )
        top = self._fuse(vector, keyword, final=False)[: self._feedback_docs]
        if not top:
            return self._fuse(vector, keyword)
        missing, texts = self._feedback_texts(top)
        fresh = await self._embed_model.aget_text_embedding_batch(texts) if texts else []
        embedded = iter(fresh)
        vectors = [
            next(embedded) if i in missing else hit.node.embedding for i, hit in enumerate(top)
        ]
        expanded = self._feedback_query(query_bundle, [v for v in vectors if v])
        return self._fuse(await vector_retriever.aretrieve(expanded), keyword)


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else list(vector)
