"""KnowledgeBase sync benchmark (``aof-index bench kb``): a full sync next to plain
LlamaIndex and the model's raw embedding throughput, the incremental cases, and kill -9 at
random points.

Workload: a copy of a folder of Markdown documents (``../shared/data/k8s-docs`` by default)
as one LocalFiles source of a KnowledgeBase in ``differential`` mode, into the embedded
default Memory (Chroma on disk, the BM25 index, local MiniLM), in a temporary data root.

Measured in one run, with one loaded model:

- **ceiling**: the model embedding exactly the chunks our sync produces, ``batchSize`` at a
  time, and nothing else (no reading, chunking or writing);
- **ours**: ``KnowledgeBaseSync.sync()`` from an empty root: read, chunk, embed, write to
  the vector store, the keyword index and the sync state;
- **LlamaIndex**: ``VectorStoreIndex.from_documents`` over ``SimpleDirectoryReader`` with
  the same embedding model and LlamaIndex's defaults otherwise (its ``SentenceSplitter`` of
  1,024 tokens, of which MiniLM reads 256; its in-memory vector store): what a LlamaIndex
  user writes; and the same with ``SentenceSplitter(chunk_size=256)``, about the chunks the
  model can read, to compare the same amount of embedding work;
- **no change**, **one edit**, **one deletion**: incremental re-syncs, with the chunks
  embedded and whether the deleted file's chunks left every store;
- **kill -9**: ``kills`` runs of ``aof-index kb sync`` as a subprocess over the first
  ``kill_files`` documents, each killed at a random moment, then run again to the end; the
  final state (vector ids and texts, keyword ids, sync state, journal) is compared with a
  clean run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aof_index.knowledge.ingest import embed_nodes, process_documents
from aof_index.knowledge.sync import KnowledgeBaseSync, open_sync

__all__ = ["KbBenchConfig", "run_kb_bench", "state_digest"]

_CLI = [sys.executable, "-c", "from aof_index.cli.main import app; app()"]


@dataclass(frozen=True)
class KbBenchConfig:
    """What ``aof-index bench kb`` measures."""

    corpus: Path
    """Folder of Markdown documents."""
    baseline: bool = True
    """Also time plain LlamaIndex and the raw model (the slow part of the run)."""
    sync: bool = True
    """Run the full-sync part (``False``: only the kill runs)."""
    kills: int = 20
    kill_files: int = 20
    seed: int = 7
    parallelism: int | None = None
    """Override ``spec.indexing.parallelism`` (embedding batches in flight)."""
    batch_size: int = 100
    memory: Path | None = None
    """A Memory manifest to sync into (default: the embedded default Memory)."""


def _manifest(folder: Path, files: Path, config: KbBenchConfig) -> Path:
    indexing = f"batchSize: {config.batch_size}"
    if config.parallelism is not None:
        indexing += f", parallelism: {config.parallelism}"
    path = folder / "kb.yaml"
    path.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
        "metadata: {name: bench}\nspec:\n  sources:\n"
        f"    - {{name: docs, type: LocalFiles, localFiles: {{paths: ['{files}/**/*.md']}}}}\n"
        f"  indexing: {{{indexing}}}\n  sync: {{mode: differential}}\n"
    )
    return path


def state_digest(kb: KnowledgeBaseSync) -> dict[str, Any]:
    """What a sync leaves behind, hashed per store: vector ids with their texts (Chroma),
    keyword ids with their texts, the state's documents, and the journal's length."""
    collection: Any = kb.memory.vector_store.client  # the Chroma collection
    got = collection.get(include=["documents"])
    vectors = sorted(zip(got["ids"], got["documents"], strict=True))
    keywords = kb.memory.keyword_index
    words = sorted(
        (i, node.get_content())
        for i in keywords.node_ids()
        if (node := keywords.get(i)) is not None
    )
    state = sorted(
        (r.source, r.doc_id, r.listing_version, r.content_version, r.node_ids)
        for r in kb.state.documents()
    )

    def digest(value: object) -> str:
        return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]

    return {
        "chunks": len(vectors),
        "vectors": digest(vectors),
        "keywords": digest(words),
        "state": digest(state),
        "journal": len(kb.state.pending()),
    }


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def _full_sync(config: KbBenchConfig, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    files = work / "docs"
    shutil.copytree(config.corpus, files, ignore=shutil.ignore_patterns("*.sha256"))
    manifest = _manifest(work, files, config)
    home = work / "home"
    kb = open_sync(manifest, home=home, memory=config.memory)
    out: dict[str, Any] = {
        "documents": sum(1 for _ in files.rglob("*.md")),
        "embedding": kb.memory.embedding_identity(),
    }
    embed = kb.memory.embed_model
    embed.get_text_embedding("warm up")  # load the model before anything is timed

    if config.baseline:
        say("the model alone on our chunks (the ceiling)")
        reader = kb.reader("docs")
        documents = list(reader.load_documents(reader.list_documents()))
        nodes = process_documents(documents, kb.pipeline.chunker, kb.pipeline.transforms)
        batches = [nodes[i : i + kb.batch_size] for i in range(0, len(nodes), kb.batch_size)]

        def embed_all() -> None:
            for batch in batches:
                embed_nodes(kb.memory, batch)

        _, seconds = _timed(embed_all)
        out["ceiling"] = {"chunks": len(nodes), "seconds": seconds}

    say("our full sync")
    report, _ = _timed(kb.sync)
    out["ours"] = {
        "chunks": report.chunks,
        "embedded": report.embedded,
        "seconds": report.seconds,
        "parallelism": kb.parallelism,
        "batch_size": kb.batch_size,
    }

    if config.baseline:
        say("LlamaIndex VectorStoreIndex.from_documents")
        from llama_index.core import SimpleDirectoryReader, VectorStoreIndex

        # Without llama-index-readers-file it warns once per file; Markdown needs none.
        logging.getLogger("llama_index.core.readers.file.base").setLevel(logging.ERROR)

        def plain(chunk_size: int | None) -> int:
            from llama_index.core.node_parser import SentenceSplitter
            from llama_index.core.schema import TransformComponent

            docs = SimpleDirectoryReader(str(files), recursive=True, required_exts=[".md"])
            splitter: list[TransformComponent] | None = (
                [SentenceSplitter(chunk_size=chunk_size)] if chunk_size else None
            )
            index = VectorStoreIndex.from_documents(
                docs.load_data(), embed_model=embed, transformations=splitter
            )
            return len(index.docstore.docs)

        for key, size in (("llamaindex", None), ("llamaindex_256", 256)):
            chunks, seconds = _timed(partial(plain, size))
            out[key] = {
                "chunks": chunks,
                "seconds": seconds,
                "embed_batch_size": embed.embed_batch_size,
            }

    say("no-change re-sync")
    again = open_sync(manifest, home=home, memory=config.memory).sync()
    out["no_change"] = {"seconds": again.seconds, "embedded": again.embedded}

    say("one edited file")
    markdown = sorted(files.rglob("*.md"))
    target = markdown[len(markdown) // 2]
    text = target.read_text()
    cut = text.index(". ", len(text) // 2) + 1 if ". " in text[len(text) // 2 :] else len(text)
    target.write_text(text[:cut] + " This sentence was added by the benchmark." + text[cut:])
    edit = open_sync(manifest, home=home, memory=config.memory).sync()
    out["one_edit"] = {
        "seconds": edit.seconds,
        "updated": edit.updated,
        "embedded": edit.embedded,
        "chunks": edit.chunks,
    }

    say("one deleted file")
    kb = open_sync(manifest, home=home, memory=config.memory)
    doomed = markdown[len(markdown) // 3]
    row = next(r for r in kb.documents() if r.location == str(doomed))
    doomed.unlink()
    deletion = kb.sync()
    digest = state_digest(kb)
    keyword_ids = set(kb.memory.keyword_index.node_ids())
    collection: Any = kb.memory.vector_store.client
    left = collection.get(ids=list(row.node_ids))["ids"]
    out["one_delete"] = {
        "seconds": deletion.seconds,
        "deleted": deletion.deleted,
        "chunks_removed": len(row.node_ids),
        "left_in_vectors": len(left),
        "left_in_keywords": len(keyword_ids & set(row.node_ids)),
        "chunks": digest["chunks"],
    }
    return out


def _kills(config: KbBenchConfig, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    files = work / "kill-docs"
    files.mkdir()
    for i, path in enumerate(sorted(config.corpus.rglob("*.md"))[: config.kill_files]):
        shutil.copy(path, files / f"{i:03d}-{path.name}")
    manifest = _manifest(work, files, KbBenchConfig(config.corpus, batch_size=8))

    def sync(home: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*_CLI, "kb", "sync", str(manifest), "--json"],
            env={**os.environ, "AOF_INDEX_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    say(f"kill -9: a clean run over {config.kill_files} documents")
    clean = work / "kill-clean"
    started = time.perf_counter()
    if sync(clean).wait() != 0:
        raise RuntimeError("the clean kb sync failed")
    wall = time.perf_counter() - started
    expected = state_digest(open_sync(manifest, home=clean))
    rng = random.Random(config.seed)
    runs = []
    for run in range(config.kills):
        home = work / f"kill-{run}"
        process = sync(home)
        at = rng.uniform(0.3, 1.0) * wall  # the first ~30 % is start-up (imports)
        try:
            process.wait(timeout=at)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        killed_at = open_sync(manifest, home=home)
        partial = len(killed_at.state.documents())
        pending = len(killed_at.state.pending())
        if sync(home).wait() != 0:
            raise RuntimeError(f"kb sync after kill {run} failed")
        got = state_digest(open_sync(manifest, home=home))
        runs.append(
            {
                "killed_after_s": round(at, 2),
                "documents_recorded_at_kill": partial,
                "journal_at_kill": pending,
                "identical": got == expected,
            }
        )
        say(f"kill -9 run {run + 1}/{config.kills}: identical={got == expected}")
    return {
        "documents": config.kill_files,
        "clean_wall_seconds": wall,
        "expected": expected,
        "runs": runs,
        "identical": sum(r["identical"] for r in runs),
        "killed_mid_sync": sum(
            0 < r["documents_recorded_at_kill"] < config.kill_files or r["journal_at_kill"] > 0
            for r in runs
        ),
    }


def run_kb_bench(
    config: KbBenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the benchmark; returns the figures (see the module docstring)."""

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    with tempfile.TemporaryDirectory(prefix="aof-bench-kb-") as tmp:
        work = Path(tmp)
        result = _full_sync(config, work, say) if config.sync else {}
        if config.kills:
            result["kill"] = _kills(config, work, say)
    if "ours" not in result:
        return result
    ours, ceiling = result["ours"], result.get("ceiling")
    ours["chunks_per_s"] = ours["chunks"] / ours["seconds"]
    if ceiling:
        ceiling["chunks_per_s"] = ceiling["chunks"] / ceiling["seconds"]
        ours["of_ceiling"] = ours["chunks_per_s"] / ceiling["chunks_per_s"]
    for key in ("llamaindex", "llamaindex_256"):
        if key in result:
            plain = result[key]
            plain["chunks_per_s"] = plain["chunks"] / plain["seconds"]
            ours[f"throughput_ratio_vs_{key}"] = ours["chunks_per_s"] / plain["chunks_per_s"]
    return result
