"""Tune hybrid retrieval on a BEIR training split, in numpy, from cached vectors.

    .venv/bin/python benchmarks/beir_tuning.py [DIR] [--split train] [--cache DIR] [--only NAMES]
        [--memory MANIFEST]

Reads the evaluation Memory that ``aof-index eval beir DIR`` ingests (the production
chunker, embedding and stores; run that once first, with the same ``AOF_INDEX_HOME``), pulls
every chunk's vector and text out of it once, embeds every query once, and keeps all of it
in ``--cache`` (``.npy``/``.json``), so each experiment is a few seconds of numpy. Every
experiment is scored on ``--split`` (default ``train``: the tuning split; never tune on
``test``). ``--memory`` names the manifest whose evaluation Memory is read (e.g. one naming
a fine-tuned model; give each model its own ``--cache``). A document scores by its best
chunk, as in :func:`aof_index.eval.beir.evaluate`.

This is an exploration harness: it re-implements the fusion arithmetic of
``aof_index_retrievers`` on dense arrays for speed. The figures reported in
docs/benchmarks.md for the chosen configuration come from ``aof-index eval beir`` itself.
Prints one line per experiment (name, nDCG@10, Recall@100, MRR@10).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from aof_index.build.memory import build_memory
from aof_index.eval.beir import eval_memory, load_beir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"
Array = npt.NDArray[np.float32]


@dataclass
class Corpus:
    """Chunks (vectors, texts, owning document) and queries (vectors, texts)."""

    chunk_ids: list[str]
    chunk_doc: npt.NDArray[np.int64]
    doc_ids: list[str]
    vectors: Array
    texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    query_vectors: Array
    qrels: dict[str, dict[str, int]]


def load(folder: Path, split: str, cache: Path, memory: Path | None = None) -> Corpus:
    """Read (or build and cache) the chunk and query vectors of ``folder``."""
    dataset = load_beir(folder, split)
    all_queries = {
        str(q["_id"]): str(q["text"])
        for q in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())
    }
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "chunks.json").exists():
        target = eval_memory(build_memory(memory), dataset)
        collection: Any = target.vector_store._collection  # type: ignore[attr-defined]
        got = collection.get(include=["embeddings", "metadatas", "documents"])
        index = target.keyword_index
        texts = []
        for cid in got["ids"]:
            node = index.get(cid)
            assert node is not None, cid
            texts.append(node.get_content(metadata_mode=index._metadata_mode))
        docs = [m.get("ref_doc_id") or m["doc_id"] for m in got["metadatas"]]
        (cache / "chunks.json").write_text(
            json.dumps({"ids": got["ids"], "docs": docs, "texts": texts})
        )
        np.save(cache / "vectors.npy", np.asarray(got["embeddings"], dtype=np.float32))
    if not (cache / "queries.json").exists():
        ids = list(all_queries)
        vecs = build_memory(memory).embed_model.get_text_embedding_batch(
            [all_queries[i] for i in ids]
        )
        (cache / "queries.json").write_text(json.dumps(ids))
        np.save(cache / "query_vectors.npy", np.asarray(vecs, dtype=np.float32))
    meta = json.loads((cache / "chunks.json").read_text())
    doc_ids = sorted(set(meta["docs"]))
    position = {d: i for i, d in enumerate(doc_ids)}
    qids_all = json.loads((cache / "queries.json").read_text())
    qvec_all = np.load(cache / "query_vectors.npy")
    keep = [i for i, q in enumerate(qids_all) if q in dataset.qrels]
    return Corpus(
        chunk_ids=meta["ids"],
        chunk_doc=np.asarray([position[d] for d in meta["docs"]]),
        doc_ids=doc_ids,
        vectors=np.load(cache / "vectors.npy"),
        texts=meta["texts"],
        query_ids=[qids_all[i] for i in keep],
        query_texts=[all_queries[qids_all[i]] for i in keep],
        query_vectors=qvec_all[keep],
        qrels=dataset.qrels,
    )


class Bm25:
    """A bm25s model over the chunks as a sparse term × chunk matrix (the production index).

    ``window``: the production keyword window; a document's chunks are linked in the order
    the evaluation Memory holds them (its ingestion order).
    """

    def __init__(self, corpus: Corpus, k1: float = 1.5, b: float = 0.75, window: int = 0) -> None:
        from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

        from aof_index_retrievers import BM25Index

        index = BM25Index(k1=k1, b=b, window=window)
        nodes = [
            TextNode(id_=c, text=t) for c, t in zip(corpus.chunk_ids, corpus.texts, strict=True)
        ]
        last: dict[int, TextNode] = {}
        for node, doc in zip(nodes, corpus.chunk_doc.tolist(), strict=True):
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(doc))
            if doc in last:
                before = last[doc]
                before.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id=node.node_id)
                node.relationships[NodeRelationship.PREVIOUS] = RelatedNodeInfo(
                    node_id=before.node_id
                )
            last[doc] = node
        index.add(nodes)
        index.build()
        snap = index._current_snapshot()
        assert snap.node_ids == corpus.chunk_ids
        scores = snap.model.scores
        n_vocab = len(snap.model.vocab_dict)
        self.matrix = sp.csc_matrix(
            (scores["data"], scores["indices"], scores["indptr"]),
            shape=(len(corpus.chunk_ids), n_vocab),
        ).T.tocsr()  # vocab × chunks
        self.index = index
        self.n_vocab = n_vocab

    def query_weights(self, texts: Iterable[str]) -> sp.csr_matrix:
        """One row per query: how often each term occurs in it (as bm25s sums them)."""
        tok = self.index._tokenizer.tokenize(
            list(texts), update_vocab=False, return_as="ids", show_progress=False
        )
        rows, cols = [], []
        for r, ids in enumerate(tok):
            for t in set(ids):
                if t < self.n_vocab:
                    rows.append(r)
                    cols.append(t)
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(tok), self.n_vocab))

    def scores(self, weights: sp.csr_matrix) -> Array:
        """Queries × chunks BM25 scores."""
        return np.asarray((weights @ self.matrix).todense(), dtype=np.float32)


def top(scores: Array, k: int) -> tuple[npt.NDArray[np.int64], Array]:
    """Per row: the indices of the ``k`` best positive scores, best first, and the scores."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def normalise(vals: Array, method: str) -> tuple[Array, float]:
    """Normalised scores of one candidate list and the value of a node absent from it."""
    if vals.size == 0:
        return vals, 0.0
    if method == "minmax":
        lo, hi = float(vals.min()), float(vals.max())
        return ((vals - lo) / (hi - lo) if hi > lo else np.ones_like(vals)), 0.0
    if method == "zscore":
        sd = float(vals.std())
        z = (vals - vals.mean()) / sd if sd > 0 else np.zeros_like(vals)
        return z, float(z.min())
    if method == "dbsf":
        mu, sd = float(vals.mean()), float(vals.std())
        lo, hi = mu - 3 * sd, mu + 3 * sd
        n = (vals - lo) / (hi - lo) if sd > 0 else np.full_like(vals, 0.5)
        return n, 0.0
    raise ValueError(method)


