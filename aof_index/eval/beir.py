"""Evaluate a Memory's retriever on a BEIR-layout dataset (corpus, queries, qrels).

The corpus is ingested through the Memory's own pipeline (the same chunker, embedding and
stores as production) into a separate evaluation Memory, cached under
``$AOF_INDEX_HOME/memories/eval/``, so repeated runs only pay for retrieval.  A document
scores by its best chunk.  Metrics come from ``ir-measures`` (trec_eval's implementations):
nDCG@10, Recall@100 and MRR@10 (reported by ir-measures as ``RR@10``), plus the median
wall time of one ``retrieve`` call (p50).  :func:`score_retriever` scores any LlamaIndex
retriever; :func:`baseline_retrievers` builds the reference set (BM25, dense, LlamaIndex's
``QueryFusionRetriever``, the Memory's default) for same-run comparisons.  Tune on the
``train`` split (``load_beir(folder, "train")``), report on ``test``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import Document

from aof_index.build.memory import MemoryComponents, Strategy
from aof_index.errors import AofIndexError
from aof_index.eval.isolated import isolated_memory
from aof_index.knowledge.ingest import Progress, ingest_documents

__all__ = [
    "BASELINES",
    "BeirDataset",
    "EvalResult",
    "baseline_retrievers",
    "eval_memory",
    "evaluate",
    "hybrid_options",
    "load_beir",
    "prepare",
    "rerank_options",
    "score_retriever",
]


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset split: documents, the queries that have judgements, and qrels."""

    name: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"

    def documents(self) -> Iterator[Document]:
        """Corpus entries as documents (title in metadata, so the embedder sees it once)."""
        for doc_id, (title, text) in self.corpus.items():
            metadata = {"title": title, "source": doc_id} if title else {"source": doc_id}
            yield Document(id_=doc_id, text=text, metadata=metadata)


