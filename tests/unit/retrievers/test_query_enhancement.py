"""QueryEnhancingRetriever: HyDE, decomposition, expansion and multi-query over a real BM25
index (and a real vector index), with a deterministic local LLM returning canned rewrites.

No timing assertions: concurrency is shown by counting calls in flight at once (a gate that
only opens when all expected calls have arrived), timeouts by an LLM that never answers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index_instrumentation import get_dispatcher

from aof_index_retrievers import BM25Index, BM25Retriever
from aof_index_retrievers.query_enhancement import (
    MULTI_QUERY_PROMPT,
    QueryEnhancementEvent,
    QueryEnhancementTrace,
    QueryEnhancingRetriever,
    parse_list,
    parse_terms,
)

# ------------------------------------------------------------------------ test doubles

# Each prompt ends with its own label; the canned LLM answers by it.
_LABELS = {
    "Passage:": "hyde",
    "Sub-questions:": "decomposition",
    "Terms:": "expansion",
    "Queries:": "multi_query",
}


def _method_of(prompt: str) -> str:
    for label, method in _LABELS.items():
        if prompt.rstrip().endswith(label):
            return method
    raise AssertionError(f"unexpected prompt: {prompt[-80:]!r}")


class CannedLLM(CustomLLM):
    """A sync-only local LLM answering each method's prompt with a canned text."""

    answers: dict[str, str] = Field(default_factory=dict)
    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="canned")

    @property
    def prompts(self) -> list[str]:
        return self._prompts

    def answer(self, prompt: str) -> str:
        self._prompts.append(prompt)
        return self.answers.get(_method_of(prompt), "")

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer(prompt))

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        raise NotImplementedError


class AsyncCannedLLM(CannedLLM):
    """Natively async: can fail, hang, or wait at a gate, per method."""

    fail: set[str] = Field(default_factory=set)
    hang: set[str] = Field(default_factory=set)
    gate_size: int = 0
    _in_flight: int = PrivateAttr(default=0)
    _max_in_flight: int = PrivateAttr(default=0)
    _gate: asyncio.Event | None = PrivateAttr(default=None)

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        method = _method_of(prompt)
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.gate_size:
                if self._gate is None:
                    self._gate = asyncio.Event()
                if self._in_flight >= self.gate_size:
                    self._gate.set()
                await asyncio.wait_for(self._gate.wait(), timeout=5)
            if method in self.hang:
                await asyncio.sleep(3600)
            if method in self.fail:
                raise RuntimeError(f"model overloaded ({method})")
            return CompletionResponse(text=self.answer(prompt))
        finally:
            self._in_flight -= 1


