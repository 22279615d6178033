"""Sync a KnowledgeBase's sources into its Memory: only what changed is read and embedded.

Per source, :meth:`KnowledgeBaseSync.sync` lists the documents (ids and version markers,
no content), compares the listing with the sync state (:mod:`aof_index.knowledge.sync_state`)
and

- loads only new and changed documents (``load_documents``); one whose content version
  (content hash and pipeline) is unchanged just gets its new listing version recorded;
- processes, chunks and embeds them in groups of about ``spec.indexing.batchSize`` chunks,
  and replaces their chunks in the vector store and the keyword index (chunk ids are
  deterministic, so a re-written chunk is an upsert);
- removes the chunks of documents no longer listed, from both stores and the state.

Modes (``spec.sync.mode`` or the ``mode`` argument): ``incremental`` as above;
``differential`` also re-uses the vector of every chunk whose embedded text is unchanged (the
state keeps vectors keyed by ``sha256(embedding identity, text)``), so editing one paragraph
embeds only the chunks that changed; ``full`` re-processes and re-embeds every listed
document. In every mode a document's old chunks stay queryable until its new ones are
written: new chunks are written first, then the old chunk ids they do not reuse are
deleted, and deleted documents are removed after the source's listing has been processed.

Crash safety: each group of document writes is journaled (old chunk ids and the new chunks
with their vectors) before any store is touched. At checkpoints the keyword index is
persisted (atomically), then the state records the documents and drops their journal
entries in one transaction. A sync first redoes whatever the journal still holds (every
step is idempotent: delete by id, upsert by id), so a process killed at any point and run
again ends with exactly the chunks a clean run has.

A source that fails (bad credentials, unreachable, invalid settings) is recorded with its
message and time; the others still sync, and its indexed documents are kept.

Example:
    >>> from aof_index.knowledge.sync import open_sync
    >>> kb = open_sync("knowledge-base.yaml")  # doctest: +SKIP
    >>> report = kb.sync(mode="incremental")  # doctest: +SKIP
    >>> report.added, report.embedded, kb.status().stats.total_chunks  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.schema import BaseNode, Document

from aof_index.build.memory import MemoryComponents
from aof_index.build.sources import build_reader, select_sources
from aof_index.errors import AofIndexError
from aof_index.home import data_home, knowledge_dir
from aof_index.knowledge.ingest import (
    collection_exists,
    content_version,
    embed_nodes,
    embed_text,
    pipeline_fingerprint,
    process_documents,
)
from aof_index.knowledge.pipeline import KnowledgeBasePipeline, build_knowledge_base
from aof_index.knowledge.sync_state import DocumentRow, DocumentWrite, SyncState
from aof_index.spec.base import Condition
from aof_index.spec.knowledge_base import (
    KnowledgeBaseStats,
    KnowledgeBaseStatus,
    KnowledgeSource,
    SourceStatus,
    SyncError,
)

if TYPE_CHECKING:
    from aof_index_readers.base import DocumentRef, SourceReader

__all__ = [
    "KnowledgeBaseSync",
    "SourceReport",
    "SyncMode",
    "SyncProgress",
    "SyncReport",
    "open_sync",
]

SyncMode = Literal["full", "incremental", "differential"]
SyncProgress = Callable[[str, str, int, int], None]
"""Called as ``progress(source, stage, done, total)``; stages are ``list`` (documents
listed), ``read`` (documents loaded of those to read), ``embed`` (chunks embedded) and
``delete`` (documents removed); ``total`` is 0 when unknown."""

CHECKPOINT_CHUNKS = 2000
"""Chunks written between checkpoints (keyword index persisted, state recorded)."""
_CHARS_PER_TOKEN = 4
"""Rough characters per token, to size document groups before chunking them."""


@dataclass
class SourceReport:
    """What one sync did to one source."""

    name: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: int = 0
    """Listed documents the reader could not read (binary, empty, too large)."""
    embedded: int = 0
    """Chunks embedded (not taken from the embedding cache) in this run."""
    written: int = 0
    """Chunks written to the stores in this run."""
    documents: int = 0
    """Documents indexed for this source after the sync."""
    chunks: int = 0
    """Chunks indexed for this source after the sync."""
    error: str | None = None


@dataclass
class SyncReport:
    """What one sync did, in total and per source."""

    mode: SyncMode
    sources: list[SourceReport] = field(default_factory=list)
    recovered: int = 0
    """Journaled document writes of an interrupted run redone first."""
    documents: int = 0
    """Documents indexed after the sync (all sources)."""
    chunks: int = 0
    """Chunks indexed after the sync (all sources)."""
    seconds: float = 0.0

    def _total(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.sources)

    @property
    def added(self) -> int:
        """New documents indexed."""
        return self._total("added")

    @property
    def updated(self) -> int:
        """Changed documents re-indexed."""
        return self._total("updated")

    @property
    def deleted(self) -> int:
        """Documents removed."""
        return self._total("deleted")

    @property
    def unchanged(self) -> int:
        """Documents left as they were."""
        return self._total("unchanged")

    @property
    def embedded(self) -> int:
        """Chunks embedded in this run."""
        return self._total("embedded")

    @property
    def failed(self) -> list[str]:
        """Names of the sources that failed."""
        return [s.name for s in self.sources if s.error is not None]

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON data (what ``aof-index kb sync --json`` prints)."""
        return {
            "mode": self.mode,
            "added": self.added,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "skipped": self._total("skipped"),
            "documents": self.documents,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "written": self._total("written"),
            "recovered": self.recovered,
            "seconds": round(self.seconds, 3),
            "failed": self.failed,
            "sources": {
                s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in self.sources
            },
        }


