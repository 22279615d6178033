"""Rerankers: LlamaIndex node postprocessors that re-order retrieved passages.

=========================  ==========================================================
:class:`CohereReranker`    Cohere Rerank (hosted) through the ``cohere`` SDK's v2 API.
:class:`CrossEncoderReranker`  a sentence-transformers ``CrossEncoder`` from a local folder.
:class:`LLMReranker`       an LLM grades every passage 0–10; passages sorted by grade.
:class:`MMRReranker`       maximal marginal relevance: relevant *and* diverse (embeddings).
:class:`ScoreFilterReranker`  no model: drops duplicates/overlaps and scores under a floor.
=========================  ==========================================================

Every reranker keeps at most ``top_n`` nodes (``rag.retrieval.rerank.topK``; ``None``
keeps all) and sets each node's score to the reranker's own score. :func:`reranker_from_spec`
builds the one an agent's ``memory.rag`` section names.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, model_validator
from llama_index.core.llms import LLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from aof_index.errors import BackendUnavailableError
from aof_index.postprocessors.context import dedupe_nodes, field_error

if TYPE_CHECKING:
    from aof_index.spec.agent import AgentRag

__all__ = [
    "COHERE_MODEL_ALIASES",
    "CohereReranker",
    "CrossEncoderReranker",
    "LLMReranker",
    "MMRReranker",
    "ScoreFilterReranker",
    "reranker_from_spec",
]

logger = logging.getLogger(__name__)

MODEL_FIELD = "rag.retrieval.rerank.model"
TOP_K_FIELD = "rag.retrieval.rerank.topK"

COHERE_MODEL_ALIASES = {
    "cohere-rerank-v3": "rerank-english-v3.0",
    "cohere-rerank-english-v3": "rerank-english-v3.0",
    "cohere-rerank-multilingual-v3": "rerank-multilingual-v3.0",
    "cohere-rerank-v3.5": "rerank-v3.5",
}
"""Manifest model names (``rerank.model``) and the Cohere model each one means."""


def _require_query(query_bundle: QueryBundle | None, name: str) -> QueryBundle:
    if query_bundle is None:
        raise ValueError(f"{name} needs the query (query_bundle)")
    return query_bundle


def _ordered(
    nodes: Sequence[NodeWithScore], scores: Sequence[float], top_n: int | None
) -> list[NodeWithScore]:
    """``nodes`` re-scored with ``scores``, best first (ties keep the given order)."""
    order = sorted(range(len(nodes)), key=lambda i: (-scores[i], i))
    out = [NodeWithScore(node=nodes[i].node, score=float(scores[i])) for i in order]
    return out if top_n is None else out[:top_n]


class _Reranker(BaseNodePostprocessor):
    """Shared fields: ``top_n`` and the node text mode."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    top_n: int | None = Field(default=None, description="Nodes to keep (None: all).")
    metadata_mode: MetadataMode = Field(default=MetadataMode.NONE)

    @model_validator(mode="after")
    def _check_top_n(self) -> _Reranker:
        if self.top_n is not None and self.top_n < 1:
            raise field_error(
                self.class_name(), TOP_K_FIELD, self.top_n, "topK must be 1 or more (e.g. 3)"
            )
        return self

    def _texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        return [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]