class BlockingLLM(CannedLLM):
    """Sync-only and blocking until released: its calls must run off the event loop."""

    _release: threading.Event = PrivateAttr(default_factory=threading.Event)
    _finished: threading.Event = PrivateAttr(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def release(self) -> None:
        self._release.set()

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._release.wait(timeout=30)
        try:
            return super().complete(prompt, formatted, **kwargs)
        finally:
            self._finished.set()


class GatedRetriever(BaseRetriever):
    """Wraps a retriever; each async search waits until ``expected`` searches are in flight
    (so a sequential caller would time out), and can fail for chosen query strings."""

    def __init__(
        self, inner: BaseRetriever, expected: int = 0, fail_on: Sequence[str] = ()
    ) -> None:
        self.inner = inner
        self.expected = expected
        self.fail_on = set(fail_on)
        self.queries: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._gate: asyncio.Event | None = None
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        raise AssertionError("the sync path must not be used")

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.queries.append(query_bundle.query_str)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.expected:
                if self._gate is None:
                    self._gate = asyncio.Event()
                if self.in_flight >= self.expected:
                    self._gate.set()
                await asyncio.wait_for(self._gate.wait(), timeout=5)
            if query_bundle.query_str in self.fail_on:
                raise ConnectionError("vector store unreachable")
            return await self.inner.aretrieve(query_bundle)
        finally:
            self.in_flight -= 1


class FixedRetriever(BaseRetriever):
    """Returns a fixed ranked list per query string."""

    def __init__(self, ranked: dict[str, list[str]]) -> None:
        self.ranked = ranked
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        ids = self.ranked.get(query_bundle.query_str, [])
        return [
            NodeWithScore(node=TextNode(id_=i, text=f"text of {i}"), score=float(len(ids) - n))
            for n, i in enumerate(ids)
        ]


class Events(BaseEventHandler):
    """Collects the QueryEnhancementEvents emitted through LlamaIndex instrumentation."""

    seen: list[QueryEnhancementEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, QueryEnhancementEvent):
            self.seen.append(event)


@pytest.fixture
def events() -> Iterator[Events]:
    handler = Events()
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def ids(results: Sequence[NodeWithScore]) -> list[str]:
    return [r.node.node_id for r in results]


def bm25_retriever(bm25: BM25Index, top_k: int = 3) -> BM25Retriever:
    return BM25Retriever(bm25, similarity_top_k=top_k)


# ------------------------------------------------------------------------ each method


async def test_multi_query_finds_a_document_only_a_rewrite_matches(bm25: BM25Index) -> None:
    base = bm25_retriever(bm25)
    query = "app restarts again and again"
    assert "oom" not in ids(await base.aretrieve(query))
    llm = CannedLLM(
        answers={
            "multi_query": "Here are 3 queries:\n1. OOMKilled memory limit\n"
            "2. container exits kubelet restarts back-off\n3. **OOMKilled memory limit**\n"
            "4. pods restarting forever"
        }
    )
    retriever = QueryEnhancingRetriever(base, llm, methods=["multi_query"], num_queries=2)

    nodes, trace = await retriever.aretrieve_with_trace(query)

    assert "oom" in ids(nodes)
    assert ids(nodes)[0] == "pods"  # original and a rewrite agree on it
    # the preamble is not a query, the repeat is dropped, the list is capped at 2
    assert [s.query for s in trace.searches] == [
        query,
        "OOMKilled memory limit",
        "container exits kubelet restarts back-off",
    ]
    assert [s.method for s in trace.searches] == ["original", "multi_query", "multi_query"]
    assert trace.methods[0].status == "ok" and not trace.fallback
    assert "2 different search queries" in llm.prompts[0]
    assert query in llm.prompts[0]


async def test_hyde_searches_the_hypothetical_passage_with_the_query(bm25: BM25Index) -> None:
    base = bm25_retriever(bm25)
    query = "https broken on the website"
    assert await base.aretrieve(query) == []  # no shared vocabulary at all
    passage = (
        "The TLS certificate of the ingress expired because cert-manager could not renew it; "
        "check the ACME challenge."
    )
    llm = CannedLLM(answers={"hyde": f"<think>they mean TLS</think>\nPassage: {passage}"})
    retriever = QueryEnhancingRetriever(base, llm, methods=["hypotheticalDocument"])

    nodes, trace = await retriever.aretrieve_with_trace(query)

    assert ids(nodes)[0] == "cert"
    assert [(s.method, s.query) for s in trace.searches] == [
        ("original", query),
        ("hyde", passage),
    ]
    assert trace.searches[0].hits == 0


async def test_hyde_embeds_the_passage_for_dense_retrieval(
    vector_index: VectorStoreIndex,
) -> None:
    base = vector_index.as_retriever(similarity_top_k=2)
    query = "website insecure warning"
    passage = "TLS certificate expired on the ingress: cert-manager failed to renew it."
    retriever = QueryEnhancingRetriever(
        base, CannedLLM(answers={"hyde": passage}), methods=["hyde"], similarity_top_k=2
    )
    plain = ids(await base.aretrieve(query))
    assert "cert" not in plain

    nodes, trace = await retriever.aretrieve_with_trace(query)

    assert "cert" in ids(nodes)
    assert trace.searches[1].query == passage


async def test_decomposition_merges_the_sub_questions_results(bm25: BM25Index) -> None:
    base = bm25_retriever(bm25, top_k=1)
    query = "dns fails and certificate expired"
    assert ids(await base.aretrieve(query)) == ["cert"]
    llm = CannedLLM(
        answers={
            "decomposition": "- Why does DNS resolution fail?\n"
            "- Why did the TLS certificate expire?\n"
            "- Why does DNS resolution fail"  # a repeat, ignoring punctuation
        }
    )
    retriever = QueryEnhancingRetriever(
        base, llm, methods=["queryDecomposition"], similarity_top_k=3
    )

    nodes, trace = await retriever.aretrieve_with_trace(query)

    assert set(ids(nodes)) == {"cert", "dns"}
    assert ids(nodes)[0] == "cert"  # found by the original and a sub-question
    assert [s.query for s in trace.searches[1:]] == [
        "Why does DNS resolution fail?",
        "Why did the TLS certificate expire?",
    ]


async def test_expansion_appends_new_related_terms_to_the_query(bm25: BM25Index) -> None:
    base = bm25_retriever(bm25)
    query = "https broken"
    llm = CannedLLM(answers={"expansion": "TLS, certificate, HTTPS, cert-manager; broken"})
    retriever = QueryEnhancingRetriever(base, llm, methods=["expansion"])

    nodes, trace = await retriever.aretrieve_with_trace(query)

    assert ids(nodes)[0] == "cert"
    # terms the query already has (https, broken) are not repeated
    assert trace.searches[1].query == "https broken TLS certificate cert-manager"
    assert trace.searches[1].method == "expansion"


async def test_all_methods_together_ask_once_each(bm25: BM25Index) -> None:
    llm = CannedLLM(
        answers={
            "hyde": "cert-manager failed to renew the certificate",
            "decomposition": "1. why is the certificate expired",
            "expansion": "TLS",
            "multi_query": "1) OOMKilled memory limit",
        }
    )
    retriever = QueryEnhancingRetriever(
        bm25_retriever(bm25),
        llm,
        methods=["hyde", "decomposition", "expansion", "multi_query", "hyde"],
    )
    _, trace = await retriever.aretrieve_with_trace("https broken")
    assert len(llm.prompts) == 4
    assert [m.method for m in trace.methods] == [
        "hyde",
        "decomposition",
        "expansion",
        "multi_query",
    ]
    assert [s.method for s in trace.searches] == [
        "original",
        "hyde",
        "decomposition",
        "expansion",
        "multi_query",
    ]


async def test_variants_equal_to_the_query_are_dropped(bm25: BM25Index) -> None:
    query = "dns resolution"
    llm = CannedLLM(answers={"multi_query": "1. DNS resolution?\n2.  dns   RESOLUTION"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm)
    nodes, trace = await retriever.aretrieve_with_trace(query)
    assert trace.methods[0].status == "empty"
    assert len(trace.searches) == 1
    assert not trace.fallback  # the LLM answered; nothing failed
    assert ids(nodes) == ids(await bm25_retriever(bm25).aretrieve(query))


# ------------------------------------------------------------------------ fusion


def _two_rewrites_for_b() -> tuple[FixedRetriever, CannedLLM]:
    base = FixedRetriever({"q": ["a", "c"], "r1": ["b", "a"], "r2": ["b"]})
    return base, CannedLLM(answers={"multi_query": "1. r1\n2. r2"})


async def test_rewrites_equal_weight_outvote_the_original() -> None:
    base, llm = _two_rewrites_for_b()
    nodes = await QueryEnhancingRetriever(base, llm, similarity_top_k=5).aretrieve("q")
    assert ids(nodes) == ["b", "a", "c"]
    assert nodes[0].score == pytest.approx(2 / 61)
    assert nodes[1].score == pytest.approx(1 / 61 + 1 / 62)


async def test_method_weights_are_honoured() -> None:
    base, llm = _two_rewrites_for_b()
    retriever = QueryEnhancingRetriever(
        base, llm, method_weights={"multiQuery": 0.4}, k=10, similarity_top_k=5
    )
    nodes = await retriever.aretrieve("q")
    # b, first with equal weights, drops below c (found by the original query alone)
    assert ids(nodes) == ["a", "c", "b"]
    assert nodes[0].score == pytest.approx(1 / 11 + 0.4 / 12)
    assert nodes[1].score == pytest.approx(1 / 12)
    assert nodes[2].score == pytest.approx(0.8 / 11)
    _, trace = await retriever.aretrieve_with_trace("q")
    assert [s.weight for s in trace.searches] == [1.0, 0.4, 0.4]


async def test_results_are_deduplicated_by_node_id() -> None:
    base, llm = _two_rewrites_for_b()
    nodes = await QueryEnhancingRetriever(base, llm, similarity_top_k=10).aretrieve("q")
    assert sorted(ids(nodes)) == ["a", "b", "c"]


async def test_linear_fusion_and_top_k() -> None:
    base, llm = _two_rewrites_for_b()
    retriever = QueryEnhancingRetriever(base, llm, fusion="linear", similarity_top_k=1)
    assert ids(await retriever.aretrieve("q")) == ["b"]


def test_a_rewrite_may_not_outweigh_the_original(bm25: BM25Index) -> None:
    with pytest.raises(ValueError, match="outweigh the original"):
        QueryEnhancingRetriever(
            bm25_retriever(bm25), CannedLLM(), original_weight=0.5, method_weights={"hyde": 0.6}
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["rewrite"]}, "unknown query enhancement method 'rewrite'"),
        ({"num_queries": 0}, "num_queries"),
        ({"timeout": 0}, "timeout"),
        ({"fusion": "borda"}, "unknown fusion"),
        ({"method_weights": {"hyde": -1}}, "finite number >= 0"),
        ({"method_weights": {"nope": 1}}, "unknown method 'nope'"),
        ({"similarity_top_k": 0}, "similarity_top_k"),
    ],
)
def test_bad_settings_are_refused(bm25: BM25Index, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QueryEnhancingRetriever(bm25_retriever(bm25), CannedLLM(), **kwargs)


# ------------------------------------------------------------------------ concurrency


async def test_llm_calls_and_searches_run_concurrently(bm25: BM25Index) -> None:
    llm = AsyncCannedLLM(
        answers={
            "hyde": "cert-manager renew certificate",
            "expansion": "TLS",
            "multi_query": "1. OOMKilled memory limit\n2. etcd disk sync",
        },
        gate_size=3,  # all three LLM calls must be in flight at once to proceed
    )
    base = GatedRetriever(bm25_retriever(bm25), expected=5)  # original + 4 variants
    retriever = QueryEnhancingRetriever(
        base, llm, methods=["hyde", "expansion", "multi_query"], timeout=30
    )

    _, trace = await retriever.aretrieve_with_trace("https broken")

    assert llm.max_in_flight == 3
    assert base.max_in_flight == 5
    assert all(m.status == "ok" for m in trace.methods)


def test_sync_retrieve_runs_the_same_concurrent_path(bm25: BM25Index) -> None:
    llm = AsyncCannedLLM(answers={"multi_query": "1. OOMKilled memory limit\n2. etcd disk sync"})
    base = GatedRetriever(bm25_retriever(bm25), expected=3)
    retriever = QueryEnhancingRetriever(base, llm, similarity_top_k=5)
    nodes, trace = retriever.retrieve_with_trace("app restarts again and again")
    assert base.max_in_flight == 3
    assert {"oom", "etcd", "pods"} <= set(ids(nodes))
    assert retriever.last_trace == trace


async def test_sync_retrieve_works_inside_a_running_event_loop(bm25: BM25Index) -> None:
    llm = CannedLLM(answers={"multi_query": "1. OOMKilled memory limit"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm)
    nodes, trace = retriever.retrieve_with_trace("app restarts again and again")  # loop running
    assert "oom" in ids(nodes)
    assert trace.searches[1].query == "OOMKilled memory limit"


async def test_concurrent_calls_each_get_their_own_trace(bm25: BM25Index) -> None:
    llm = CannedLLM(answers={"multi_query": "1. OOMKilled memory limit"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm)
    (_, first), (_, second) = await asyncio.gather(
        retriever.aretrieve_with_trace("dns resolution"),
        retriever.aretrieve_with_trace("slow api"),
    )
    assert first.query == "dns resolution"
    assert second.query == "slow api"


# ------------------------------------------------------------------------ fallback


async def test_llm_timeout_falls_back_to_the_plain_query(
    bm25: BM25Index, caplog: pytest.LogCaptureFixture, events: Events
) -> None:
    base = bm25_retriever(bm25)
    llm = AsyncCannedLLM(hang={"hyde", "multi_query"})
    retriever = QueryEnhancingRetriever(base, llm, methods=["hyde", "multi_query"], timeout=0.05)
    query = "dns resolution"

    with caplog.at_level(logging.WARNING, logger="aof_index_retrievers.query_enhancement"):
        nodes, trace = await retriever.aretrieve_with_trace(query)

    assert ids(nodes) == ids(await base.aretrieve(query))
    assert trace.fallback
    assert [(m.method, m.status) for m in trace.methods] == [
        ("hyde", "timeout"),
        ("multi_query", "timeout"),
    ]
    assert "no answer within 0.05s" in (trace.methods[0].error or "")
    assert [s.method for s in trace.searches] == ["original"]
    assert "falling back to the plain query" in caplog.text
    assert "hyde timed out" in caplog.text
    assert query not in caplog.text  # the query text is not logged at WARNING
    assert [e.trace for e in events.seen] == [trace]
    assert trace.to_dict()["failed"] == ["hyde", "multi_query"]


async def test_llm_error_falls_back_to_the_plain_query(bm25: BM25Index, events: Events) -> None:
    base = bm25_retriever(bm25)
    retriever = QueryEnhancingRetriever(base, AsyncCannedLLM(fail={"multi_query"}))

    nodes, trace = await retriever.aretrieve_with_trace("dns resolution")

    assert ids(nodes) == ids(await base.aretrieve("dns resolution"))
    assert trace.fallback
    assert trace.methods[0].status == "error"
    assert trace.methods[0].error == "RuntimeError: model overloaded (multi_query)"
    assert events.seen[-1].trace.fallback


async def test_one_failed_method_keeps_the_others(bm25: BM25Index) -> None:
    llm = AsyncCannedLLM(answers={"multi_query": "1. OOMKilled memory limit"}, fail={"hyde"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm, methods=["hyde", "multi_query"])
    nodes, trace = await retriever.aretrieve_with_trace("app restarts again and again")
    assert "oom" in ids(nodes)
    assert not trace.fallback
    assert [m.method for m in trace.failed] == ["hyde"]


async def test_a_blocking_sync_llm_still_times_out(bm25: BM25Index) -> None:
    llm = BlockingLLM(answers={"multi_query": "1. OOMKilled memory limit"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm, timeout=0.05)
    try:
        _, trace = await retriever.aretrieve_with_trace("dns resolution")
        assert not llm.finished  # control came back while the generation still runs
    finally:
        llm.release()
    assert trace.fallback
    assert trace.methods[0].status == "timeout"


def test_a_blocking_sync_llm_times_out_in_sync_retrieve(bm25: BM25Index) -> None:
    # asyncio.run joins its default executor on exit; the LLM thread must not be in it
    llm = BlockingLLM(answers={"multi_query": "1. OOMKilled memory limit"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm, timeout=0.05)
    try:
        _, trace = retriever.retrieve_with_trace("dns resolution")
        assert not llm.finished
    finally:
        llm.release()
    assert trace.fallback and trace.methods[0].status == "timeout"


def test_a_sync_only_llm_answers_through_its_thread(bm25: BM25Index) -> None:
    llm = BlockingLLM(answers={"multi_query": "1. OOMKilled memory limit"})
    llm.release()
    nodes, trace = QueryEnhancingRetriever(bm25_retriever(bm25), llm).retrieve_with_trace(
        "app restarts again and again"
    )
    assert "oom" in ids(nodes) and trace.methods[0].status == "ok"


async def test_a_failed_variant_search_is_dropped_and_recorded(bm25: BM25Index) -> None:
    llm = CannedLLM(answers={"multi_query": "1. OOMKilled memory limit\n2. etcd disk sync"})
    base = GatedRetriever(bm25_retriever(bm25), fail_on=["etcd disk sync"])
    nodes, trace = await QueryEnhancingRetriever(base, llm).aretrieve_with_trace(
        "app restarts again and again"
    )
    assert "oom" in ids(nodes) and "etcd" not in ids(nodes)
    assert trace.searches[2].hits is None
    assert trace.searches[2].error == "ConnectionError: vector store unreachable"


async def test_a_failed_original_search_raises(bm25: BM25Index) -> None:
    base = GatedRetriever(bm25_retriever(bm25), fail_on=["dns resolution"])
    retriever = QueryEnhancingRetriever(base, CannedLLM(answers={"multi_query": "1. dns"}))
    with pytest.raises(ConnectionError):
        await retriever.aretrieve("dns resolution")


async def test_no_methods_means_the_plain_query(bm25: BM25Index) -> None:
    llm = CannedLLM()
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm, methods=[])
    nodes, trace = await retriever.aretrieve_with_trace("dns resolution")
    assert llm.prompts == []
    assert ids(nodes) == ids(await bm25_retriever(bm25).aretrieve("dns resolution"))
    assert not trace.fallback and trace.methods == ()


# ------------------------------------------------------------------------ prompts, parsing


async def test_prompts_can_be_replaced(bm25: BM25Index) -> None:
    llm = CannedLLM(answers={"multi_query": "1. OOMKilled memory limit"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm)
    prompts = retriever.get_prompts()
    assert prompts["multi_query_prompt"].get_template() == MULTI_QUERY_PROMPT.get_template()
    assert set(prompts) == {
        "hyde_prompt",
        "decomposition_prompt",
        "expansion_prompt",
        "multi_query_prompt",
    }
    retriever.update_prompts(
        {"multi_query_prompt": PromptTemplate("Rephrase {query} ({num_queries}x).\nQueries:")}
    )
    await retriever.aretrieve("dns")
    assert llm.prompts == ["Rephrase dns (3x).\nQueries:"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. a b\n2) c d\n(3) e", ["a b", "c d", "e"]),
        ("Here are the queries:\n- one\n* two\n• three", ["one", "two", "three"]),
        ("Query 1: one\nQuery 2: two", ["one", "two"]),
        ('1. "quoted"\n2. **bold**\n3. `code`', ["quoted", "bold", "code"]),
        ("plain one\nplain two\n\n", ["plain one", "plain two"]),
        ("Sure:\nplain one", ["plain one"]),
        ("<think>\n1. not this\n</think>\n1. this", ["this"]),
        ("```\n1. fenced\n```", ["fenced"]),
        ("1. Same?\n2. same\n3. other", ["Same?", "other"]),
        ("", []),
    ],
)
def test_parse_list(text: str, expected: list[str]) -> None:
    assert parse_list(text) == expected


def test_parse_list_caps_after_dedupe() -> None:
    assert parse_list("1. a\n2. A\n3. b\n4. c", limit=2) == ["a", "b"]


def test_parse_terms() -> None:
    assert parse_terms("Terms: TLS, certificate; cert-manager.\n- ACME, tls") == [
        "TLS",
        "certificate",
        "cert-manager",
        "ACME",
    ]
    assert parse_terms("a, b, c", limit=2) == ["a", "b"]


def test_trace_is_json_serialisable(bm25: BM25Index) -> None:
    import json

    llm = CannedLLM(answers={"multi_query": "1. OOMKilled memory limit"})
    retriever = QueryEnhancingRetriever(bm25_retriever(bm25), llm)
    _, trace = retriever.retrieve_with_trace("app restarts")
    assert isinstance(trace, QueryEnhancementTrace)
    data = json.loads(json.dumps(trace.to_dict()))
    assert data["searches"][1]["query"] == "OOMKilled memory limit"
    assert data["fallback"] is False
