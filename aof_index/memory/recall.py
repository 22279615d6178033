"""Semantic memory over past conversation turns: index turns, recall them by meaning.

An agent asks "what did we decide about the ingress timeout last week?"; the answer lies
in a few turns of a long conversation. :class:`ConversationRecall` indexes each turn into a
Memory's vector store and BM25 keyword index as LlamaIndex ``TextNode`` s, and
:meth:`ConversationRecall.recall` ranks the turns of one conversation for a query.

What a turn is matters more than the model. Each turn is indexed in four *views*, built
from the conversation's structure; the vector store holds the two vector views, the keyword
index the two keyword views (each idea measured on LoCoMo, see ``benchmarks/locomo.py``):

* vector ``turn``: ``Speaker: text``. The speaker's name is part of the turn: questions name
  people ("What did Caroline research?").
* vector ``context``: the turn before it, this one and the turn after it (same session
  only), one per line, with the description of a shared photo (``[shares a photo of
  ...]``). A reply is understood through the question it answers ("What did you take
  away from it?" → "It taught me self-acceptance").
* keyword ``turn``: the session date, then ``Speaker: text`` and the photo description.
* keyword ``context``: the session date, then two turns before, this one and one after.
  BM25 profits from a wider window than the embedding, whose 256 word pieces it dilutes.

A query is scored against every turn of its conversation (up to ``candidate_top_k`` per
view): each view's scores are standardised (z-score over the conversation's turns, a turn
absent from the BM25 list scoring 0), summed with :attr:`RecallOptions.weights`, and a turn
spoken by the one participant the query names gets :attr:`RecallOptions.speaker_boost`.

Every node carries ``conversation``, ``dialog_id``, ``speaker``, ``session``, ``date``,
``turn_index``, ``view`` and ``utterance`` (the turn's own text) in its metadata; recall
filters on ``conversation`` and ``view`` on both sides. Node ids are derived from
(conversation, dialog id, store, view), so adding a turn again is an upsert, and a node
whose text and embedding model did not change is not embedded again.

Example:
    >>> from aof_index import build_memory
    >>> from aof_index.memory.recall import ConversationRecall, Turn
    >>> recall = ConversationRecall.from_memory(build_memory())  # doctest: +SKIP
    >>> recall.add_turns([                                       # doctest: +SKIP
    ...     Turn("ops-42", "D1:1", "Ana", "Let's raise the ingress timeout to 60s.",
    ...          session=1, date="2024-05-02"),
    ...     Turn("ops-42", "D1:2", "Bo", "Agreed, I'll change the chart.", session=1),
    ... ])
    >>> recall.recall("what did we decide about the ingress timeout?", "ops-42")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

if TYPE_CHECKING:
    from aof_index.build.memory import MemoryComponents
    from aof_index_retrievers import BM25Index

__all__ = [
    "VIEWS",
    "Candidates",
    "ConversationRecall",
    "RecallHit",
    "RecallOptions",
    "Turn",
    "TurnRetriever",
    "View",
    "node_id",
]

View = Literal["vector:turn", "vector:context", "keyword:turn", "keyword:context"]
VIEWS: tuple[View, ...] = ("vector:turn", "vector:context", "keyword:turn", "keyword:context")

_NAMESPACE = uuid.UUID("8f1d7c1e-5b7a-4c8e-9a53-3c1f0e2b6d41")
_KEYS = ("conversation", "dialog_id", "speaker", "session", "date", "turn_index", "view")
# What an LLM reading a retrieved node should see besides its text.
_LLM_KEYS = ("speaker", "date")


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation.

    Attributes:
        conversation: the conversation's key (a chat session id, a thread...).
        dialog_id: the turn's id, unique within the conversation.
        speaker: who said it.
        text: what was said.
        session: which session (sitting) of the conversation it belongs to; neighbouring
            turns are only taken from the same session.
        date: when the session took place: a ``date``/``datetime`` or free text such as
            ``"1:56 pm on 8 May, 2023"``, indexed as written for keyword search.
        index: position within the session; turns are ordered by ``(session, index)``.
        image_caption: a description of an image shared with the turn, if any.
    """

    conversation: str
    dialog_id: str
    speaker: str
    text: str
    session: int = 0
    date: str | dt.date | None = None
    index: int = 0
    image_caption: str = ""

    @property
    def date_text(self) -> str:
        """The date as indexed: ISO format for dates, the text as given otherwise."""
        if isinstance(self.date, dt.datetime):
            return self.date.isoformat(sep=" ", timespec="minutes")
        if isinstance(self.date, dt.date):
            return self.date.isoformat()
        return (self.date or "").strip()

    def line(self, *, photo: bool) -> str:
        """``Speaker: text``, with ``[shares a photo of ...]`` when ``photo`` and shared."""
        text = f"{self.speaker}: {self.text}"
        if photo and self.image_caption:
            caption = re.sub(
                r"^an? (photo|photograph|photography|picture) of ", "", self.image_caption
            )
            text += f" [shares a photo of {caption}]"
        return text


