"""Flat metadata values: what every vector store accepts."""

from __future__ import annotations

from llama_index.core.schema import Document
from llama_index.core.vector_stores.utils import node_to_metadata_dict

from aof_index.processing import build_processing
from aof_index.processing.flat import flat_value, join_values, split_values
from aof_index.spec.knowledge_base import Processing


def test_join_keeps_order_and_drops_repeats() -> None:
    assert join_values(None, ["a", "b"]) == "a, b"
    assert join_values("a, b", ["b", "c"]) == "a, b, c"
    assert join_values(["x"], ["y"]) == "x, y"  # a list from older data is read too
    assert split_values("a, b,, c ") == ["a", "b", "c"]
    assert split_values("") == [] and split_values(None) == []


def test_flat_value() -> None:
    assert flat_value(["kubelet", "eviction"]) == "kubelet, eviction"
    assert flat_value({"tier": 1, "a": [1]}) == '{"a": [1], "tier": 1}'
    assert flat_value(3) == 3 and flat_value(None) is None and flat_value("x") == "x"


def test_processed_metadata_passes_llamaindex_flat_check() -> None:
    """Every processing step's output can be written to a flat-metadata vector store."""
    spec = Processing.model_validate(
        {
            "metadata": {"extract": ["title", "tags"], "custom": {"teams": ["sre", "db"]}},
            "deduplication": {"enabled": True, "method": "exact"},
        }
    )
    page = "---\ntitle: Evictions\ntags: [kubelet, memory]\n---\n<p>Evict <b>pods</b>.</p>\n"
    documents = [Document(id_=i, text=page, metadata={"file_name": "a.html"}) for i in "ab"]
    nodes = documents
    for transform in build_processing(spec):
        nodes = transform(nodes)  # type: ignore[assignment]
    [kept] = nodes
    assert kept.metadata["duplicates"] == "b" and kept.metadata["teams"] == "sre, db"
    node_to_metadata_dict(kept, flat_metadata=True)  # raises on a list or a mapping
