"""The ``KnowledgeBase`` resource: document sources, chunking, processing, indexing, sync.

Field names, enums and defaults follow the AOF ``knowledgebases.aof.agenticops.org`` custom
resource exactly (``spec/crds.md``). Sections the manifest leaves out are ``None``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    SecretStr,
    model_validator,
)

from aof_index.spec.base import Condition, Resource, SpecModel, spec_error
from aof_index.spec.secrets import GitCredentialsSecretRef, SecretRef
from aof_index.spec.types import CronSchedule, UnitInterval

__all__ = [
    "APISource",
    "Chunking",
    "ChunkingStrategy",
    "ConfluenceSource",
    "CustomChunking",
    "DatabaseSource",
    "Deduplication",
    "Extraction",
    "FixedChunking",
    "GitHubSource",
    "GitLabSource",
    "GitSource",
    "IndexingSchedule",
    "IndexingWebhook",
    "KnowledgeBase",
    "KnowledgeBaseIndexing",
    "KnowledgeBaseSpec",
    "KnowledgeBaseStats",
    "KnowledgeBaseStatus",
    "KnowledgeSource",
    "LocalFilesSource",
    "MarkdownChunking",
    "MetadataEnrichment",
    "NotionSource",
    "Processing",
    "RecursiveChunking",
    "S3Source",
    "SemanticChunking",
    "SourceStatus",
    "SourceType",
    "SyncError",
    "SyncPolicy",
    "SyncWebhook",
    "URLSource",
    "VolumeRef",
]

SourceType = Literal[
    "GitHub", "GitLab", "Confluence", "Notion", "LocalFiles", "URL", "S3", "Git", "API", "Database"
]
ChunkingStrategy = Literal["fixed", "semantic", "markdown", "recursive", "custom"]


# --- spec.sources -----------------------------------------------------------------------


class GitHubSource(SpecModel):
    """``sources[].github``: files (and optionally issues, PRs, discussions) of a repository."""

    owner: str | None = None
    repo: str | None = None
    branch: str = "main"
    paths: list[str] | None = Field(
        default=None, description="Specific paths to index (e.g., docs/, *.md)"
    )
    token_secret_ref: SecretRef | None = None
    include_issues: bool = False
    include_prs: bool = Field(default=False, alias="includePRs")
    include_discussions: bool = False


class GitLabSource(SpecModel):
    """``sources[].gitlab``: files of a GitLab project."""

    model_config = ConfigDict(coerce_numbers_to_str=True)  # projectId: 12345 is common

    project_id: str | None = None
    ref: str = "main"
    paths: list[str] | None = None
    token_secret_ref: SecretRef | None = None
    base_url: str = "https://gitlab.com"


class ConfluenceSource(SpecModel):
    """``sources[].confluence``: pages of a Confluence space."""

    base_url: str | None = None
    space_key: str | None = None
    username: str | None = None
    api_token_secret_ref: SecretRef | None = None
    cql: str | None = Field(default=None, description="CQL query to filter pages")
    include_attachments: bool = False


class NotionSource(SpecModel):
    """``sources[].notion``: Notion databases and pages."""

    api_token_secret_ref: SecretRef | None = None
    database_ids: list[str] | None = None
    page_ids: list[str] | None = None


class VolumeRef(SpecModel):
    """``localFiles.volumeRef``: a volume the files are mounted from."""

    name: str | None = None
    mount_path: str | None = None


class LocalFilesSource(SpecModel):
    """``sources[].localFiles``: files on disk."""

    paths: list[str] | None = Field(default=None, description="File paths or glob patterns")
    volume_ref: VolumeRef | None = None
    exclude: list[str] | None = Field(default=None, description="Patterns to exclude")


class URLSource(SpecModel):
    """``sources[].url``: web pages, optionally crawled."""

    urls: list[str] | None = None
    crawl: bool = False
    max_depth: NonNegativeInt = 1
    allowed_domains: list[str] | None = None
    selector: str | None = Field(default=None, description="CSS selector for content extraction")


class S3Source(SpecModel):
    """``sources[].s3``: objects in an S3-compatible bucket."""

    bucket: str | None = None
    prefix: str | None = None
    region: str | None = None
    endpoint: str | None = None
    access_key_secret_ref: SecretRef | None = None
    secret_key_secret_ref: SecretRef | None = None
    include_patterns: list[str] | None = None
    exclude_patterns: list[str] | None = None


class GitSource(SpecModel):
    """``sources[].git``: any git repository."""

    url: str | None = None
    ref: str = "main"
    ssh_key_secret_ref: SecretRef | None = None
    credentials_secret_ref: GitCredentialsSecretRef | None = None


class APISource(SpecModel):
    """``sources[].api``: an HTTP endpoint returning JSON."""

    endpoint: str | None = None
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, Any] | None = None
    auth_secret_ref: SecretRef | None = None
    json_path: str | None = Field(default=None, description="JSONPath to extract content")


class DatabaseSource(SpecModel):
    """``sources[].database``: rows of a SQL query (or a MongoDB query)."""

    type: Literal["PostgreSQL", "MySQL", "MongoDB"] | None = None
    connection_secret_ref: SecretRef | None = None
    query: str | None = None
    columns: list[str] | None = Field(default=None, description="Columns to use as content")


_FIELD_OF_SOURCE: dict[str, str] = {
    "GitHub": "github",
    "GitLab": "gitlab",
    "Confluence": "confluence",
    "Notion": "notion",
    "LocalFiles": "local_files",
    "URL": "url",
    "S3": "s3",
    "Git": "git",
    "API": "api",
    "Database": "database",
}


class KnowledgeSource(SpecModel):
    """One entry of ``spec.sources``: ``type`` names which of the sections configures it."""

    name: str | None = None
    type: SourceType | None = None
    enabled: bool = True
    github: GitHubSource | None = None
    gitlab: GitLabSource | None = None
    confluence: ConfluenceSource | None = None
    notion: NotionSource | None = None
    local_files: LocalFilesSource | None = None
    url: URLSource | None = None
    s3: S3Source | None = None
    git: GitSource | None = None
    api: APISource | None = None
    database: DatabaseSource | None = None

    @property
    def settings(self) -> SpecModel | None:
        """The section for this source's ``type`` (e.g. ``github`` for ``GitHub``)."""
        if self.type is None:
            return None
        section: SpecModel | None = getattr(self, _FIELD_OF_SOURCE[self.type])
        return section

    @property
    def settings_field(self) -> str | None:
        """The manifest name of that section (e.g. ``localFiles`` for ``LocalFiles``)."""
        if self.type is None:
            return None
        return type(self).model_fields[_FIELD_OF_SOURCE[self.type]].alias or ""

    @model_validator(mode="after")
    def _section_for_type(self) -> KnowledgeSource:
        if self.type is not None and self.settings is None:
            section = self.settings_field or ""
            raise spec_error(
                section,
                f"source type is {self.type} but the `{section}` section that configures it "
                "is missing",
            )
        return self


