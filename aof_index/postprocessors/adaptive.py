"""Adaptive top-k: how many passages to keep, chosen per query from the score distribution.

``confidenceBased`` (the one strategy of ``rag.adaptive.strategy``): nodes are sorted by
score and the first ``max_top_k`` are the candidates. If a clear elbow separates a
confident head from the tail, only the head is kept; if the scores fall off evenly (the
retriever is unsure), all candidates are kept. Concretely, with scores
``s1 ≥ s2 ≥ … ≥ sn`` and ``m = min(n, max_top_k)`` candidates, the cut after position
``k`` (``min_top_k ≤ k < m``) with the largest drop ``s_k − s_{k+1}`` is taken when that
drop is at least ``min_gap`` of the whole list's spread ``s1 − sn``; otherwise ``k = m``.
(The spread is the whole list's, so a few close candidates do not look like an elbow;
hence retrieve more than ``max_top_k`` first.) So:

- ``[0.90, 0.88, 0.30, 0.28, 0.25]`` with min 1, max 5: the drop after 2 is 0.58 of a 0.65
  spread, so 2 passages;
- ``[0.90, 0.85, 0.80, 0.75, 0.70]``: every drop is 0.05 of a 0.20 spread (0.25, under
  the default ``min_gap`` of 0.3), so all 5;
- the first list with min 3: the cut must come after position 3 or later; the best drop
  there (0.03) is small, so all 5.

Nodes with no score cannot be judged: the first ``max_top_k`` are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from llama_index.core.bridge.pydantic import Field, model_validator
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from aof_index.postprocessors.context import field_error

if TYPE_CHECKING:
    from aof_index.spec.agent import AgentRag

__all__ = ["AdaptiveTopK", "choose_top_k"]


def choose_top_k(scores: list[float], min_top_k: int, max_top_k: int, min_gap: float) -> int:
    """How many of ``scores`` (sorted, best first) ``confidenceBased`` keeps (module
    docstring): at least ``min(min_top_k, len(scores))``, at most ``max_top_k``."""
    m = min(len(scores), max_top_k)
    if m <= min_top_k:
        return m
    spread = scores[0] - scores[-1]
    if spread <= 0:
        return m  # all equal: nothing to tell them apart
    best_k, best_drop = m, 0.0
    for k in range(min_top_k, m):  # cut after position k (1-based): drop s_k - s_{k+1}
        drop = scores[k - 1] - scores[k]
        if drop > best_drop:
            best_k, best_drop = k, drop
    return best_k if best_drop >= min_gap * spread else m


class AdaptiveTopK(BaseNodePostprocessor):
    """Keep between ``min_top_k`` and ``max_top_k`` nodes, by score confidence.

    See the module docstring for the ``confidenceBased`` rule. Nodes come back sorted by
    score, their scores unchanged.

    Args:
        min_top_k: Never fewer (when there are that many) (``rag.adaptive.minTopK``).
        max_top_k: Never more (``rag.adaptive.maxTopK``).
        strategy: ``confidenceBased``.
        min_gap: Share of the candidates' score spread a drop must reach to cut there.
    """

    min_top_k: int = Field(default=1)
    max_top_k: int = Field(default=10)
    strategy: Literal["confidenceBased"] = Field(default="confidenceBased")
    min_gap: float = Field(default=0.3, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> AdaptiveTopK:
        if self.min_top_k < 1:
            raise field_error(
                "AdaptiveTopK", "rag.adaptive.minTopK", self.min_top_k, "must be 1 or more"
            )
        if self.max_top_k < self.min_top_k:
            raise field_error(
                "AdaptiveTopK",
                "rag.adaptive.maxTopK",
                self.max_top_k,
                f"must be at least minTopK ({self.min_top_k}): raise maxTopK or lower minTopK",
            )
        return self

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "AdaptiveTopK"

    @classmethod
    def from_spec(cls, rag: AgentRag) -> AdaptiveTopK | None:
        """``rag.adaptive`` as a postprocessor; ``None`` unless ``adaptive.enabled`` is true
        (or the section is given without ``enabled: false``). Missing bounds default to
        1 and ``rag.retrieval.topK`` / ``rag.topK`` / 10."""
        spec = rag.adaptive
        if spec is None or spec.enabled is False:
            return None
        top_k = (rag.retrieval.top_k if rag.retrieval else None) or rag.top_k or 10
        low = spec.min_top_k or 1
        return cls(
            min_top_k=low,
            max_top_k=spec.max_top_k or max(top_k, low),
            strategy=spec.strategy or "confidenceBased",
        )

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if any(n.score is None for n in nodes):
            return list(nodes[: self.max_top_k])
        ranked = sorted(nodes, key=lambda n: -(n.score or 0.0))
        k = choose_top_k(
            [n.score or 0.0 for n in ranked], self.min_top_k, self.max_top_k, self.min_gap
        )
        return ranked[:k]
