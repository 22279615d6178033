"""OpenAI and Cohere embeddings through the same builder, against a local server speaking
their embeddings APIs (the hosted services cannot be reached from tests). The API key comes from
the manifest's secret reference, resolved late from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai_stub import DIMENSIONS, OpenAIStub

from aof_index import build_memory, ingest_documents
from aof_index.spec import load_resources
from aof_index_readers import LocalFilesReader

MANIFEST = """
apiVersion: aof.agenticops.org/v1alpha1
kind: Memory
metadata: {name: hosted}
spec:
  semantic:
    enabled: true
    embedding:
      provider: OpenAI
      model: text-embedding-3-small
      batchSize: 16
      apiKeySecretRef: {name: openai-credentials, key: api-key}
    retrieval:
      hybridSearch: {enabled: true}
"""


def test_openai_embeddings_from_manifest(runbooks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOF_SECRET_OPENAI_CREDENTIALS_API_KEY", "sk-test-from-secret")
    with OpenAIStub() as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        (resource,) = load_resources(MANIFEST, source="hosted.yaml")
        memory = build_memory(resource)
        report = ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
        hits = memory.retriever(top_k=2, strategy="semantic").retrieve(
            "renew an expired TLS certificate with cert-manager"
        )
    assert report.added == 6
    assert Path(hits[0].node.metadata["source"]).name == "certificate-expiry.md"
    embedding_calls = [r for r in stub.requests if r["path"].endswith("/embeddings")]
    assert embedding_calls
    assert {r["auth"] for r in embedding_calls} == {"Bearer sk-test-from-secret"}
    assert {r["body"]["model"] for r in embedding_calls} == {"text-embedding-3-small"}
    assert max(len(r["body"]["input"]) for r in embedding_calls) <= 16  # batchSize honoured
    assert len(hits[0].node.embedding or []) in (0, DIMENSIONS)


def test_cohere_embeddings_from_manifest(runbooks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHERE_API_KEY", "co-test-key")
    with OpenAIStub() as stub:
        monkeypatch.setenv("CO_API_URL", stub.base_url.removesuffix("/v1"))
        (resource,) = load_resources(
            MANIFEST.replace("provider: OpenAI", "provider: Cohere")
            .replace("text-embedding-3-small", "embed-english-v3.0")
            .replace("      apiKeySecretRef: {name: openai-credentials, key: api-key}\n", ""),
            source="cohere.yaml",
        )
        memory = build_memory(resource)
        ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
        hits = memory.retriever(top_k=1, strategy="semantic").retrieve(
            "a NetworkPolicy that blocks egress to UDP and TCP port 53 for CoreDNS"
        )
    assert Path(hits[0].node.metadata["source"]).name == "dns.md"
    calls = [r for r in stub.requests if r["path"].endswith("/v2/embed")]
    assert calls and {r["auth"] for r in calls} == {"Bearer co-test-key"}
    assert {r["body"]["model"] for r in calls} == {"embed-english-v3.0"}
