"""Chunking benchmarks on ../shared/data/k8s-docs: throughput and largest chunk per strategy.

    .venv/bin/python benchmarks/chunking.py

Every strategy chunks the same documents with the local MiniLM window, next to LlamaIndex's
``SentenceSplitter`` (its defaults: 1024 tokens) and ``MarkdownNodeParser`` in the same run.
Largest chunk is counted in MiniLM word pieces of what the embedder sees; above 254 the
model silently truncates.
"""

from __future__ import annotations

import time
from pathlib import Path

from llama_index.core.node_parser import MarkdownNodeParser, NodeParser, SentenceSplitter
from llama_index.core.schema import MetadataMode

from aof_index import build_memory
from aof_index.node_parsers.factory import build_chunker
from aof_index_readers import LocalFilesReader

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "k8s-docs"


def main() -> None:
    memory = build_memory()
    window = memory.window
    documents = LocalFilesReader([DATA], exclude=["*.sha256", "SOURCE.md"]).load_data()
    megabytes = sum(len(d.text.encode()) for d in documents) / 1e6
    parsers: list[tuple[str, NodeParser]] = [
        (name, build_chunker(None, window, memory.embed_model, strategy=name))
        for name in ("auto", "fixed", "recursive", "markdown", "semantic")
    ]
    parsers += [
        ("LlamaIndex SentenceSplitter (default)", SentenceSplitter()),
        ("LlamaIndex MarkdownNodeParser", MarkdownNodeParser()),
    ]
    print(f"{len(documents)} documents, {megabytes:.2f} MB, window {window.max_tokens}\n")
    print("| parser | chunks | seconds | MB/s | largest chunk (tokens) | chunks over window |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, parser in parsers:
        started = time.perf_counter()
        nodes = parser.get_nodes_from_documents(documents)
        seconds = time.perf_counter() - started
        sizes = [window.count(n.get_content(metadata_mode=MetadataMode.EMBED)) for n in nodes]
        over = sum(s > window.max_tokens for s in sizes)
        print(
            f"| {name} | {len(nodes)} | {seconds:.1f} | {megabytes / seconds:.2f} | "
            f"{max(sizes)} | {over} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
