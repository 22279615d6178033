"""Effect of chunking on retrieval: SciFact, dense MiniLM, one run per strategy.

    .venv/bin/python benchmarks/chunking_retrieval.py [--cache DIR] [--strategies a,b]

Every SciFact document is chunked by each strategy and every chunk embedded with the local
all-MiniLM-L6-v2; a document scores by its best chunk (max cosine).  The baseline, in the
same run, embeds each whole document once (title and text, as BEIR's dense baselines do);
MiniLM reads its first 256 word pieces and silently drops the rest.  Retrieval is dense
only, so the figures isolate chunking (hybrid search is measured in benchmarks/run.py).

Identical texts are embedded once per run (strategies that cut a short abstract the same
way share its vectors); ``--cache`` keeps the vectors between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import Document, MetadataMode

from aof_index import build_memory
from aof_index.eval.beir import BeirDataset, load_beir
from aof_index.node_parsers.factory import build_chunker

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"
STRATEGIES = ("auto", "fixed", "recursive", "markdown", "semantic")


class VectorCache:
    """Embeddings by text hash, in memory and (optionally) in a ``.npz`` per text batch."""

    def __init__(self, model: BaseEmbedding, folder: Path | None) -> None:
        self.model = model
        self.folder = folder
        self.vectors: dict[str, np.ndarray] = {}
        self.computed = 0
        if folder is not None and (folder / "vectors.npz").exists():
            stored = np.load(folder / "vectors.npz")
            self.vectors = {key: stored[key] for key in stored.files}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha256(t.encode()).hexdigest()[:24] for t in texts]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}
        if todo:
            fresh = self.model.get_text_embedding_batch(list(todo.values()), show_progress=True)
            self.vectors.update(
                zip(todo, (np.asarray(v, dtype=np.float32) for v in fresh), strict=True)
            )
            self.computed += len(todo)
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                np.savez(self.folder / "vectors.npz", **self.vectors)  # type: ignore[arg-type]
        return np.stack([self.vectors[k] for k in keys])


def ndcg_at_10(dataset: BeirDataset, run: dict[str, dict[str, float]]) -> tuple[float, float]:
    import ir_measures
    from ir_measures import R, nDCG

    agg = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], dataset.qrels, run)
    return float(agg[nDCG @ 10]), float(agg[R @ 100])


def rank(
    queries: np.ndarray, chunks: np.ndarray, owners: list[str], qids: list[str]
) -> dict[str, dict[str, float]]:
    """Each query's top 100 documents, a document scoring by its best chunk."""
    doc_ids = sorted(set(owners))
    column = {d: i for i, d in enumerate(doc_ids)}
    owner_index = np.array([column[o] for o in owners])
    scores = queries @ chunks.T
    run: dict[str, dict[str, float]] = {}
    for qid, row in zip(qids, scores, strict=True):
        best = np.full(len(doc_ids), -np.inf, dtype=np.float32)
        np.maximum.at(best, owner_index, row)
        top = np.argsort(-best)[:100]
        run[qid] = {doc_ids[i]: float(best[i]) for i in top}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, default=None, help="keep vectors between runs")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()

    memory = build_memory()
    window, model = memory.window, memory.embed_model
    dataset = load_beir(DATA)
    cache = VectorCache(model, args.cache)
    documents = [
        Document(
            id_=d.doc_id, text=d.text, metadata=d.metadata, excluded_embed_metadata_keys=["source"]
        )
        for d in dataset.documents()
    ]
    qids = list(dataset.queries)
    queries = np.stack(
        [np.asarray(model.get_query_embedding(dataset.queries[q]), dtype=np.float32) for q in qids]
    )
    print(f"SciFact: {len(documents)} documents, {len(qids)} queries; dense {type(model).__name__}")
    print(
        "\n| chunking | chunks | chunks/doc | nDCG@10 | R@100 | Δ nDCG@10 vs whole doc | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")

    started = time.perf_counter()
    whole = [d.get_content(metadata_mode=MetadataMode.EMBED) for d in documents]
    truncated = sum(window.count(t) > window.max_tokens for t in whole)
    base = rank(queries, cache.embed(whole), [d.doc_id for d in documents], qids)
    base_ndcg, base_recall = ndcg_at_10(dataset, base)
    print(
        f"| whole document ({truncated} of {len(documents)} cut at {window.max_tokens} tokens) "
        f"| {len(documents)} | 1.00 | {base_ndcg:.4f} | {base_recall:.4f} | - "
        f"| {time.perf_counter() - started:.0f} |",
        flush=True,
    )
    for name in args.strategies.split(","):
        started = time.perf_counter()
        chunker = build_chunker(None, window, model, strategy=name)
        nodes = chunker.get_nodes_from_documents(documents)
        texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        owners = [n.ref_doc_id or n.node_id for n in nodes]
        run = rank(queries, cache.embed(texts), owners, qids)
        ndcg, recall = ndcg_at_10(dataset, run)
        print(
            f"| {name} | {len(nodes)} | {len(nodes) / len(documents):.2f} | {ndcg:.4f} "
            f"| {recall:.4f} | {ndcg - base_ndcg:+.4f} | {time.perf_counter() - started:.0f} |",
            flush=True,
        )
    print(f"\n{cache.computed} texts embedded in this run")


if __name__ == "__main__":
    main()