# --- spec.chunking ----------------------------------------------------------------------


class _SizedChunking(SpecModel):
    """Chunk size and overlap, shared by the fixed and recursive strategies."""

    chunk_size: PositiveInt = 1000
    overlap: NonNegativeInt = 200

    @model_validator(mode="after")
    def _overlap_below_size(self) -> _SizedChunking:
        if self.overlap >= self.chunk_size:
            raise spec_error(
                "overlap",
                f"overlap ({self.overlap}) must be smaller than chunkSize ({self.chunk_size})",
            )
        return self


class FixedChunking(_SizedChunking):
    """``chunking.fixed``: fixed-size chunks."""


class RecursiveChunking(_SizedChunking):
    """``chunking.recursive``: split on the first separator that yields small enough pieces."""

    separators: list[str] = Field(default_factory=lambda: ["\n\n", "\n", ". ", " "])


class SemanticChunking(SpecModel):
    """``chunking.semantic``: split where the embedding similarity drops."""

    model: str | None = Field(default=None, description="Model for semantic analysis")
    threshold: float = Field(default=0.5, description="Similarity threshold for splitting")
    min_chunk_size: PositiveInt = 100
    max_chunk_size: PositiveInt = 2000

    @model_validator(mode="after")
    def _min_below_max(self) -> SemanticChunking:
        if self.min_chunk_size > self.max_chunk_size:
            raise spec_error(
                "minChunkSize",
                f"minChunkSize ({self.min_chunk_size}) must not exceed "
                f"maxChunkSize ({self.max_chunk_size})",
            )
        return self


class MarkdownChunking(SpecModel):
    """``chunking.markdown``: split on headings, keeping code blocks whole."""

    respect_headers: bool = True
    respect_code_blocks: bool = True
    max_chunk_size: PositiveInt = 1500


class CustomChunking(SpecModel):
    """``chunking.custom``: LLM-guided chunking."""

    prompt: str | None = Field(default=None, description="LLM prompt for chunking")
    model: str | None = None


class Chunking(SpecModel):
    """``spec.chunking``: ``strategy`` picks which section applies."""

    strategy: ChunkingStrategy = "semantic"
    fixed: FixedChunking | None = None
    semantic: SemanticChunking | None = None
    markdown: MarkdownChunking | None = None
    recursive: RecursiveChunking | None = None
    custom: CustomChunking | None = None


# --- spec.processing --------------------------------------------------------------------