@dataclass(frozen=True)
class RecallHit:
    """A recalled turn, best first in :meth:`ConversationRecall.recall`'s answer."""

    dialog_id: str
    speaker: str
    date: str
    text: str
    score: float
    conversation: str
    session: int
    turn_index: int


@dataclass(frozen=True)
class RecallOptions:
    """How turns are indexed and scored (defaults: the best measured on LoCoMo).

    Attributes:
        vector_before: turns before a turn in its vector ``context`` view.
        vector_after: turns after a turn in its vector ``context`` view.
        keyword_before: turns before a turn in its keyword ``context`` view.
        keyword_after: turns after a turn in its keyword ``context`` view.
        keyword_dates: put the session date in the keyword views.
        photos: put descriptions of shared images in the views (all but vector ``turn``).
        weights: weight of each view's standardised scores; 0 skips the view at query
            time (it is still indexed).
        speaker_boost: added to turns spoken by the single participant a query names
            (in standard deviations of one view); 0 turns it off.
        candidate_top_k: turns each view ranks per query. Scoring is exact for
            conversations up to this many turns; longer ones are scored over their best
            ``candidate_top_k`` turns per view.
    """

    vector_before: int = 1
    vector_after: int = 1
    keyword_before: int = 2
    keyword_after: int = 1
    keyword_dates: bool = True
    photos: bool = True
    weights: Mapping[View, float] = field(
        default_factory=lambda: {
            "vector:turn": 1.0,
            "vector:context": 1.0,
            "keyword:turn": 0.5,
            "keyword:context": 1.0,
        }
    )
    speaker_boost: float = 3.0
    candidate_top_k: int = 1000

    def weight(self, view: View) -> float:
        """The weight of ``view`` (0 when not given)."""
        return float(self.weights.get(view, 0.0))


