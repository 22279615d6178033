"""Hybrid retrieval: a vector retriever and a BM25 keyword retriever, fused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from aof_index_retrievers.fusion import (
    _FUSION_METHODS,
    _NORMALIZATIONS,
    FusionMethod,
    Normalization,
    fuse,
)
from aof_index_retrievers.keyword import BM25Index, BM25Retriever

__all__ = ["HybridRetriever"]

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
            tried, see docs/benchmarks.md), ``"minmax"`` or ``"none"``.
        rrf_k: The ``k`` of reciprocal rank fusion.
        filters: Metadata filters, applied on both sides before ranking.
        vector_retriever_kwargs: More keyword arguments for ``as_retriever`` (for example
            ``vector_store_query_mode``); not ``similarity_top_k`` or ``filters``.
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
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> HybridRetriever:
        """Fuse two arbitrary retrievers (any LlamaIndex ``BaseRetriever``).

        The caller configures them: give both the same metadata filters (otherwise a node
        excluded on one side can still come back from the other) and enough candidates
        each (their own top-k) for ``similarity_top_k`` fused results.
        """
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
        callback_manager: CallbackManager | None,
        verbose: bool,
    ) -> None:
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

    def _fuse(
        self, vector: list[NodeWithScore] | None, keyword: list[NodeWithScore] | None
    ) -> list[NodeWithScore]:
        lists: list[list[NodeWithScore]] = []
        weights: list[float] = []
        if vector is not None:
            lists.append(vector)
            weights.append(self._semantic_weight)
        if keyword is not None:
            lists.append(keyword)
            weights.append(self._keyword_weight)
        return fuse(
            lists,
            self._fusion,
            weights=weights,
            k=self._rrf_k,
            normalization=self._normalization,
            top_n=self._similarity_top_k,
        )

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vector = (
            self._vector_factory().retrieve(query_bundle) if self._semantic_weight > 0 else None
        )
        keyword = (
            self._keyword_retriever.retrieve(query_bundle) if self._keyword_weight > 0 else None
        )
        return self._fuse(vector, keyword)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        async def nothing() -> None:
            return None

        vector, keyword = await asyncio.gather(
            self._vector_factory().aretrieve(query_bundle)
            if self._semantic_weight > 0
            else nothing(),
            self._keyword_retriever.aretrieve(query_bundle)
            if self._keyword_weight > 0
            else nothing(),
        )
        return self._fuse(vector, keyword)
