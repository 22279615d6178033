"""HybridRetriever over a real VectorStoreIndex (SimpleVectorStore) and a BM25Index."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from aof_index_retrievers import (
    BM25Index,
    BM25Retriever,
    HybridRetriever,
    fuse,
)

QUERY = "coredns dns lookups time out"
NOT_NETWORK = MetadataFilters(
    filters=[MetadataFilter(key="team", value="network", operator=FilterOperator.NE)]
)


def ids(results: list[NodeWithScore]) -> list[str]:
    return [r.node.node_id for r in results]


def pairs(results: list[NodeWithScore]) -> list[tuple[str, float]]:
    return [(r.node.node_id, round(r.score or 0.0, 9)) for r in results]


def hybrid(vector_index: VectorStoreIndex, bm25: BM25Index, **kwargs: Any) -> HybridRetriever:
    kwargs.setdefault("similarity_top_k", 5)
    kwargs.setdefault("candidate_top_k", 12)
    return HybridRetriever(vector_index, bm25, **kwargs)


SIDES = [(1.0, 0.0), (0.0, 1.0), (0.7, 0.3), (0.3, 0.7)]


@pytest.mark.parametrize(("semantic", "keyword"), SIDES)
def test_best_doc_without_filter(
    vector_index: VectorStoreIndex, bm25: BM25Index, semantic: float, keyword: float
) -> None:
    # The premise of the filter test: "dns" and "netpol" (team network) are top hits
    # on either side alone and in the mixes.
    retriever = hybrid(vector_index, bm25, semantic_weight=semantic, keyword_weight=keyword)
    top = ids(retriever.retrieve(QUERY))
    assert top[0] == "dns"
    assert "netpol" in top[:3]


@pytest.mark.parametrize(("semantic", "keyword"), SIDES)
@pytest.mark.parametrize("fusion", ["linear", "rrf", "maximal"])
def test_filters_apply_to_both_sides(
    vector_index: VectorStoreIndex,
    bm25: BM25Index,
    semantic: float,
    keyword: float,
    fusion: str,
) -> None:
    # The filter excludes "dns" and "netpol" (team network), both in each side's top 3
    # unfiltered. Had either side ignored it, they would come back: weights (1, 0) and
    # (0, 1) test each side alone, the mixes test both.
    retriever = hybrid(
        vector_index,
        bm25,
        semantic_weight=semantic,
        keyword_weight=keyword,
        fusion=fusion,
        filters=NOT_NETWORK,
    )
    results = retriever.retrieve(QUERY)
    assert results
    assert not {"dns", "netpol"} & set(ids(results))
    assert all(r.node.metadata["team"] != "network" for r in results)
    assert retriever.filters is NOT_NETWORK


def test_weights_select_a_side(vector_index: VectorStoreIndex, bm25: BM25Index) -> None:
    vector_only = vector_index.as_retriever(similarity_top_k=5).retrieve(QUERY)
    keyword_only = BM25Retriever(bm25, 5).retrieve(QUERY)
    assert ids(vector_only) != ids(keyword_only)  # else this test proves nothing
    semantic = hybrid(vector_index, bm25, semantic_weight=1, keyword_weight=0, fusion="rrf")
    assert ids(semantic.retrieve(QUERY)) == ids(vector_only)
    lexical = hybrid(vector_index, bm25, semantic_weight=0, keyword_weight=1, fusion="rrf")
    assert ids(lexical.retrieve(QUERY)) == ids(keyword_only)


@pytest.mark.parametrize("fusion", ["linear", "rrf", "maximal"])
@pytest.mark.parametrize("normalization", ["minmax", "zscore"])
def test_fused_as_the_fusion_functions_say(
    vector_index: VectorStoreIndex, bm25: BM25Index, fusion: str, normalization: str
) -> None:
    vector_side = vector_index.as_retriever(similarity_top_k=12).retrieve(QUERY)
    keyword_side = BM25Retriever(bm25, 12).retrieve(QUERY)
    expected = fuse(
        [vector_side, keyword_side],
        fusion,  # type: ignore[arg-type]
        weights=[0.6, 0.4],
        k=10,
        normalization=normalization,  # type: ignore[arg-type]
        top_n=4,
    )
    retriever = hybrid(
        vector_index,
        bm25,
        similarity_top_k=4,
        semantic_weight=0.6,
        keyword_weight=0.4,
        fusion=fusion,
        normalization=normalization,
        rrf_k=10,
    )
    got = retriever.retrieve(QUERY)
    assert pairs(got) == pairs(expected)
    assert len(got) == 4
    assert len(set(ids(got))) == len(got)  # one result per node id


def test_nodes_found_by_both_sides_appear_once(
    vector_index: VectorStoreIndex, bm25: BM25Index
) -> None:
    retriever = hybrid(vector_index, bm25, similarity_top_k=12, candidate_top_k=12)
    results = retriever.retrieve(QUERY)
    keyword_side = set(ids(BM25Retriever(bm25, 12).retrieve(QUERY)))
    assert keyword_side <= set(ids(results))  # both sides' nodes are in ...
    assert len(ids(results)) == len(set(ids(results))) == 12  # ... once each


def test_no_query_embedding_when_semantic_weight_is_zero(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    keyword_only = hybrid(vector_index, bm25, semantic_weight=0, keyword_weight=1)
    assert keyword_only.retrieve(QUERY)
    assert embed_model.query_calls == 0
    both = hybrid(vector_index, bm25)
    both.retrieve(QUERY)
    assert embed_model.query_calls == 1  # the counter does count


async def test_no_query_embedding_when_semantic_weight_is_zero_async(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    keyword_only = hybrid(vector_index, bm25, semantic_weight=0, keyword_weight=1)
    assert await keyword_only.aretrieve(QUERY)
    assert embed_model.query_calls == 0


@pytest.mark.parametrize("fusion", ["linear", "rrf", "maximal"])
@pytest.mark.parametrize(("semantic", "keyword"), SIDES)
async def test_async_equals_sync(
    vector_index: VectorStoreIndex, bm25: BM25Index, fusion: str, semantic: float, keyword: float
) -> None:
    retriever = hybrid(
        vector_index,
        bm25,
        semantic_weight=semantic,
        keyword_weight=keyword,
        fusion=fusion,
        filters=NOT_NETWORK,
    )
    for query in (QUERY, "pods restarting with back-off", "certificate renewal failed"):
        assert pairs(await retriever.aretrieve(query)) == pairs(retriever.retrieve(query))


def test_query_bundle_embedding_is_reused(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    bundle = QueryBundle(QUERY, embedding=embed_model.vector(QUERY))
    assert hybrid(vector_index, bm25).retrieve(bundle)
    assert embed_model.query_calls == 0


def test_nodes_added_after_construction_are_found(
    vector_index: VectorStoreIndex, bm25: BM25Index
) -> None:
    retriever = hybrid(vector_index, bm25, semantic_weight=1, keyword_weight=0)
    new = TextNode(id_="kafka", text="Kafka consumer lag grows", metadata={"team": "data"})
    vector_index.insert_nodes([new])
    bm25.add([new])
    assert ids(retriever.retrieve("kafka consumer lag"))[0] == "kafka"


def test_from_retrievers(vector_index: VectorStoreIndex, bm25: BM25Index) -> None:
    custom = HybridRetriever.from_retrievers(
        vector_index.as_retriever(similarity_top_k=12, filters=NOT_NETWORK),
        BM25Retriever(bm25, 12, filters=NOT_NETWORK),
        similarity_top_k=5,
        fusion="rrf",
        semantic_weight=0.5,
        keyword_weight=0.5,
    )
    standard = hybrid(
        vector_index,
        bm25,
        filters=NOT_NETWORK,
        fusion="rrf",
        semantic_weight=0.5,
        keyword_weight=0.5,
    )
    assert pairs(custom.retrieve(QUERY)) == pairs(standard.retrieve(QUERY))
    assert custom.filters is None
    assert custom.weights == (0.5, 0.5)
    assert custom.similarity_top_k == 5


def test_vector_retriever_kwargs_are_passed(
    vector_index: VectorStoreIndex, bm25: BM25Index, embed_model: Any
) -> None:
    other = type(embed_model)()
    retriever = hybrid(vector_index, bm25, vector_retriever_kwargs={"embed_model": other})
    assert retriever.retrieve(QUERY)
    assert (other.query_calls, embed_model.query_calls) == (1, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"semantic_weight": 0, "keyword_weight": 0}, "both 0"),
        ({"semantic_weight": -1}, "semantic_weight"),
        ({"keyword_weight": float("nan")}, "keyword_weight"),
        ({"fusion": "borda"}, "fusion"),
        ({"normalization": "l2"}, "normalization"),
        ({"similarity_top_k": 0}, "similarity_top_k"),
        ({"similarity_top_k": 10, "candidate_top_k": 5}, "candidate_top_k"),
        ({"vector_retriever_kwargs": {"filters": NOT_NETWORK}}, "filters"),
    ],
)
def test_invalid_arguments(
    vector_index: VectorStoreIndex, bm25: BM25Index, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HybridRetriever(vector_index, bm25, **kwargs)
