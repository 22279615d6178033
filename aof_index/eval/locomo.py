"""Evaluate conversation recall on LoCoMo (Maharana et al., ACL 2024): evidence recall@k.

LoCoMo (``locomo10.json``) holds 10 long two-person conversations (19 to 32 sessions each)
and questions whose ``evidence`` lists the dialog ids (``"D3:13"``: session 3, turn 13)
that answer them. For each question of categories 1 to 4 (multi-hop, temporal,
open-domain, single-hop in the usual reading; 5, adversarial, has no answer to find), the
turns of its conversation are ranked and recall@k is the fraction of its evidence ids found
in the top k; figures average it over questions, overall and per category.

Evidence ids are read as follows (the source has 9 references that resolve to no turn):

* an entry holding several ids (``"D8:6; D9:17"``, ``"D9:1 D4:4 D4:6"``) is split on
  ``;``, ``,`` and spaces;
* ``"D:11:26"`` is read as ``D11:26``, and leading zeros dropped (``"D30:05"`` → ``D30:5``);
* what still names no turn of the conversation (``"D"``, and ``D10:19`` of conv-42 and
  ``D4:36`` of conv-47, past the end of their sessions) is dropped and counted;
* duplicates are removed; a question left without evidence is skipped and counted.

The turns are indexed with :class:`~aof_index.memory.recall.ConversationRecall` into an
evaluation Memory like the given one (same embedding and vector store kind), in its own
namespace under ``$AOF_INDEX_HOME/memories/eval/``, so repeated runs embed nothing again.
Baselines come from the same run: BM25 over the raw turns (``Speaker: text``), MiniLM (the
Memory's embedding) over the raw turns, and their reciprocal rank fusion (k = 60).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, NodeWithScore, TextNode
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from aof_index.build.memory import MemoryComponents
from aof_index.errors import AofIndexError
from aof_index.eval.isolated import isolated_memory
from aof_index.knowledge.ingest import Progress
from aof_index.memory.recall import (
    VIEWS,
    Candidates,
    ConversationRecall,
    RecallOptions,
    Turn,
    View,
)
from aof_index_retrievers import BM25Index, reciprocal_rank_fusion

__all__ = [
    "CATEGORIES",
    "DEFAULT_ABLATIONS",
    "KS",
    "LocomoDataset",
    "LocomoQuestion",
    "LocomoResult",
    "MethodScores",
    "evaluate_locomo",
    "load_locomo",
    "normalise_evidence",
]

CATEGORIES = (1, 2, 3, 4)
KS = (5, 10, 20)
_ID = re.compile(r"D:?(\d+):0*(\d+)")


def _without(options: RecallOptions, *views: View) -> dict[View, float]:
    return {v: w for v, w in options.weights.items() if v not in views}


def _ablations(base: RecallOptions) -> dict[str, RecallOptions]:
    replace = dataclasses.replace
    return {
        "− speaker boost": replace(base, speaker_boost=0.0),
        "− neighbouring turns (turn views only)": replace(
            base, weights=_without(base, "vector:context", "keyword:context")
        ),
        "− vector context view": replace(base, weights=_without(base, "vector:context")),
        "− keyword context view": replace(base, weights=_without(base, "keyword:context")),
        "− keyword context after (2 before, 0 after)": replace(base, keyword_after=0),
        "− wide keyword context (1 before, 0 after)": replace(
            base, keyword_before=1, keyword_after=0
        ),
        "− session dates in keyword views": replace(base, keyword_dates=False),
        "vector views only": replace(
            base, weights=_without(base, "keyword:turn", "keyword:context")
        ),
        "keyword views only": replace(
            base, weights=_without(base, "vector:turn", "vector:context")
        ),
    }


DEFAULT_ABLATIONS: Callable[[RecallOptions], dict[str, RecallOptions]] = _ablations
"""The ablations ``benchmarks/locomo.py`` reports: one idea removed at a time."""


@dataclass(frozen=True)
class LocomoQuestion:
    """A question of categories 1-4 with its normalised evidence dialog ids."""

    conversation: str
    question: str
    category: int
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class LocomoDataset:
    """Conversations as turns, scorable questions, and what normalising evidence did."""

    turns: dict[str, list[Turn]]
    questions: list[LocomoQuestion]
    repaired_references: int = 0
    """Evidence entries that were split or rewritten into valid ids."""
    dropped_references: int = 0
    """Evidence entries (or parts) that name no turn of their conversation."""
    skipped_questions: int = 0
    """Questions of categories 1-4 left without valid evidence."""

    def limited(self, conversations: int | None) -> LocomoDataset:
        """The first ``conversations`` conversations and their questions (``None``: all)."""
        if conversations is None:
            return self
        keep = list(self.turns)[:conversations]
        return dataclasses.replace(
            self,
            turns={k: self.turns[k] for k in keep},
            questions=[q for q in self.questions if q.conversation in keep],
        )


def normalise_evidence(raw: str, valid: set[str]) -> tuple[list[str], bool, int]:
    """Read one ``evidence`` entry: ``(ids, repaired, dropped)``.

    ``ids`` are the valid dialog ids it names, ``repaired`` tells whether it had to be
    split or rewritten, ``dropped`` counts the parts that name no turn in ``valid``.
    """
    ids: list[str] = []
    dropped = 0
    parts = [p for p in re.split(r"[;,\s]+", raw.strip()) if p]
    for part in parts:
        match = _ID.fullmatch(part)
        dialog_id = f"D{int(match.group(1))}:{int(match.group(2))}" if match else None
        if dialog_id is not None and dialog_id in valid:
            ids.append(dialog_id)
        else:
            dropped += 1
    repaired = bool(ids) and (len(parts) > 1 or ids[0] != raw)
    return ids, repaired, dropped


def load_locomo(path: str | Path) -> LocomoDataset:
    """Read ``locomo10.json``: turns per conversation and questions of categories 1-4."""
    source = Path(path)
    try:
        samples = json.loads(source.read_text(encoding="utf-8"))
        turns: dict[str, list[Turn]] = {}
        questions: list[LocomoQuestion] = []
        repaired = dropped = skipped = 0
        for sample in samples:
            key = str(sample["sample_id"])
            turns[key] = _turns(key, sample["conversation"])
            valid = {t.dialog_id for t in turns[key]}
            for item in sample["qa"]:
                category = int(item["category"])
                if category not in CATEGORIES:
                    continue
                evidence: list[str] = []
                for raw in item.get("evidence") or []:
                    ids, fixed, lost = normalise_evidence(str(raw), valid)
                    repaired += fixed
                    dropped += lost
                    evidence.extend(i for i in ids if i not in evidence)
                if not evidence:
                    skipped += 1
                    continue
                questions.append(
                    LocomoQuestion(key, str(item["question"]), category, tuple(evidence))
                )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AofIndexError(
            f"{source} is not a LoCoMo file (a JSON list of samples with sample_id, "
            f"conversation and qa, like locomo10.json): {exc}"
        ) from exc
    return LocomoDataset(turns, questions, repaired, dropped, skipped)


def _turns(key: str, conversation: Mapping[str, Any]) -> list[Turn]:
    out: list[Turn] = []
    sessions = sorted(
        int(m.group(1)) for k in conversation if (m := re.fullmatch(r"session_(\d+)", k))
    )
    for number in sessions:
        date = str(conversation.get(f"session_{number}_date_time") or "")
        for index, turn in enumerate(conversation[f"session_{number}"]):
            out.append(
                Turn(
                    conversation=key,
                    dialog_id=str(turn["dia_id"]),
                    speaker=str(turn["speaker"]),
                    text=str(turn["text"]),
                    session=number,
                    date=date,
                    index=index,
                    image_caption=str(turn.get("blip_caption") or ""),
                )
            )
    return out


# -- scoring ----------------------------------------------------------------------------
@dataclass
class MethodScores:
    """Recall@k of one method: per question, then averaged overall and per category."""

    name: str
    per_question: list[tuple[int, dict[int, float]]] = field(default_factory=list)
    seconds: float | None = 0.0
    """Query time; ``None`` for a baseline computed from the method's own candidates."""

    def add(self, question: LocomoQuestion, ranked: Sequence[str]) -> None:
        """Score one question's ranking of dialog ids."""
        recalls = {}
        for k in KS:
            top = set(ranked[:k])
            recalls[k] = sum(e in top for e in question.evidence) / len(question.evidence)
        self.per_question.append((question.category, recalls))

    def recall(self, k: int, category: int | None = None) -> float:
        """Mean recall@k over all questions, or those of ``category``."""
        values = [r[k] for c, r in self.per_question if category is None or c == category]
        return sum(values) / len(values) if values else 0.0

    def count(self, category: int | None = None) -> int:
        """How many questions (of ``category``) were scored."""
        return sum(1 for c, _ in self.per_question if category is None or c == category)

    def as_json(self) -> dict[str, Any]:
        """``recall@5/10/20``, ``per_category`` and ``seconds``."""
        return {
            **{f"recall@{k}": round(self.recall(k), 4) for k in KS},
            "per_category": {
                str(c): {
                    **{f"recall@{k}": round(self.recall(k, c), 4) for k in KS},
                    "questions": self.count(c),
                }
                for c in CATEGORIES
            },
            "seconds": None if self.seconds is None else round(self.seconds, 2),
        }