class CohereReranker(_Reranker):
    """Cohere Rerank (``/v2/rerank``) through the ``cohere`` SDK.

    The client is created on first use (constructors do no I/O). The API key is
    ``api_key`` or the ``COHERE_API_KEY`` environment variable, read late and never
    serialised; the endpoint is ``base_url`` or ``CO_API_URL`` or Cohere's default.

    Args:
        model: A Cohere rerank model (``rerank-v3.5``, ``rerank-english-v3.0``...).
        top_n: Nodes to keep.
        api_key: The API key (else ``COHERE_API_KEY``).
        base_url: The API's base URL (else ``CO_API_URL``, else api.cohere.com).
        timeout_s: Per-request timeout.
        max_tokens_per_doc: Cohere's per-document token cap (``None``: its default).
    """

    model: str = Field(default="rerank-v3.5")
    base_url: str | None = Field(default=None)
    timeout_s: float = Field(default=30.0, gt=0)
    max_tokens_per_doc: int | None = Field(default=None)

    _api_key: str | None = PrivateAttr(default=None)
    _client: Any = PrivateAttr(default=None)
    _aclient: Any = PrivateAttr(default=None)

    def __init__(self, *, api_key: str | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._api_key = api_key

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "CohereReranker"

    def _settings(self) -> dict[str, Any]:
        key = self._api_key or os.environ.get("COHERE_API_KEY")
        if not key:
            raise BackendUnavailableError(
                "Cohere rerank: no API key; set COHERE_API_KEY (or pass api_key=...)"
            )
        settings: dict[str, Any] = {"api_key": key, "timeout": self.timeout_s}
        if base := self.base_url or os.environ.get("CO_API_URL"):
            settings["base_url"] = base
        return settings

    def _sdk(self) -> Any:
        try:
            import cohere
        except ImportError as exc:
            raise BackendUnavailableError(
                "Cohere rerank needs the cohere SDK: pip install 'aof-index[cohere]'"
            ) from exc
        return cohere

    def _request(self, query: str, nodes: Sequence[NodeWithScore]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "query": query,
            "documents": self._texts(nodes),
            "top_n": min(self.top_n or len(nodes), len(nodes)),
        }
        if self.max_tokens_per_doc is not None:
            request["max_tokens_per_doc"] = self.max_tokens_per_doc
        return request

    def _error(self, exc: Exception) -> BackendUnavailableError:
        where = self.base_url or os.environ.get("CO_API_URL") or "https://api.cohere.com"
        return BackendUnavailableError(
            f"Cohere rerank (model {self.model!r} at {where}) failed: {exc}; check the API "
            "key, the model name (rag.retrieval.rerank.model) and the network"
        )

    def _apply(self, nodes: Sequence[NodeWithScore], response: Any) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=nodes[r.index].node, score=float(r.relevance_score))
            for r in response.results
        ]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle, "CohereReranker")
        if not nodes:
            return []
        if self._client is None:
            self._client = self._sdk().ClientV2(**self._settings())
        try:
            response = self._client.rerank(**self._request(query.query_str, nodes))
        except Exception as exc:
            raise self._error(exc) from exc
        return self._apply(nodes, response)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle, "CohereReranker")
        if not nodes:
            return []
        if self._aclient is None:
            self._aclient = self._sdk().AsyncClientV2(**self._settings())
        try:
            response = await self._aclient.rerank(**self._request(query.query_str, nodes))
        except Exception as exc:
            raise self._error(exc) from exc
        return self._apply(nodes, response)


class CrossEncoderReranker(_Reranker):
    """A sentence-transformers ``CrossEncoder`` loaded from a local folder.

    The folder holds a CrossEncoder or any Hugging Face sequence-classification model with
    one output (``config.json`` and weights); it is loaded on first use with downloads off.
    The node score is the model's score of ``(query, passage)`` (sigmoid of the logit for
    a one-output model, as sentence-transformers does).

    Args:
        model_path: The model folder (``rag.retrieval.rerank.model: cross-encoder:<path>``).
        top_n: Nodes to keep.
        batch_size: Pairs scored per forward pass.
        max_length: Token cap per pair (``None``: the model's).
        device: ``cpu``, ``cuda``... (``None``: sentence-transformers' choice).
    """

    model_path: str
    batch_size: int = Field(default=32, ge=1)
    max_length: int | None = Field(default=None)
    device: str | None = Field(default=None)

    _model: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "CrossEncoderReranker"

    def load(self) -> Any:
        """Load the model (once) and return it.

        Raises:
            ManifestError: the folder does not exist or holds no model; names
                ``rag.retrieval.rerank.model``.
        """
        if self._model is not None:
            return self._model
        path = Path(self.model_path).expanduser()
        if not (path / "config.json").is_file():
            problem = "does not exist" if not path.exists() else "holds no config.json"
            raise field_error(
                "CrossEncoderReranker",
                MODEL_FIELD,
                self.model_path,
                f"the cross-encoder folder {problem}: give `cross-encoder:<path>` naming a "
                "local folder with a sentence-transformers CrossEncoder or a Hugging Face "
                "sequence-classification model (models are never downloaded at run time)",
            )
        from aof_index.offline import configure_offline

        configure_offline()
        from sentence_transformers import CrossEncoder

        kwargs: dict[str, Any] = {"device": self.device, "local_files_only": True}
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        self._model = CrossEncoder(str(path), **kwargs)
        return self._model

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle, "CrossEncoderReranker")
        if not nodes:
            return []
        model = self.load()
        pairs = [(query.query_str, text) for text in self._texts(nodes)]
        scores = model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        flat = np.asarray(scores, dtype=np.float64).reshape(len(nodes), -1)[:, -1]
        return _ordered(nodes, [float(s) for s in flat], self.top_n)