class Extraction(SpecModel):
    """``processing.extraction``: text clean-up."""

    strip_html: bool = True
    strip_markdown: bool = False
    preserve_code_blocks: bool = True
    preserve_links: bool = True


class MetadataEnrichment(SpecModel):
    """``processing.metadata``: metadata extracted or added to every document."""

    extract: list[Literal["title", "author", "date", "tags", "summary"]] | None = None
    custom: dict[str, Any] | None = None


class Deduplication(SpecModel):
    """``processing.deduplication``."""

    enabled: bool = True
    method: Literal["hash", "similarity", "exact"] = "hash"
    threshold: UnitInterval = 0.95


class Processing(SpecModel):
    """``spec.processing``."""

    extraction: Extraction | None = None
    metadata: MetadataEnrichment | None = None
    deduplication: Deduplication | None = None


# --- spec.indexing and spec.sync --------------------------------------------------------


class IndexingWebhook(SpecModel):
    """``indexing.schedule.webhook``. ``secret`` is kept as a :class:`SecretStr`."""

    enabled: bool | None = None
    path: str | None = None
    secret: SecretStr | None = None


class IndexingSchedule(SpecModel):
    """``indexing.schedule``: when the knowledge base is re-indexed."""

    type: Literal["manual", "cron", "webhook", "continuous"] = "manual"
    cron: CronSchedule | None = Field(
        default=None, description="Cron expression for scheduled indexing"
    )
    webhook: IndexingWebhook | None = None

    @model_validator(mode="after")
    def _cron_for_cron(self) -> IndexingSchedule:
        if self.type == "cron" and self.cron is None:
            raise spec_error(
                "cron",
                "schedule.type is cron but no `cron` expression is given; "
                "add one such as '0 */6 * * *'",
            )
        return self


class KnowledgeBaseIndexing(SpecModel):
    """``spec.indexing``."""

    memory_ref: str | None = Field(default=None, description="Reference to Memory CRD for storage")
    schedule: IndexingSchedule | None = None
    batch_size: PositiveInt = Field(
        default=100, description="Number of chunks to process in a batch"
    )
    parallelism: PositiveInt = Field(default=4, description="Number of parallel indexing workers")


class SyncWebhook(SpecModel):
    """``sync.webhook``: push notifications that trigger a sync."""

    enabled: bool | None = None
    providers: list[Literal["github", "gitlab", "confluence"]] | None = None


class SyncPolicy(SpecModel):
    """``spec.sync``."""

    mode: Literal["full", "incremental", "differential"] = "incremental"
    on_startup: bool = True
    webhook: SyncWebhook | None = None


# --- the resource -----------------------------------------------------------------------


class KnowledgeBaseSpec(SpecModel):
    """``spec`` of a KnowledgeBase."""

    description: str | None = Field(
        default=None, description="Human-readable description of this knowledge base"
    )
    sources: list[KnowledgeSource] | None = None
    chunking: Chunking | None = None
    processing: Processing | None = None
    indexing: KnowledgeBaseIndexing | None = None
    sync: SyncPolicy | None = None

    @model_validator(mode="after")
    def _unique_source_names(self) -> KnowledgeBaseSpec:
        counts = Counter(s.name for s in self.sources or () if s.name is not None)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            raise spec_error(
                "sources",
                "source names must be unique (sync state is kept per name); repeated: "
                + ", ".join(repeated),
            )
        return self


class SyncError(SpecModel):
    """One entry of ``status.stats.errors``."""

    source: str | None = None
    message: str | None = None
    timestamp: datetime | None = None


class KnowledgeBaseStats(SpecModel):
    """``status.stats`` of a KnowledgeBase."""

    total_documents: int | None = None
    total_chunks: int | None = None
    last_sync_time: datetime | None = None
    last_sync_status: Literal["success", "failed", "in_progress"] | None = None
    errors: list[SyncError] | None = None


class SourceStatus(SpecModel):
    """One entry of ``status.sourceStatus``."""

    name: str | None = None
    status: Literal["ready", "syncing", "failed"] | None = None
    documents_indexed: int | None = None
    last_sync: datetime | None = None


class KnowledgeBaseStatus(SpecModel):
    """``status`` of a KnowledgeBase, written by the operator."""

    ready: bool | None = None
    conditions: list[Condition] | None = None
    stats: KnowledgeBaseStats | None = None
    source_status: list[SourceStatus] | None = None


class KnowledgeBase(Resource):
    """A ``KnowledgeBase`` resource (``aof.agenticops.org/v1alpha1``)."""

    kind: Literal["KnowledgeBase"] = "KnowledgeBase"
    spec: KnowledgeBaseSpec = Field(default_factory=KnowledgeBaseSpec)
    status: KnowledgeBaseStatus | None = None
