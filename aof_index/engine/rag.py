"""An agent's ``memory.rag`` section as one retrieval pipeline of LlamaIndex components.

``build_rag(memory, rag, llm=...)`` reads the agent manifest's ``rag`` section
(``../shared/spec/agents.md``; :class:`aof_index.spec.agent.AgentRag`) and assembles:

1. **first stage**: :meth:`MemoryComponents.retriever` with ``retrieval.strategy``
   (``hybrid``/``semantic``/``keyword``), ``retrieval.hybridWeights``, ``retrieval.topK``
   (else ``rag.topK``), ``retrieval.filter`` (``metadata.key: value`` or a list, applied on
   every side), ``fusion.strategy``/``fusion.k``;
2. **query enhancement** (an LLM is required): ``queryEnhancement.methods`` and
   ``multiQuery`` through :class:`aof_index_retrievers.QueryEnhancingRetriever`, which falls
   back to the plain query when the LLM fails;
3. **postprocessors**, in order: the ``threshold`` (``retrieval.threshold``, else
   ``rag.threshold``) on the first stage's score scale (see docs/retrieval.md), the reranker
   (``retrieval.rerank`` / ``rag.rerank``), adaptive top-k (``adaptive``), and the context
   budget (``retrieval.contextOptimization``, ``rag.contextWindow``,
   ``rag.includeMetadata``).

The result is a LlamaIndex retriever (:class:`RagRetriever`), so it drops into
:class:`~aof_index.engine.query_engine.AOFQueryEngine` or any LlamaIndex query engine.

Example:
    >>> from aof_index import build_memory
    >>> from aof_index.spec.agent import AgentRag
    >>> rag = AgentRag.model_validate({"topK": 5, "retrieval": {"strategy": "hybrid"}})
    >>> retriever = build_rag(build_memory(), rag)  # doctest: +SKIP
    >>> retriever.retrieve("pod stuck in Pending")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import LLM
from llama_index.core.postprocessor import SimilarityPostprocessor
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from aof_index.build.memory import MemoryComponents
from aof_index.engine.filters import filters_from_mapping
from aof_index.errors import BackendUnavailableError, ManifestError, ManifestIssue
from aof_index.llms import NO_LLM_HINT
from aof_index.spec.agent import AgentRag

__all__ = ["RERANK_POOL", "RagRetriever", "build_rag"]

RERANK_POOL = 20
"""First-stage candidates a reranker chooses from (or twice the top-k, if more)."""
_FUSION = {"reciprocalRankFusion": "rrf", "rrf": "rrf", "linear": "linear", "maximal": "maximal"}


class RagRetriever(BaseRetriever):
    """A first-stage retriever followed by node postprocessors, as one retriever.

    Args:
        retriever: the first stage (possibly query-enhancing).
        postprocessors: applied in order to the retrieved nodes, with the query.
        top_k: at most this many nodes are returned (``None``: what the last step keeps).
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        postprocessors: Sequence[BaseNodePostprocessor] = (),
        *,
        top_k: int | None = None,
    ) -> None:
        super().__init__()
        self.first_stage = retriever
        self.postprocessors = list(postprocessors)
        self.top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._finish(self.first_stage.retrieve(query_bundle), query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = await self.first_stage.aretrieve(query_bundle)
        return self._finish(nodes, query_bundle)

    def _finish(self, nodes: list[NodeWithScore], query: QueryBundle) -> list[NodeWithScore]:
        for postprocessor in self.postprocessors:
            nodes = postprocessor.postprocess_nodes(nodes, query_bundle=query)
        return nodes if self.top_k is None else nodes[: self.top_k]


def build_rag(
    memory: MemoryComponents,
    rag: AgentRag | None = None,
    *,
    llm: LLM | None = None,
    candidate_top_k: int = 100,
) -> RagRetriever:
    """The retrieval pipeline an agent's ``memory.rag`` section describes (module docstring).

    Args:
        memory: the Memory to retrieve from.
        rag: the agent's ``rag`` section (``None``: the Memory's defaults).
        llm: the LLM for query enhancement, LLM reranking and ``summarize`` contexts.
        candidate_top_k: candidates each side of hybrid retrieval contributes.

    Raises:
        ManifestError: a field's value cannot work (named, with the fix).
        BackendUnavailableError: query enhancement is on and no LLM is configured.
    """
    rag = rag or AgentRag()
    retrieval = rag.retrieval
    top_k = (retrieval.top_k if retrieval else None) or rag.top_k
    options: dict[str, Any] = {}
    if retrieval is not None and retrieval.hybrid_weights is not None:
        weights = retrieval.hybrid_weights
        if weights.semantic is not None:
            options["semantic_weight"] = weights.semantic
        if weights.keyword is not None:
            options["keyword_weight"] = weights.keyword
    if rag.fusion is not None:
        if rag.fusion.strategy is not None:
            options["fusion"] = _FUSION[rag.fusion.strategy]
        options["rrf_k"] = rag.fusion.k
    strategy = retrieval.strategy if retrieval is not None else None
    if strategy in ("semantic", "keyword") and options:
        options = {}  # weights and fusion only shape hybrid retrieval
    try:
        filters = filters_from_mapping(retrieval.filter if retrieval is not None else None)
    except ValueError as exc:
        raise _field("rag.retrieval.filter", str(exc)) from exc
    k = top_k or memory.retrieval.default_top_k
    steps = _postprocessors(memory, rag, llm)
    adaptive = _adaptive(steps)
    # A reranker or adaptive top-k choose among more candidates than they return.
    pool = k
    if adaptive is not None:
        pool = max(pool, 2 * adaptive.max_top_k)
    if any(_reorders(step) for step in steps):
        pool = max(pool, RERANK_POOL, 2 * k)
    first: BaseRetriever = memory.retriever(
        pool,
        strategy=strategy,
        filters=filters,
        candidate_top_k=candidate_top_k,
        **options,
    )
    first = _enhanced(first, rag, llm, pool)
    return RagRetriever(first, steps, top_k=None if adaptive is not None else k)


def _adaptive(steps: Sequence[BaseNodePostprocessor]) -> Any:
    from aof_index.postprocessors.adaptive import AdaptiveTopK

    return next((s for s in steps if isinstance(s, AdaptiveTopK)), None)


def _reorders(step: BaseNodePostprocessor) -> bool:
    """Whether ``step`` re-scores nodes (a reranker), so it should see a wider pool."""
    from aof_index.postprocessors.adaptive import AdaptiveTopK
    from aof_index.postprocessors.context import ContextBuilder

    return not isinstance(step, (AdaptiveTopK, ContextBuilder, SimilarityPostprocessor))


def _enhanced(
    retriever: BaseRetriever, rag: AgentRag, llm: LLM | None, top_k: int
) -> BaseRetriever:
    methods: list[str] = []
    enhancement = rag.query_enhancement
    if enhancement is not None and enhancement.enabled is not False:
        methods.extend(enhancement.methods or [])
    multi = rag.multi_query
    if multi is not None and multi.enabled:
        methods.append("multiQuery")
    if not methods:
        return retriever
    if llm is None:
        field = "rag.queryEnhancement" if enhancement is not None else "rag.multiQuery"
        raise BackendUnavailableError(f"{field} needs an LLM and none is configured. {NO_LLM_HINT}")
    from aof_index_retrievers import QueryEnhancingRetriever

    kwargs: dict[str, Any] = {"similarity_top_k": top_k}
    if multi is not None and multi.queries:
        kwargs["num_queries"] = multi.queries
    if rag.fusion is not None and rag.fusion.strategy is not None:
        kwargs["fusion"] = _FUSION[rag.fusion.strategy]
        kwargs["k"] = rag.fusion.k
    return QueryEnhancingRetriever(retriever, llm, methods, **kwargs)


def _postprocessors(
    memory: MemoryComponents, rag: AgentRag, llm: LLM | None
) -> list[BaseNodePostprocessor]:
    from aof_index.postprocessors.adaptive import AdaptiveTopK
    from aof_index.postprocessors.context import ContextBuilder
    from aof_index.postprocessors.rerank import reranker_from_spec

    steps: list[BaseNodePostprocessor] = []
    retrieval = rag.retrieval
    threshold = retrieval.threshold if retrieval and retrieval.threshold is not None else None
    if threshold is None:
        threshold = rag.threshold
    if threshold is not None:
        steps.append(SimilarityPostprocessor(similarity_cutoff=threshold))
    reranker = reranker_from_spec(rag, llm=llm, embed_model=memory.embed_model)
    if reranker is not None:
        steps.append(reranker)
    adaptive = AdaptiveTopK.from_spec(rag)
    if adaptive is not None:
        steps.append(adaptive)
    context = ContextBuilder.from_spec(rag, llm=llm)
    if context is not None:
        steps.append(context)
    return steps


def _field(path: str, message: str) -> ManifestError:
    return ManifestError("rag", [ManifestIssue(path, message, None)])
