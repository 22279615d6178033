"""The full Memory, KnowledgeBase and agent manifests: every field read, defaults, round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from aof_index.errors import ManifestError
from aof_index.spec import (
    Agent,
    AgentFleet,
    AgentFlow,
    KnowledgeBase,
    Memory,
    Resource,
    Size,
    load_knowledge_base,
    load_memory,
    load_resources,
)
from aof_index.spec.knowledge_base import GitHubSource, RecursiveChunking

MANIFESTS = Path(__file__).parent / "manifests"
MEMORY = MANIFESTS / "memory-full.yaml"
KNOWLEDGE_BASE = MANIFESTS / "knowledgebase-full.yaml"
AGENTS = MANIFESTS / "agents.yaml"


def test_full_memory_reads_every_section() -> None:
    memory = load_memory(MEMORY)
    assert memory.ref == "Memory/incident-memory"
    assert memory.namespace == "sre-ops"
    assert memory.metadata.labels == {"team": "platform", "tier": "production"}
    assert memory.metadata.model_extra == {"creationTimestamp": "2025-01-15T09:30:00Z"}
    backend = memory.spec.backend
    assert backend is not None and backend.type == "PostgreSQL"
    assert backend.redis is not None and backend.redis.ttl is not None
    assert backend.redis.ttl.timedelta == timedelta(hours=24)
    assert backend.redis.secret_ref is not None and backend.redis.secret_ref.key == "password"
    assert backend.redis.tls is not None and backend.redis.tls.insecure_skip_verify is False
    pg = backend.postgresql
    assert pg is not None
    assert (pg.port, pg.ssl_mode, pg.max_connections, pg.db_schema) == (
        5433,
        "verify-full",
        50,
        "incidents",
    )
    assert backend.s3 is not None and backend.s3.encryption is not None
    assert backend.s3.encryption.kms_key_id is not None
    assert backend.vector is not None and backend.vector.config == {
        "url": "http://qdrant.sre-ops.svc:6333",
        "hnsw": {"m": 16, "efConstruct": 128},
    }
    conv = memory.spec.conversational
    assert conv is not None and conv.ttl.timedelta == timedelta(days=14)
    assert conv.summarization is not None and conv.summarization.strategy == "adaptive"
    assert conv.compression is not None and conv.compression.algorithm == "gzip"
    semantic = memory.spec.semantic
    assert semantic is not None and semantic.embedding is not None
    assert semantic.embedding.timeout.seconds == 90
    store = semantic.vector_store
    assert store is not None and store.qdrant is not None and store.qdrant.distance == "Dot"
    assert store.milvus is not None and store.milvus.index_type == "IVF_FLAT"
    assert store.weaviate is not None and store.weaviate.class_name == "Incident"
    assert store.chroma is not None and store.chroma.persist_directory == "/data/chroma"
    assert semantic.indexing is not None and semantic.indexing.schedule is not None
    assert semantic.indexing.schedule.next_after(datetime(2025, 1, 1, 0, 7)) == datetime(
        2025, 1, 1, 0, 15
    )
    retrieval = semantic.retrieval
    assert retrieval is not None and retrieval.hybrid_search is not None
    assert retrieval.hybrid_search.keyword_weight == 0.4
    assert retrieval.filtering is not None and retrieval.filtering.fields == [
        "severity",
        "service",
        "cluster",
    ]
    knowledge = memory.spec.knowledge
    assert knowledge is not None and knowledge.sources is not None
    assert [s.knowledge_base_ref for s in knowledge.sources] == ["sre-runbooks", "postmortems"]
    lifecycle = memory.spec.lifecycle
    assert lifecycle is not None and lifecycle.retention is not None
    assert lifecycle.retention.max_size == Size("10GB")
    assert lifecycle.retention.max_age is not None
    assert lifecycle.retention.max_age.timedelta == timedelta(days=90)
    assert lifecycle.archival is not None and lifecycle.archival.threshold is not None
    assert lifecycle.backup is not None and lifecycle.backup.retention == 14
    access = memory.spec.access
    assert access is not None and access.isolation == "fleet"
    assert access.rbac is not None and access.rbac.rules is not None
    assert access.rbac.rules[0].permissions == ["read", "write"]
    obs = memory.spec.observability
    assert obs is not None and obs.tracing is not None and obs.tracing.sampling_ratio == 0.25
    assert obs.logging is not None and obs.logging.level == "warn"
    assert memory.status is not None and memory.status.stats is not None
    assert memory.status.stats.total_entries == 12840
    assert memory.status.conditions is not None
    assert memory.status.conditions[0].last_transition_time == datetime(
        2025, 1, 15, 9, 31, tzinfo=UTC
    )


def test_full_knowledge_base_reads_every_source() -> None:
    kb = load_knowledge_base(KNOWLEDGE_BASE)
    sources = kb.spec.sources
    assert sources is not None
    assert [s.type for s in sources] == [
        "GitHub",
        "GitLab",
        "Confluence",
        "Notion",
        "LocalFiles",
        "URL",
        "S3",
        "Git",
        "API",
        "Database",
    ]
    assert all(s.settings is not None for s in sources)
    github = sources[0].settings
    assert isinstance(github, GitHubSource)
    assert github.include_prs is True and github.branch == "production"
    assert github.token_secret_ref is not None and github.token_secret_ref.name == "github-token"
    gitlab = sources[1].gitlab
    assert gitlab is not None and gitlab.project_id == "4821"  # an int in YAML, kept as text
    local = sources[4].local_files
    assert local is not None and local.volume_ref is not None
    assert local.volume_ref.mount_path == "/knowledge/playbooks"
    git = sources[7].git
    assert git is not None and git.credentials_secret_ref is not None
    assert git.credentials_secret_ref.username_ref.key == "username"
    api = sources[8].api
    assert (
        api is not None
        and api.method == "POST"
        and api.headers
        == {
            "Accept": "application/json",
            "X-Team": "sre",
        }
    )
    assert sources[9].enabled is False
    chunking = kb.spec.chunking
    assert chunking is not None and chunking.strategy == "markdown"
    assert chunking.recursive is not None and chunking.recursive.separators == [
        "\n## ",
        "\n\n",
        "\n",
    ]
    assert chunking.semantic is not None and chunking.semantic.threshold == 0.6
    processing = kb.spec.processing
    assert processing is not None and processing.metadata is not None
    assert processing.metadata.custom == {"team": "sre", "criticality": "high"}
    assert processing.deduplication is not None and processing.deduplication.method == "similarity"
    indexing = kb.spec.indexing
    assert indexing is not None and indexing.schedule is not None
    assert indexing.schedule.type == "cron" and str(indexing.schedule.cron) == "30 */4 * * *"
    assert indexing.schedule.webhook is not None and indexing.schedule.webhook.secret is not None
    assert indexing.schedule.webhook.secret.get_secret_value() == "wh-s3cr3t-value"
    assert kb.spec.sync is not None and kb.spec.sync.mode == "differential"
    assert kb.status is not None and kb.status.stats is not None
    assert kb.status.stats.last_sync_status == "failed"
    assert kb.status.source_status is not None
    assert kb.status.source_status[1].status == "failed"


MEMORY_DEFAULTS = """
apiVersion: aof.agenticops.org/v1alpha1
kind: Memory
metadata: {name: defaults}
spec:
  backend: {type: SQLite, sqlite: {}}
  conversational: {summarization: {}, compression: {}}
  semantic:
    embedding: {}
    vectorStore: {qdrant: {}, chroma: {}, pinecone: {}, milvus: {}}
    indexing: {}
    retrieval: {hybridSearch: {}, reranking: {}}
  knowledge: {sources: [{name: runbooks}]}
  access: {encryption: {}}
  observability: {metrics: {}, tracing: {}, logging: {}}
