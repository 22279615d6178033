"""Dense pseudo-relevance feedback and the score threshold of HybridRetriever."""

from __future__ import annotations

import math
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from aof_index_retrievers import BM25Index, BM25Retriever, HybridRetriever, fuse

QUERY = "coredns dns lookups time out"
QUERIES = (QUERY, "pods restarting with back-off", "certificate renewal failed", "disk full")


def ids(results: list[NodeWithScore]) -> list[str]:
    return [r.node.node_id for r in results]


def pairs(results: list[NodeWithScore]) -> list[tuple[str, float]]:
    return [(r.node.node_id, round(r.score or 0.0, 9)) for r in results]


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


class Recording(BaseRetriever):
    """Wraps a retriever and records the query bundles it is asked."""

    def __init__(self, inner: BaseRetriever) -> None:
        self.inner = inner
        self.bundles: list[QueryBundle] = []
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.bundles.append(query_bundle)
        return self.inner.retrieve(query_bundle)


def expected_with_feedback(
    vector_index: VectorStoreIndex,
    bm25: BM25Index,
    embed: Any,
    query: str,
    *,
    docs: int,
    beta: float,
    top_k: int = 5,
    candidates: int = 12,
) -> list[NodeWithScore]:
    """Rocchio feedback computed by hand from the public fusion function."""
    vector_retriever = vector_index.as_retriever(similarity_top_k=candidates)
    keyword = BM25Retriever(bm25, candidates).retrieve(query)
    first = fuse(
        [vector_retriever.retrieve(query), keyword],
        "linear",
        weights=[0.5, 0.5],
        normalization="zscore",
    )
    feedback = [
        unit(embed.vector(hit.node.get_content(metadata_mode=MetadataMode.EMBED)))
        for hit in first[:docs]
    ]
    centroid = [sum(col) / len(feedback) for col in zip(*feedback, strict=True)]
    moved = unit([q + beta * c for q, c in zip(unit(embed.vector(query)), centroid, strict=True)])
    second = vector_retriever.retrieve(QueryBundle(query, embedding=moved))
    return fuse(
        [second, keyword], "linear", weights=[0.5, 0.5], normalization="zscore", top_n=top_k
    )


def make(vector_index: VectorStoreIndex, bm25: BM25Index, **kwargs: Any) -> HybridRetriever:
    kwargs.setdefault("similarity_top_k", 5)
    kwargs.setdefault("candidate_top_k", 12)
    kwargs.setdefault("semantic_weight", 0.5)
    kwargs.setdefault("keyword_weight", 0.5)
    return HybridRetriever(vector_index, bm25, **kwargs)


@pytest.mark.parametrize(("docs", "beta"), [(1, 1.0), (3, 0.5), (3, 2.0)])
def test_feedback_is_rocchio_on_the_fused_top_nodes(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any, docs: int, beta: float
) -> None:
    retriever = make(vector_index, bm25, feedback_docs=docs, feedback_weight=beta)
    changed = 0
    for query in QUERIES:
        got = retriever.retrieve(query)
        want = expected_with_feedback(vector_index, bm25, embed_model, query, docs=docs, beta=beta)
        assert pairs(got) == pairs(want)
        changed += pairs(got) != pairs(make(vector_index, bm25).retrieve(query))
    assert changed  # feedback changes the results: a retriever ignoring it fails above


