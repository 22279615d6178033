"""Evaluate a Memory's retriever on a BEIR-layout dataset (corpus, queries, qrels).

The corpus is ingested through the Memory's own pipeline (the same chunker, embedding and
stores as production) into a separate evaluation Memory, cached under
``$AOF_INDEX_HOME/memories/eval/``, so repeated runs only pay for retrieval.  A document
scores by its best chunk.  Metrics come from ``ir-measures`` (trec_eval's implementations):
nDCG@10, Recall@100 and MRR@10 (reported by ir-measures as ``RR@10``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_index.core.schema import Document

from aof_index.build.memory import MemoryComponents, Strategy
from aof_index.errors import AofIndexError
from aof_index.eval.isolated import isolated_memory
from aof_index.knowledge.ingest import Progress, ingest_documents

__all__ = ["BeirDataset", "EvalResult", "eval_memory", "evaluate", "load_beir"]


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset split: documents, the queries that have judgements, and qrels."""

    name: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def documents(self) -> Iterator[Document]:
        """Corpus entries as documents (title in metadata, so the embedder sees it once)."""
        for doc_id, (title, text) in self.corpus.items():
            metadata = {"title": title, "source": doc_id} if title else {"source": doc_id}
            yield Document(id_=doc_id, text=text, metadata=metadata)


@dataclass(frozen=True)
class EvalResult:
    """Figures of one evaluation run."""

    strategy: str
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form: ``ndcg@10``, ``recall@100``, ``mrr@10``, ``queries``..."""
        return {
            "ndcg@10": round(self.ndcg_at_10, 4),
            "recall@100": round(self.recall_at_100, 4),
            "mrr@10": round(self.mrr_at_10, 4),
            "queries": self.queries,
            "strategy": self.strategy,
            "seconds": round(self.seconds, 2),
        }


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` from ``folder``."""
    root = Path(folder)
    needed = [root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise AofIndexError(
            f"{root} is not a BEIR dataset folder: missing {', '.join(missing)}. Expected "
            "corpus.jsonl, queries.jsonl and qrels/<split>.tsv."
        )
    qrels: dict[str, dict[str, int]] = {}
    with needed[2].open(encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0] in {"query-id", "query_id"}:
                continue
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    corpus = {
        str(d["_id"]): (str(d.get("title") or ""), str(d.get("text") or ""))
        for d in _read_jsonl(needed[0])
    }
    queries = {
        str(q["_id"]): str(q["text"]) for q in _read_jsonl(needed[1]) if str(q["_id"]) in qrels
    }
    return BeirDataset(root.name, corpus, queries, qrels)


def eval_memory(memory: MemoryComponents, dataset: BeirDataset) -> MemoryComponents:
    """A Memory like ``memory`` (same chunker, embedding, stores) holding only ``dataset``.

    It lives in its own namespace and collection, keyed by the dataset and the embedding
    configuration, so it never touches the user's data and is reused across runs.
    """
    return isolated_memory(memory, dataset.name, dataset.name, len(dataset.corpus))


def evaluate(
    memory: MemoryComponents,
    dataset: BeirDataset,
    *,
    strategy: Strategy | None = None,
    depth: int = 100,
    progress: Progress | None = None,
    on_query: Callable[[int, int], None] | None = None,
    target: MemoryComponents | None = None,
    **retriever_kwargs: Any,
) -> EvalResult:
    """Ingest the corpus (cached) and score ``strategy`` on every judged query.

    ``target`` is the evaluation Memory to use instead of :func:`eval_memory` (e.g. one with
    another embedding model, to compare models in one run).
    """
    import ir_measures
    from ir_measures import RR, R, nDCG

    target = target or eval_memory(memory, dataset)
    ingest_documents(target, dataset.documents(), progress=progress)
    chosen = strategy or target.default_strategy()
    # Several chunks may come from one document: fetch more chunks than documents needed.
    retriever = target.retriever(
        top_k=depth * 2, strategy=chosen, candidate_top_k=depth * 2, **retriever_kwargs
    )
    started = time.perf_counter()
    run: dict[str, dict[str, float]] = {}
    for i, (qid, text) in enumerate(dataset.queries.items(), 1):
        scores: dict[str, float] = {}
        for hit in retriever.retrieve(text):
            doc = hit.node.ref_doc_id or hit.node.node_id
            score = float(hit.score or 0.0)
            if score > scores.get(doc, float("-inf")):
                scores[doc] = score
        run[qid] = dict(sorted(scores.items(), key=lambda kv: -kv[1])[:depth])
        if on_query:
            on_query(i, len(dataset.queries))
    seconds = time.perf_counter() - started
    ndcg, recall, mrr = nDCG @ 10, R @ 100, RR @ 10
    agg = ir_measures.calc_aggregate([ndcg, recall, mrr], dataset.qrels, run)
    return EvalResult(
        chosen, float(agg[ndcg]), float(agg[recall]), float(agg[mrr]), len(run), seconds
    )
