"""The cross-field checks: each rejects the broken manifest and accepts the fixed one."""

from __future__ import annotations

import pytest

from aof_index.errors import ManifestError
from aof_index.spec import load_resources

HEADER = "apiVersion: aof.agenticops.org/v1alpha1\n"


def doc(kind: str, spec: str) -> str:
    return f"{HEADER}kind: {kind}\nmetadata: {{name: x}}\nspec: {spec}\n"


BROKEN_AND_FIXED = [
    pytest.param(
        "Memory",
        "{backend: {type: Redis}}",
        "{backend: {type: Redis, redis: {url: 'redis://localhost:6379'}}}",
        "spec.backend.redis",
        "backend.type is Redis but the `redis` section is missing",
        id="redis-needs-section",
    ),
    pytest.param(
        "Memory",
        "{backend: {type: PostgreSQL}}",
        "{backend: {type: PostgreSQL, postgresql: {host: db}}}",
        "spec.backend.postgresql",
        "`postgresql` section is missing",
        id="postgresql-needs-section",
    ),
    pytest.param(
        "Memory",
        "{semantic: {indexing: {strategy: scheduled}}}",
        "{semantic: {indexing: {strategy: scheduled, schedule: '0 * * * *'}}}",
        "spec.semantic.indexing.schedule",
        "indexing.strategy is scheduled but no `schedule` is given",
        id="scheduled-indexing-needs-schedule",
    ),
    pytest.param(
        "KnowledgeBase",
        "{indexing: {schedule: {type: cron}}}",
        "{indexing: {schedule: {type: cron, cron: '0 */6 * * *'}}}",
        "spec.indexing.schedule.cron",
        "schedule.type is cron but no `cron` expression is given",
        id="cron-schedule-needs-cron",
    ),
    pytest.param(
        "KnowledgeBase",
        "{sources: [{name: docs, type: LocalFiles}]}",
        "{sources: [{name: docs, type: LocalFiles, localFiles: {paths: [/docs]}}]}",
        "spec.sources[0].localFiles",
        "source type is LocalFiles but the `localFiles` section",
        id="source-needs-its-section",
    ),
    pytest.param(
        "KnowledgeBase",
        "{sources: [{name: a, type: URL, url: {}}, {name: a, type: URL, url: {}}]}",
        "{sources: [{name: a, type: URL, url: {}}, {name: b, type: URL, url: {}}]}",
        "spec.sources",
        "source names must be unique",
        id="unique-source-names",
    ),
    pytest.param(
        "KnowledgeBase",
        "{chunking: {fixed: {chunkSize: 200, overlap: 200}}}",
        "{chunking: {fixed: {chunkSize: 200, overlap: 50}}}",
        "spec.chunking.fixed.overlap",
        "overlap (200) must be smaller than chunkSize (200)",
        id="overlap-below-chunk-size",
    ),
    pytest.param(
        "KnowledgeBase",
        "{chunking: {recursive: {chunkSize: 100}}}",
        "{chunking: {recursive: {chunkSize: 100, overlap: 10}}}",
        "spec.chunking.recursive.overlap",
        "overlap (200) must be smaller than chunkSize (100)",
        id="default-overlap-vs-small-chunk",
    ),
    pytest.param(
        "KnowledgeBase",
        "{chunking: {semantic: {minChunkSize: 3000}}}",
        "{chunking: {semantic: {minChunkSize: 300}}}",
        "spec.chunking.semantic.minChunkSize",
        "minChunkSize (3000) must not exceed maxChunkSize (2000)",
        id="semantic-min-below-max",
    ),
    pytest.param(
        "Agent",
        "{memory: {ref: ops-memory, inline: {conversational: {}}}}",
        "{memory: {inline: {conversational: {}}}}",
        "spec.memory.inline",
        "`ref` and `inline` are mutually exclusive",
        id="agent-memory-ref-xor-inline",
    ),
    pytest.param(
        "Agent",
        "{memory: {inline: {backend: {type: S3}}}}",
        "{memory: {inline: {backend: {type: S3, s3: {bucket: b}}}}}",
        "spec.memory.inline.backend.s3",
        "`s3` section is missing",
        id="inline-memory-is-checked",
    ),
    pytest.param(
        "Agent",
        "{context: {static: [{name: a, source: {}}]}}",
        "{context: {static: [{name: a, source: {inline: text}}]}}",
        "spec.context.static[0].source.inline",
        "give exactly one of `inline` (text) and `configMapRef`",
        id="static-source-needs-one",
    ),
    pytest.param(
        "Agent",
        "{context: {dynamic: [{name: a, source: {type: K8sAPI}}]}}",
        "{context: {dynamic: [{name: a, source: {type: K8sAPI, resource: pods}}]}}",
        "spec.context.dynamic[0].source.resource",
        "a K8sAPI source needs `resource`",
        id="dynamic-source-needs-its-field",
    ),
    pytest.param(
        "Agent",
        "{memory: {rag: {adaptive: {minTopK: 10, maxTopK: 3}}}}",
        "{memory: {rag: {adaptive: {minTopK: 3, maxTopK: 10}}}}",
        "spec.memory.rag.adaptive.minTopK",
        "minTopK (10) must not exceed maxTopK (3)",
        id="adaptive-min-below-max",
    ),
    pytest.param(
        "AgentFlow",
        "{steps: [{name: s, context: {dynamic: [{source: {type: FlowContext}}]}}]}",
        "{steps: [{name: s, context: {dynamic: [{source: {type: FlowContext, path: d}}]}}]}",
        "spec.steps[0].context.dynamic[0].source.path",
        "a FlowContext source needs `path`",
        id="flow-step-context-is-checked",
    ),
]


@pytest.mark.parametrize(("kind", "broken", "fixed", "path", "message"), BROKEN_AND_FIXED)
def test_check(kind: str, broken: str, fixed: str, path: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_resources(doc(kind, broken))
    assert [i.path for i in info.value.issues] == [path]
    assert message in info.value.issues[0].message
    assert load_resources(doc(kind, fixed))[0].kind == kind


@pytest.mark.parametrize(
    "spec",
    [
        "{backend: {type: SQLite}}",  # the embedded default needs no section
        "{semantic: {vectorStore: {type: Qdrant, qdrant: {collection: c}}}}",  # local mode
        "{semantic: {vectorStore: {type: Chroma}}}",  # embedded Chroma
    ],
)
def test_embedded_defaults_are_not_over_required(spec: str) -> None:
    assert load_resources(doc("Memory", spec))[0].kind == "Memory"
