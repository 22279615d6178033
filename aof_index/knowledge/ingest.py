"""Ingest documents into a Memory: chunk, embed, write vector store and keyword index.

Only documents whose version changed are processed; unchanged ones cost a hash lookup.
Order of writes, so that a run that fails at any point can simply be run again:

1. chunks of a batch are embedded (the expensive part, nothing written yet);
2. the old chunks of changed documents are deleted and the new ones upserted into the vector
   store and the in-memory keyword index;
3. after all batches, the keyword index is persisted atomically, then the ingest state
   records the new versions.

A crash before step 3 leaves the documents unrecorded: the next run redoes them, and since
chunk ids are deterministic that is an upsert, never a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from llama_index.core.schema import BaseNode, Document, MetadataMode, TransformComponent
from llama_index.core.vector_stores.types import BasePydanticVectorStore, VectorStoreQuery

from aof_index.build.memory import MemoryComponents
from aof_index.errors import IngestError
from aof_index.node_parsers.base import CHUNKING_REVISION, ChunkerBase, plain_settings

__all__ = [
    "IngestReport",
    "Progress",
    "collection_exists",
    "content_version",
    "embed_nodes",
    "embed_text",
    "ingest_documents",
    "pipeline_fingerprint",
    "process_documents",
]

Progress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)``; stages are ``read``, ``chunk``, ``embed``."""


@dataclass
class IngestReport:
    """What one ingest run did."""

    documents: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    """Chunks embedded and written in this run."""
    seconds: float = 0.0
    sources: list[str] = field(default_factory=list)


def content_version(document: Document, pipeline: str) -> str:
    """What must match for a document to count as unchanged: its content version and the
    pipeline that chunked and embedded it (a new chunker or model re-does every document).

    The content version is the reader's ``content_hash`` where it gives one (a touched file
    keeps it, while its listing ``version``, mtime and size, changes), else its ``version``.
    """
    meta = document.metadata
    return f"{meta.get('content_hash') or meta.get('version') or document.hash}@{pipeline}"