class ConversationRecall:
    """Index conversation turns into a vector store and a BM25 index; recall them.

    Args:
        embed_model: the embedding model (e.g. ``MemoryComponents.embed_model``).
        vector_store: where the vector views go (e.g. ``MemoryComponents.vector_store``).
        keyword_index: where the keyword views go (e.g. ``MemoryComponents.keyword_index``).
        options: indexing and scoring options.

    The constructor does no I/O; the stores are used as given. Thread-safety is that of
    the stores.
    """

    def __init__(
        self,
        embed_model: BaseEmbedding,
        vector_store: BasePydanticVectorStore,
        keyword_index: BM25Index,
        options: RecallOptions | None = None,
    ) -> None:
        self.embed_model = embed_model
        self.vector_store = vector_store
        self.keyword_index = keyword_index
        self.options = options or RecallOptions()

    @classmethod
    def from_memory(
        cls, memory: MemoryComponents, options: RecallOptions | None = None
    ) -> ConversationRecall:
        """Use a Memory's embedding, vector store and keyword index (built on first use)."""
        return cls(memory.embed_model, memory.vector_store, memory.keyword_index, options)

    # -- indexing ---------------------------------------------------------------------
    def nodes(self, turns: Iterable[Turn]) -> list[TextNode]:
        """The nodes :meth:`add_turns` writes for ``turns``, without embeddings.

        Neighbours come from ``turns`` only, so give whole sessions (or conversations).
        """
        nodes: list[TextNode] = []
        opts = self.options
        for session in _sessions(turns):
            for i, turn in enumerate(session):
                before_v = session[max(0, i - opts.vector_before) : i]
                after_v = session[i + 1 : i + 1 + opts.vector_after]
                before_k = session[max(0, i - opts.keyword_before) : i]
                after_k = session[i + 1 : i + 1 + opts.keyword_after]
                dated = [turn.date_text] if opts.keyword_dates and turn.date_text else []
                texts: dict[View, str] = {
                    "vector:turn": turn.line(photo=False),
                    "vector:context": "\n".join(
                        t.line(photo=opts.photos) for t in [*before_v, turn, *after_v]
                    ),
                    "keyword:turn": "\n".join([*dated, turn.line(photo=opts.photos)]),
                    "keyword:context": "\n".join(
                        [*dated, *(t.line(photo=opts.photos) for t in [*before_k, turn, *after_k])]
                    ),
                }
                nodes.extend(_node(turn, view, text) for view, text in texts.items())
        return nodes

    def add_turns(self, turns: Iterable[Turn], *, batch_size: int = 256) -> int:
        """Index ``turns`` (an upsert); returns how many nodes were embedded or re-indexed.

        Give whole sessions: a turn's views include its neighbours from the same call.
        Nodes already stored with the same text (and, for vector views, the same
        embedding model) are skipped, so re-adding a conversation costs no embedding.
        The keyword index is persisted when it changed.
        """
        nodes = self.nodes(turns)
        model = _model_identity(self.embed_model)
        for node in nodes:
            is_vector = str(node.metadata["view"]).startswith("vector:")
            node.metadata["fingerprint"] = _fingerprint(node.text, model if is_vector else "")
            node.excluded_embed_metadata_keys.append("fingerprint")
            node.excluded_llm_metadata_keys.append("fingerprint")
        vector = [n for n in nodes if str(n.metadata["view"]).startswith("vector:")]
        keyword = [n for n in nodes if str(n.metadata["view"]).startswith("keyword:")]
        stored = self._stored_fingerprints([n.node_id for n in vector])
        vector = [n for n in vector if stored.get(n.node_id) != n.metadata["fingerprint"]]
        keyword = [n for n in keyword if not self._keyword_unchanged(n)]
        for start in range(0, len(vector), batch_size):
            batch = vector[start : start + batch_size]
            vectors = self.embed_model.get_text_embedding_batch([n.text for n in batch])
            for node, embedding in zip(batch, vectors, strict=True):
                node.embedding = embedding
            # Chroma's add() keeps an existing id's old record: delete changed nodes first.
            replaced = [n.node_id for n in batch if n.node_id in stored]
            if replaced:
                self.vector_store.delete_nodes(node_ids=replaced)
            self.vector_store.add(list(batch))
        if keyword:
            self.keyword_index.add(keyword)
            if self.keyword_index.persist_dir is not None:
                self.keyword_index.persist()
        return len(vector) + len(keyword)

    def _stored_fingerprints(self, node_ids: Sequence[str]) -> dict[str, str]:
        """Fingerprints of the vector nodes already stored (empty when the store can't say)."""
        stored: dict[str, str] = {}
        for start in range(0, len(node_ids), 1000):
            try:
                found = self.vector_store.get_nodes(node_ids=list(node_ids[start : start + 1000]))
            except Exception:  # a store without get_nodes: embed again
                return {}
            stored.update((n.node_id, str(n.metadata.get("fingerprint", ""))) for n in found)
        return stored

    def _keyword_unchanged(self, node: BaseNode) -> bool:
        old = self.keyword_index.get(node.node_id)
        return old is not None and old.metadata.get("fingerprint") == node.metadata["fingerprint"]

    # -- recall -----------------------------------------------------------------------
    def recall(self, query: str, conversation: str, top_k: int = 10) -> list[RecallHit]:
        """The ``top_k`` turns of ``conversation`` that best answer ``query``, best first."""
        ranked = self.rank(self.candidates(query, conversation))
        return [_hit(node, score) for node, score in ranked[:top_k]]

    def as_retriever(self, conversation: str, top_k: int = 10) -> TurnRetriever:
        """A LlamaIndex retriever over ``conversation``'s turns (for query engines, agents)."""
        return TurnRetriever(self, conversation, top_k)

    def candidates(
        self,
        query: str,
        conversation: str,
        views: Iterable[View] | None = None,
        *,
        query_embedding: Sequence[float] | None = None,
    ) -> Candidates:
        """Each view's scores for the turns of ``conversation`` (``candidate_top_k`` each).

        ``views`` defaults to those with a non-zero weight; ``query_embedding`` saves
        embedding the query when the caller has it (e.g. embedded in a batch).
        """
        opts = self.options
        chosen = [v for v in VIEWS if opts.weight(v) != 0] if views is None else list(views)
        found = Candidates(query)
        embedding = list(query_embedding) if query_embedding is not None else None
        for view in chosen:
            filters = _filters(conversation, view)
            if view.startswith("vector:"):
                if embedding is None:
                    embedding = self.embed_model.get_query_embedding(query)
                result = self.vector_store.query(
                    VectorStoreQuery(
                        query_embedding=embedding,
                        similarity_top_k=opts.candidate_top_k,
                        filters=filters,
                    )
                )
                pairs = list(zip(result.nodes or [], result.similarities or [], strict=False))
            else:
                hits = self.keyword_index.query(query, opts.candidate_top_k, filters)
                pairs = [(h.node, float(h.score or 0)) for h in hits]
            found.add(view, pairs)
        return found

    def rank(
        self, candidates: Candidates, options: RecallOptions | None = None
    ) -> list[tuple[BaseNode, float]]:
        """Fuse ``candidates`` into one ranking of turns, best first, with their scores.

        ``options`` (default: this instance's) sets the weights and the speaker boost, so
        one set of candidates can be ranked several ways. Each view's scores are
        standardised over the candidate turns: a turn BM25 did not return shares no term
        with the query and scores 0 there; a turn a vector view lacks (past
        ``candidate_top_k``) gets that view's lowest score.
        """
        opts = options or self.options
        turns = candidates.turns
        if not turns:
            return []
        fused = dict.fromkeys(turns, 0.0)
        for view, found in candidates.scores.items():
            weight = opts.weight(view)
            if weight == 0 or not found:
                continue
            missing = 0.0 if view.startswith("keyword:") else min(found.values())
            values = [found.get(d, missing) for d in turns]
            for dialog_id, value in zip(turns, _zscores(values), strict=True):
                fused[dialog_id] += weight * value
        if opts.speaker_boost:
            speakers = {str(n.metadata["speaker"]) for n in turns.values()}
            named = _named_speaker(candidates.query, speakers)
            if named is not None:
                for dialog_id, node in turns.items():
                    if node.metadata["speaker"] == named:
                        fused[dialog_id] += opts.speaker_boost
        order = sorted(turns, key=lambda d: (-fused[d], _position(turns[d])))
        return [(turns[d], fused[d]) for d in order]