class KnowledgeBaseSync:
    """Syncs the sources of one KnowledgeBase into its Memory and reports its status.

    Args:
        pipeline: the KnowledgeBase's processing, chunker and Memory
            (:func:`~aof_index.knowledge.pipeline.build_knowledge_base`).
        base_dir: folder relative ``localFiles.paths`` start from (the manifest's folder).
        home: data root for the sync state and source caches (default ``$AOF_INDEX_HOME``).
        checkpoint_chunks: chunks written between checkpoints.

    Example:
        >>> kb = KnowledgeBaseSync(build_knowledge_base("kb.yaml"), base_dir=Path("."))
        ... # doctest: +SKIP
        >>> kb.sync(sources=["runbooks"]).as_dict()["added"]  # doctest: +SKIP
    """

    def __init__(
        self,
        pipeline: KnowledgeBasePipeline,
        *,
        base_dir: Path | None = None,
        home: Path | None = None,
        checkpoint_chunks: int = CHECKPOINT_CHUNKS,
    ) -> None:
        self.pipeline = pipeline
        self.resource = pipeline.resource
        self.memory: MemoryComponents = pipeline.memory
        self.base_dir = base_dir
        self.home = home or data_home()
        meta = self.resource.metadata
        self.state = SyncState(knowledge_dir(meta.namespace, meta.name, self.home) / "sync.db")
        self.checkpoint_chunks = checkpoint_chunks
        indexing = self.resource.spec.indexing
        self.batch_size = indexing.batch_size if indexing is not None else 100
        self._pipeline_id = pipeline_fingerprint(self.memory, pipeline.chunker, pipeline.transforms)
        self._pending: list[tuple[int, DocumentWrite]] = []

    # -- running a sync ---------------------------------------------------------------
    def sync(
        self,
        *,
        mode: SyncMode | None = None,
        sources: Sequence[str] | None = None,
        progress: SyncProgress | None = None,
    ) -> SyncReport:
        """Sync the enabled sources (or just ``sources``, by name) and return the report.

        Raises:
            ManifestError: ``sources`` names a source the KnowledgeBase does not have.
        """
        started = time.perf_counter()
        policy = self.resource.spec.sync
        report = SyncReport(mode or (policy.mode if policy is not None else "incremental"))
        _, _, entries = select_sources(self.resource, names=sources)
        report.recovered = self.recover()
        self.state.set_run("in_progress")
        for entry in entries:
            report.sources.append(self._sync_source(entry, report.mode, progress))
        self.state.set_run("failed" if report.failed else "success")
        counts = self.state.counts().values()
        report.documents = sum(docs for docs, _ in counts)
        report.chunks = sum(chunks for _, chunks in counts)
        report.seconds = time.perf_counter() - started
        return report

    def recover(self) -> int:
        """Redo the journaled writes an interrupted run left; returns how many."""
        pending = self.state.pending()
        if not pending:
            return 0
        latest = {(w.source, w.doc_id): (seq, w) for seq, w in pending}
        self._apply([w for _, w in latest.values()])
        self._pending = pending
        self._checkpoint()
        return len(latest)

    def _sync_source(
        self, entry: KnowledgeSource, mode: SyncMode, progress: SyncProgress | None
    ) -> SourceReport:
        sources = self.resource.spec.sources or []
        index = next(i for i, s in enumerate(sources) if s is entry)
        report = SourceReport(entry.name or f"{entry.type}-{index}")
        self.state.set_source(report.name, "syncing")

        def step(stage: str, done: int, total: int) -> None:
            if progress is not None:
                progress(report.name, stage, done, total)

        from aof_index_readers.errors import SourceError

        try:
            reader = build_reader(self.resource, entry, base_dir=self.base_dir, home=self.home)
            self._sync_reader(reader, report, mode, step)
        except (SourceError, AofIndexError, OSError) as exc:
            report.error = str(exc) or type(exc).__name__
            self.state.set_source(report.name, "failed", error=report.error)
        else:
            self.state.set_source(report.name, "ready", synced=True)
        finally:
            self._checkpoint()
        report.documents, report.chunks = self.state.counts().get(report.name, (0, 0))
        return report

    def _sync_reader(
        self,
        reader: SourceReader,
        report: SourceReport,
        mode: SyncMode,
        step: Callable[[str, int, int], None],
    ) -> None:
        listing: dict[str, DocumentRef] = {}
        for ref in reader.list_documents():
            listing[ref.id] = ref
            step("list", len(listing), 0)
        known = {row.doc_id: row for row in self.state.documents(report.name)}
        todo = [
            ref
            for ref in listing.values()
            if mode == "full" or ref.id not in known or known[ref.id].listing_version != ref.version
        ]
        report.unchanged = len(listing) - len(todo)
        touched: dict[str, str] = {}
        loaded: set[str] = set()
        group: list[Document] = []
        budget = self.batch_size * self.pipeline.chunker.chunk_size * _CHARS_PER_TOKEN
        for document in reader.load_documents(todo):
            loaded.add(document.doc_id)
            step("read", len(loaded), len(todo))
            old = known.get(document.doc_id)
            version = content_version(document, self._pipeline_id)
            if mode != "full" and old is not None and old.content_version == version:
                touched[document.doc_id] = listing[document.doc_id].version
                report.unchanged += 1
                continue
            group.append(document)
            if sum(len(d.text) for d in group) >= budget:
                self._write_group(group, listing, known, report, mode, step)
                group = []
        if group:
            self._write_group(group, listing, known, report, mode, step)
        self.state.touch(report.name, touched)
        report.skipped = len(todo) - len(loaded)
        # A listed document that can no longer be read (now empty, binary or too large)
        # keeps no chunks of an older version; neither does one that is no longer listed.
        gone = [row for doc_id, row in known.items() if doc_id not in listing]
        unreadable = [known[r.id] for r in todo if r.id not in loaded and r.id in known]
        self._delete([*gone, *unreadable], report, step)

    # -- writing ----------------------------------------------------------------------
    def _write_group(
        self,
        documents: Sequence[Document],
        listing: dict[str, DocumentRef],
        known: dict[str, DocumentRow],
        report: SourceReport,
        mode: SyncMode,
        step: Callable[[str, int, int], None],
    ) -> None:
        nodes = process_documents(documents, self.pipeline.chunker, self.pipeline.transforms)
        keys = [self._embed_key(n) for n in nodes]
        self._embed(nodes, keys, report, mode, step)
        by_doc: dict[str, list[int]] = {d.doc_id: [] for d in documents}
        for i, node in enumerate(nodes):
            if node.ref_doc_id in by_doc:
                by_doc[node.ref_doc_id].append(i)
        writes = []
        for document in documents:
            old = known.get(document.doc_id)
            if old is None:
                report.added += 1
            else:
                report.updated += 1
            mine = by_doc[document.doc_id]
            writes.append(
                DocumentWrite(
                    source=report.name,
                    doc_id=document.doc_id,
                    listing_version=listing[document.doc_id].version,
                    content_version=content_version(document, self._pipeline_id),
                    location=str(document.metadata.get("source") or document.doc_id),
                    old_node_ids=old.node_ids if old is not None else (),
                    nodes=tuple(nodes[i] for i in mine),
                    embed_keys=tuple(keys[i] for i in mine),
                )
            )
        report.written += len(nodes)
        self._journal_and_apply(writes)

    def _embed(
        self,
        nodes: Sequence[BaseNode],
        keys: Sequence[str],
        report: SourceReport,
        mode: SyncMode,
        step: Callable[[str, int, int], None],
    ) -> None:
        cached = self.state.cached_vectors(keys) if mode == "differential" else {}
        missing: list[BaseNode] = []
        for node, key in zip(nodes, keys, strict=True):
            if key in cached:
                node.embedding = cached[key]
            else:
                missing.append(node)
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            embed_nodes(self.memory, batch)
            report.embedded += len(batch)
            step("embed", report.embedded, 0)

    def _embed_key(self, node: BaseNode) -> str:
        identity = self.memory.embedding_identity()
        return hashlib.sha256(f"{identity}\n{embed_text(node)}".encode()).hexdigest()

    def _delete(
        self,
        rows: Sequence[DocumentRow],
        report: SourceReport,
        step: Callable[[str, int, int], None],
    ) -> None:
        if not rows:
            return
        writes = [
            DocumentWrite(r.source, r.doc_id, old_node_ids=r.node_ids, deleted=True) for r in rows
        ]
        self._journal_and_apply(writes)
        report.deleted += len(writes)
        step("delete", len(writes), len(writes))

    def _journal_and_apply(self, writes: Sequence[DocumentWrite]) -> None:
        seqs = self.state.journal(writes)
        self._apply(writes)
        self._pending.extend(zip(seqs, writes, strict=True))
        if sum(len(w.nodes) for _, w in self._pending) >= self.checkpoint_chunks:
            self._checkpoint()

    def _apply(self, writes: Sequence[DocumentWrite]) -> None:
        """Write ``writes`` to the vector store and the keyword index (idempotent)."""
        store = self.memory.vector_store
        keywords = self.memory.keyword_index
        nodes = [node for w in writes for node in w.nodes]
        stale = [node_id for w in writes for node_id in w.stale_ids]
        exists = collection_exists(store)
        if nodes:
            if exists:  # Chroma's add keeps an existing id unchanged: delete it first
                store.delete_nodes([n.node_id for n in nodes])
            store.add(list(nodes))
            keywords.add(nodes)
        if stale:
            if exists or nodes:
                store.delete_nodes(stale)
            keywords.delete(stale)

    def _checkpoint(self) -> None:
        """Persist the keyword index, then record the pending writes and clear them from
        the journal (the Memory's ingest state is updated too, for ``aof-index ingest``)."""
        if not self._pending:
            return
        seqs = [seq for seq, _ in self._pending]
        writes = [w for _, w in self._pending]
        self.memory.keyword_index.persist()
        ingest = self.memory.ingest_state
        ingest.record(
            (w.doc_id, w.content_version, w.location, list(w.node_ids))
            for w in writes
            if not w.deleted
        )
        ingest.forget(w.doc_id for w in writes if w.deleted)
        self.state.record(seqs, writes)
        self._pending = []

    # -- reporting --------------------------------------------------------------------
    def documents(self) -> list[DocumentRow]:
        """The indexed documents, by source and location."""
        return self.state.documents()

    def status(self) -> KnowledgeBaseStatus:
        """The KnowledgeBase's ``status`` block, computed from the sync state."""
        counts = self.state.counts()
        records = {r.name: r for r in self.state.sources()}
        configured = [s.name for s in self.resource.spec.sources or [] if s.enabled and s.name]
        names = list(dict.fromkeys([*configured, *records, *counts]))
        source_status = [
            SourceStatus(
                name=name,
                status=records[name].status if name in records else None,
                documents_indexed=counts.get(name, (0, 0))[0],
                last_sync=_time(records[name].last_sync) if name in records else None,
            )
            for name in names
        ]
        errors = [
            SyncError(source=r.name, message=r.error, timestamp=_time(r.error_time))
            for r in records.values()
            if r.error is not None
        ]
        run = self.state.last_run()
        ready = (
            run is not None
            and run.status != "in_progress"
            and any(r.status == "ready" for r in records.values())
        )
        stats = KnowledgeBaseStats(
            total_documents=sum(d for d, _ in counts.values()),
            total_chunks=sum(c for _, c in counts.values()),
            last_sync_time=_time(run.time) if run else None,
            last_sync_status=run.status if run else None,
            errors=errors,
        )
        message = (
            "never synced"
            if run is None
            else f"last sync {run.status}"
            + (f"; failed sources: {', '.join(e.source or '' for e in errors)}" if errors else "")
        )
        condition = Condition(
            type="Ready",
            status="True" if ready else "False",
            message=message,
            last_transition_time=_time(run.time) if run else None,
        )
        return KnowledgeBaseStatus(
            ready=ready, conditions=[condition], stats=stats, source_status=source_status
        )


def open_sync(
    source: str | os.PathLike[str],
    *,
    name: str | None = None,
    memory: MemoryComponents | None = None,
    home: Path | None = None,
) -> KnowledgeBaseSync:
    """The sync of the KnowledgeBase in a manifest file or directory.

    Args:
        source: the manifest file or directory (relative local paths start from its folder).
        name: which KnowledgeBase, when the file holds several.
        memory: the Memory to fill (default: the one ``spec.indexing.memoryRef`` names).
        home: data root (default ``$AOF_INDEX_HOME``).

    Raises:
        ManifestError: the manifest is invalid or ``memoryRef`` names no Memory.
    """
    path = Path(source)
    pipeline = build_knowledge_base(path, name=name, memory=memory, home=home)
    base_dir = (path if path.is_dir() else path.parent).resolve()
    return KnowledgeBaseSync(pipeline, base_dir=base_dir, home=home)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