"""


def test_memory_defaults_are_applied() -> None:
    spec = load_memory(MEMORY_DEFAULTS).spec
    assert spec.backend is not None and spec.backend.sqlite is not None
    assert (spec.backend.sqlite.inmemory, spec.backend.sqlite.journal_mode) == (False, "WAL")
    conv = spec.conversational
    assert conv is not None
    assert (conv.enabled, conv.max_messages, str(conv.ttl), conv.max_tokens) == (
        True,
        1000,
        "7d",
        None,
    )
    assert conv.summarization is not None
    assert (conv.summarization.enabled, conv.summarization.trigger_threshold) == (False, 100)
    assert conv.summarization.strategy == "rolling"
    assert conv.compression is not None and conv.compression.algorithm == "zstd"
    semantic = spec.semantic
    assert semantic is not None and semantic.enabled is False
    assert semantic.embedding is not None
    assert (semantic.embedding.batch_size, str(semantic.embedding.timeout)) == (32, "30s")
    store = semantic.vector_store
    assert store is not None and store.type is None
    assert store.qdrant is not None and store.qdrant.url is None  # local mode is allowed
    assert (store.qdrant.distance, store.qdrant.on_disk) == ("Cosine", False)
    assert store.chroma is not None and store.chroma.port == 8000
    assert store.pinecone is not None and store.pinecone.metric == "cosine"
    assert store.milvus is not None
    assert (store.milvus.port, store.milvus.index_type, store.milvus.metric_type) == (
        19530,
        "HNSW",
        "COSINE",
    )
    assert semantic.indexing is not None
    assert (semantic.indexing.strategy, semantic.indexing.batch_size) == ("immediate", 100)
    retrieval = semantic.retrieval
    assert retrieval is not None and retrieval.default_top_k == 5
    assert retrieval.hybrid_search is not None
    assert (retrieval.hybrid_search.keyword_weight, retrieval.hybrid_search.semantic_weight) == (
        0.3,
        0.7,
    )
    assert retrieval.reranking is not None and retrieval.reranking.top_k == 3
    assert spec.knowledge is not None and spec.knowledge.enabled is False
    assert spec.knowledge.sources is not None and spec.knowledge.sources[0].enabled is True
    assert spec.access is not None and spec.access.isolation == "namespace"
    assert spec.access.encryption is not None
    assert (spec.access.encryption.at_rest, spec.access.encryption.in_transit) == (True, True)
    obs = spec.observability
    assert obs is not None and obs.metrics is not None and str(obs.metrics.interval) == "30s"
    assert obs.tracing is not None
    assert (obs.tracing.sampler, obs.tracing.sampling_ratio) == ("ratio", 0.1)
    assert obs.logging is not None and obs.logging.level == "info"
    assert spec.lifecycle is None  # sections left out stay None


def test_postgres_and_redis_defaults() -> None:
    memory = load_memory(
        """
