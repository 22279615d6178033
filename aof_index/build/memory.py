"""Assemble the LlamaIndex components a ``Memory`` resource describes.

Nothing here does I/O until a component is first used: building a :class:`MemoryComponents`
is free, and each store, model or client is created on first access through the registry.

Example:
    >>> from aof_index import build_memory
    >>> memory = build_memory("memory.yaml")            # doctest: +SKIP
    >>> memory.retriever(top_k=5).retrieve("OOMKilled")  # doctest: +SKIP
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.storage.chat_store.base import BaseChatStore
from llama_index.core.vector_stores.types import BasePydanticVectorStore, MetadataFilters

from aof_index.build.context import BuildContext
from aof_index.build.defaults import default_memory
from aof_index.home import data_home, memory_dir
from aof_index.knowledge.state import IngestState
from aof_index.node_parsers.auto import AutoChunker
from aof_index.node_parsers.base import ChunkerBase
from aof_index.node_parsers.window import TokenWindow, token_window
from aof_index.registry import Group, get_factory
from aof_index.spec import Memory, load_memory
from aof_index.spec.memory import ConversationalMemory, RetrievalConfig
from aof_index.spec.types import Duration

if TYPE_CHECKING:
    from llama_index.core.llms import LLM

    from aof_index.memory.history import ConversationHistory
    from aof_index.spec.agent import AgentConversational
    from aof_index_retrievers import BM25Index

__all__ = [
    "KEYWORD_WINDOW",
    "STRATEGIES",
    "MemoryComponents",
    "Strategy",
    "as_strategy",
    "build_memory",
]

Strategy = Literal["hybrid", "semantic", "keyword"]
DEFAULT_OVERLAP = 32
"""Tokens shared by neighbouring chunks of one section in the default chunker."""

KEYWORD_WINDOW = 1
"""Neighbouring chunks on each side that BM25 scores with a chunk (``BM25Index(window=)``).

A query's words often fall on both sides of a chunk boundary; scoring a chunk with its
neighbours finds it anyway. Chosen on SciFact's training queries (BM25 alone 0.698 → 0.712
nDCG@10 on a held-out half; see docs/benchmarks.md).
"""

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)


def as_strategy(value: str | None) -> Strategy | None:
    """Check a strategy name given as text (CLI, API); ``None`` means the manifest's."""
    if value is None:
        return None
    for strategy in STRATEGIES:
        if value == strategy:
            return strategy
    raise ValueError(f"unknown retrieval strategy {value!r}; use one of {', '.join(STRATEGIES)}")