LLM_RERANK_PROMPT = (
    "Grade how useful each passage is for answering the question, from 0 (useless) to 10 "
    "(answers it). Reply with one line per passage, exactly `<passage number>: <grade>`, "
    "and nothing else.\n\nQuestion: {question}\n\n{passages}\n\nGrades:"
)

_GRADE = re.compile(r"^\W*(\d+)\W*[:=\-]\s*(\d+(?:\.\d+)?)", re.MULTILINE)


class LLMReranker(_Reranker):
    """An LLM grades every passage from 0 to 10; nodes are sorted by grade.

    One prompt per ``batch_size`` passages (each cut to ``max_chars``). A passage the LLM
    did not grade gets -1 (after all graded ones). When the LLM fails, the first-stage
    order is kept (cut to ``top_n``) and a warning says why, so a flaky LLM never loses the
    context.

    Args:
        llm: The grading LLM.
        top_n: Nodes to keep.
        batch_size: Passages per prompt.
        max_chars: Characters of each passage shown to the LLM.
    """

    llm: LLM = Field(exclude=True)
    batch_size: int = Field(default=10, ge=1)
    max_chars: int = Field(default=1500, ge=50)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "LLMReranker"

    def _prompts(self, query: str, nodes: Sequence[NodeWithScore]) -> list[tuple[int, str]]:
        texts = self._texts(nodes)
        prompts = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            passages = "\n\n".join(
                f"Passage {i}:\n{t[: self.max_chars]}" for i, t in enumerate(chunk, 1)
            )
            prompts.append((start, LLM_RERANK_PROMPT.format(question=query, passages=passages)))
        return prompts

    @staticmethod
    def parse_grades(text: str, count: int) -> dict[int, float]:
        """``{0-based passage index: grade}`` from a reply of ``n: grade`` lines."""
        grades: dict[int, float] = {}
        for number, grade in _GRADE.findall(text):
            index = int(number) - 1
            if 0 <= index < count and index not in grades:
                grades[index] = float(grade)
        return grades

    def _scores(
        self, nodes: Sequence[NodeWithScore], replies: list[tuple[int, str]]
    ) -> list[float]:
        scores = [-1.0] * len(nodes)
        for start, reply in replies:
            count = min(self.batch_size, len(nodes) - start)
            for index, grade in self.parse_grades(reply, count).items():
                scores[start + index] = grade
        return scores

    def _fallback(self, nodes: list[NodeWithScore], exc: Exception) -> list[NodeWithScore]:
        logger.warning(
            "LLMReranker: the LLM failed (%s: %s); kept the first-stage order",
            type(exc).__name__,
            exc,
        )
        return nodes if self.top_n is None else nodes[: self.top_n]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle, "LLMReranker")
        if not nodes:
            return []
        try:
            replies = [
                (start, self.llm.complete(prompt).text)
                for start, prompt in self._prompts(query.query_str, nodes)
            ]
        except Exception as exc:  # any LLM failure: keep the retriever's order
            return self._fallback(nodes, exc)
        return _ordered(nodes, self._scores(nodes, replies), self.top_n)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle, "LLMReranker")
        if not nodes:
            return []
        try:
            replies = [
                (start, (await self.llm.acomplete(prompt)).text)
                for start, prompt in self._prompts(query.query_str, nodes)
            ]
        except Exception as exc:  # any LLM failure: keep the retriever's order
            return self._fallback(nodes, exc)
        return _ordered(nodes, self._scores(nodes, replies), self.top_n)


