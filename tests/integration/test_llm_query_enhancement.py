"""Query enhancement through the OpenAI-compatible path: ``llm_from_settings`` pointed at a
local server speaking OpenAI's chat API (the stub), over a real BM25 index. The server's
canned rewrites change what is found; its HTTP 500s and stalls make retrieval fall back to
the plain query, and the trace says so."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.schema import NodeWithScore, TextNode
from openai_stub import OpenAIStub

from aof_index.errors import LLMError
from aof_index.llms import llm_from_env, llm_from_settings
from aof_index_retrievers import BM25Index, BM25Retriever
from aof_index_retrievers.query_enhancement import QueryEnhancingRetriever

DOCS = {
    "crashloop": "Pods stuck in CrashLoopBackOff: the container exits and the kubelet "
    "restarts it with growing back-off; read the previous container logs.",
    "oom": "OOMKilled: the container exceeded its memory limit; raise the limit or fix the leak.",
    "cert": "TLS certificate expired on the ingress: cert-manager failed to renew it.",
    "dns": "DNS resolution fails inside the cluster: check the CoreDNS pods.",
}
QUERY = "app restarts again and again"

REPLIES = {
    "Queries:": "Here are two queries:\n1. OOMKilled memory limit\n2. container exceeded memory",
    "Passage:": "The container was OOMKilled because it exceeded its memory limit.",
}


def reply_for(body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    return next((text for label, text in REPLIES.items() if prompt.endswith(label)), "")


def ids(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.node_id for n in nodes]


@pytest.fixture
def keyword() -> BM25Retriever:
    index = BM25Index()
    index.add([TextNode(id_=key, text=text) for key, text in DOCS.items()])
    return BM25Retriever(index, similarity_top_k=2)


def enhancer(
    keyword: BM25Retriever, stub: OpenAIStub, timeout: float = 10.0
) -> QueryEnhancingRetriever:
    llm = llm_from_settings(
        "openai-compatible", base_url=stub.base_url, model="stub-model", timeout=timeout
    )
    return QueryEnhancingRetriever(
        keyword, llm, methods=["hyde", "multi_query"], num_queries=2, timeout=timeout
    )


async def test_rewrites_from_an_openai_compatible_server(keyword: BM25Retriever) -> None:
    assert "oom" not in ids(await keyword.aretrieve(QUERY))
    with OpenAIStub(reply_for=reply_for) as stub:
        nodes, trace = await enhancer(keyword, stub).aretrieve_with_trace(QUERY)

    assert "oom" in ids(nodes)
    assert not trace.fallback
    assert [(s.method, s.query) for s in trace.searches] == [
        ("original", QUERY),
        ("hyde", REPLIES["Passage:"]),
        ("multi_query", "OOMKilled memory limit"),
        ("multi_query", "container exceeded memory"),
    ]
    chats = [r for r in stub.requests if r["path"].endswith("/chat/completions")]
    assert len(chats) == 2
    assert {c["body"]["model"] for c in chats} == {"stub-model"}
    assert all(QUERY in c["body"]["messages"][-1]["content"] for c in chats)


def test_sync_retrieve_twice_against_the_server(keyword: BM25Retriever) -> None:
    # Each sync call runs its own event loop: the HTTP client must not outlive one.
    with OpenAIStub(reply_for=reply_for) as stub:
        retriever = enhancer(keyword, stub)
        first, trace1 = retriever.retrieve_with_trace(QUERY)
        second, trace2 = retriever.retrieve_with_trace(QUERY)
    assert ids(first) == ids(second)
    assert "oom" in ids(first)
    assert not trace1.fallback and not trace2.fallback


async def test_server_error_falls_back_to_the_plain_query(
    keyword: BM25Retriever, caplog: pytest.LogCaptureFixture
) -> None:
    plain = ids(await keyword.aretrieve(QUERY))
    with OpenAIStub(reply_for=reply_for, status=500) as stub:
        nodes, trace = await enhancer(keyword, stub).aretrieve_with_trace(QUERY)
        assert stub.requests  # the server was asked (and retried) before giving up

    assert ids(nodes) == plain
    assert trace.fallback
    assert [(m.method, m.status) for m in trace.methods] == [
        ("hyde", "error"),
        ("multi_query", "error"),
    ]
    assert "InternalServerError" in (trace.methods[0].error or "")
    assert [s.method for s in trace.searches] == ["original"]
    assert "falling back to the plain query" in caplog.text


async def test_server_stall_times_out_and_falls_back(keyword: BM25Retriever) -> None:
    plain = ids(await keyword.aretrieve(QUERY))
    with OpenAIStub(reply_for=reply_for, delay_s=2) as stub:
        retriever = enhancer(keyword, stub, timeout=0.2)
        nodes, trace = await retriever.aretrieve_with_trace(QUERY)
        await asyncio.sleep(0)  # let the cancelled requests close
    assert ids(nodes) == plain
    assert trace.fallback
    assert {m.status for m in trace.methods} == {"timeout"}


def test_settings_errors_name_the_missing_setting() -> None:
    with pytest.raises(LLMError, match="needs `base_url`"):
        llm_from_settings("openai-compatible", model="m")
    with pytest.raises(LLMError, match="needs `model`"):
        llm_from_settings("openai-compatible", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(LLMError, match=r"needs an API key: set `api_key` \(or OPENAI_API_KEY\)"):
        llm_from_settings("openai")
    with pytest.raises(LLMError, match="unknown LLM provider 'anthropic'"):
        llm_from_settings("anthropic")
    with pytest.raises(LLMError, match="needs `model_path`"):
        llm_from_settings("llama-cpp")
    with pytest.raises(LLMError, match="no file at"):
        llm_from_settings("llama-cpp", model_path="/nonexistent/model.gguf")
    with pytest.raises(LLMError, match="`timeout`"):
        llm_from_settings("openai", api_key="sk-x", timeout=0)
    with pytest.raises(LLMError, match="http"):
        llm_from_settings("openai-compatible", base_url="127.0.0.1:11434", model="m")


def test_openai_settings_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = llm_from_settings("openai", api_key="sk-test", timeout=5)
    assert llm.metadata.model_name == "gpt-4o-mini"
    assert llm.api_base == "https://api.openai.com/v1"  # type: ignore[attr-defined]
    assert llm_from_env() is None
    monkeypatch.setenv("AOF_INDEX_LLM_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("AOF_INDEX_LLM_MODEL", "llama3.1:8b")
    from_env = llm_from_env()
    assert from_env is not None
    assert from_env.metadata.model_name == "llama3.1:8b"
    assert from_env.api_base == "http://127.0.0.1:11434/v1"  # type: ignore[attr-defined]
