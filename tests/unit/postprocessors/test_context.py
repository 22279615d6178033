"""The context builder: token budget, strategies, citations, dedupe, metadata, manifest."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import (
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
)
from llama_index.core.schema import (
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from aof_index.errors import ManifestError
from aof_index.postprocessors.context import ContextBuilder, dedupe_nodes, tiktoken_counter
from aof_index.spec.agent import AgentRag


def words(text: str) -> int:
    return len(text.split())


def sentences(prefix: str, count: int, length: int = 5) -> str:
    """``count`` sentences of ``length`` words each."""
    return " ".join(
        " ".join([f"{prefix}{i}"] + ["word"] * (length - 2) + ["end."]) for i in range(count)
    )


def hit(text: str, source: str, score: float = 0.5, **metadata: Any) -> NodeWithScore:
    node = TextNode(text=text, metadata={"source": source, **metadata})
    return NodeWithScore(node=node, score=score)


class SummaryLLM(CustomLLM):
    """Answers a summary prompt with 'Short version.'; can fail."""

    fail: bool = False
    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="summary")

    @property
    def prompts(self) -> list[str]:
        return self._prompts

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._prompts.append(prompt)
        if self.fail:
            raise TimeoutError("LLM timed out")
        return CompletionResponse(text="Short version.")

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        raise NotImplementedError


def builder(max_tokens: int, **kwargs: Any) -> ContextBuilder:
    kwargs.setdefault("tokenizer", words)
    kwargs.setdefault("include_metadata", False)
    return ContextBuilder(max_tokens=max_tokens, **kwargs)


# -- truncate ------------------------------------------------------------------------------


def test_truncate_cuts_at_a_sentence_end_and_keeps_citations() -> None:
    nodes = [hit(sentences("a", 4), "a.md"), hit(sentences("b", 10), "b.md"), hit("c c.", "c.md")]
    # [1] header is 3 words + 20 words; [2] header 3 words + 2 full sentences = 13.
    built = builder(36).build(nodes)
    assert built.tokens <= 36
    assert [p.label for p in built.passages] == ["a.md", "b.md"]
    assert built.text.startswith("[1] (source: a.md)\n")
    assert "[2] (source: b.md)\n" in built.text
    second = built.passages[1]
    assert second.truncated and second.node.node.get_content().endswith("end.")
    assert second.node.node.get_content() == sentences("b", 2)
    assert [d.node.metadata["source"] for d in built.dropped] == ["c.md"]


def test_truncate_cuts_at_a_word_only_when_no_sentence_fits() -> None:
    long_sentence = " ".join(["w"] * 40) + "."
    built = builder(13).build([hit(long_sentence, "a.md")])
    assert built.tokens <= 13
    text = built.passages[0].node.node.get_content()
    assert text.endswith(" …") and text.count("w") >= 5


def test_budget_is_respected_with_the_real_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    count = tiktoken_counter("gpt-4o")  # offline: the network guard fails any download
    assert "TIKTOKEN_CACHE_DIR" in os.environ
    nodes = [hit(sentences(s, 30), f"{s}.md") for s in "abc"]
    built = ContextBuilder(max_tokens=200).build(nodes)  # tiktoken, gpt-4o's encoding
    assert built.tokens == count(built.text) <= 200
    assert built.text.rstrip().endswith("end.")


# -- prioritize ----------------------------------------------------------------------------


def test_prioritize_skips_what_does_not_fit_and_orders_by_score() -> None:
    a = hit(sentences("a", 2), "a.md", score=0.7)  # 13 tokens rendered
    b = hit(sentences("b", 10), "b.md", score=0.9)  # 53: never fits 30
    c = hit(sentences("c", 1), "c.md", score=0.8)  # 8
    truncated = builder(30).build([b, c, a])
    assert [p.label for p in truncated.passages] == ["b.md"]  # cut, and nothing after it
    assert truncated.passages[0].truncated
    prioritized = builder(30, strategy="prioritize").build([a, b, c])
    assert [p.label for p in prioritized.passages] == ["c.md", "a.md"]
    assert not any(p.truncated for p in prioritized.passages)
    assert prioritized.text.startswith("[1] (source: c.md)")


# -- summarize -----------------------------------------------------------------------------


def test_summarize_condenses_when_over_budget() -> None:
    llm = SummaryLLM()
    nodes = [hit(sentences("a", 10), "a.md"), hit(sentences("b", 10), "b.md")]
    built = builder(30, strategy="summarize", llm=llm).build(nodes, QueryBundle("why?"))
    assert built.strategy == "summarize" and built.fallback_reason is None
    assert [p.summarized for p in built.passages] == [True, True]
    assert "[2] (source: b.md)\nShort version." in built.text
    assert "Question: why?" in llm.prompts[0]
    truncated = builder(30).build(nodes)
    assert [p.label for p in truncated.passages] == ["a.md"]


def test_summarize_calls_no_llm_when_everything_fits() -> None:
    llm = SummaryLLM()
    built = builder(100, strategy="summarize", llm=llm).build([hit("Fits.", "a.md")])
    assert llm.prompts == [] and built.passages[0].node.node.get_content() == "Fits."


def test_summarize_falls_back_to_truncate_on_llm_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nodes = [hit(sentences("a", 10), "a.md"), hit(sentences("b", 10), "b.md")]
    with caplog.at_level(logging.WARNING):
        built = builder(30, strategy="summarize", llm=SummaryLLM(fail=True)).build(nodes)
    assert built.strategy == "truncate"
    assert built.fallback_reason is not None and "LLM timed out" in built.fallback_reason
    assert "LLM timed out" in caplog.text
    assert built.tokens <= 30 and built.passages[0].truncated


def test_summarize_without_llm_names_the_field() -> None:
    with pytest.raises(ManifestError) as info:
        ContextBuilder(max_tokens=100, strategy="summarize")
    message = str(info.value)
    assert "rag.retrieval.contextOptimization.strategy" in message
    assert "'summarize'" in message and "truncate" in message


# -- metadata, dedupe, postprocessor -------------------------------------------------------


def test_include_metadata_renders_metadata_but_citations_stay() -> None:
    node = hit("Body text.", "a.md", team="sre")
    with_meta = builder(100, include_metadata=True).build([node])
    without = builder(100, include_metadata=False).build([node])
    assert "team: sre" in with_meta.text and "team: sre" not in without.text
    assert without.text.startswith("[1] (source: a.md)") and with_meta.tokens > without.tokens


def chunk(doc: str, text: str, start: int, score: float) -> NodeWithScore:
    node = TextNode(
        text=text, start_char_idx=start, end_char_idx=start + len(text), metadata={"source": doc}
    )
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    return NodeWithScore(node=node, score=score)


def test_overlapping_chunks_are_dropped_or_trimmed() -> None:
    document = "First sentence here. Second sentence here. Third sentence here. Fourth one."
    a = chunk("doc", document[:42], 0, 0.9)  # "First ... Second sentence here."
    inside = chunk("doc", document[21:42], 21, 0.8)  # wholly inside a: dropped
    tail = chunk("doc", document[21:], 21, 0.7)  # overlaps a by 21 chars: trimmed
    other = chunk("other", document[21:42], 21, 0.6)  # another document: kept
    kept, dropped = dedupe_nodes([a, inside, tail, other])
    assert dropped == [inside]
    assert [k.node.get_content() for k in kept] == [
        document[:42],
        document[42:],
        document[21:42],
    ]
    kept_node = kept[1].node
    assert isinstance(kept_node, TextNode) and kept_node.start_char_idx == 42
    built = builder(200).build([a, inside, tail])
    assert built.text.count("Second sentence here.") == 1
    assert not builder(200, dedupe=False).build([a, inside]).dropped


def test_postprocessor_returns_fitted_nodes() -> None:
    nodes = [hit(sentences("a", 4), "a.md"), hit(sentences("b", 10), "b.md")]
    out = builder(36).postprocess_nodes(nodes, query_str="q")
    assert [n.node.get_content() for n in out] == [sentences("a", 4), sentences("b", 2)]
    assert nodes[1].node.get_content() == sentences("b", 10)  # the input is not modified


# -- manifest ------------------------------------------------------------------------------


def rag(**fields: Any) -> AgentRag:
    return AgentRag.model_validate(fields)


def test_from_spec_maps_budget_strategy_and_metadata() -> None:
    assert ContextBuilder.from_spec(rag()) is None
    opt = {"contextOptimization": {"maxTokens": 500, "strategy": "prioritize"}}
    built = ContextBuilder.from_spec(rag(retrieval=opt), tokenizer=words)
    assert built is not None
    assert (built.max_tokens, built.strategy, built.include_metadata) == (500, "prioritize", True)
    both = ContextBuilder.from_spec(rag(retrieval=opt, contextWindow=300), tokenizer=words)
    assert both is not None and both.max_tokens == 300
    off = {"contextOptimization": {"enabled": False, "maxTokens": 50, "strategy": "prioritize"}}
    window_only = ContextBuilder.from_spec(rag(retrieval=off, contextWindow=300))
    assert window_only is not None
    assert (window_only.max_tokens, window_only.strategy) == (300, "truncate")
    no_meta = ContextBuilder.from_spec(rag(contextWindow=100, includeMetadata=False))
    assert no_meta is not None and no_meta.include_metadata is False
    summarize = {"contextOptimization": {"maxTokens": 50, "strategy": "summarize"}}
    with pytest.raises(ManifestError, match=r"contextOptimization\.strategy"):
        ContextBuilder.from_spec(rag(retrieval=summarize))
    assert ContextBuilder.from_spec(rag(retrieval=summarize), llm=SummaryLLM()) is not None


def test_max_tokens_changes_what_fits() -> None:
    nodes = [hit(sentences(s, 3), f"{s}.md") for s in "abc"]
    small = ContextBuilder.from_spec(rag(contextWindow=45), tokenizer=words)
    large = ContextBuilder.from_spec(rag(contextWindow=100), tokenizer=words)
    assert small is not None and large is not None
    assert len(small.build(nodes).passages) == 2 and len(large.build(nodes).passages) == 3
