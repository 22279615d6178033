"""Foundation benchmarks: SciFact quality, k8s-docs ingestion, query latency.

    .venv/bin/python benchmarks/run.py [--home DIR] [--skip-scifact]

Prints Markdown tables (pasted into docs/benchmarks.md) and writes
benchmarks/results/latest.json.  Every comparison is measured in the same run: the default
hybrid retriever next to BM25-only and dense-only; the ingest pipeline next to the raw
embedding throughput of the same model on the same chunks (the ceiling).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from llama_index.core.schema import MetadataMode, QueryBundle

from aof_index.build.memory import MemoryComponents, build_memory
from aof_index.eval.beir import evaluate, load_beir
from aof_index.knowledge.ingest import ingest_documents
from aof_index.offline import configure_offline
from aof_index_readers import LocalFilesReader

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def scifact(memory: MemoryComponents) -> list[dict[str, object]]:
    dataset = load_beir(DATA / "beir" / "scifact")
    rows = []
    runs: list[tuple[str, dict[str, object]]] = [
        ("hybrid (default: z-score, 0.5/0.5)", {"strategy": "hybrid"}),
        (
            "hybrid (CRD default weights 0.7/0.3)",
            {"strategy": "hybrid", "semantic_weight": 0.7, "keyword_weight": 0.3},
        ),
        ("hybrid (weighted RRF k=60, 0.5/0.5)", {"strategy": "hybrid", "fusion": "rrf"}),
        ("dense only (MiniLM-L6, chunked)", {"strategy": "semantic"}),
        ("BM25 only (bm25s, chunked)", {"strategy": "keyword"}),
    ]
    for label, kwargs in runs:
        result = evaluate(memory, dataset, **kwargs)  # type: ignore[arg-type]
        rows.append({"run": label, **result.as_json()})
        print(f"  {label}: nDCG@10 {result.ndcg_at_10:.4f}", flush=True)
    return rows


def ingestion(home: Path) -> dict[str, object]:
    memory = build_memory(home=home)
    reader = LocalFilesReader([DATA / "k8s-docs"], exclude=["*.sha256"])
    started = time.perf_counter()
    report = ingest_documents(memory, reader.lazy_load_data())
    seconds = time.perf_counter() - started
    # The ceiling: the same model embedding the same chunk texts, nothing else.
    texts = [
        node.get_content(metadata_mode=MetadataMode.EMBED)
        for node in memory.node_parser().get_nodes_from_documents(
            list(LocalFilesReader([DATA / "k8s-docs"], exclude=["*.sha256"]).lazy_load_data())
        )
    ]
    t = time.perf_counter()
    memory.embed_model.get_text_embedding_batch(texts)
    embed_seconds = time.perf_counter() - t
    return {
        "documents": report.documents,
        "chunks": report.chunks,
        "megabytes": round(sum(len(x) for x in texts) / 1e6, 2),
        "seconds": round(seconds, 1),
        "chunks_per_s": round(report.chunks / seconds, 1),
        "raw_embedding_chunks_per_s": round(len(texts) / embed_seconds, 1),
        "pipeline_vs_ceiling": round((report.chunks / seconds) / (len(texts) / embed_seconds), 3),
    }


def latency(home: Path, n: int = 100) -> list[dict[str, object]]:
    memory = build_memory(home=home)
    headings = []
    for record in memory.ingest_state.records():
        headings.append(Path(record.source).stem.replace("-", " "))
    queries = (headings * (n // max(1, len(headings)) + 1))[:n]
    embed = memory.embed_model
    vectors = embed.get_text_embedding_batch(queries)
    rows = []
    for label, strategy, precomputed in [
        ("hybrid, query embedded per call", "hybrid", False),
        ("hybrid, query embedding given", "hybrid", True),
        ("dense only, query embedded per call", "semantic", False),
        ("dense only, query embedding given", "semantic", True),
        ("BM25 only", "keyword", False),
    ]:
        retriever = memory.retriever(5, strategy=strategy)  # type: ignore[arg-type]
        retriever.retrieve(QueryBundle("warm up", embedding=vectors[0]))
        times = []
        for query, vector in zip(queries, vectors, strict=True):
            bundle = QueryBundle(query, embedding=vector if precomputed else None)
            started = time.perf_counter()
            retriever.retrieve(bundle)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        rows.append(
            {
                "run": label,
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[int(0.95 * len(times)) - 1], 1),
                "queries": len(times),
            }
        )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="data home (default: temp)")
    parser.add_argument("--skip-scifact", action="store_true")
    args = parser.parse_args()
    configure_offline()
    home = args.home or Path(tempfile.mkdtemp(prefix="aof-bench-"))
    os.environ["AOF_INDEX_HOME"] = str(home)
    out: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }
    print(f"# aof-index benchmarks, {out['date']}, {out['machine']}\n", flush=True)
    print("## Ingestion of k8s-docs", flush=True)
    out["ingestion"] = ingestion(home / "k8s")
    print(table([out["ingestion"]]) + "\n", flush=True)  # type: ignore[list-item]
    print("## Query latency (k8s-docs memory, top 5)", flush=True)
    out["latency"] = latency(home / "k8s")
    print(table(out["latency"]) + "\n", flush=True)  # type: ignore[arg-type]
    if not args.skip_scifact:
        print("## SciFact (BEIR test split, 300 queries)", flush=True)
        out["scifact"] = scifact(build_memory(home=home / "scifact"))
        print(table(out["scifact"]) + "\n", flush=True)  # type: ignore[arg-type]
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
