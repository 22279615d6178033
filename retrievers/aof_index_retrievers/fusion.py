"""Fuse ranked result lists from several retrievers into one.

Each function takes ``results``, one ranked list of :class:`NodeWithScore` per retriever
(best first: a node's 1-based position among the list's distinct nodes is its rank; the
scores need not be sorted), and optional per-list ``weights`` (default 1
each). Common to all methods:

* Nodes are identified by **node id**, never by text: two nodes with the same text and
  different ids are two results. The node object kept is the one from the first list (in
  list order) that holds the node; a later duplicate inside one list is ignored.
* Each result is a fresh :class:`NodeWithScore` carrying the fused score; input objects are
  not modified.
* A list whose weight is 0 is skipped entirely: its nodes take no part unless another list
  also holds them. Weights must be finite and non-negative.
* Output is sorted by fused score, descending; ties go to the better best rank across the
  lists (the smallest 1-based position), then to the smaller node id, so results are stable.
* ``top_n`` truncates the output (``None``: keep all).

Unlike LlamaIndex's ``QueryFusionRetriever``, reciprocal rank fusion honours the weights
and nothing is deduplicated by text.

Score normalisation for ``linear`` and ``maximal`` (per list, over the scores in it):

* ``"minmax"``: ``(s - min) / (max - min)``, in [0, 1]. A list of one node or of equal
  scores gives every node in it 1.0. A node absent from the list counts 0.0 for it.
* ``"zscore"``: ``(s - mean) / std`` (population standard deviation). A list of one node or
  of equal scores gives every node in it 0.0. A node absent from the list counts the list's
  lowest z-score.
* ``"dbsf"``: distribution-based score fusion (as Qdrant's ``dbsf``): the interval
  ``mean ± 3·std`` (population standard deviation) is mapped onto [0, 1],
  ``(s - (mean - 3·std)) / (6·std)``, without clipping, so a score far out in a tail can
  leave [0, 1] slightly. A list of one node or of equal scores gives every node in it 0.5.
  A node absent from the list counts 0.0 (the lower edge, ``mean - 3·std``).
* ``"none"``: raw scores. A node absent from the list counts the list's lowest score.

The absent-node values apply to ``linear`` only; ``maximal`` takes the maximum over the
lists that hold the node.

Score scales (what a threshold on the fused score compares), for weights that sum to 1:
``linear``/``maximal`` with ``"minmax"`` or ``"dbsf"`` give (about) [0, 1], 1 meaning the
best candidate of every list; ``"zscore"`` gives standard deviations above the candidates'
mean (about -3 … 3, 0 = average candidate); ``rrf`` gives ``Σ w_i / (k + rank_i)``, at most
``1 / (k + 1)`` (0.0164 for k = 60). Every scale is relative to the candidate lists of one
query: it ranks, it does not say how relevant a node is in absolute terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from llama_index.core.schema import BaseNode, NodeWithScore

__all__ = [
    "FusionMethod",
    "Normalization",
    "fuse",
    "linear_fusion",
    "max_fusion",
    "reciprocal_rank_fusion",
]

FusionMethod = Literal["rrf", "linear", "maximal"]
Normalization = Literal["minmax", "zscore", "dbsf", "none"]

_FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)
_NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)


def reciprocal_rank_fusion(
    results: Sequence[Sequence[NodeWithScore]],
    weights: Sequence[float] | None = None,
    k: float = 60,
    top_n: int | None = None,
) -> list[NodeWithScore]:
    """Weighted reciprocal rank fusion: ``score = Σ_i w_i / (k + rank_i)``, ranks from 1.

    A list that lacks a node contributes nothing for it. Scores in the inputs are ignored.
    """
    if not (k >= 0 and math.isfinite(k)):
        raise ValueError(f"k must be a finite number >= 0, got {k!r}")
    pool = _Pool.collect(results, weights)
    fused = dict.fromkeys(pool.nodes, 0.0)
    for weight, ranked in pool.lists:
        for rank, node_id in enumerate(ranked, start=1):
            fused[node_id] += weight / (k + rank)
    return pool.ranked(fused, top_n)


def linear_fusion(
    results: Sequence[Sequence[NodeWithScore]],
    weights: Sequence[float] | None = None,
    normalization: Normalization = "minmax",
    top_n: int | None = None,
) -> list[NodeWithScore]:
    """Weighted sum of normalised scores: ``score = Σ_i w_i · norm_i(s)``.

    A list that lacks a node contributes its missing value for it (module docstring).
    """
    _check_normalization(normalization)
    pool = _Pool.collect(results, weights, need_scores=True)
    fused = dict.fromkeys(pool.nodes, 0.0)
    for weight, ranked, scores in pool.with_scores():
        normalised, missing = _normalise(scores, normalization)
        by_id = dict(zip(ranked, normalised, strict=True))
        for node_id in fused:
            fused[node_id] += weight * by_id.get(node_id, missing)
    return pool.ranked(fused, top_n)


def max_fusion(
    results: Sequence[Sequence[NodeWithScore]],
    weights: Sequence[float] | None = None,
    normalization: Normalization = "minmax",
    top_n: int | None = None,
) -> list[NodeWithScore]:
    """ "Maximal" fusion: ``score = max_i w_i · norm_i(s)`` over the lists holding the node."""
    _check_normalization(normalization)
    pool = _Pool.collect(results, weights, need_scores=True)
    fused: dict[str, float] = {}
    for weight, ranked, scores in pool.with_scores():
        normalised, _ = _normalise(scores, normalization)
        for node_id, value in zip(ranked, normalised, strict=True):
            weighted = weight * value
            if node_id not in fused or weighted > fused[node_id]:
                fused[node_id] = weighted
    return pool.ranked(fused, top_n)


def fuse(
    results: Sequence[Sequence[NodeWithScore]],
    method: FusionMethod = "rrf",
    *,
    weights: Sequence[float] | None = None,
    k: float = 60,
    normalization: Normalization = "minmax",
    top_n: int | None = None,
) -> list[NodeWithScore]:
    """Fuse with ``method``: ``"rrf"`` (uses ``k``), ``"linear"`` or ``"maximal"``
    (use ``normalization``)."""
    if method == "rrf":
        return reciprocal_rank_fusion(results, weights=weights, k=k, top_n=top_n)
    if method == "linear":
        return linear_fusion(results, weights=weights, normalization=normalization, top_n=top_n)
    if method == "maximal":
        return max_fusion(results, weights=weights, normalization=normalization, top_n=top_n)
    raise ValueError(f"unknown fusion method {method!r}; choose one of {_FUSION_METHODS}")


@dataclass
class _Pool:
    """The deduplicated inputs: per list its weight and node ids in rank order."""

    nodes: dict[str, BaseNode] = field(default_factory=dict)
    best_rank: dict[str, int] = field(default_factory=dict)
    lists: list[tuple[float, list[str]]] = field(default_factory=list)
    scores: list[list[float | None]] = field(default_factory=list)
    need_scores: bool = False

    @classmethod
    def collect(
        cls,
        results: Sequence[Sequence[NodeWithScore]],
        weights: Sequence[float] | None,
        need_scores: bool = False,
    ) -> _Pool:
        if weights is None:
            weights = [1.0] * len(results)
        if len(weights) != len(results):
            raise ValueError(
                f"got {len(weights)} weights for {len(results)} result lists; give one per list"
            )
        pool = cls(need_scores=need_scores)
        for list_index, (weight, ranked) in enumerate(zip(weights, results, strict=True)):
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"weights must be finite and >= 0, got {weight!r}")
            if weight == 0:
                continue
            ids: list[str] = []
            scores: list[float | None] = []
            seen: set[str] = set()
            for item in ranked:
                node_id = item.node.node_id
                if node_id in seen:
                    continue
                seen.add(node_id)
                if need_scores and item.score is None:
                    raise ValueError(
                        f"node {node_id!r} in result list {list_index} has no score; "
                        "score-based fusion needs scores (use method='rrf')"
                    )
                ids.append(node_id)
                scores.append(item.score)
                rank = len(ids)  # 1-based, among this list's distinct nodes
                if node_id not in pool.nodes:
                    pool.nodes[node_id] = item.node
                    pool.best_rank[node_id] = rank
                elif rank < pool.best_rank[node_id]:
                    pool.best_rank[node_id] = rank
            pool.lists.append((float(weight), ids))
            pool.scores.append(scores)
        return pool

    def with_scores(self) -> list[tuple[float, list[str], list[float]]]:
        return [
            (weight, ids, [float(s) for s in scores if s is not None])
            for (weight, ids), scores in zip(self.lists, self.scores, strict=True)
        ]

    def ranked(self, fused: dict[str, float], top_n: int | None) -> list[NodeWithScore]:
        if top_n is not None and top_n < 0:
            raise ValueError(f"top_n must be >= 0 or None, got {top_n!r}")
        order = sorted(fused, key=lambda i: (-fused[i], self.best_rank[i], i))
        if top_n is not None:
            order = order[:top_n]
        return [NodeWithScore(node=self.nodes[i], score=fused[i]) for i in order]


def _check_normalization(normalization: str) -> None:
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"unknown normalization {normalization!r}; choose one of {_NORMALIZATIONS}"
        )


def _normalise(scores: Sequence[float], normalization: str) -> tuple[list[float], float]:
    """Return the normalised scores and the value a node missing from the list counts."""
    if not scores:
        return [], 0.0
    if normalization == "minmax":
        low, high = min(scores), max(scores)
        spread = high - low
        if spread <= 0:
            return [1.0] * len(scores), 0.0
        return [(s - low) / spread for s in scores], 0.0
    if normalization == "zscore":
        mean = math.fsum(scores) / len(scores)
        std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
        if std <= 0:
            return [0.0] * len(scores), 0.0
        z = [(s - mean) / std for s in scores]
        return z, min(z)
    if normalization == "dbsf":
        mean = math.fsum(scores) / len(scores)
        std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
        if std <= 0:
            return [0.5] * len(scores), 0.0
        low = mean - 3 * std
        return [(s - low) / (6 * std) for s in scores], 0.0
    _check_normalization(normalization)
    return list(scores), min(scores)
