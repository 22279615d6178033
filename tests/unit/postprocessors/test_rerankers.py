"""LLM, MMR and score-based rerankers, and how ``rag.retrieval.rerank`` picks one."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
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
from aof_index.postprocessors.rerank import (
    CohereReranker,
    CrossEncoderReranker,
    LLMReranker,
    MMRReranker,
    ScoreFilterReranker,
    reranker_from_spec,
)
from aof_index.spec.agent import AgentRag


class GradingLLM(CustomLLM):
    """Grades a passage 9 when it contains ``keyword``, else 2; counts its prompts."""

    keyword: str = "certificate"
    fail: bool = False
    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="grader")

    @property
    def prompts(self) -> list[str]:
        return self._prompts

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._prompts.append(prompt)
        if self.fail:
            raise RuntimeError("LLM down")
        passages = prompt.split("Passage ")[1:]
        lines = []
        for block in passages:
            number, text = block.split(":", 1)
            lines.append(f"{number}: {9 if self.keyword in text else 2}")
        return CompletionResponse(text="\n".join(lines))

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        raise NotImplementedError


class AxisEmbedding(BaseEmbedding):
    """Embeds a text on word axes: 'dns' → x, 'tls' → y, anything else → z."""

    calls: list[str] = Field(default_factory=list)

    def _vec(self, text: str) -> list[float]:
        self.calls.append(text)
        t = text.lower()
        return [float("dns" in t), float("tls" in t), 0.1]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)


def hit(text: str, score: float | None = None, **kwargs: Any) -> NodeWithScore:
    return NodeWithScore(node=TextNode(text=text, **kwargs), score=score)


def texts(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.get_content() for n in nodes]


# -- LLM reranker --------------------------------------------------------------------------


def test_llm_reranker_orders_by_grade_and_honours_top_n() -> None:
    nodes = [hit("restart the pod", 0.9), hit("renew the certificate", 0.5), hit("scale up", 0.4)]
    llm = GradingLLM()
    out = LLMReranker(llm=llm, top_n=2).postprocess_nodes(nodes, query_str="expired cert")
    assert texts(out) == ["renew the certificate", "restart the pod"]
    assert [n.score for n in out] == [9.0, 2.0]
    assert "Question: expired cert" in llm.prompts[0]


def test_llm_reranker_batches_prompts() -> None:
    nodes = [hit(f"passage {i}", 1.0) for i in range(5)] + [hit("the certificate", 0.1)]
    llm = GradingLLM()
    out = LLMReranker(llm=llm, batch_size=2).postprocess_nodes(nodes, query_str="q")
    assert len(llm.prompts) == 3
    assert texts(out)[0] == "the certificate"  # graded in the last batch, index mapped back


def test_llm_reranker_keeps_first_stage_order_when_llm_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nodes = [hit("a", 0.9), hit("b certificate", 0.5), hit("c", 0.1)]
    with caplog.at_level(logging.WARNING):
        out = LLMReranker(llm=GradingLLM(fail=True), top_n=2).postprocess_nodes(
            nodes, query_str="q"
        )
    assert texts(out) == ["a", "b certificate"]
    assert "LLM down" in caplog.text


def test_parse_grades_ignores_noise_and_out_of_range() -> None:
    reply = "Sure!\n1: 7\n2 - 3.5\n9: 10\n1: 0\n"
    assert LLMReranker.parse_grades(reply, 3) == {0: 7.0, 1: 3.5}


# -- MMR -----------------------------------------------------------------------------------


def test_mmr_prefers_diverse_passages_and_relevance_weight_matters() -> None:
    nodes = [
        hit("dns tls one", 0.9, embedding=[1.0, 1.0, 0.0]),
        hit("dns tls two", 0.8, embedding=[1.0, 0.99, 0.0]),
        hit("dns only", 0.7, embedding=[1.0, 0.0, 0.0]),
    ]
    query = QueryBundle("dns tls", embedding=[1.0, 1.0, 0.0])
    diverse = MMRReranker(relevance=0.3, top_n=2).postprocess_nodes(nodes, query)
    assert texts(diverse) == ["dns tls one", "dns only"]
    plain = MMRReranker(relevance=1.0, top_n=2).postprocess_nodes(nodes, query)
    assert texts(plain) == ["dns tls one", "dns tls two"]


def test_mmr_embeds_nodes_without_vectors_with_the_embed_model() -> None:
    model = AxisEmbedding()
    nodes = [hit("tls cert", 0.9), hit("dns record", 0.5)]
    out = MMRReranker(embed_model=model).postprocess_nodes(nodes, query_str="dns lookup")
    assert texts(out)[0] == "dns record"
    assert "dns lookup" in model.calls and "tls cert" in model.calls


def test_mmr_without_vectors_or_model_names_the_field() -> None:
    with pytest.raises(ManifestError, match=r"rag\.retrieval\.rerank\.model.*embed_model"):
        MMRReranker().postprocess_nodes([hit("x", 1.0)], query_str="q")


# -- score-based ---------------------------------------------------------------------------


def overlapping(doc: str, start: int, end: int, score: float) -> NodeWithScore:
    node = TextNode(text="x" * (end - start), start_char_idx=start, end_char_idx=end)
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    node.text = f"{doc} {start} {end} " + "word " * 5
    return NodeWithScore(node=node, score=score)


def test_score_filter_drops_overlaps_duplicates_and_low_scores() -> None:
    nodes = [
        overlapping("doc-a", 0, 100, 0.9),
        overlapping("doc-a", 20, 110, 0.8),  # 80 of 90 chars inside the first: dropped
        overlapping("doc-b", 20, 110, 0.7),  # another document: kept
        hit("The same paragraph ingested twice, once per source.", 0.6),
        hit("The same paragraph ingested twice, once per source!", 0.5),
        hit("weak match", 0.1),
    ]
    out = ScoreFilterReranker(min_score=0.2).postprocess_nodes(nodes, query_str="q")
    assert [n.score for n in out] == [0.9, 0.7, 0.6]
    kept_all = ScoreFilterReranker(dedupe=False).postprocess_nodes(nodes, query_str="q")
    assert len(kept_all) == 6


def test_score_filter_sorts_by_score_and_cuts_to_top_n() -> None:
    nodes = [hit("a", 0.1), hit("b", None), hit("c", 0.9), hit("d", 0.5)]
    out = ScoreFilterReranker(top_n=3).postprocess_nodes(nodes, query_str="q")
    assert texts(out) == ["c", "d", "a"]


# -- manifest ------------------------------------------------------------------------------


def rag(section: dict[str, Any] | None = None, **fields: Any) -> AgentRag:
    data: dict[str, Any] = dict(fields)
    if section is not None:
        data["retrieval"] = {"rerank": section}
    return AgentRag.model_validate(data)


def test_rerank_enabled_switches_the_reranker() -> None:
    assert reranker_from_spec(rag({"enabled": False, "model": "score"})) is None
    assert isinstance(reranker_from_spec(rag({"enabled": True})), ScoreFilterReranker)
    assert isinstance(reranker_from_spec(rag({"model": "score"})), ScoreFilterReranker)
    assert reranker_from_spec(rag()) is None
    assert isinstance(reranker_from_spec(rag(rerank=True)), ScoreFilterReranker)
    assert reranker_from_spec(rag({"model": "score"}, rerank=False)) is None


def test_rerank_model_picks_the_reranker() -> None:
    cohere = reranker_from_spec(rag({"model": "cohere-rerank-v3"}))
    assert isinstance(cohere, CohereReranker) and cohere.model == "rerank-english-v3.0"
    named = reranker_from_spec(rag({"model": "cohere:rerank-v3.5"}))
    assert isinstance(named, CohereReranker) and named.model == "rerank-v3.5"
    cross = reranker_from_spec(rag({"model": "cross-encoder:/models/ms-marco"}))
    assert isinstance(cross, CrossEncoderReranker) and cross.model_path == "/models/ms-marco"
    assert isinstance(reranker_from_spec(rag({"model": "llm"}), llm=GradingLLM()), LLMReranker)
    mmr = reranker_from_spec(rag({"model": "mmr"}), embed_model=AxisEmbedding())
    assert isinstance(mmr, MMRReranker)


def test_rerank_top_k_is_honoured() -> None:
    reranker = reranker_from_spec(rag({"model": "score", "topK": 2}))
    assert reranker is not None
    out = reranker.postprocess_nodes([hit(c, 0.5) for c in "abcd"], query_str="q")
    assert len(out) == 2


def test_bad_rerank_model_names_field_value_and_fix() -> None:
    with pytest.raises(ManifestError) as info:
        reranker_from_spec(rag({"model": "bge-large"}))
    message = str(info.value)
    assert "rag.retrieval.rerank.model" in message and "'bge-large'" in message
    assert "cross-encoder:" in message
    with pytest.raises(ManifestError, match=r"rag\.retrieval\.rerank\.model.*needs an LLM"):
        reranker_from_spec(rag({"model": "llm"}))
    with pytest.raises(ManifestError, match=r"rag\.retrieval\.rerank\.topK"):
        ScoreFilterReranker(top_n=0)


def test_cohere_without_key_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from aof_index.errors import BackendUnavailableError

    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    reranker = CohereReranker()  # no I/O, no key needed to construct
    with pytest.raises(BackendUnavailableError, match="COHERE_API_KEY"):
        reranker.postprocess_nodes([hit("a", 1.0)], query_str="q")
    assert "api_key" not in reranker.to_dict()