def _unit(vectors: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


class MMRReranker(_Reranker):
    """Maximal marginal relevance: pick passages relevant to the query and unlike those
    already picked.

    Each step picks the node maximising ``relevance · sim(query, node) − (1 − relevance) ·
    max sim(node, picked)`` (cosine similarities). Node vectors are ``node.embedding`` when
    set, else ``embed_model`` embeds the node text; the query vector is
    ``query_bundle.embedding`` or ``embed_model``'s query embedding. The node score is its
    MMR value when picked (so scores fall along the list).

    Args:
        embed_model: Embeds what has no vector yet (use the index's model).
        relevance: Weight of relevance against diversity, in [0, 1]; 1 is plain cosine
            ranking.
        top_n: Nodes to keep.
    """

    embed_model: BaseEmbedding | None = Field(default=None, exclude=True)
    relevance: float = Field(default=0.7, ge=0.0, le=1.0)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "MMRReranker"

    def _need_model(self) -> BaseEmbedding:
        if self.embed_model is None:
            raise field_error(
                "MMRReranker",
                MODEL_FIELD,
                "mmr",
                "MMR needs embeddings: the nodes carry none, so pass the index's embedding "
                "model (embed_model=...)",
            )
        return self.embed_model

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _require_query(query_bundle, "MMRReranker")
        if not nodes:
            return []
        q = query.embedding or self._need_model().get_query_embedding(query.query_str)
        missing = [i for i, n in enumerate(nodes) if not n.node.embedding]
        vectors: list[list[float]] = [list(n.node.embedding or []) for n in nodes]
        if missing:
            texts = [nodes[i].node.get_content(metadata_mode=MetadataMode.EMBED) for i in missing]
            for i, v in zip(
                missing, self._need_model().get_text_embedding_batch(texts), strict=True
            ):
                vectors[i] = list(v)
        docs = _unit(np.asarray(vectors, dtype=np.float64))
        relevance = docs @ _unit(np.asarray(q, dtype=np.float64))
        pairwise = docs @ docs.T
        limit = len(nodes) if self.top_n is None else min(self.top_n, len(nodes))
        picked: list[int] = []
        out: list[NodeWithScore] = []
        left = list(range(len(nodes)))
        while left and len(picked) < limit:

            def value(i: int) -> float:
                redundancy = max((float(pairwise[i, j]) for j in picked), default=0.0)
                return self.relevance * float(relevance[i]) - (1 - self.relevance) * redundancy

            best = max(left, key=lambda i: (value(i), -i))
            out.append(NodeWithScore(node=nodes[best].node, score=value(best)))
            picked.append(best)
            left.remove(best)
        return out


class ScoreFilterReranker(_Reranker):
    """No model: drop duplicated and overlapping chunks and nodes scored under a floor.

    Duplicates are found by :func:`~aof_index.postprocessors.context.dedupe_nodes` (same
    document with overlapping offsets, or near-identical text), keeping the better-ranked
    node. Nodes are then sorted by their existing score (nodes without one go last) and
    those under ``min_score`` dropped.

    Args:
        min_score: The score floor (``None``: no floor).
        dedupe: Drop duplicates and overlaps.
        overlap: Share of a chunk that must overlap a better one to drop it.
        similarity: Word-trigram Jaccard similarity that makes two texts duplicates.
        top_n: Nodes to keep.
    """

    min_score: float | None = Field(default=None)
    dedupe: bool = Field(default=True)
    overlap: float = Field(default=0.5, gt=0.0, le=1.0)
    similarity: float = Field(default=0.9, gt=0.0, le=1.0)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "ScoreFilterReranker"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        hits = list(nodes)
        if self.dedupe:
            hits, _ = dedupe_nodes(
                hits, overlap=self.overlap, similarity=self.similarity, trim=False
            )
        if self.min_score is not None:
            floor = self.min_score
            hits = [h for h in hits if h.score is not None and h.score >= floor]
        order = sorted(
            range(len(hits)),
            key=lambda i: (hits[i].score is None, -(hits[i].score or 0.0), i),
        )
        out = [hits[i] for i in order]
        return out if self.top_n is None else out[: self.top_n]


def reranker_from_spec(
    rag: AgentRag,
    *,
    llm: LLM | None = None,
    embed_model: BaseEmbedding | None = None,
    cohere_api_key: str | None = None,
) -> BaseNodePostprocessor | None:
    """The reranker an agent's ``memory.rag`` section asks for, or ``None``.

    Reranking is on when ``rag.retrieval.rerank.enabled`` is true, or the ``rerank``
    section is given without ``enabled: false``, or (no section) ``rag.rerank`` is true.
    ``rerank.topK`` is every reranker's ``top_n``. ``rerank.model`` picks the reranker:

    - ``cohere-rerank-v3`` (and the other :data:`COHERE_MODEL_ALIASES`), any ``rerank-*``
      Cohere model name, or ``cohere:<model>``: :class:`CohereReranker`;
    - ``cross-encoder:<folder>``, or a path (``/``, ``./``, ``~``):
      :class:`CrossEncoderReranker`;
    - ``llm``: :class:`LLMReranker` with ``llm``;
    - ``mmr``: :class:`MMRReranker` with ``embed_model``;
    - ``score`` or no model: :class:`ScoreFilterReranker` (dedupe, no model needed).

    Raises:
        ManifestError: an unknown model, or ``llm`` without an LLM; names
            ``rag.retrieval.rerank.model``.
    """
    section = rag.retrieval.rerank if rag.retrieval else None
    if section is not None and section.enabled is not None:
        enabled = section.enabled
    elif section is not None:
        enabled = rag.rerank is not False
    else:
        enabled = bool(rag.rerank)
    if not enabled:
        return None
    model = (section.model if section else None) or "score"
    top_n = section.top_k if section else None
    lowered = model.lower()
    if lowered in COHERE_MODEL_ALIASES:
        return CohereReranker(
            model=COHERE_MODEL_ALIASES[lowered], top_n=top_n, api_key=cohere_api_key
        )
    if lowered.startswith(("cohere:", "rerank-")):
        name = model.split(":", 1)[1] if lowered.startswith("cohere:") else model
        return CohereReranker(model=name, top_n=top_n, api_key=cohere_api_key)
    if lowered.startswith("cross-encoder:") or model.startswith(("/", "./", "../", "~")):
        path = model.split(":", 1)[1] if lowered.startswith("cross-encoder:") else model
        return CrossEncoderReranker(model_path=path, top_n=top_n)
    if lowered == "llm":
        if llm is None:
            raise field_error(
                "reranker_from_spec",
                MODEL_FIELD,
                model,
                "`llm` reranking needs an LLM: configure one for the agent (llm=...), or "
                "choose `score`, `mmr`, `cross-encoder:<path>` or a Cohere model",
            )
        return LLMReranker(llm=llm, top_n=top_n)
    if lowered == "mmr":
        return MMRReranker(embed_model=embed_model, top_n=top_n)
    if lowered == "score":
        return ScoreFilterReranker(top_n=top_n)
    raise field_error(
        "reranker_from_spec",
        MODEL_FIELD,
        model,
        "unknown rerank model: use a Cohere model (cohere-rerank-v3, rerank-v3.5, "
        "cohere:<model>), cross-encoder:<local folder>, llm, mmr or score",
    )
