"""``build_rag``: every field of an agent's ``memory.rag`` section changes what is retrieved.

Real: the embedded default Memory (Chroma on disk, BM25, the local MiniLM model) holding a
few runbooks ingested here. The LLM is a deterministic local stand-in (a ``CustomLLM``
defined below), used only where an LLM's text is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import CustomLLM
from pydantic import Field, PrivateAttr

from aof_index import build_memory
from aof_index.build.memory import MemoryComponents
from aof_index.engine.rag import RagRetriever, build_rag
from aof_index.errors import BackendUnavailableError
from aof_index.knowledge.ingest import ingest_documents
from aof_index.spec.agent import AgentRag

pytestmark = pytest.mark.slow

RUNBOOKS = {
    "dns": ("runbook", "CoreDNS fails to resolve service names: check the ndots option."),
    "oom": ("runbook", "A container is OOMKilled when it exceeds its memory limit."),
    "disk": ("runbook", "A node reports DiskPressure when the kubelet runs out of disk."),
    "certs": ("postmortem", "An expired TLS certificate broke the ingress for an hour."),
    "etcd": ("runbook", "etcd needs a defragmentation when its database grows too large."),
    "hpa": ("postmortem", "The autoscaler added pods too late because metrics lagged."),
    "pending": ("runbook", "A pod stays Pending when no node has enough CPU for it."),
    "evicted": ("runbook", "Pods are evicted from a node under memory pressure."),
}


class Rewriter(CustomLLM):
    """Answers every prompt with ``reply`` and counts the calls."""

    reply: str = ""
    _calls: list[str] = PrivateAttr(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="rewriter")

    @property
    def calls(self) -> list[str]:
        return self._calls

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._calls.append(prompt)
        return CompletionResponse(text=self.reply)

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        raise NotImplementedError


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory) -> MemoryComponents:
    home = tmp_path_factory.mktemp("rag-home")
    memory = build_memory(home=home)
    documents = [
        Document(text=text, doc_id=name, metadata={"source": name, "type": kind})
        for name, (kind, text) in RUNBOOKS.items()
    ]
    ingest_documents(memory, documents)
    return memory


def rag(data: dict[str, Any]) -> AgentRag:
    return AgentRag.model_validate(data)


def ids(retriever: RagRetriever, query: str) -> list[str]:
    return [str(hit.node.ref_doc_id) for hit in retriever.retrieve(query)]


def test_top_k_and_strategy(memory: MemoryComponents) -> None:
    assert len(ids(build_rag(memory, rag({"topK": 3})), "memory limit")) == 3
    assert len(ids(build_rag(memory, rag({"retrieval": {"topK": 2}, "topK": 6})), "dns")) == 2
    keyword = build_rag(memory, rag({"topK": 8, "retrieval": {"strategy": "keyword"}}))
    semantic = build_rag(memory, rag({"topK": 8, "retrieval": {"strategy": "semantic"}}))
    # BM25 finds only documents sharing a word with the query; dense retrieval ranks all.
    assert ids(keyword, "defragmentation") == ["etcd"]
    assert len(ids(semantic, "defragmentation")) == 8


def test_filter_applies_to_every_side(memory: MemoryComponents) -> None:
    only = rag({"topK": 8, "retrieval": {"filter": {"metadata.type": "postmortem"}}})
    assert sorted(ids(build_rag(memory, only), "what went wrong with pods")) == ["certs", "hpa"]
    listed = rag({"topK": 8, "retrieval": {"filter": {"type": ["postmortem", "runbook"]}}})
    assert len(ids(build_rag(memory, listed), "pods")) == 8


def test_threshold_drops_weak_matches(memory: MemoryComponents) -> None:
    plain = build_rag(memory, rag({"topK": 8, "retrieval": {"strategy": "semantic"}}))
    scores = [hit.score or 0.0 for hit in plain.retrieve("expired TLS certificate")]
    cut = (scores[0] + scores[1]) / 2
    strict = rag({"topK": 8, "threshold": cut, "retrieval": {"strategy": "semantic"}})
    assert ids(build_rag(memory, strict), "expired TLS certificate") == ["certs"]


def test_hybrid_weights_and_fusion_change_the_scores(memory: MemoryComponents) -> None:
    query = "node memory pressure eviction"
    linear = build_rag(memory, rag({"topK": 5}))
    rrf = build_rag(memory, rag({"topK": 5, "fusion": {"strategy": "rrf", "k": 60}}))
    rrf_scores = [hit.score for hit in rrf.retrieve(query)]
    assert all(s is not None and s <= 2 / 61 + 1e-9 for s in rrf_scores)  # RRF's scale
    assert rrf_scores != [hit.score for hit in linear.retrieve(query)]
    keyword_only = rag({"topK": 8, "retrieval": {"hybridWeights": {"semantic": 0, "keyword": 1}}})
    assert ids(build_rag(memory, keyword_only), "defragmentation")[0] == "etcd"


def test_rerank_adaptive_and_context_budget(memory: MemoryComponents) -> None:
    reranked = build_rag(memory, rag({"topK": 6, "retrieval": {"rerank": {"topK": 2}}}))
    assert len(ids(reranked, "pods evicted under memory pressure")) == 2

    adaptive = rag({"topK": 8, "adaptive": {"enabled": True, "minTopK": 1, "maxTopK": 8}})
    chosen = ids(build_rag(memory, adaptive), "etcd defragmentation database")
    assert 1 <= len(chosen) < 8 and chosen[0] == "etcd"

    budget = rag(
        {
            "topK": 8,
            "retrieval": {"contextOptimization": {"enabled": True, "maxTokens": 40}},
        }
    )
    hits = build_rag(memory, budget).retrieve("pods and nodes")
    assert 1 <= len(hits) < 8
    assert sum(len(hit.node.get_content().split()) for hit in hits) <= 40


def test_query_enhancement_needs_an_llm_and_uses_it(memory: MemoryComponents) -> None:
    spec = rag({"topK": 3, "queryEnhancement": {"enabled": True, "methods": ["queryExpansion"]}})
    with pytest.raises(BackendUnavailableError, match=r"rag\.queryEnhancement"):
        build_rag(memory, spec)
    llm = Rewriter(reply="certificate, TLS, ingress")
    enhanced = build_rag(memory, spec, llm=llm)
    assert "certs" in ids(enhanced, "why did the site go down for an hour")
    assert llm.calls  # the LLM was asked for the expansion

    multi = rag({"topK": 3, "multiQuery": {"enabled": True, "queries": 2}})
    llm = Rewriter(reply="1. etcd database defragmentation\n2. etcd grows too large")
    assert ids(build_rag(memory, multi, llm=llm), "keep the key-value store small")[0] == "etcd"


def test_default_section_is_the_memory_default(memory: MemoryComponents, tmp_path: Path) -> None:
    default = build_rag(memory)
    assert [h.node.node_id for h in default.retrieve("OOMKilled")] == [
        h.node.node_id for h in memory.retriever().retrieve("OOMKilled")
    ]