def pipeline_fingerprint(
    memory: MemoryComponents,
    parser: ChunkerBase,
    transforms: Sequence[TransformComponent] = (),
) -> str:
    """A short hash of what turns a document into vectors: the processing steps' and the
    chunker's settings, the chunking revision and the embedding."""
    settings = {
        "transforms": [{type(t).__name__: plain_settings(t)} for t in transforms],
        "chunker": parser.settings(),
        "revision": CHUNKING_REVISION,
        "embedding": memory.embedding_identity(),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def ingest_documents(
    memory: MemoryComponents,
    documents: Iterable[Document],
    *,
    chunker: ChunkerBase | None = None,
    transforms: Sequence[TransformComponent] = (),
    progress: Progress | None = None,
    batch_size: int = 256,
) -> IngestReport:
    """Ingest ``documents`` into ``memory``; unchanged documents are skipped.

    Args:
        memory: where chunks, vectors and the ingest state go.
        documents: the documents; ``metadata["version"]`` (else the content hash) says
            whether one changed since the last run.
        chunker: the node parser (default: ``memory.node_parser()``, the ``auto`` strategy).
        transforms: document steps run before chunking (``build_processing``); a document
            they drop (a duplicate) keeps no chunks and counts as ingested.
        progress: ``progress(stage, done, total)`` callback.
        batch_size: chunks embedded and written per batch.

    Changing ``chunker`` or ``transforms`` settings, or the embedding model, changes the
    pipeline fingerprint, so every document is processed again on the next run.

    Raises:
        IngestError: when no document was given; the stores are left as they were.
    """
    started = time.perf_counter()
    report = IngestReport()
    parser = chunker or memory.node_parser()
    pipeline = pipeline_fingerprint(memory, parser, transforms)
    known = memory.ingest_state.versions()
    todo: list[Document] = []
    for document in documents:
        report.documents += 1
        previous = known.get(document.doc_id)
        if previous == content_version(document, pipeline):
            report.unchanged += 1
        else:
            todo.append(document)
            if previous is None:
                report.added += 1
            else:
                report.updated += 1
        if progress:
            progress("read", report.documents, 0)
    if report.documents == 0:
        raise IngestError("nothing to ingest: no readable document was found")
    if todo:
        nodes = process_documents(todo, parser, transforms, progress)
        _write(memory, todo, nodes, pipeline, progress, batch_size)
        report.chunks = len(nodes)
        report.sources = [str(d.metadata.get("source", d.doc_id)) for d in todo]
    report.seconds = time.perf_counter() - started
    return report


def process_documents(
    documents: Sequence[Document],
    parser: ChunkerBase,
    transforms: Sequence[TransformComponent] = (),
    progress: Progress | None = None,
) -> list[BaseNode]:
    """Run the processing ``transforms`` over ``documents`` together (deduplication compares
    them with each other), then chunk each document kept; chunk ids are deterministic."""
    kept: Sequence[BaseNode] = documents
    for transform in transforms:
        kept = transform(list(kept))
    chunkable = [d for d in kept if isinstance(d, Document)]
    nodes: list[BaseNode] = []
    for i, document in enumerate(chunkable, 1):
        nodes.extend(parser.get_nodes_from_documents([document]))
        if progress:
            progress("chunk", i, len(chunkable))
    return nodes


def embed_text(node: BaseNode) -> str:
    """What the embedding model sees of a chunk: its text with the embedded metadata."""
    return node.get_content(metadata_mode=MetadataMode.EMBED)


def embed_nodes(memory: MemoryComponents, nodes: Sequence[BaseNode]) -> None:
    """Embed ``nodes`` in one call to the Memory's model, setting ``node.embedding``."""
    vectors = memory.embed_model.get_text_embedding_batch([embed_text(n) for n in nodes])
    for node, vector in zip(nodes, vectors, strict=True):
        node.embedding = vector


def collection_exists(store: BasePydanticVectorStore) -> bool:
    """Whether deleting from ``store`` is safe: Qdrant's store creates its collection on the
    first add and raises on a delete before that; other stores always answer."""
    client = getattr(store, "client", None)
    exists = getattr(client, "collection_exists", None)
    name = getattr(store, "collection_name", None)
    return bool(exists(name)) if callable(exists) and isinstance(name, str) else True


def check_vector_width(memory: MemoryComponents, vector: Sequence[float]) -> None:
    """Refuse, before anything is deleted or written, vectors the Memory's vector store cannot
    hold: a collection filled by an embedding model of another width (the Memory's model was
    changed in place). A one-result query with ``vector`` is the probe every store answers.

    Raises:
        IngestError: the widths differ; names the Memory, the embedding and the fix.
    """
    store = memory.vector_store
    if not collection_exists(store):
        return
    try:
        store.query(VectorStoreQuery(query_embedding=list(vector), similarity_top_k=1))
    except Exception as exc:  # each store words it its own way; all say "dimension"
        if "dimension" not in str(exc).lower():
            raise
        meta = memory.resource.metadata
        raise IngestError(
            f"Memory {meta.namespace}/{meta.name}: its vector store holds vectors of another "
            f"width than the embedding {memory.embedding_identity()} gives "
            f"({len(vector)}): {exc}. Nothing was changed. Give this embedding its own "
            "collection (spec.semantic.vectorStore.<backend>.collection) or a new Memory."
        ) from exc


def _write(
    memory: MemoryComponents,
    documents: Sequence[Document],
    nodes: Sequence[BaseNode],
    pipeline: str,
    progress: Progress | None,
    batch_size: int,
) -> None:
    store = memory.vector_store
    keywords = memory.keyword_index
    if nodes:  # the first batch is embedded before anything is deleted
        embed_nodes(memory, nodes[:batch_size])
        check_vector_width(memory, nodes[0].get_embedding())
    # Documents seen before, or written by a run that died before recording them, may have
    # chunks in the stores: remove them first so the new chunks replace, never add to, them.
    has_collection = collection_exists(store)
    for document in documents:
        if has_collection:
            store.delete(document.doc_id)
        keywords.delete_ref_doc(document.doc_id)
    for start in range(0, len(nodes), batch_size):
        batch = list(nodes[start : start + batch_size])
        if start:
            embed_nodes(memory, batch)
        store.add(batch)
        keywords.add(batch)
        if progress:
            progress("embed", start + len(batch), len(nodes))
    keywords.persist()
    by_doc: dict[str, list[str]] = {d.doc_id: [] for d in documents}
    for node in nodes:
        if node.ref_doc_id is not None:
            by_doc[node.ref_doc_id].append(node.node_id)
    memory.ingest_state.record(
        (
            d.doc_id,
            content_version(d, pipeline),
            str(d.metadata.get("source", d.doc_id)),
            by_doc[d.doc_id],
        )
        for d in documents
    )