@dataclass
class LocomoResult:
    """Our method, the baselines and any ablations, scored on the same questions."""

    method: MethodScores
    baselines: dict[str, MethodScores]
    ablations: dict[str, MethodScores]
    dataset: LocomoDataset
    index_seconds: float

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form: the method's figures at top level, then the others."""
        data = self.dataset
        return {
            **self.method.as_json(),
            "questions": self.method.count(),
            "conversations": len(data.turns),
            "turns": sum(len(t) for t in data.turns.values()),
            "evidence": {
                "repaired_references": data.repaired_references,
                "dropped_references": data.dropped_references,
                "skipped_questions": data.skipped_questions,
            },
            "index_seconds": round(self.index_seconds, 2),
            "baselines": {name: s.as_json() for name, s in self.baselines.items()},
            **(
                {"ablations": {name: s.as_json() for name, s in self.ablations.items()}}
                if self.ablations
                else {}
            ),
        }


def eval_memory(memory: MemoryComponents) -> MemoryComponents:
    """A Memory like ``memory`` (embedding, vector store kind) for LoCoMo only, in the
    ``eval`` namespace; keyed by the embedding so a new model gets a new index."""
    return isolated_memory(memory, "locomo")


def _conversation_filter(conversation: str) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key="conversation", value=conversation)])


