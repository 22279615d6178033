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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llama_index.core.schema import BaseNode, Document

from aof_index.build.memory import MemoryComponents, build_memory
from aof_index.build.sources import build_reader, select_sources, source_label
from aof_index.errors import AofIndexError
from aof_index.home import data_home, knowledge_dir
from aof_index.knowledge.ingest import (
    check_vector_width,
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
    "Dispatcher",
    "KnowledgeBaseSync",
    "SourceReport",
    "SyncMode",
    "SyncOrigin",
    "SyncProgress",
    "SyncReport",
    "UnitResult",
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


@dataclass(frozen=True)
class UnitResult:
    """What preparing one listed document gave: its journal entry, or nothing to write."""

    doc_id: str
    write: DocumentWrite | None = None
    """The document's new chunks with their vectors; ``None`` when its content did not
    change (only the listing version is recorded) or it could not be read."""
    loaded: bool = True
    """False when the reader skipped the document (binary, empty, too large)."""
    embedded: int = 0
    """Chunks embedded for it (not taken from the embedding cache)."""
    error: str | None = None
    """Why the unit failed, when it did (the document keeps its previous chunks)."""


class Dispatcher(Protocol):
    """Prepares documents somewhere else (worker processes) and hands back the results as
    they complete; :class:`~aof_index.knowledge.workers.RedisDispatcher` is the one built in."""

    def run(
        self,
        kb: KnowledgeBaseSync,
        source: str,
        refs: Sequence[DocumentRef],
        known: Mapping[str, DocumentRow],
        mode: SyncMode,
    ) -> Iterator[UnitResult]:
        """Prepare each of ``refs`` (one unit each) and yield every unit's result once."""
        ...


class KnowledgeBaseSync:
    """Syncs the sources of one KnowledgeBase into its Memory and reports its status.

    Args:
        pipeline: the KnowledgeBase's processing, chunker and Memory
            (:func:`~aof_index.knowledge.pipeline.build_knowledge_base`).
        base_dir: folder relative ``localFiles.paths`` start from (the manifest's folder).
        home: data root for the sync state and source caches (default ``$AOF_INDEX_HOME``).
        checkpoint_chunks: chunks written between checkpoints.
        dispatcher: prepares documents in worker processes instead of this one
            (:class:`~aof_index.knowledge.workers.RedisDispatcher`); this process still
            lists, journals and writes.

    ``origin`` says where the KnowledgeBase came from (manifest, name, Memory manifest,
    data root), so worker processes can open the same one; :func:`open_sync` sets it.

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
        dispatcher: Dispatcher | None = None,
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
        self.parallelism = indexing.parallelism if indexing is not None else 4
        self.dispatcher = dispatcher
        self._pool: ThreadPoolExecutor | None = None
        self._readers: dict[str, SourceReader] = {}
        self._width_checked = False
        self.origin: SyncOrigin | None = None
        """Where this sync was opened from (see :class:`SyncOrigin`); set by
        :func:`open_sync`, needed by a ``dispatcher``."""
        self.pipeline_id = pipeline_fingerprint(self.memory, pipeline.chunker, pipeline.transforms)
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
        report = SourceReport(source_label(entry, index))
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
        if self.dispatcher is not None:
            touched, loaded, failed = self._sync_remote(todo, known, report, mode, step)
        else:
            touched, loaded = self._sync_here(reader, todo, listing, known, report, mode, step)
            failed = {}
        self.state.touch(report.name, touched)
        report.skipped = len(todo) - len(loaded) - len(failed)
        # A listed document that can no longer be read (now empty, binary or too large)
        # keeps no chunks of an older version; neither does one that is no longer listed.
        # One whose unit failed in a worker keeps what it had.
        gone = [row for doc_id, row in known.items() if doc_id not in listing]
        unreadable = [
            known[r.id] for r in todo if r.id not in loaded and r.id in known and r.id not in failed
        ]
        self._delete([*gone, *unreadable], report, step)
        if failed:
            first = next(iter(failed.items()))
            raise AofIndexError(
                f"{len(failed)} document(s) of source {report.name!r} failed in the workers "
                f"and keep their previous chunks; first: {first[0]}: {first[1]}"
            )

    def _sync_here(
        self,
        reader: SourceReader,
        todo: Sequence[DocumentRef],
        listing: dict[str, DocumentRef],
        known: dict[str, DocumentRow],
        report: SourceReport,
        mode: SyncMode,
        step: Callable[[str, int, int], None],
    ) -> tuple[dict[str, str], set[str]]:
        """Read, process and embed ``todo`` in this process, in groups of about
        ``batchSize`` chunks; returns the listing versions to record for documents whose
        content did not change, and the ids of the documents read."""
        touched: dict[str, str] = {}
        loaded: set[str] = set()
        group: list[Document] = []
        budget = self.batch_size * self.pipeline.chunker.chunk_size * _CHARS_PER_TOKEN
        for document in reader.load_documents(todo):
            loaded.add(document.doc_id)
            step("read", len(loaded), len(todo))
            if self._unchanged(document, known.get(document.doc_id), mode):
                touched[document.doc_id] = listing[document.doc_id].version
                report.unchanged += 1
                continue
            group.append(document)
            if sum(len(d.text) for d in group) >= budget:
                self._write_group(group, listing, known, report, mode, step)
                group = []
        if group:
            self._write_group(group, listing, known, report, mode, step)
        return touched, loaded

    def _sync_remote(
        self,
        todo: Sequence[DocumentRef],
        known: dict[str, DocumentRow],
        report: SourceReport,
        mode: SyncMode,
        step: Callable[[str, int, int], None],
    ) -> tuple[dict[str, str], set[str], dict[str, str]]:
        """Hand ``todo`` to the dispatcher's workers, one unit per document, and write
        each prepared document as its unit completes (this process stays the only writer
        of the stores and the journal); also returns the failed units' errors by id."""
        assert self.dispatcher is not None
        touched: dict[str, str] = {}
        loaded: set[str] = set()
        failed: dict[str, str] = {}
        versions = {ref.id: ref.version for ref in todo}
        for unit in self.dispatcher.run(self, report.name, todo, known, mode):
            if unit.error is not None:
                failed[unit.doc_id] = unit.error
                continue
            if not unit.loaded:
                continue
            loaded.add(unit.doc_id)
            step("read", len(loaded), len(todo))
            if unit.write is None:
                touched[unit.doc_id] = versions[unit.doc_id]
                report.unchanged += 1
                continue
            report.embedded += unit.embedded
            step("embed", report.embedded, 0)
            self._count([unit.write], known, report)
            self._journal_and_apply([unit.write])
        return touched, loaded, failed

    def prepare_unit(
        self, source: str, ref: DocumentRef, known: DocumentRow | None, mode: SyncMode
    ) -> UnitResult:
        """Read, process and embed one listed document of ``source`` without touching any
        store: what a worker process does for a unit (:mod:`aof_index.knowledge.workers`).
        Idempotent: the same document and version always give the same chunks."""
        reader = self.reader(source)
        documents = list(reader.load_documents([ref]))
        if not documents:
            return UnitResult(ref.id, loaded=False)
        document = documents[0]
        if self._unchanged(document, known, mode):
            return UnitResult(ref.id)
        counted: list[int] = []
        writes = self.prepare(
            documents,
            {ref.id: ref.version},
            {ref.id: known} if known is not None else {},
            source,
            mode,
            counted.append,
        )
        return UnitResult(ref.id, write=writes[0], embedded=sum(counted))

    def reader(self, source: str) -> SourceReader:
        """The reader of ``source`` (by name), built once per sync object."""
        if source not in self._readers:
            self._readers[source] = build_reader(
                self.resource, source, base_dir=self.base_dir, home=self.home
            )
        return self._readers[source]

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
        def embedded(count: int) -> None:
            report.embedded += count
            step("embed", report.embedded, 0)

        versions = {d.doc_id: listing[d.doc_id].version for d in documents}
        writes = self.prepare(documents, versions, known, report.name, mode, embedded)
        self._count(writes, known, report)
        self._journal_and_apply(writes)

    def prepare(
        self,
        documents: Sequence[Document],
        versions: Mapping[str, str],
        known: Mapping[str, DocumentRow],
        source: str,
        mode: SyncMode,
        embedded: Callable[[int], None] | None = None,
    ) -> list[DocumentWrite]:
        """Process, chunk and embed ``documents`` into their journal entries (no store is
        touched): the unit of work a sync does in-process or hands to worker processes.

        Args:
            documents: loaded documents of ``source``.
            versions: each document's listing version marker, by id.
            known: what the state holds for these documents (their old chunk ids).
            source: the source's name.
            mode: ``differential`` re-uses the cached vectors of unchanged chunk texts.
            embedded: called with the number of chunks embedded after each batch.
        """
        nodes = process_documents(documents, self.pipeline.chunker, self.pipeline.transforms)
        keys = [self._embed_key(n) for n in nodes]
        self._embed(nodes, keys, mode, embedded)
        by_doc: dict[str, list[int]] = {d.doc_id: [] for d in documents}
        for i, node in enumerate(nodes):
            if node.ref_doc_id in by_doc:
                by_doc[node.ref_doc_id].append(i)
        writes = []
        for document in documents:
            old = known.get(document.doc_id)
            mine = by_doc[document.doc_id]
            writes.append(
                DocumentWrite(
                    source=source,
                    doc_id=document.doc_id,
                    listing_version=versions[document.doc_id],
                    content_version=self.content_version(document),
                    location=str(document.metadata.get("source") or document.doc_id),
                    old_node_ids=old.node_ids if old is not None else (),
                    nodes=tuple(nodes[i] for i in mine),
                    embed_keys=tuple(keys[i] for i in mine),
                )
            )
        return writes

    def _unchanged(self, document: Document, old: DocumentRow | None, mode: SyncMode) -> bool:
        """Whether a re-listed document's content (and pipeline) is what was indexed, so
        only its new listing version needs recording (never in ``full`` mode)."""
        return (
            mode != "full"
            and old is not None
            and old.content_version == self.content_version(document)
        )

    def content_version(self, document: Document) -> str:
        """The document's content version under this KnowledgeBase's pipeline: unchanged
        means nothing to re-process."""
        return content_version(document, self.pipeline_id)

    @staticmethod
    def _count(
        writes: Sequence[DocumentWrite], known: Mapping[str, DocumentRow], report: SourceReport
    ) -> None:
        for write in writes:
            if write.doc_id in known:
                report.updated += 1
            else:
                report.added += 1
            report.written += len(write.nodes)

    def _embed(
        self,
        nodes: Sequence[BaseNode],
        keys: Sequence[str],
        mode: SyncMode,
        embedded: Callable[[int], None] | None,
    ) -> None:
        """Embed the nodes whose vector is not cached, ``batchSize`` at a time and up to
        ``parallelism`` batches at once."""
        cached = self.state.cached_vectors(keys) if mode == "differential" else {}
        missing: list[BaseNode] = []
        for node, key in zip(nodes, keys, strict=True):
            if key in cached:
                node.embedding = cached[key]
            else:
                missing.append(node)
        batches = [
            missing[start : start + self.batch_size]
            for start in range(0, len(missing), self.batch_size)
        ]

        def run(batch: list[BaseNode]) -> int:
            embed_nodes(self.memory, batch)
            return len(batch)

        if self.parallelism <= 1 or len(batches) <= 1:
            done: Iterable[int] = map(run, batches)
        else:
            pool = self._embed_pool()
            done = (future.result() for future in [pool.submit(run, b) for b in batches])
        for count in done:
            if embedded is not None:
                embedded(count)

    def _embed_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix="aof-embed")
        return self._pool

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
        if nodes and not self._width_checked:  # before anything is deleted
            check_vector_width(self.memory, nodes[0].get_embedding())
            self._width_checked = True
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
    def source_names(self, *, enabled_only: bool = False) -> list[str]:
        """The sources' names as reports and ``sources=`` use them (``<type>-<index>`` for
        an unnamed one)."""
        return [
            source_label(s, i)
            for i, s in enumerate(self.resource.spec.sources or [])
            if s.enabled or not enabled_only
        ]

    def documents(self) -> list[DocumentRow]:
        """The indexed documents, by source and location."""
        return self.state.documents()

    def documents_data(self) -> list[dict[str, Any]]:
        """The indexed documents as JSON data (``kb documents --json``, the HTTP API)."""
        return [
            {
                "source": row.source,
                "id": row.doc_id,
                "version": row.listing_version,
                "chunks": len(row.node_ids),
                "location": row.location,
                "updated": row.updated_at,
            }
            for row in self.documents()
        ]

    def status_data(self) -> dict[str, Any]:
        """The ``status`` block as JSON data in the manifest's camelCase (``kb status
        --json``, the HTTP API)."""
        data: dict[str, Any] = self.status().model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        return data

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