def fuse_lists(
    lists: list[tuple[npt.NDArray[np.int64], Array]],
    weights: list[float],
    method: str,
    rrf_k: float = 60,
) -> dict[int, float]:
    """Fuse candidate lists of chunk indices for one query (chunk → fused score)."""
    fused: dict[int, float] = {}
    prepared = []
    for idx, vals in lists:
        valid = vals > 0 if method != "rrf" else np.ones(len(vals), bool)
        prepared.append((idx, vals))
        for i in idx:
            fused.setdefault(int(i), 0.0)
        del valid
    for (idx, vals), w in zip(prepared, weights, strict=True):
        if method == "rrf":
            for r, i in enumerate(idx, 1):
                fused[int(i)] += w / (rrf_k + r)
            continue
        norm, missing = normalise(vals, method)
        here = {int(i): float(v) for i, v in zip(idx, norm, strict=True)}
        for i in fused:
            fused[i] += w * here.get(i, missing)
    return fused


def to_docs(corpus: Corpus, fused: dict[int, float], agg: str = "max") -> dict[str, float]:
    """Chunk scores to document scores (best chunk, or ``agg``)."""
    out: dict[str, float] = {}
    if agg == "max":
        for i, s in fused.items():
            d = corpus.doc_ids[corpus.chunk_doc[i]]
            if s > out.get(d, -np.inf):
                out[d] = s
        return out
    per: dict[str, list[float]] = {}
    for i, s in fused.items():
        per.setdefault(corpus.doc_ids[corpus.chunk_doc[i]], []).append(s)
    for d, ss in per.items():
        ss.sort(reverse=True)
        out[d] = ss[0] + (0.1 * sum(ss[1:]) if agg == "max+0.1sum" else 0.0)
    return out