class TurnRetriever(BaseRetriever):
    """:meth:`ConversationRecall.recall` as a LlamaIndex retriever over one conversation.

    Each result is the turn's vector ``turn`` node (text ``Speaker: text``; metadata
    ``speaker``, ``date``, ``dialog_id``...) with the fused score.
    """

    def __init__(self, recall: ConversationRecall, conversation: str, top_k: int = 10) -> None:
        self.recall = recall
        self.conversation = conversation
        self.top_k = top_k
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        found = self.recall.candidates(
            query_bundle.query_str,
            self.conversation,
            query_embedding=query_bundle.embedding,
        )
        ranked = self.recall.rank(found)[: self.top_k]
        return [NodeWithScore(node=node, score=score) for node, score in ranked]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Model inference and store scans are CPU-bound: run them off the event loop.
        return await asyncio.to_thread(self._retrieve, query_bundle)


@dataclass
class Candidates:
    """What each view scored for one query: ``scores[view][dialog_id]``.

    ``turns`` maps each dialog id to one of its nodes (the vector ``turn`` view when
    retrieved), whose metadata describes the turn.
    """

    query: str
    turns: dict[str, BaseNode] = field(default_factory=dict)
    scores: dict[View, dict[str, float]] = field(default_factory=dict)

    def add(self, view: View, pairs: Iterable[tuple[BaseNode, float]]) -> None:
        """Record ``view``'s (node, score) pairs."""
        found = self.scores.setdefault(view, {})
        for node, score in pairs:
            dialog_id = str(node.metadata["dialog_id"])
            found[dialog_id] = float(score)
            if dialog_id not in self.turns or view == "vector:turn":
                self.turns[dialog_id] = node

    def ranked(self, view: View) -> list[str]:
        """Dialog ids of ``view``, best first (empty when it was not retrieved)."""
        found = self.scores.get(view, {})
        return sorted(found, key=lambda d: -found[d])

    def merged(self, other: Candidates) -> Candidates:
        """These candidates with ``other``'s views added (``other`` wins on a view both have)."""
        out = Candidates(self.query, dict(self.turns), dict(self.scores))
        for view, found in other.scores.items():
            out.scores[view] = found
            for dialog_id in found:
                out.turns.setdefault(dialog_id, other.turns[dialog_id])
        return out