@dataclass(frozen=True)
class SyncOrigin:
    """Where a KnowledgeBase sync was opened from: enough for another process (a worker)
    to open the same one with :func:`open_sync`."""

    manifest: str
    """The manifest file or directory, absolute."""
    name: str
    """The KnowledgeBase's name."""
    memory: str | None
    """The Memory manifest that overrides ``memoryRef``, absolute, if any."""
    home: str
    """The data root (sync state, source caches, embedded stores)."""

    def open(self) -> KnowledgeBaseSync:
        """Open the sync this origin describes."""
        return open_sync(self.manifest, name=self.name, memory=self.memory, home=Path(self.home))


def open_sync(
    source: str | os.PathLike[str],
    *,
    name: str | None = None,
    memory: MemoryComponents | str | os.PathLike[str] | None = None,
    home: Path | None = None,
    dispatcher: Dispatcher | None = None,
) -> KnowledgeBaseSync:
    """The sync of the KnowledgeBase in a manifest file or directory.

    Args:
        source: the manifest file or directory (relative local paths start from its folder).
        name: which KnowledgeBase, when the file holds several.
        memory: the Memory to fill, or its manifest (default: the one
            ``spec.indexing.memoryRef`` names).
        home: data root (default ``$AOF_INDEX_HOME``).
        dispatcher: hand document preparation to worker processes (see
            :class:`KnowledgeBaseSync`).

    Raises:
        ManifestError: the manifest is invalid or ``memoryRef`` names no Memory.
    """
    path = Path(source).resolve()
    memory_file: Path | None = None
    if memory is not None and not isinstance(memory, MemoryComponents):
        memory_file = Path(memory).resolve()
        memory = build_memory(memory_file, home=home)
    pipeline = build_knowledge_base(path, name=name, memory=memory, home=home)
    base_dir = path if path.is_dir() else path.parent
    kb = KnowledgeBaseSync(pipeline, base_dir=base_dir, home=home, dispatcher=dispatcher)
    kb.origin = SyncOrigin(
        manifest=str(path),
        name=pipeline.resource.metadata.name,
        memory=str(memory_file) if memory_file is not None else None,
        home=str(kb.home.resolve()),
    )
    return kb


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
