"""Adaptive top-k (``rag.adaptive``): the count follows the score distribution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from aof_index.errors import ManifestError
from aof_index.postprocessors.adaptive import AdaptiveTopK, choose_top_k
from aof_index.spec.agent import AgentRag

CONFIDENT = [0.90, 0.88, 0.30, 0.28, 0.25]  # a clear elbow after 2
FLAT = [0.90, 0.85, 0.80, 0.75, 0.70]  # even fall-off: unsure


def nodes(scores: Sequence[float | None]) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=f"n{i}"), score=s) for i, s in enumerate(scores)]


def test_elbow_cuts_confident_head_but_keeps_flat_lists() -> None:
    assert choose_top_k(CONFIDENT, 1, 5, 0.3) == 2
    assert choose_top_k(FLAT, 1, 5, 0.3) == 5


def test_min_top_k_moves_the_cut() -> None:
    assert choose_top_k(CONFIDENT, 3, 5, 0.3) == 5  # best drop at or after 3 is small
    assert choose_top_k([0.9, 0.5, 0.45, 0.1, 0.05], 3, 5, 0.3) == 3


def test_max_top_k_caps_the_count() -> None:
    assert choose_top_k(FLAT, 1, 3, 0.3) == 3
    assert choose_top_k(CONFIDENT, 1, 2, 0.3) == 2


def test_postprocessor_sorts_and_cuts() -> None:
    shuffled = nodes([0.28, 0.90, 0.30, 0.88, 0.25])
    out = AdaptiveTopK(min_top_k=1, max_top_k=5).postprocess_nodes(shuffled)
    assert [n.score for n in out] == [0.90, 0.88]


def test_unscored_nodes_keep_max_top_k() -> None:
    out = AdaptiveTopK(min_top_k=1, max_top_k=2).postprocess_nodes(nodes([None, None, None]))
    assert len(out) == 2


def adaptive(**fields: Any) -> AgentRag:
    return AgentRag.model_validate({"adaptive": fields, "topK": 8})


def test_from_spec_maps_every_field() -> None:
    assert AdaptiveTopK.from_spec(adaptive(enabled=False, minTopK=2)) is None
    assert AdaptiveTopK.from_spec(AgentRag()) is None
    built = AdaptiveTopK.from_spec(adaptive(enabled=True, minTopK=3, maxTopK=4))
    assert built is not None
    assert (built.min_top_k, built.max_top_k, built.strategy) == (3, 4, "confidenceBased")
    assert len(built.postprocess_nodes(nodes(CONFIDENT))) == 4  # minTopK 3 → no cut; max 4
    default_max = AdaptiveTopK.from_spec(adaptive(enabled=True))
    assert default_max is not None and default_max.max_top_k == 8  # rag.topK
    flat = nodes([1.0 - i / 100 for i in range(12)])
    assert len(default_max.postprocess_nodes(flat)) == 8


def test_bad_bounds_name_the_field() -> None:
    with pytest.raises(ManifestError, match=r"rag\.adaptive\.maxTopK.*minTopK \(5\).*got 2"):
        AdaptiveTopK(min_top_k=5, max_top_k=2)
    with pytest.raises(ManifestError, match=r"rag\.adaptive\.minTopK"):
        AdaptiveTopK(min_top_k=0)