# -- helpers -----------------------------------------------------------------------------
def _sessions(turns: Iterable[Turn]) -> list[list[Turn]]:
    """Turns grouped by (conversation, session), each group in ``index`` order."""
    groups: dict[tuple[str, int], list[Turn]] = {}
    for turn in turns:
        groups.setdefault((turn.conversation, turn.session), []).append(turn)
    return [sorted(group, key=lambda t: t.index) for group in groups.values()]


def _node(turn: Turn, view: View, text: str) -> TextNode:
    metadata: dict[str, Any] = {
        "conversation": turn.conversation,
        "dialog_id": turn.dialog_id,
        "speaker": turn.speaker,
        "session": turn.session,
        "date": turn.date_text,
        "turn_index": turn.index,
        "view": view,
        "utterance": turn.text,
    }
    keys = [*_KEYS, "utterance"]
    return TextNode(
        id_=node_id(turn.conversation, turn.dialog_id, view),
        text=text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(keys),
        excluded_llm_metadata_keys=[k for k in keys if k not in _LLM_KEYS],
    )


def node_id(conversation: str, dialog_id: str, view: View) -> str:
    """The deterministic id of one view of one turn."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join((conversation, dialog_id, view))))


def _model_identity(model: BaseEmbedding) -> str:
    return f"{type(model).__name__}:{getattr(model, 'model_name', '')}"


def _fingerprint(text: str, model: str) -> str:
    return hashlib.sha256(f"{model}\x1f{text}".encode()).hexdigest()[:16]


def _filters(conversation: str, view: View) -> MetadataFilters:
    return MetadataFilters(
        filters=[
            MetadataFilter(key="conversation", value=conversation),
            MetadataFilter(key="view", value=view),
        ]
    )


def _zscores(values: Sequence[float]) -> list[float]:
    """Standardise ``values`` (population std); all-equal values give zeros."""
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if std <= 0:
        return [0.0] * len(values)
    return [(v - mean) / std for v in values]


def _named_speaker(query: str, speakers: Iterable[str]) -> str | None:
    """The one speaker whose name (whole word, any case) the query holds, else ``None``."""
    named = [
        s for s in speakers if s and re.search(rf"\b{re.escape(s)}\b", query, flags=re.IGNORECASE)
    ]
    return named[0] if len(named) == 1 else None


def _position(node: BaseNode) -> tuple[int, int, str]:
    meta = node.metadata
    return (int(meta.get("session", 0)), int(meta.get("turn_index", 0)), str(meta["dialog_id"]))


def _hit(node: BaseNode, score: float) -> RecallHit:
    meta = node.metadata
    return RecallHit(
        dialog_id=str(meta["dialog_id"]),
        speaker=str(meta["speaker"]),
        date=str(meta.get("date", "")),
        text=str(meta.get("utterance", "")),
        score=score,
        conversation=str(meta["conversation"]),
        session=int(meta.get("session", 0)),
        turn_index=int(meta.get("turn_index", 0)),
    )