def _ids(nodes: Sequence[NodeWithScore] | Sequence[BaseNode]) -> list[str]:
    out = []
    for item in nodes:
        node = item.node if isinstance(item, NodeWithScore) else item
        out.append(str(node.metadata["dialog_id"]))
    return out


def evaluate_locomo(
    memory: MemoryComponents,
    dataset: LocomoDataset,
    *,
    options: RecallOptions | None = None,
    ablations: Mapping[str, RecallOptions] | None = None,
    progress: Progress | None = None,
) -> LocomoResult:
    """Index ``dataset``'s turns (cached) and score our recall, baselines and ablations.

    Ablations that change only scoring reuse the main candidates; those that change the
    keyword views get an in-memory keyword index (the vector views are shared, so an
    ablation may not change them: ``vector_before``, ``vector_after`` and ``photos`` must
    match). An ablation's seconds are its time on top of the method's candidates.
    """
    opts = options or RecallOptions()
    target = eval_memory(memory)
    recall = ConversationRecall.from_memory(target, opts)
    all_turns = [t for turns in dataset.turns.values() for t in turns]

    started = time.perf_counter()
    done = 0
    for turns in dataset.turns.values():
        recall.add_turns(turns)
        done += len(turns)
        if progress:
            progress("embed", done, len(all_turns))
    # Baseline keyword index: the raw turns, nothing else (in memory, cheap to rebuild).
    raw = BM25Index()
    raw.add(
        [
            TextNode(
                id_=f"{t.conversation}/{t.dialog_id}",
                text=t.line(photo=False),
                metadata={"conversation": t.conversation, "dialog_id": t.dialog_id},
                excluded_embed_metadata_keys=["conversation", "dialog_id"],
            )
            for t in all_turns
        ]
    )
    raw.build()
    # Ablations whose keyword views differ get their own keyword index.
    variants: dict[str, tuple[RecallOptions, ConversationRecall | None]] = {}
    for name, variant in (ablations or {}).items():
        if _vector_layout(variant) != _vector_layout(opts):
            raise ValueError(
                f"ablation {name!r} changes the vector views (vector_before/after, photos), "
                "which the ablations share with the method; only keyword views may change"
            )
        if _keyword_layout(variant) == _keyword_layout(opts):
            variants[name] = (variant, None)
            continue
        other = ConversationRecall(recall.embed_model, recall.vector_store, BM25Index(), variant)
        for turns in dataset.turns.values():
            other.add_turns(turns)
        variants[name] = (variant, other)
    index_seconds = time.perf_counter() - started

    method = MethodScores("aof-index recall")
    # MiniLM is the method's vector "turn" list and RRF fuses it: no time of their own.
    baselines = {
        "bm25": MethodScores("bm25"),
        "minilm": MethodScores("minilm", seconds=None),
        "rrf": MethodScores("rrf", seconds=None),
    }
    scores = {name: MethodScores(name) for name in variants}
    keyword_views = [v for v in VIEWS if v.startswith("keyword:")]
    clock = time.perf_counter()
    embedded = _embed_queries(recall.embed_model, [q.question for q in dataset.questions])
    method_seconds = time.perf_counter() - clock
    bm25_seconds = 0.0
    variant_seconds = dict.fromkeys(variants, 0.0)
    for i, question in enumerate(dataset.questions, 1):
        clock = time.perf_counter()
        found = recall.candidates(
            question.question, question.conversation, VIEWS, query_embedding=embedded[i - 1]
        )
        method.add(question, [str(n.metadata["dialog_id"]) for n, _ in recall.rank(found)])
        method_seconds += time.perf_counter() - clock

        clock = time.perf_counter()
        bm25 = raw.query(question.question, 100, _conversation_filter(question.conversation))
        baselines["bm25"].add(question, _ids(bm25))
        bm25_seconds += time.perf_counter() - clock
        # The vector "turn" view is the raw turn (Speaker: text) embedded: plain MiniLM.
        minilm = [found.turns[d] for d in found.ranked("vector:turn")[:100]]
        baselines["minilm"].add(question, _ids(minilm))
        fused = reciprocal_rank_fusion(
            [bm25, [NodeWithScore(node=_keyed(n), score=None) for n in minilm]], k=60
        )
        baselines["rrf"].add(question, _ids(fused))

        for name, (variant, keyword_recall) in variants.items():
            clock = time.perf_counter()
            candidates: Candidates = found
            if keyword_recall is not None:
                candidates = found.merged(
                    keyword_recall.candidates(
                        question.question, question.conversation, keyword_views
                    )
                )
            ranked = recall.rank(candidates, variant)
            scores[name].add(question, [str(n.metadata["dialog_id"]) for n, _ in ranked])
            variant_seconds[name] += time.perf_counter() - clock
        if progress:
            progress("query", i, len(dataset.questions))
    method.seconds = method_seconds
    baselines["bm25"].seconds = bm25_seconds
    for name, seconds in variant_seconds.items():
        scores[name].seconds = seconds
    return LocomoResult(method, baselines, scores, dataset, index_seconds)


def _vector_layout(options: RecallOptions) -> tuple[int, int, bool]:
    return (options.vector_before, options.vector_after, options.photos)


def _keyword_layout(options: RecallOptions) -> tuple[int, int, bool]:
    return (options.keyword_before, options.keyword_after, options.keyword_dates)


def _embed_queries(model: BaseEmbedding, queries: Sequence[str]) -> list[list[float]]:
    """Query embeddings, in batches for the local model (its query and text embeddings
    are the same), one by one for others (which may embed queries differently)."""
    from aof_index.embeddings.local import LocalEmbedding

    if isinstance(model, LocalEmbedding):
        return model.get_text_embedding_batch(list(queries))
    return [model.get_query_embedding(q) for q in queries]


def _keyed(node: BaseNode) -> BaseNode:
    """``node`` under the baseline BM25 index's id for its turn, so RRF can join them."""
    meta = node.metadata
    return TextNode(
        id_=f"{meta['conversation']}/{meta['dialog_id']}",
        text=node.get_content(),
        metadata={"conversation": meta["conversation"], "dialog_id": meta["dialog_id"]},
    )
