"""SentenceSimilarityReranker and PostprocessedRetriever (aof_index.postprocessors)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from aof_index.postprocessors import (
    PostprocessedRetriever,
    SentenceSimilarityReranker,
    split_sentences,
)
from aof_index_retrievers import BM25Index, HybridRetriever

QUERY = "etcd leader elections are slow"


def hit(node_id: str, text: str, score: float | None) -> NodeWithScore:
    return NodeWithScore(node=TextNode(id_=node_id, text=text), score=score)


def candidates() -> list[NodeWithScore]:
    return [
        hit("a", "Pods restart in a loop. The kubelet backs off.", 3.0),
        hit("b", "Disk pressure evicts pods. Prune images.", 2.0),
        hit("c", "The API server is slow. etcd leader elections are slow. Check disks.", 1.0),
        hit("d", "Certificates expired. Renew them.", 0.5),
    ]


def ids(results: list[NodeWithScore]) -> list[str]:
    return [r.node.node_id for r in results]


def z(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / std for v in values]


def test_split_sentences() -> None:
    assert split_sentences("title: A study.\n\nFirst one. Second (2) one! 3 more? Xy") == [
        "title: A study.",
        "First one.",
        "Second (2) one!",
        "3 more?",
    ]
    assert split_sentences("e.g. lower case stays together. Yes") == [
        "e.g. lower case stays together.",
        "Yes",
    ]
    assert split_sentences("") == []


def test_the_matching_sentence_lifts_its_node_by_the_formula(embed_model: Any) -> None:
    reranker = SentenceSimilarityReranker(embed_model=embed_model, weight=0.5)
    out = reranker.postprocess_nodes(candidates(), query_str=QUERY)
    assert ids(out)[0] == "c"  # third by first-stage score, first with its sentence
    q = np.asarray(embed_model.vector(QUERY))
    best = []
    for node in candidates():
        sentences = split_sentences(node.node.get_content(metadata_mode=MetadataMode.EMBED))
        best.append(max(float(np.dot(q, embed_model.vector(s))) for s in sentences))
    expected = [0.5 * a + 0.5 * b for a, b in zip(z([3.0, 2.0, 1.0, 0.5]), z(best), strict=True)]
    got = {r.node.node_id: r.score for r in out}
    assert got == pytest.approx(dict(zip("abcd", expected, strict=True)))


def test_weight_zero_keeps_the_order_and_embeds_nothing(embed_model: Any) -> None:
    reranker = SentenceSimilarityReranker(embed_model=embed_model, weight=0.0)
    assert ids(reranker.postprocess_nodes(candidates(), query_str=QUERY)) == list("abcd")
    assert embed_model.query_calls == embed_model.text_calls == 0


def test_nodes_past_rerank_top_follow_in_order_below(embed_model: Any) -> None:
    nodes = [*candidates(), hit("e", "etcd leader elections are slow.", 0.4)]
    reranker = SentenceSimilarityReranker(embed_model=embed_model, weight=0.9, rerank_top=3)
    out = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert ids(out)[:1] == ["c"] and ids(out)[3:] == ["d", "e"]  # e is never looked at
    scores = [r.score for r in out]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert len(set(scores)) == len(scores)


def test_sentence_vectors_are_cached_and_query_embedding_reused(embed_model: Any) -> None:
    reranker = SentenceSimilarityReranker(embed_model=embed_model, top_n=2)
    bundle = QueryBundle(QUERY, embedding=embed_model.vector(QUERY))
    first = reranker.postprocess_nodes(candidates(), query_bundle=bundle)
    assert len(first) == 2 and embed_model.query_calls == 0
    embedded = embed_model.text_calls
    assert embedded > 0
    again = reranker.postprocess_nodes(candidates(), query_bundle=bundle)
    assert embed_model.text_calls == embedded  # all from the cache
    assert [(r.node.node_id, r.score) for r in again] == [(r.node.node_id, r.score) for r in first]


def test_the_cache_is_bounded(embed_model: Any) -> None:
    reranker = SentenceSimilarityReranker(embed_model=embed_model, cache_size=2)
    reranker.postprocess_nodes(candidates(), query_str=QUERY)
    assert len(reranker._cache) == 2


def test_needs_the_query(embed_model: Any) -> None:
    with pytest.raises(ValueError, match="query"):
        SentenceSimilarityReranker(embed_model=embed_model).postprocess_nodes(candidates())


async def test_postprocessed_retriever(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    hybrid = HybridRetriever(vector_index, bm25, similarity_top_k=8, candidate_top_k=12)
    reranker = SentenceSimilarityReranker(embed_model=embed_model, weight=0.7, rerank_top=8)
    wrapped: BaseRetriever = PostprocessedRetriever(hybrid, [reranker])
    query = "kubelet evicts pods when the node filesystem fills up"
    plain = hybrid.retrieve(query)
    got = wrapped.retrieve(query)
    assert sorted(ids(got)) == sorted(ids(plain))
    assert [(r.node.node_id, r.score) for r in got] == [
        (r.node.node_id, r.score)
        for r in reranker.postprocess_nodes(plain, query_bundle=QueryBundle(query))
    ]
    assert [(r.node.node_id, r.score) for r in await wrapped.aretrieve(query)] == [
        (r.node.node_id, r.score) for r in got
    ]