apiVersion: aof.agenticops.org/v1alpha1
kind: Memory
metadata: {name: pg}
spec:
  backend: {type: PostgreSQL, postgresql: {host: db}, redis: {}}
"""
    )
    backend = memory.spec.backend
    assert backend is not None and backend.postgresql is not None and backend.redis is not None
    pg = backend.postgresql
    assert (pg.port, pg.ssl_mode, pg.max_connections, pg.db_schema) == (
        5432,
        "require",
        25,
        "public",
    )
    assert (backend.redis.db, backend.redis.pool_size) == (0, 10)
    assert memory.namespace == "default"


KB_DEFAULTS = """
apiVersion: aof.agenticops.org/v1alpha1
kind: KnowledgeBase
metadata: {name: defaults}
spec:
  sources:
    - {name: gh, type: GitHub, github: {owner: acme, repo: runbooks}}
    - {name: gl, type: GitLab, gitlab: {projectId: "42"}}
    - {name: c, type: Confluence, confluence: {spaceKey: SRE}}
    - {name: u, type: URL, url: {urls: [https://example.com]}}
    - {name: g, type: Git, git: {url: https://example.com/x.git}}
    - {name: a, type: API, api: {endpoint: https://example.com/api}}
  chunking: {fixed: {}, semantic: {}, markdown: {}, recursive: {}}
  processing: {extraction: {}, deduplication: {}}
  indexing: {schedule: {}}
  sync: {}
"""


def test_knowledge_base_defaults_are_applied() -> None:
    spec = load_knowledge_base(KB_DEFAULTS).spec
    sources = spec.sources
    assert sources is not None and all(s.enabled for s in sources)
    github = sources[0].github
    assert github is not None and github.branch == "main"
    assert (github.include_issues, github.include_prs, github.include_discussions) == (
        False,
        False,
        False,
    )
    gitlab = sources[1].gitlab
    assert gitlab is not None and (gitlab.ref, gitlab.base_url) == ("main", "https://gitlab.com")
    assert sources[2].confluence is not None
    assert sources[2].confluence.include_attachments is False
    url = sources[3].url
    assert url is not None and (url.crawl, url.max_depth) == (False, 1)
    assert sources[4].git is not None and sources[4].git.ref == "main"
    assert sources[5].api is not None and sources[5].api.method == "GET"
    chunking = spec.chunking
    assert chunking is not None and chunking.strategy == "semantic"
    assert chunking.fixed is not None
    assert (chunking.fixed.chunk_size, chunking.fixed.overlap) == (1000, 200)
    assert chunking.semantic is not None
    assert (
        chunking.semantic.threshold,
        chunking.semantic.min_chunk_size,
        chunking.semantic.max_chunk_size,
    ) == (0.5, 100, 2000)
    assert chunking.markdown is not None
    assert (
        chunking.markdown.respect_headers,
        chunking.markdown.respect_code_blocks,
        chunking.markdown.max_chunk_size,
    ) == (True, True, 1500)
    assert chunking.recursive is not None
    assert chunking.recursive.separators == ["\n\n", "\n", ". ", " "]
    assert (chunking.recursive.chunk_size, chunking.recursive.overlap) == (1000, 200)
    extraction = spec.processing.extraction if spec.processing else None
    assert extraction is not None
    assert (
        extraction.strip_html,
        extraction.strip_markdown,
        extraction.preserve_code_blocks,
        extraction.preserve_links,
    ) == (True, False, True, True)
    dedup = spec.processing.deduplication if spec.processing else None
    assert dedup is not None and (dedup.enabled, dedup.method, dedup.threshold) == (
        True,
        "hash",
        0.95,
    )
    indexing = spec.indexing
    assert indexing is not None and (indexing.batch_size, indexing.parallelism) == (100, 4)
    assert indexing.schedule is not None and indexing.schedule.type == "manual"
    assert spec.sync is not None and (spec.sync.mode, spec.sync.on_startup) == (
        "incremental",
        True,
    )


def test_default_separators_are_not_shared_between_instances() -> None:
    first, second = RecursiveChunking(), RecursiveChunking()
    first.separators.append("|")
    assert second.separators == ["\n\n", "\n", ". ", " "]


def test_agents_memory_and_context_are_modelled() -> None:
    agent, fleet, flow = load_resources(AGENTS)
    assert isinstance(agent, Agent)
    memory = agent.spec.memory
    assert memory is not None and memory.ref == "incident-memory"
    assert memory.conversational is not None and memory.conversational.ttl is not None
    assert memory.conversational.ttl.timedelta == timedelta(hours=12)
    assert memory.conversational.summarization is not None
    assert memory.conversational.summarization.preserve_recent == 10
    rag = memory.rag
    assert rag is not None and rag.retrieval is not None
    assert rag.retrieval.hybrid_weights is not None and rag.retrieval.hybrid_weights.keyword == 0.3
    assert rag.retrieval.filter == {
        "metadata.type": ["documentation", "runbook"],
        "metadata.verified": True,
    }
    assert rag.query_enhancement is not None and rag.query_enhancement.methods == [
        "hypotheticalDocument",
        "queryDecomposition",
        "queryExpansion",
    ]
    assert rag.fusion is not None and rag.fusion.k == 60  # the RRF default
    assert rag.adaptive is not None and rag.adaptive.max_top_k == 10
    context = agent.spec.context
    assert context is not None and context.static is not None and context.dynamic is not None
    assert context.static[0].source.config_map_ref is not None
    assert context.static[1].source.inline is not None
    assert context.dynamic[0].source.type == "HTTP"
    assert context.dynamic[0].refresh is not None and context.dynamic[0].refresh.seconds == 300
    assert context.rag is not None and context.rag[0].query == "{{.userMessage}}"

    assert isinstance(fleet, AgentFleet)
    shared = fleet.spec.shared_memory
    assert shared is not None and shared.conversational is not None
    assert shared.conversational.shared is True
    template = fleet.spec.template
    assert template is not None and template.spec is not None
    assert template.spec.memory is not None and template.spec.memory.rag is not None
    assert template.spec.memory.rag.inherit_from_fleet is True

    assert isinstance(flow, AgentFlow)
    assert flow.spec.memory is not None and flow.spec.memory.conversational is not None
    assert flow.spec.memory.conversational.scope == "flow"
    steps = flow.spec.steps
    assert steps is not None and steps[1].depends_on == ["detect"]
    assert steps[0].output is not None and steps[0].output.to == "flowContext.detection"
    assert steps[1].context is not None and steps[1].context.dynamic is not None
    assert steps[1].context.dynamic[0].source.path == "detection"


def test_runtime_fields_pass_through_untouched() -> None:
    agent, fleet, flow = load_resources(AGENTS)
    dumped = agent.model_dump(by_alias=True, exclude_unset=True)
    assert dumped["spec"]["provider"] == "anthropic"
    assert dumped["spec"]["systemPrompt"].startswith("You are a Kubernetes expert.")
    assert dumped["spec"]["tools"] == ["kubectl", {"name": "prometheus", "source": "mcp"}]
    fleet_dump = fleet.model_dump(by_alias=True, exclude_unset=True)
    assert fleet_dump["spec"]["replicas"] == 3
    assert fleet_dump["spec"]["template"]["metadata"] == {"labels": {"role": "responder"}}
    flow_dump = flow.model_dump(by_alias=True, exclude_unset=True)
    assert flow_dump["spec"]["trigger"] == {"type": "alertmanager"}
    assert flow_dump["spec"]["steps"][0]["timeout"] == "5m"


def _raw_documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", [MEMORY, KNOWLEDGE_BASE, AGENTS], ids=lambda p: p.name)
def test_round_trip(path: Path) -> None:
    resources = load_resources(path)
    dumped = [r.model_dump(by_alias=True, exclude_unset=True) for r in resources]
    reloaded = [type(r).model_validate(d) for r, d in zip(resources, dumped, strict=True)]
    assert reloaded == resources
    if path is not KNOWLEDGE_BASE:  # the webhook secret dumps as a SecretStr, by design
        # Through YAML text and back, too: durations, sizes and crons dump as written.
        text = yaml.safe_dump_all(
            [r.model_dump(mode="json", by_alias=True, exclude_unset=True) for r in resources]
        )
        assert load_resources(text) == resources


def test_round_trip_keeps_original_spelling() -> None:
    memory = load_memory(MEMORY)
    dumped = memory.model_dump(mode="json", by_alias=True, exclude_unset=True)
    raw = _raw_documents(MEMORY)[0]
    assert dumped["spec"]["semantic"]["embedding"]["timeout"] == "1m30s"
    assert dumped["spec"]["lifecycle"] == raw["spec"]["lifecycle"]
    assert dumped["spec"]["access"] == raw["spec"]["access"]
    assert dumped["spec"]["backend"]["postgresql"] == raw["spec"]["backend"]["postgresql"]


def test_python_construction_by_snake_case_names() -> None:
    memory = Memory.model_validate(
        {
            "metadata": {"name": "py"},
            "spec": {"conversational": {"max_messages": 20, "ttl": timedelta(hours=1)}},
        }
    )
    assert memory.spec.conversational is not None
    assert memory.spec.conversational.max_messages == 20
    assert memory.model_dump(by_alias=True, exclude_unset=True)["spec"] == {
        "conversational": {"maxMessages": 20, "ttl": "1h"}
    }
    assert memory.api_version == "aof.agenticops.org/v1alpha1"


@pytest.mark.parametrize(
    ("cls", "kind"),
    [(Memory, "Memory"), (KnowledgeBase, "KnowledgeBase"), (Agent, "Agent")],
)
def test_resource_kind_defaults(cls: type[Resource], kind: str) -> None:
    assert cls.model_validate({"metadata": {"name": "x"}}).kind == kind


def test_loader_rejects_snake_case_keys_in_yaml() -> None:
    with pytest.raises(ManifestError, match=r"did you mean `maxMessages`"):
        load_memory(
            "apiVersion: aof.agenticops.org/v1alpha1\nkind: Memory\nmetadata: {name: x}\n"
            "spec: {conversational: {max_messages: 5}}\n"
        )
