"""Local embedding backends compared: torch, ONNX fp32/int8, model2vec static (speed, SciFact).

    .venv/bin/python benchmarks/embeddings.py [--home DIR] [--runs 2] [--skip-scifact]
        [--only NAME ...]

Speed: chunks per second embedding the k8s-docs chunks exactly as ingestion makes them (the
default Memory's chunker, texts as the embedder sees them), every backend in the same run,
each timed ``--runs`` times after a warm-up (model load, ONNX export and static distillation
are not timed; the warm-up's own seconds are printed, so a first run shows the one-time
export or distillation cost).
Quality: nDCG@10 on BEIR SciFact through :func:`aof_index.eval.beir.evaluate`, the corpus
ingested by each backend into its own evaluation Memory (cached under ``--home``).
Also prints how close each backend's vectors are to torch's (cosine); the static model has
vectors of its own (256 dimensions, another space), so it has no such figure.
``--only`` keeps the named backends (repeatable; torch is the cosine reference when kept).
Prints figures only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import MetadataMode

from aof_index.build.memory import MemoryComponents, build_memory
from aof_index.embeddings.local import LocalEmbedding, by_length
from aof_index.embeddings.onnx import OnnxEmbedding
from aof_index.embeddings.static import StaticEmbedding
from aof_index.eval import beir
from aof_index.eval.isolated import isolated_memory
from aof_index.offline import configure_offline
from aof_index_readers import LocalFilesReader

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH = 32


def backends(home: Path) -> dict[str, Callable[[], BaseEmbedding]]:
    """Each backend's constructor (all lazily loaded, same model and batch size)."""
    models = home / "models"
    return {
        "torch": lambda: LocalEmbedding(embed_batch_size=BATCH),
        # mypy takes the pydantic fields for the constructor: model_path comes from model.
        "torch, sorted by length": lambda: _SortedLocal(embed_batch_size=BATCH),  # type: ignore[call-arg]
        "onnx-fp32": lambda: OnnxEmbedding(
            variant="fp32", cache_dir=models, embed_batch_size=BATCH
        ),
        "onnx-int8": lambda: OnnxEmbedding(
            variant="int8", cache_dir=models, embed_batch_size=BATCH
        ),
        "static": lambda: StaticEmbedding(cache_dir=models, embed_batch_size=BATCH),
    }


class _SortedLocal(LocalEmbedding):
    """torch with OnnxEmbedding's sort by length: what sorting alone is worth."""

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[list[float]]:
        return by_length(texts, super().get_text_embedding_batch)


def k8s_chunks(memory: MemoryComponents) -> list[str]:
    """The k8s-docs chunk texts as ingestion embeds them."""
    reader = LocalFilesReader([DATA / "k8s-docs"], exclude=["*.sha256"])
    nodes = memory.node_parser().get_nodes_from_documents(list(reader.lazy_load_data()))
    return [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]


def speed(
    embed: BaseEmbedding, texts: list[str], runs: int
) -> tuple[float, list[float], np.ndarray]:
    """Seconds of the warm-up, chunks per second of each run, and the vectors of the last."""
    started = time.perf_counter()
    embed.get_text_embedding_batch(texts[:BATCH])  # load (export, distil) outside the timing
    warm_up = time.perf_counter() - started
    rates, vectors = [], np.empty(0)
    for _ in range(runs):
        started = time.perf_counter()
        vectors = np.asarray(embed.get_text_embedding_batch(texts))
        rates.append(len(texts) / (time.perf_counter() - started))
    return warm_up, rates, vectors


def scifact(memory: MemoryComponents, name: str, embed: BaseEmbedding) -> dict[str, float]:
    """nDCG@10 (dense and hybrid) with ``embed`` in an evaluation Memory of its own."""
    dataset = beir.load_beir(DATA / "beir" / "scifact")
    target = isolated_memory(
        memory, f"scifact-{name.replace(' ', '')}", dataset.name, len(dataset.corpus)
    )
    target.embed_model = embed  # type: ignore[misc]  # cached_property: set it first
    scores = {}
    for strategy in ("semantic", "hybrid"):
        started = time.perf_counter()
        result = beir.evaluate(memory, dataset, strategy=strategy, target=target)  # type: ignore[arg-type]
        scores[strategy] = result.ndcg_at_10
        print(
            f"  {name} {strategy}: nDCG@10 {result.ndcg_at_10:.4f}"
            f" ({time.perf_counter() - started:.0f} s incl. ingestion)",
            flush=True,
        )
    return scores


def main() -> None:
    """Print the speed, closeness and quality figures of every backend."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=Path("/tmp/aof-bench-embeddings"))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    configure_offline()
    memory = build_memory(home=args.home)
    texts = k8s_chunks(memory)
    print(f"k8s-docs: {len(texts)} chunks, batch {BATCH}", flush=True)
    chosen = {
        name: make
        for name, make in backends(args.home).items()
        if not args.only or name in args.only
    }
    reference = None
    for name, make in chosen.items():
        warm_up, rates, vectors = speed(make(), texts, args.runs)
        if name == "torch":
            reference = vectors
        if reference is None or vectors.shape != reference.shape or name == "static":
            closeness = "cosine to torch: n/a"  # no reference, or vectors of another space
        else:
            cosine = (vectors * reference).sum(axis=1)
            closeness = f"cosine to torch min {cosine.min():.4f} mean {cosine.mean():.4f}"
        print(
            f"  {name}: chunks/s "
            + ", ".join(f"{r:.1f}" for r in rates)
            + f"; {closeness}; warm-up {warm_up:.1f} s",
            flush=True,
        )
    if not args.skip_scifact:
        print("SciFact (test split, 300 queries)", flush=True)
        for name, make in chosen.items():
            if "sorted" not in name:  # the same vectors as torch's
                scifact(memory, name, make())


if __name__ == "__main__":
    main()