@dataclass(frozen=True)
class EvalResult:
    """Figures of one evaluation run.

    ``strategy`` names what was scored: a strategy (``hybrid``, ``semantic``,
    ``keyword``) or a baseline/configuration label; ``config`` holds its retriever
    settings (JSON-serialisable), ``p50_ms`` the median wall time of one ``retrieve``
    call (query embedding included).
    """

    strategy: str
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int
    seconds: float
    p50_ms: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    split: str = "test"

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form: ``ndcg@10``, ``recall@100``, ``mrr@10``, ``queries``..."""
        return {
            "ndcg@10": round(self.ndcg_at_10, 4),
            "recall@100": round(self.recall_at_100, 4),
            "mrr@10": round(self.mrr_at_10, 4),
            "queries": self.queries,
            "strategy": self.strategy,
            "split": self.split,
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 2),
            "seconds": round(self.seconds, 2),
            "config": self.config,
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
    return BeirDataset(root.name, corpus, queries, qrels, split)


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
    label: str | None = None,
    rerank: Mapping[str, Any] | None = None,
    **retriever_kwargs: Any,
) -> EvalResult:
    """Ingest the corpus (cached) and score ``strategy`` on every judged query.

    ``target`` is the evaluation Memory to use instead of :func:`eval_memory` (e.g. one with
    another embedding model, to compare models in one run). ``retriever_kwargs`` go to
    :meth:`MemoryComponents.retriever` (for ``hybrid``: the :class:`HybridRetriever`
    options, e.g. ``normalization="dbsf"`` or ``feedback_docs=5``); ``label`` names the
    result (default: the strategy). ``rerank`` (options of
    :class:`~aof_index.postprocessors.SentenceSimilarityReranker`, e.g. ``{"weight": 0.5,
    "rerank_top": 30}``) adds the sentence re-scoring second stage, with the Memory's
    embedding model.
    """
    target = prepare(memory, dataset, progress=progress, target=target)
    chosen = strategy or target.default_strategy()
    # Several chunks may come from one document: fetch more chunks than documents needed.
    retriever = target.retriever(
        top_k=depth * 2, strategy=chosen, candidate_top_k=depth * 2, **retriever_kwargs
    )
    config = {"strategy": chosen, **_jsonable(retriever_kwargs)}
    if rerank is not None:
        from aof_index.postprocessors import PostprocessedRetriever, SentenceSimilarityReranker

        reranker = SentenceSimilarityReranker(embed_model=target.embed_model, **rerank)
        retriever = PostprocessedRetriever(retriever, [reranker])
        config["rerank"] = _jsonable(dict(rerank))
    return score_retriever(
        retriever,
        dataset,
        name=label or chosen,
        depth=depth,
        on_query=on_query,
        config=config,
    )


def prepare(
    memory: MemoryComponents,
    dataset: BeirDataset,
    *,
    progress: Progress | None = None,
    target: MemoryComponents | None = None,
) -> MemoryComponents:
    """The evaluation Memory of ``dataset`` with the corpus ingested (cached across runs)."""
    target = target or eval_memory(memory, dataset)
    ingest_documents(target, dataset.documents(), progress=progress)
    return target


def score_retriever(
    retriever: BaseRetriever,
    dataset: BeirDataset,
    *,
    name: str,
    depth: int = 100,
    on_query: Callable[[int, int], None] | None = None,
    config: dict[str, Any] | None = None,
) -> EvalResult:
    """Score any LlamaIndex retriever on every judged query of ``dataset``.

    A document scores by its best chunk (a node's ``ref_doc_id``, else its id); the best
    ``depth`` documents of each query are judged. The retriever should return about
    ``2 * depth`` nodes, since several chunks may come from one document.
    """
    import ir_measures
    from ir_measures import RR, R, nDCG

    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    started = time.perf_counter()
    for i, (qid, text) in enumerate(dataset.queries.items(), 1):
        t0 = time.perf_counter()
        hits = retriever.retrieve(text)
        latencies.append(time.perf_counter() - t0)
        scores: dict[str, float] = {}
        for hit in hits:
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
        name,
        float(agg[ndcg]),
        float(agg[recall]),
        float(agg[mrr]),
        len(run),
        seconds,
        p50_ms=statistics.median(latencies) * 1000 if latencies else None,
        config=config or {},
        split=dataset.split,
    )


BASELINES: tuple[str, ...] = ("bm25", "dense", "llamaindex-qfr-rrf", "default")
"""The baselines :func:`baseline_retrievers` builds, in report order."""


def baseline_retrievers(target: MemoryComponents, depth: int = 100) -> dict[str, BaseRetriever]:
    """Reference retrievers over the evaluation Memory ``target``, ``2 * depth`` results each.

    * ``bm25``: the BM25 keyword index alone.
    * ``dense``: the vector index alone.
    * ``llamaindex-qfr-rrf``: LlamaIndex's ``QueryFusionRetriever`` in
      ``reciprocal_rerank`` mode over the same two retrievers (one query, no LLM query
      generation), the stock way to do hybrid search in LlamaIndex.
    * ``default``: the Memory's own default retriever (its manifest's hybrid settings).
    """
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.retrievers.fusion_retriever import FUSION_MODES

    n = depth * 2
    return {
        "bm25": target.retriever(top_k=n, strategy="keyword"),
        "dense": target.retriever(top_k=n, strategy="semantic"),
        "llamaindex-qfr-rrf": QueryFusionRetriever(
            [
                target.retriever(top_k=n, strategy="semantic"),
                target.retriever(top_k=n, strategy="keyword"),
            ],
            llm=MockLLM(),  # never called: num_queries=1 generates no extra queries
            mode=FUSION_MODES.RECIPROCAL_RANK,
            similarity_top_k=n,
            num_queries=1,
            use_async=False,
        ),
        "default": target.retriever(top_k=n, strategy="hybrid", candidate_top_k=n),
    }


def hybrid_options(preset: str | None = None, **flags: Any) -> dict[str, Any]:
    """HybridRetriever options from a named ``preset`` and explicit ``flags`` (``None``: unset).

    Presets: ``"tuned"``, :data:`aof_index_retrievers.TUNED_HYBRID` (chosen on SciFact's
    train split). Explicit flags override the preset. Raises ``ValueError`` for an
    unknown preset or option value.
    """
    from aof_index_retrievers import TUNED_HYBRID
    from aof_index_retrievers.fusion import _FUSION_METHODS, _NORMALIZATIONS

    presets: dict[str, dict[str, Any]] = {"tuned": dict(TUNED_HYBRID)}
    if preset is not None and preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    options = dict(presets[preset]) if preset else {}
    options.update({k: v for k, v in flags.items() if v is not None})
    if "fusion" in options and options["fusion"] not in _FUSION_METHODS:
        raise ValueError(f"fusion must be one of {', '.join(_FUSION_METHODS)}")
    if "normalization" in options and options["normalization"] not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {', '.join(_NORMALIZATIONS)}")
    return options


def rerank_options(preset: str | None = None, **flags: Any) -> dict[str, Any] | None:
    """Sentence re-scoring options from ``preset`` and ``flags``; ``None`` when off.

    ``"tuned"`` is :data:`aof_index.postprocessors.TUNED_SENTENCE_RERANK`. A weight of 0
    turns the stage off.
    """
    from aof_index.postprocessors import TUNED_SENTENCE_RERANK

    if preset is not None and preset != "tuned":
        raise ValueError(f"unknown preset {preset!r}; choose one of tuned")
    options = dict(TUNED_SENTENCE_RERANK) if preset else {}
    options.update({k: v for k, v in flags.items() if v is not None})
    if not options or not options.get("weight"):
        return None
    return options


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        for k, v in values.items()
    }
