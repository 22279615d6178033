"""The ``Memory`` resource: where conversations and semantic memory live and how they behave.

Field names, enums and defaults follow the AOF ``memories.aof.agenticops.org`` custom
resource exactly (``spec/crds.md``). Sections the manifest leaves out are ``None``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from aof_index.spec.base import Condition, Resource, SpecModel, spec_error
from aof_index.spec.secrets import SecretRef
from aof_index.spec.types import CronSchedule, Duration, Port, Size, UnitInterval

__all__ = [
    "ArchivalPolicy",
    "BackupPolicy",
    "ChromaConfig",
    "Compression",
    "CompressionAlgorithm",
    "ConversationalMemory",
    "EmbeddingConfig",
    "FilteringConfig",
    "HybridSearch",
    "Memory",
    "MemoryAccess",
    "MemoryBackend",
    "MemoryEncryption",
    "MemoryKnowledge",
    "MemoryKnowledgeSource",
    "MemoryLifecycle",
    "MemoryLogging",
    "MemoryMetrics",
    "MemoryObservability",
    "MemorySpec",
    "MemoryStats",
    "MemoryStatus",
    "MemoryTracing",
    "MilvusConfig",
    "PineconeConfig",
    "PostgreSQLBackend",
    "QdrantConfig",
    "RbacConfig",
    "RbacRule",
    "RedisBackend",
    "RedisTLS",
    "RerankingConfig",
    "RetentionPolicy",
    "RetrievalConfig",
    "S3Backend",
    "S3Encryption",
    "SQLiteBackend",
    "SemanticIndexing",
    "SemanticMemory",
    "Summarization",
    "SummarizationStrategy",
    "VectorBackend",
    "VectorStoreConfig",
    "VectorStoreType",
    "WeaviateConfig",
]

VectorStoreType = Literal["Qdrant", "Chroma", "Pinecone", "Milvus", "Weaviate"]
SummarizationStrategy = Literal["rolling", "periodic", "adaptive"]
CompressionAlgorithm = Literal["gzip", "zstd", "lz4"]


# --- spec.backend -----------------------------------------------------------------------


class RedisTLS(SpecModel):
    """``backend.redis.tls``."""

    enabled: bool | None = None
    insecure_skip_verify: bool | None = None


class RedisBackend(SpecModel):
    """``backend.redis``: a Redis server for conversations."""

    url: str | None = Field(default=None, description="Redis connection URL")
    secret_ref: SecretRef | None = None
    db: NonNegativeInt = 0
    pool_size: PositiveInt = 10
    ttl: Duration | None = Field(default=None, description="Default TTL (e.g., 24h, 7d)")
    tls: RedisTLS | None = None


class PostgreSQLBackend(SpecModel):
    """``backend.postgresql``: a PostgreSQL database for conversations."""

    host: str | None = None
    port: Port = 5432
    database: str | None = None
    user: str | None = None
    password_secret_ref: SecretRef | None = None
    ssl_mode: Literal["disable", "require", "verify-ca", "verify-full"] = "require"
    max_connections: PositiveInt = 25
    db_schema: str = Field(default="public", alias="schema")


class SQLiteBackend(SpecModel):
    """``backend.sqlite``: a local SQLite file (the embedded default)."""

    path: str | None = Field(default=None, description="File path for SQLite database")
    inmemory: bool = False
    journal_mode: Literal["DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"] = "WAL"


class S3Encryption(SpecModel):
    """``backend.s3.encryption``."""

    enabled: bool | None = None
    kms_key_id: str | None = None


class S3Backend(SpecModel):
    """``backend.s3``: an S3-compatible bucket."""

    bucket: str | None = None
    region: str | None = None
    endpoint: str | None = Field(default=None, description="Custom S3 endpoint (for MinIO, etc.)")
    access_key_secret_ref: SecretRef | None = None
    secret_key_secret_ref: SecretRef | None = None
    prefix: str | None = Field(default=None, description="Key prefix for organization")
    encryption: S3Encryption | None = None


class VectorBackend(SpecModel):
    """``backend.vector``: a vector database as the memory backend."""

    provider: VectorStoreType | None = None
    config: dict[str, Any] | None = None


_SECTION_OF_BACKEND = {"Redis": "redis", "PostgreSQL": "postgresql", "S3": "s3", "Vector": "vector"}


class MemoryBackend(SpecModel):
    """``spec.backend``: the storage backend. ``SQLite`` works without a section."""

    type: Literal["Redis", "PostgreSQL", "SQLite", "S3", "Vector"] | None = None
    redis: RedisBackend | None = None
    postgresql: PostgreSQLBackend | None = None
    sqlite: SQLiteBackend | None = None
    s3: S3Backend | None = None
    vector: VectorBackend | None = None

    @model_validator(mode="after")
    def _section_for_type(self) -> MemoryBackend:
        section = _SECTION_OF_BACKEND.get(self.type or "")
        if section is not None and getattr(self, section) is None:
            raise spec_error(
                section,
                f"backend.type is {self.type} but the `{section}` section is missing; "
                f"add backend.{section} with the connection settings",
            )
        return self


# --- spec.conversational ----------------------------------------------------------------


class Summarization(SpecModel):
    """``conversational.summarization``: a rolling summary of older messages."""

    enabled: bool = False
    model: str | None = Field(default=None, description="Model for summarization")
    trigger_threshold: PositiveInt = Field(
        default=100, description="Message count to trigger summarization"
    )
    strategy: SummarizationStrategy = "rolling"


class Compression(SpecModel):
    """``conversational.compression``: compress stored messages."""

    enabled: bool | None = None
    algorithm: CompressionAlgorithm = "zstd"


class ConversationalMemory(SpecModel):
    """``spec.conversational``: conversation history."""

    enabled: bool = True
    ttl: Duration = Field(default=Duration("7d"), description="Time to live (e.g., 7d, 24h, 30m)")
    max_messages: NonNegativeInt = Field(default=1000, description="Maximum messages to retain")
    max_tokens: NonNegativeInt | None = Field(default=None, description="Maximum tokens to retain")
    summarization: Summarization | None = None
    compression: Compression | None = None


# --- spec.semantic ----------------------------------------------------------------------


class EmbeddingConfig(SpecModel):
    """``semantic.embedding``: the embedding model."""

    provider: Literal["OpenAI", "Cohere", "HuggingFace", "Local", "Ollama"] | None = None
    model: str | None = Field(default=None, description="Embedding model name")
    dimensions: PositiveInt | None = Field(default=None, description="Embedding vector dimensions")
    api_key_secret_ref: SecretRef | None = None
    batch_size: PositiveInt = 32
    timeout: Duration = Duration("30s")


class QdrantConfig(SpecModel):
    """``vectorStore.qdrant``. Without ``url`` Qdrant runs embedded (local mode)."""

    url: str | None = None
    api_key_secret_ref: SecretRef | None = None
    collection: str | None = None
    vector_size: PositiveInt | None = None
    distance: Literal["Cosine", "Euclid", "Dot"] = "Cosine"
    on_disk: bool = False


class ChromaConfig(SpecModel):
    """``vectorStore.chroma``. Without ``host`` Chroma runs embedded (persistent client)."""

    host: str | None = None
    port: Port = 8000
    collection: str | None = None
    persist_directory: str | None = None


class PineconeConfig(SpecModel):
    """``vectorStore.pinecone``."""

    environment: str | None = None
    api_key_secret_ref: SecretRef | None = None
    index: str | None = None
    namespace: str | None = None
    metric: Literal["cosine", "dotproduct", "euclidean"] = "cosine"


class MilvusConfig(SpecModel):
    """``vectorStore.milvus``."""

    host: str | None = None
    port: Port = 19530
    collection: str | None = None
    index_type: Literal["FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "ANNOY"] = "HNSW"
    metric_type: Literal["L2", "IP", "COSINE"] = "COSINE"


class WeaviateConfig(SpecModel):
    """``vectorStore.weaviate``."""

    url: str | None = None
    api_key_secret_ref: SecretRef | None = None
    class_name: str | None = None
    vectorizer: str | None = None


class VectorStoreConfig(SpecModel):
    """``semantic.vectorStore``: where embeddings are stored."""

    type: VectorStoreType | None = None
    qdrant: QdrantConfig | None = None
    chroma: ChromaConfig | None = None
    pinecone: PineconeConfig | None = None
    milvus: MilvusConfig | None = None
    weaviate: WeaviateConfig | None = None


class SemanticIndexing(SpecModel):
    """``semantic.indexing``: when new memories are embedded."""

    strategy: Literal["immediate", "batch", "scheduled"] = "immediate"
    batch_size: PositiveInt = 100
    schedule: CronSchedule | None = Field(default=None, description="Cron schedule for indexing")

    @model_validator(mode="after")
    def _schedule_for_scheduled(self) -> SemanticIndexing:
        if self.strategy == "scheduled" and self.schedule is None:
            raise spec_error(
                "schedule",
                "indexing.strategy is scheduled but no `schedule` is given; "
                "add a cron expression such as '0 */6 * * *'",
            )
        return self


class HybridSearch(SpecModel):
    """``retrieval.hybridSearch``: fuse keyword (BM25) and vector results."""

    enabled: bool | None = None
    keyword_weight: float = Field(default=0.3, ge=0.0)
    semantic_weight: float = Field(default=0.7, ge=0.0)


class RerankingConfig(SpecModel):
    """``retrieval.reranking``."""

    enabled: bool | None = None
    model: str | None = None
    top_k: PositiveInt = 3


class FilteringConfig(SpecModel):
    """``retrieval.filtering``: metadata fields callers may filter on."""

    enabled: bool | None = None
    fields: list[str] | None = None


class RetrievalConfig(SpecModel):
    """``semantic.retrieval``."""

    default_top_k: PositiveInt = 5
    hybrid_search: HybridSearch | None = None
    reranking: RerankingConfig | None = None
    filtering: FilteringConfig | None = None


class SemanticMemory(SpecModel):
    """``spec.semantic``: vector memory and retrieval."""

    enabled: bool = False
    embedding: EmbeddingConfig | None = None
    vector_store: VectorStoreConfig | None = None
    indexing: SemanticIndexing | None = None
    retrieval: RetrievalConfig | None = None


# --- spec.knowledge ---------------------------------------------------------------------


class MemoryKnowledgeSource(SpecModel):
    """One entry of ``spec.knowledge.sources``."""

    name: str | None = None
    type: Literal["GitHub", "Confluence", "Notion", "LocalFiles", "URL", "S3", "Git"] | None = None
    knowledge_base_ref: str | None = Field(
        default=None, description="Reference to KnowledgeBase CRD"
    )
    sync_schedule: CronSchedule | None = Field(
        default=None, description="Cron schedule for syncing"
    )
    enabled: bool = True


class MemoryKnowledge(SpecModel):
    """``spec.knowledge``: KnowledgeBases feeding this memory."""

    enabled: bool = False
    sources: list[MemoryKnowledgeSource] | None = None


# --- spec.lifecycle ---------------------------------------------------------------------


class RetentionPolicy(SpecModel):
    """``lifecycle.retention``."""

    enabled: bool | None = None
    policy: Literal["time", "size", "importance"] | None = None
    max_age: Duration | None = Field(default=None, description="Maximum age (e.g., 30d)")
    max_size: Size | None = Field(default=None, description="Maximum size (e.g., 10GB)")


class ArchivalPolicy(SpecModel):
    """``lifecycle.archival``."""

    enabled: bool | None = None
    backend: Literal["S3", "GCS", "Azure"] | None = None
    threshold: Duration | None = Field(
        default=None, description="Age threshold for archival (e.g., 90d)"
    )


class BackupPolicy(SpecModel):
    """``lifecycle.backup``."""

    enabled: bool | None = None
    schedule: CronSchedule | None = Field(default=None, description="Cron schedule")
    retention: NonNegativeInt | None = Field(
        default=None, description="Number of backups to retain"
    )


class MemoryLifecycle(SpecModel):
    """``spec.lifecycle``."""

    retention: RetentionPolicy | None = None
    archival: ArchivalPolicy | None = None
    backup: BackupPolicy | None = None


# --- spec.access ------------------------------------------------------------------------


class MemoryEncryption(SpecModel):
    """``access.encryption``."""

    at_rest: bool = True
    in_transit: bool = True
    key_secret_ref: SecretRef | None = None

    @model_validator(mode="after")
    def _key_for_at_rest(self) -> MemoryEncryption:
        # atRest defaults to true; only a manifest that asks for it explicitly needs a key.
        if "at_rest" in self.model_fields_set and self.at_rest and self.key_secret_ref is None:
            raise spec_error(
                "keySecretRef",
                "atRest is true but no keySecretRef names the encryption key; add "
                "keySecretRef {name, key} of a Secret holding a key made by "
                "`aof-index memory keygen`, or set atRest: false",
            )
        return self


class RbacRule(SpecModel):
    """One entry of ``access.rbac.rules``."""

    subjects: list[str] | None = None
    permissions: list[Literal["read", "write", "delete", "admin"]] | None = None


class RbacConfig(SpecModel):
    """``access.rbac``."""

    enabled: bool | None = None
    rules: list[RbacRule] | None = None


class MemoryAccess(SpecModel):
    """``spec.access``."""

    isolation: Literal["namespace", "agent", "fleet", "global"] = "namespace"
    encryption: MemoryEncryption | None = None
    rbac: RbacConfig | None = None


# --- spec.observability -----------------------------------------------------------------


class MemoryMetrics(SpecModel):
    """``observability.metrics``."""

    enabled: bool | None = None
    interval: Duration = Duration("30s")


class MemoryTracing(SpecModel):
    """``observability.tracing``."""

    enabled: bool | None = None
    sampler: Literal["always", "never", "ratio"] = "ratio"
    sampling_ratio: UnitInterval = 0.1


class MemoryLogging(SpecModel):
    """``observability.logging``."""

    level: Literal["debug", "info", "warn", "error"] = "info"
    operations: list[Literal["read", "write", "search", "delete"]] | None = None


class MemoryObservability(SpecModel):
    """``spec.observability``."""

    metrics: MemoryMetrics | None = None
    tracing: MemoryTracing | None = None
    logging: MemoryLogging | None = None


# --- the resource -----------------------------------------------------------------------


class MemorySpec(SpecModel):
    """``spec`` of a Memory (also an Agent's ``memory.inline``)."""

    backend: MemoryBackend | None = Field(default=None, description="Storage backend configuration")
    conversational: ConversationalMemory | None = None
    semantic: SemanticMemory | None = None
    knowledge: MemoryKnowledge | None = None
    lifecycle: MemoryLifecycle | None = None
    access: MemoryAccess | None = None
    observability: MemoryObservability | None = None


class MemoryStats(SpecModel):
    """``status.stats`` of a Memory."""

    total_entries: int | None = None
    total_size: str | None = None
    last_sync_time: datetime | None = None
    vector_index_size: int | None = None


class MemoryStatus(SpecModel):
    """``status`` of a Memory, written by the operator."""

    ready: bool | None = None
    conditions: list[Condition] | None = None
    stats: MemoryStats | None = None


class Memory(Resource):
    """A ``Memory`` resource (``aof.agenticops.org/v1alpha1``)."""

    kind: Literal["Memory"] = "Memory"
    spec: MemorySpec = Field(default_factory=MemorySpec)
    status: MemoryStatus | None = None