def evaluate(corpus: Corpus, run: dict[str, dict[str, float]]) -> tuple[float, float, float]:
    """nDCG@10, Recall@100, MRR@10 by ir-measures."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    trimmed = {q: dict(sorted(d.items(), key=lambda kv: -kv[1])[:100]) for q, d in run.items()}
    measures = [nDCG @ 10, R @ 100, RR @ 10]
    agg = ir_measures.calc_aggregate(measures, corpus.qrels, trimmed)
    return tuple(float(agg[m]) for m in measures)  # type: ignore[return-value]


class Lab:
    """Shared arrays for the experiments."""

    def __init__(self, corpus: Corpus) -> None:
        self.c = corpus
        self.dense = corpus.query_vectors @ corpus.vectors.T
        self._bm25: dict[tuple[float, float, int], tuple[Bm25, Array]] = {}

    def bm25(self, k1: float = 1.5, b: float = 0.75, window: int = 0) -> tuple[Bm25, Array]:
        key = (k1, b, window)
        if key not in self._bm25:
            model = Bm25(self.c, k1, b, window)
            self._bm25[key] = (model, model.scores(model.query_weights(self.c.query_texts)))
        return self._bm25[key]

    def fused(
        self,
        dense: Array | None,
        sparse: Array | None,
        *,
        weights: tuple[float, float] = (0.5, 0.5),
        method: str = "zscore",
        depth: int = 200,
        extra: list[tuple[Array, float]] | None = None,
    ) -> list[dict[int, float]]:
        """Per query: fused chunk scores over the candidates of each side."""
        tops = []
        if dense is not None and weights[0] > 0:
            tops.append((top(dense, depth), weights[0], False))
        if sparse is not None and weights[1] > 0:
            tops.append((top(sparse, depth), weights[1], True))
        for arr, w in extra or []:
            tops.append((top(arr, depth), w, False))
        out = []
        for q in range(len(self.c.query_ids)):
            sides, ws = [], []
            for (idx, vals), w, positive_only in tops:
                i, v = idx[q], vals[q]
                if positive_only:
                    keep = v > 0
                    i, v = i[keep], v[keep]
                sides.append((i, v))
                ws.append(w)
            out.append(fuse_lists(sides, ws, method))
        return out

    def run(
        self, dense: Array | None, sparse: Array | None, *, agg: str = "max", **kw: Any
    ) -> dict[str, dict[str, float]]:
        fused = self.fused(dense, sparse, **kw)
        return {
            qid: to_docs(self.c, f, agg) for qid, f in zip(self.c.query_ids, fused, strict=True)
        }


def rocchio(lab: Lab, fused: list[dict[int, float]], fb: int, beta: float) -> Array:
    """Dense scores of query vectors moved towards the mean of the top ``fb`` fused chunks."""
    c = lab.c
    new = np.empty_like(c.query_vectors)
    for q in range(len(c.query_ids)):
        best = sorted(fused[q].items(), key=lambda kv: -kv[1])[:fb]
        centroid = c.vectors[[i for i, _ in best]].mean(axis=0)
        v = c.query_vectors[q] + beta * centroid
        new[q] = v / np.linalg.norm(v)
    return new @ c.vectors.T


def rm3(
    lab: Lab,
    model: Bm25,
    first: dict[str, dict[str, float]],
    fb_docs: int,
    fb_terms: int,
    orig_weight: float,
) -> Array:
    """BM25 scores of RM3-expanded queries (term weights from the top ``fb_docs`` docs)."""
    c = lab.c
    pos = {d: i for i, d in enumerate(c.doc_ids)}
    chunk_by_doc: dict[int, list[int]] = {}
    for ci, d in enumerate(c.chunk_doc):
        chunk_by_doc.setdefault(int(d), []).append(ci)
    # term frequencies per chunk from the tokenizer
    tok = model.index._tokenizer.tokenize(
        c.texts, update_vocab=False, return_as="ids", show_progress=False
    )
    orig = model.query_weights(c.query_texts)
    rows, cols, data = [], [], []
    for q, qid in enumerate(c.query_ids):
        docs = sorted(first[qid].items(), key=lambda kv: -kv[1])[:fb_docs]
        scores = np.array([s for _, s in docs], dtype=np.float64)
        p = np.exp(scores - scores.max())
        p /= p.sum()
        rel: dict[int, float] = {}
        for (d, _), pd in zip(docs, p, strict=True):
            ids = [t for ci in chunk_by_doc[pos[d]] for t in tok[ci] if t < model.n_vocab]
            if not ids:
                continue
            u, n = np.unique(ids, return_counts=True)
            for t, cnt in zip(u.tolist(), (n / n.sum()).tolist(), strict=True):
                rel[t] = rel.get(t, 0.0) + pd * cnt
        best = sorted(rel.items(), key=lambda kv: -kv[1])[:fb_terms]
        total = sum(v for _, v in best) or 1.0
        row = orig.getrow(q)
        qterms = row.indices.tolist()
        weights: dict[int, float] = {t: orig_weight / max(len(qterms), 1) for t in qterms}
        for t, v in best:
            weights[t] = weights.get(t, 0.0) + (1 - orig_weight) * v / total
        for t, w in weights.items():
            rows.append(q)
            cols.append(t)
            data.append(w * max(len(qterms), 1))
    w = sp.csr_matrix((data, (rows, cols)), shape=(len(c.query_ids), model.n_vocab))
    return model.scores(w)


def sentence_maxsim(lab: Lab, cache: Path) -> Array | None:
    """Queries × documents: the best cosine between the query and a sentence of the document.

    Needs ``sentences.json`` and ``sentence_vectors.npy`` in ``cache`` (title and
    abstract sentences of every document, embedded one by one); ``None`` when absent.
    """
    if not (cache / "sentence_vectors.npy").exists():
        return None
    meta = json.loads((cache / "sentences.json").read_text())
    vectors = np.load(cache / "sentence_vectors.npy")
    position = {d: i for i, d in enumerate(lab.c.doc_ids)}
    owner = np.asarray([position[d] for d in meta["docs"]])
    order = np.argsort(owner, kind="stable")
    owner, vectors = owner[order], vectors[order]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    sims = lab.c.query_vectors @ vectors.T
    out = np.full((sims.shape[0], len(lab.c.doc_ids)), -1.0, dtype=np.float32)
    out[:, owner[starts]] = np.maximum.reduceat(sims, starts, axis=1)
    return out


def rerank(
    lab: Lab,
    first: dict[str, dict[str, float]],
    maxsim: Array,
    head: int,
    weight: float,
) -> dict[str, dict[str, float]]:
    """Re-score each query's top ``head`` documents: (1-w)·z(first) + w·z(maxsim)."""
    position = {d: i for i, d in enumerate(lab.c.doc_ids)}
    out: dict[str, dict[str, float]] = {}
    for q, qid in enumerate(lab.c.query_ids):
        ranked = sorted(first[qid].items(), key=lambda kv: -kv[1])
        top_docs, rest = ranked[:head], ranked[head:]
        s1 = np.asarray([s for _, s in top_docs], dtype=np.float64)
        s2 = np.asarray([maxsim[q, position[d]] for d, _ in top_docs], dtype=np.float64)

        def z(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            sd = x.std()
            return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)

        combined = (1 - weight) * z(s1) + weight * z(s2)
        scores = {d: float(c) for (d, _), c in zip(top_docs, combined, strict=True)}
        low = float(combined.min()) if len(combined) else 0.0
        for n, (d, _) in enumerate(rest, 1):
            scores[d] = low - n
        out[qid] = scores
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", type=Path, default=DATA)
    parser.add_argument("--split", default="train")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/aof-beir-tuning"))
    parser.add_argument("--only", default="")
    parser.add_argument("--memory", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    corpus = load(args.folder, args.split, args.cache / args.folder.name, args.memory)
    lab = Lab(corpus)
    print(
        f"# {args.folder.name} {args.split}: {len(corpus.query_ids)} queries, "
        f"{len(corpus.chunk_ids)} chunks, {len(corpus.doc_ids)} docs "
        f"(loaded in {time.perf_counter() - started:.1f}s)",
        flush=True,
    )

    def show(name: str, run: dict[str, dict[str, float]]) -> None:
        n, r, m = evaluate(corpus, run)
        print(f"{name:60s} {n:.4f} {r:.4f} {m:.4f}", flush=True)

    only = set(filter(None, args.only.split(",")))

    def want(group: str) -> bool:
        return not only or group in only

    _, bm = lab.bm25()
    if want("base"):
        show("dense", lab.run(lab.dense, None, weights=(1, 0)))
        show("bm25 k1=1.5 b=0.75", lab.run(None, bm, weights=(0, 1)))
        show("hybrid zscore 0.5/0.5 d200", lab.run(lab.dense, bm))
    if want("fusion"):
        for method in ("zscore", "minmax", "dbsf", "rrf"):
            for wd in (0.3, 0.4, 0.5, 0.6, 0.7):
                show(
                    f"{method} w={wd}/{1 - wd:.1f} d200",
                    lab.run(lab.dense, bm, weights=(wd, 1 - wd), method=method),
                )
    if want("depth"):
        for method in ("zscore", "dbsf"):
            for depth in (100, 500, 1000):
                show(
                    f"{method} 0.5/0.5 d{depth}", lab.run(lab.dense, bm, method=method, depth=depth)
                )
    if want("window"):
        for window in (0, 1, 2):
            _, s = lab.bm25(window=window)
            show(f"bm25 window={window}", lab.run(None, s, weights=(0, 1)))
            for wd in (0.5, 0.6):
                show(
                    f"  hybrid zscore {wd}/{1 - wd:.1f} with bm25 window={window}",
                    lab.run(lab.dense, s, weights=(wd, 1 - wd)),
                )
    if want("agg"):
        show("zscore 0.5/0.5 agg max+0.1sum", lab.run(lab.dense, bm, agg="max+0.1sum"))
    if want("bm25"):
        for k1 in (0.9, 1.2, 1.5, 2.0):
            for b in (0.4, 0.75, 0.9):
                _, s = lab.bm25(k1, b)
                show(f"bm25 k1={k1} b={b}", lab.run(None, s, weights=(0, 1)))
                show(f"  hybrid zscore with bm25 k1={k1} b={b}", lab.run(lab.dense, s))
    if want("prf"):
        first_chunks = lab.fused(lab.dense, bm)
        for fb in (3, 5, 10):
            for beta in (0.5, 1.0, 2.0):
                d2 = rocchio(lab, first_chunks, fb, beta)
                show(f"rocchio fb={fb} beta={beta} dense only", lab.run(d2, None, weights=(1, 0)))
                show(f"  rocchio fb={fb} beta={beta} + bm25 zscore", lab.run(d2, bm))
                show(
                    f"  rocchio fb={fb} beta={beta} + dense + bm25 zscore",
                    lab.run(d2, bm, extra=[(lab.dense, 0.5)]),
                )
    if want("rm3"):
        model, _ = lab.bm25()
        first = lab.run(lab.dense, bm)
        for fb in (3, 5, 10):
            for terms in (10, 30):
                for ow in (0.5, 0.7):
                    s2 = rm3(lab, model, first, fb, terms, ow)
                    show(
                        f"rm3 fb={fb} terms={terms} ow={ow} bm25 only",
                        lab.run(None, s2, weights=(0, 1)),
                    )
                    show(
                        f"  rm3 fb={fb} terms={terms} ow={ow} + dense zscore",
                        lab.run(lab.dense, s2),
                    )
    if want("sentences"):
        maxsim = sentence_maxsim(lab, args.cache / args.folder.name)
        assert maxsim is not None, "embed the sentences first"
        doc_side = maxsim[:, lab.c.chunk_doc]  # as a chunk-level list: its document's maxsim
        show("sentence maxsim alone (full corpus)", lab.run(doc_side, None, weights=(1, 0)))
        for w in (0.3, 0.5):
            show(
                f"3-way zscore dense/bm25/sentences (1-w)/2,(1-w)/2,w w={w}",
                lab.run(lab.dense, bm, weights=((1 - w) / 2, (1 - w) / 2), extra=[(doc_side, w)]),
            )
        first = lab.run(lab.dense, bm)
        for head in (10, 20, 30, 50, 100):
            for w in (0.2, 0.3, 0.4, 0.5, 0.6):
                show(f"rerank head={head} w={w}", rerank(lab, first, maxsim, head, w))
    if want("chosen"):
        # The configurations picked on train, each scored once (run with --split test to
        # report them; nothing is chosen from these figures).
        first = lab.run(lab.dense, bm)
        show("chosen: hybrid zscore 0.5/0.5 (default)", first)
        show("chosen: dbsf 0.5/0.5", lab.run(lab.dense, bm, method="dbsf"))
        show(
            "chosen: rocchio fb=5 beta=0.5",
            lab.run(rocchio(lab, lab.fused(lab.dense, bm), 5, 0.5), bm),
        )
        model, _ = lab.bm25()
        show(
            "chosen: rm3 fb=3 terms=30 ow=0.7",
            lab.run(lab.dense, rm3(lab, model, first, 3, 30, 0.7)),
        )
        maxsim = sentence_maxsim(lab, args.cache / args.folder.name)
        if maxsim is not None:
            show("chosen: sentence rerank head=20 w=0.3", rerank(lab, first, maxsim, 20, 0.3))
            doc_side = maxsim[:, lab.c.chunk_doc]
            show(
                "chosen: 3-way dense/bm25/sentences 0.35/0.35/0.3",
                lab.run(lab.dense, bm, weights=(0.35, 0.35), extra=[(doc_side, 0.3)]),
            )
            s2 = rm3(lab, model, first, 3, 30, 0.7)
            show(
                "chosen: 3-way dense/rm3/sentences 0.35/0.35/0.3",
                lab.run(lab.dense, s2, weights=(0.35, 0.35), extra=[(doc_side, 0.3)]),
            )
            three = lab.run(lab.dense, s2, weights=(0.35, 0.35), extra=[(doc_side, 0.3)])
            show(
                "chosen: 3-way rm3 + sentence rerank head=20 w=0.3",
                rerank(lab, three, maxsim, 20, 0.3),
            )
    print(f"# done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