class MemoryComponents:
    """The components of one Memory resource, each built on first use.

    Attributes:
        resource: the Memory manifest.
        home: the data root.
        data_dir: where its embedded stores live.
    """

    def __init__(self, resource: Memory, home: Path | None = None) -> None:
        self.resource = resource
        self.home = home or data_home()
        meta = resource.metadata
        self.data_dir = memory_dir(meta.namespace, meta.name, self.home)
        self._ctx = BuildContext(resource, self.data_dir)

    @property
    def name(self) -> str:
        """``metadata.name`` of the resource."""
        return self.resource.metadata.name

    # -- components -------------------------------------------------------------------
    def _build(self, group: Group, name: str, field: str) -> Any:
        """Build the component ``name`` of ``group`` with its registered factory."""
        return get_factory(group, name, field=field)(self._ctx)

    @cached_property
    def embed_model(self) -> BaseEmbedding:
        """The embedding model of ``spec.semantic.embedding`` (default: Local MiniLM)."""
        semantic = self.resource.spec.semantic
        provider = semantic.embedding.provider if semantic and semantic.embedding else None
        model: BaseEmbedding = self._build(
            "embeddings", provider or "Local", "spec.semantic.embedding.provider"
        )
        return model

    def embedding_identity(self) -> str:
        """Provider and model of the embedding, as configured (no model is loaded)."""
        semantic = self.resource.spec.semantic
        spec = semantic.embedding if semantic is not None else None
        provider = (spec.provider if spec else None) or "Local"
        return f"{provider}:{(spec.model if spec else None) or 'default'}"

    @cached_property
    def vector_store(self) -> BasePydanticVectorStore:
        """The vector store of ``spec.semantic.vectorStore`` (default: embedded Chroma)."""
        semantic = self.resource.spec.semantic
        kind = semantic.vector_store.type if semantic and semantic.vector_store else None
        store: BasePydanticVectorStore = self._build(
            "vector_stores", kind or "Chroma", "spec.semantic.vectorStore.type"
        )
        return store

    @cached_property
    def chat_store(self) -> BaseChatStore:
        """The chat store of ``spec.backend`` (default: SQLite in the data folder)."""
        backend = self.resource.spec.backend
        kind = (backend.type if backend is not None else None) or "SQLite"
        store: BaseChatStore = self._build("chat_stores", kind, "spec.backend.type")
        return store

    @cached_property
    def keyword_index(self) -> BM25Index:
        """The persisted BM25 index over the same chunks as the vector store.

        Each chunk is scored together with its neighbours (:data:`KEYWORD_WINDOW`).
        """
        from aof_index_retrievers import BM25Index

        return BM25Index.load_or_create(self.data_dir / "bm25", window=KEYWORD_WINDOW)

    @cached_property
    def index(self) -> VectorStoreIndex:
        """A LlamaIndex ``VectorStoreIndex`` over the vector store."""
        return VectorStoreIndex.from_vector_store(self.vector_store, embed_model=self.embed_model)

    @cached_property
    def window(self) -> TokenWindow:
        """The embedding model's tokenizer and window."""
        return token_window(self.embed_model)

    @cached_property
    def ingest_state(self) -> IngestState:
        """Versions and chunk ids of what has been ingested."""
        return IngestState(self.data_dir / "ingest.db")

    def node_parser(self, chunk_size: int | None = None) -> ChunkerBase:
        """The default chunker: routed by content type, sized to the embedding window."""
        return AutoChunker(self.window, chunk_size=chunk_size, chunk_overlap=DEFAULT_OVERLAP)

    # -- conversations ----------------------------------------------------------------
    def conversations(
        self,
        *,
        namespace: str | None = None,
        agent: str | None = None,
        fleet: str | None = None,
        flow: str | None = None,
        run: str | None = None,
        settings: AgentConversational | None = None,
        llm: LLM | None = None,
    ) -> ConversationHistory:
        """The conversation history of one agent, fleet or flow run, as the manifest says.

        Retention and summaries follow ``spec.conversational`` with the agent's
        ``memory.conversational`` (``settings``) on top; keys are partitioned by
        ``spec.access.isolation`` using ``namespace`` (default: the Memory's), ``agent``,
        ``fleet`` (with ``settings.shared``) and ``flow``/``run`` (``scope: flow``).  The
        summarizing LLM is ``llm``, else the configured one with
        ``summarization.model``.

        Raises:
            ValueError: conversations are disabled, the scope lacks what the isolation
                needs, or the summarization settings cannot work (each names the field).
        """
        from aof_index.llms import llm_from_env
        from aof_index.memory.history import ConversationHistory, ConversationScope, HistoryPolicy

        spec = self.resource.spec
        for owner, enabled in (
            ("spec.conversational.enabled", spec.conversational and spec.conversational.enabled),
            ("memory.conversational.enabled", settings and settings.enabled),
        ):
            if enabled is False:
                raise ValueError(f"{owner} is false: this memory keeps no conversations")
        policy = HistoryPolicy.from_spec(spec.conversational, settings)
        scope = ConversationScope(
            namespace=namespace or self.resource.metadata.namespace,
            agent=agent,
            fleet=fleet,
            flow=flow,
            run=run,
            shared=bool(settings and settings.shared),
        )
        isolation = spec.access.isolation if spec.access is not None else "namespace"
        store = self.chat_store
        if settings is not None and settings.ttl is not None:
            store = self._with_ttl(settings.ttl)
        if policy.summary is not None and llm is None:
            llm = llm_from_env(policy.summary.model)
        return ConversationHistory(
            store, partition=scope.partition(isolation), policy=policy, llm=llm
        )

    def _with_ttl(self, ttl: Duration) -> BaseChatStore:
        """A second chat store on the same data whose conversations live ``ttl``."""
        spec = self.resource.spec
        conversational = (spec.conversational or ConversationalMemory()).model_copy(
            update={"ttl": ttl}
        )
        backend = spec.backend
        if backend is not None and backend.redis is not None:
            backend = backend.model_copy(
                update={"redis": backend.redis.model_copy(update={"ttl": None})}
            )
        update = {"conversational": conversational, "backend": backend}
        resource = self.resource.model_copy(update={"spec": spec.model_copy(update=update)})
        return MemoryComponents(resource, self.home).chat_store

    # -- retrieval --------------------------------------------------------------------
    @property
    def retrieval(self) -> RetrievalConfig:
        """``spec.semantic.retrieval`` with its defaults."""
        semantic = self.resource.spec.semantic
        if semantic is not None and semantic.retrieval is not None:
            return semantic.retrieval
        return RetrievalConfig()

    def default_strategy(self) -> Strategy:
        """``hybrid`` when ``retrieval.hybridSearch.enabled``, else ``semantic``."""
        hybrid = self.retrieval.hybrid_search
        return "hybrid" if hybrid is not None and hybrid.enabled else "semantic"

    def retriever(
        self,
        top_k: int | None = None,
        *,
        strategy: Strategy | None = None,
        filters: MetadataFilters | None = None,
        candidate_top_k: int = 100,
        **kwargs: Any,
    ) -> BaseRetriever:
        """A retriever configured from ``spec.semantic.retrieval``.

        Args:
            top_k: results to return (default ``retrieval.defaultTopK``).
            strategy: ``hybrid``, ``semantic`` or ``keyword`` (default from the manifest).
            filters: metadata filters, applied identically on every side.
            candidate_top_k: candidates each side contributes to hybrid fusion.
            kwargs: passed to the hybrid retriever, overriding the manifest
                (e.g. ``fusion="rrf"``, ``semantic_weight=0.7``).
        """
        from aof_index_retrievers import BM25Retriever, HybridRetriever

        k = top_k or self.retrieval.default_top_k
        chosen = strategy or self.default_strategy()
        if chosen == "keyword":
            return BM25Retriever(self.keyword_index, similarity_top_k=k, filters=filters)
        if chosen == "semantic":
            return self.index.as_retriever(similarity_top_k=k, filters=filters)
        hybrid = self.retrieval.hybrid_search
        options: dict[str, Any] = {
            "semantic_weight": hybrid.semantic_weight if hybrid else 0.7,
            "keyword_weight": hybrid.keyword_weight if hybrid else 0.3,
            **kwargs,
        }
        return HybridRetriever(
            self.index,
            self.keyword_index,
            similarity_top_k=k,
            candidate_top_k=max(candidate_top_k, k),
            filters=filters,
            **options,
        )


def build_memory(
    source: Memory | str | Path | None = None, *, name: str | None = None, home: Path | None = None
) -> MemoryComponents:
    """Build the components of a Memory resource.

    Args:
        source: a ``Memory`` model, a path to a manifest, or ``None`` for the embedded default.
        name: which Memory to use when the file holds several.
        home: data root (default ``$AOF_INDEX_HOME`` or the per-user data folder).
    """
    if source is None:
        resource = default_memory()
    elif isinstance(source, Memory):
        resource = source
    else:
        resource = load_memory(Path(source), name=name)
    return MemoryComponents(resource, home)