def test_feedback_queries_the_vector_side_twice_with_a_moved_vector(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    vector = Recording(vector_index.as_retriever(similarity_top_k=12))
    retriever = HybridRetriever.from_retrievers(
        vector,
        BM25Retriever(bm25, 12),
        semantic_weight=0.5,
        keyword_weight=0.5,
        feedback_docs=2,
        embed_model=embed_model,
    )
    retriever.retrieve(QUERY)
    first, second = vector.bundles
    assert first.embedding == embed_model.vector(QUERY)  # embedded once, handed over
    assert second.embedding is not None and second.embedding != first.embedding
    assert math.isclose(sum(v * v for v in second.embedding), 1.0)
    assert embed_model.query_calls == 1
    assert embed_model.text_calls == 2  # the two feedback nodes had no stored embedding


def test_feedback_uses_stored_node_embeddings_without_reembedding(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    class WithEmbeddings(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            hits = vector_index.as_retriever(similarity_top_k=12).retrieve(query_bundle)
            for hit in hits:
                text = hit.node.get_content(metadata_mode=MetadataMode.EMBED)
                hit.node.embedding = embed_model.vector(text)
            return hits

    with_stored = HybridRetriever.from_retrievers(
        WithEmbeddings(),
        BM25Retriever(bm25, 12),
        semantic_weight=0.5,
        keyword_weight=0.5,
        feedback_docs=3,
        embed_model=embed_model,
    )
    got = with_stored.retrieve(QUERY)
    assert embed_model.text_calls == 0
    assert pairs(got) == pairs(make(vector_index, bm25, feedback_docs=3).retrieve(QUERY))


async def test_feedback_async_equals_sync(vector_index: VectorStoreIndex, bm25: BM25Index) -> None:
    retriever = make(vector_index, bm25, feedback_docs=3, feedback_weight=1.0)
    for query in QUERIES:
        assert pairs(await retriever.aretrieve(query)) == pairs(retriever.retrieve(query))


def test_feedback_is_skipped_without_the_vector_side(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    keyword_only = make(vector_index, bm25, semantic_weight=0, keyword_weight=1, feedback_docs=3)
    assert pairs(keyword_only.retrieve(QUERY)) == pairs(
        make(vector_index, bm25, semantic_weight=0, keyword_weight=1).retrieve(QUERY)
    )
    assert embed_model.query_calls == embed_model.text_calls == 0


def test_feedback_weight_zero_is_a_plain_hybrid_query(
    vector_index: VectorStoreIndex, bm25: BM25Index
) -> None:
    for query in QUERIES:
        assert pairs(
            make(vector_index, bm25, feedback_docs=3, feedback_weight=0).retrieve(query)
        ) == pairs(make(vector_index, bm25).retrieve(query))


@pytest.mark.parametrize("normalization", ["dbsf", "minmax", "zscore"])
def test_score_threshold_drops_results_below_it(
    vector_index: VectorStoreIndex, bm25: BM25Index, normalization: str
) -> None:
    everything = make(vector_index, bm25, normalization=normalization, similarity_top_k=12)
    scores = [hit.score or 0.0 for hit in everything.retrieve(QUERY)]
    cut = sorted(scores)[len(scores) // 2]
    kept = make(
        vector_index, bm25, normalization=normalization, similarity_top_k=12, score_threshold=cut
    ).retrieve(QUERY)
    assert [hit.score for hit in kept] == [s for s in scores if s >= cut]
    assert 0 < len(kept) < len(scores)
    if normalization in ("dbsf", "minmax"):  # weights sum to 1: about [0, 1]
        assert all(-0.1 <= s <= 1.1 for s in scores)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"feedback_docs": -1}, "feedback_docs"),
        ({"feedback_docs": 2, "feedback_weight": -1.0}, "feedback_weight"),
        ({"feedback_weight": float("nan")}, "feedback_weight"),
        ({"score_threshold": float("nan")}, "score_threshold"),
    ],
)
def test_invalid_feedback_arguments(
    vector_index: VectorStoreIndex, bm25: BM25Index, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HybridRetriever(vector_index, bm25, **kwargs)


def test_from_retrievers_feedback_needs_the_embedding_model(
    vector_index: VectorStoreIndex, bm25: BM25Index
) -> None:
    with pytest.raises(ValueError, match="embed_model"):
        HybridRetriever.from_retrievers(
            vector_index.as_retriever(), BM25Retriever(bm25), feedback_docs=2
        )
