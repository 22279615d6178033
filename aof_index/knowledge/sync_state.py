"""The sync state of one KnowledgeBase: what each source's documents looked like when last
indexed, the chunks (and vectors) they produced, a write-ahead journal, and source health.

One SQLite file (WAL mode), ``$AOF_INDEX_HOME/knowledge/<namespace>/<name>/sync.db``:

``documents``
    one row per indexed document and source: the listing's version marker, the content
    version (content hash and pipeline fingerprint), where it lives (path or URL) and its
    chunk ids.
``chunks``
    one row per chunk: its document, the key of its embedding (hash of the embedding model
    and the text it embedded) and the vector, so a differential sync re-uses vectors of
    chunks whose text did not change.
``journal``
    :class:`DocumentWrite` entries journaled before the stores are touched and removed in
    the same transaction that records them in ``documents`` and ``chunks``: whatever is
    still there after a crash is a write to redo (see :mod:`aof_index.knowledge.sync`).
``sources`` and ``meta``
    each source's status, last successful sync and last error; the last run's time and
    outcome.
"""

from __future__ import annotations

import json
import sqlite3
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from llama_index.core.schema import BaseNode
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

__all__ = [
    "DocumentRow",
    "DocumentWrite",
    "RunRecord",
    "SourceRecord",
    "SyncState",
    "now_iso",
]

SourceState = Literal["ready", "syncing", "failed"]
RunStatus = Literal["success", "failed", "in_progress"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    source          TEXT NOT NULL,
    doc_id          TEXT NOT NULL,
    listing_version TEXT NOT NULL,
    content_version TEXT NOT NULL,
    location        TEXT NOT NULL,
    node_ids        TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (source, doc_id)
);
CREATE TABLE IF NOT EXISTS chunks (
    node_id   TEXT PRIMARY KEY,
    source    TEXT NOT NULL,
    doc_id    TEXT NOT NULL,
    embed_key TEXT NOT NULL,
    vector    BLOB
);
CREATE INDEX IF NOT EXISTS chunks_by_key ON chunks (embed_key);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (source, doc_id);
CREATE TABLE IF NOT EXISTS journal (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    name       TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    last_sync  TEXT,
    error      TEXT,
    error_time TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_BATCH = 500
"""Keys per ``IN (...)`` query (SQLite allows 999 parameters in old builds)."""


def now_iso() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class DocumentRow:
    """One indexed document of one source."""

    source: str
    doc_id: str
    listing_version: str
    content_version: str
    location: str
    node_ids: tuple[str, ...]
    updated_at: str


@dataclass(frozen=True)
class SourceRecord:
    """A source's health: ``status``, last successful sync, last error and when."""

    name: str
    status: SourceState
    last_sync: str | None
    error: str | None
    error_time: str | None


@dataclass(frozen=True)
class RunRecord:
    """The last sync run: when it started or ended, and how it went."""

    time: str
    status: RunStatus


@dataclass(frozen=True)
class DocumentWrite:
    """What one document's write changes, journaled before any store is touched.

    ``nodes`` are the new chunks with their embeddings (empty when the document is deleted
    or processing dropped it), ``embed_keys`` their embedding-cache keys, and
    ``old_node_ids`` the chunks it had before; redoing the entry deletes
    ``old_node_ids`` that are not new, writes ``nodes`` and records the row.
    """

    source: str
    doc_id: str
    listing_version: str = ""
    content_version: str = ""
    location: str = ""
    old_node_ids: tuple[str, ...] = ()
    nodes: tuple[BaseNode, ...] = field(default=(), compare=False)
    embed_keys: tuple[str, ...] = ()
    deleted: bool = False

    @property
    def node_ids(self) -> tuple[str, ...]:
        """Ids of the new chunks."""
        return tuple(n.node_id for n in self.nodes)

    @property
    def stale_ids(self) -> list[str]:
        """Old chunk ids the new chunks do not reuse: deleted after the new ones land."""
        new = set(self.node_ids)
        return [i for i in self.old_node_ids if i not in new]

    def to_json(self) -> str:
        """The journal form (nodes in LlamaIndex's docstore JSON, embeddings included)."""
        data: dict[str, Any] = {
            "source": self.source,
            "doc_id": self.doc_id,
            "listing_version": self.listing_version,
            "content_version": self.content_version,
            "location": self.location,
            "old_node_ids": list(self.old_node_ids),
            "nodes": [doc_to_json(n) for n in self.nodes],
            "embed_keys": list(self.embed_keys),
            "deleted": self.deleted,
        }
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> DocumentWrite:
        """Read back :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            source=data["source"],
            doc_id=data["doc_id"],
            listing_version=data["listing_version"],
            content_version=data["content_version"],
            location=data["location"],
            old_node_ids=tuple(data["old_node_ids"]),
            nodes=tuple(json_to_doc(n) for n in data["nodes"]),
            embed_keys=tuple(data["embed_keys"]),
            deleted=data["deleted"],
        )


class SyncState:
    """The sync state in ``path`` (created on first write; reading creates nothing).

    Args:
        path: the SQLite file.

    Example:
        >>> state = SyncState(Path("/tmp/kb/sync.db"))  # doctest: +SKIP
        >>> {row.doc_id: row.listing_version for row in state.documents("docs")}  # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL survives a killed process (not a power cut).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            with conn:
                yield conn
        finally:
            conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            yield None
            return
        with self._connect() as conn:
            yield conn

    # -- documents --------------------------------------------------------------------
    def documents(self, source: str | None = None) -> list[DocumentRow]:
        """Indexed documents (of one ``source``), ordered by source and location."""
        query = (
            "SELECT source, doc_id, listing_version, content_version, location, node_ids, "
            "updated_at FROM documents"
        )
        params: tuple[str, ...] = ()
        if source is not None:
            query, params = query + " WHERE source = ?", (source,)
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute(query + " ORDER BY source, location, doc_id", params).fetchall()
        return [
            DocumentRow(s, d, lv, cv, loc, tuple(json.loads(ids)), at)
            for s, d, lv, cv, loc, ids, at in rows
        ]

    def counts(self) -> dict[str, tuple[int, int]]:
        """``source → (documents, chunks)`` indexed."""
        out: dict[str, tuple[int, int]] = {}
        for row in self.documents():
            docs, chunks = out.get(row.source, (0, 0))
            out[row.source] = (docs + 1, chunks + len(row.node_ids))
        return out

    def cached_vectors(self, keys: Iterable[str]) -> dict[str, list[float]]:
        """``embed key → vector`` for the keys some indexed chunk already has."""
        wanted = sorted(set(keys))
        found: dict[str, list[float]] = {}
        with self._read() as conn:
            if conn is None:
                return found
            for start in range(0, len(wanted), _BATCH):
                part = wanted[start : start + _BATCH]
                marks = ",".join("?" * len(part))
                for key, blob in conn.execute(
                    f"SELECT embed_key, vector FROM chunks WHERE vector IS NOT NULL "
                    f"AND embed_key IN ({marks})",
                    part,
                ):
                    found[key] = array("f", blob).tolist()
        return found

    # -- the journal ------------------------------------------------------------------
    def journal(self, writes: Sequence[DocumentWrite]) -> list[int]:
        """Journal ``writes`` in one transaction; returns their sequence numbers."""
        seqs: list[int] = []
        with self._connect() as conn:
            for write in writes:
                cursor = conn.execute("INSERT INTO journal (entry) VALUES (?)", (write.to_json(),))
                assert cursor.lastrowid is not None
                seqs.append(cursor.lastrowid)
        return seqs

    def pending(self) -> list[tuple[int, DocumentWrite]]:
        """Journaled writes not yet recorded, oldest first."""
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute("SELECT seq, entry FROM journal ORDER BY seq").fetchall()
        return [(seq, DocumentWrite.from_json(entry)) for seq, entry in rows]

    def record(self, seqs: Sequence[int], writes: Sequence[DocumentWrite]) -> None:
        """Record ``writes`` as done (rows and chunks replaced, deletions forgotten) and
        drop their journal entries ``seqs``, in one transaction."""
        now = now_iso()
        with self._connect() as conn:
            for write in writes:
                key = (write.source, write.doc_id)
                conn.execute("DELETE FROM chunks WHERE source = ? AND doc_id = ?", key)
                if write.deleted:
                    conn.execute("DELETE FROM documents WHERE source = ? AND doc_id = ?", key)
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO documents (source, doc_id, listing_version, "
                    "content_version, location, node_ids, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        *key,
                        write.listing_version,
                        write.content_version,
                        write.location,
                        json.dumps(list(write.node_ids)),
                        now,
                    ),
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO chunks (node_id, source, doc_id, embed_key, vector) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (node.node_id, *key, embed_key, _blob(node.embedding))
                        for node, embed_key in zip(write.nodes, write.embed_keys, strict=True)
                    ],
                )
            conn.executemany("DELETE FROM journal WHERE seq = ?", [(s,) for s in seqs])

    def touch(self, source: str, versions: dict[str, str]) -> None:
        """Update the listing versions of documents whose content did not change."""
        with self._connect() as conn:
            conn.executemany(
                "UPDATE documents SET listing_version = ? WHERE source = ? AND doc_id = ?",
                [(version, source, doc_id) for doc_id, version in versions.items()],
            )

    # -- sources and runs -------------------------------------------------------------
    def set_source(
        self,
        name: str,
        status: SourceState,
        *,
        synced: bool = False,
        error: str | None = None,
    ) -> None:
        """Set a source's status; ``synced`` stamps a successful sync (and clears its error),
        ``error`` records a failure with the current time."""
        now = now_iso()
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO sources (name, status) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET status = excluded.status",
                (name, status),
            )
            if synced:
                conn.execute(
                    "UPDATE sources SET last_sync = ?, error = NULL, error_time = NULL "
                    "WHERE name = ?",
                    (now, name),
                )
            if error is not None:
                conn.execute(
                    "UPDATE sources SET error = ?, error_time = ? WHERE name = ?",
                    (error, now, name),
                )

    def sources(self) -> list[SourceRecord]:
        """Every source that was ever synced, by name."""
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT name, status, last_sync, error, error_time FROM sources ORDER BY name"
            ).fetchall()
        return [SourceRecord(*row) for row in rows]

    def set_run(self, status: RunStatus) -> None:
        """Record the last run's status, stamped now."""
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("last_sync_status", status), ("last_sync_time", now_iso())],
            )

    def last_run(self) -> RunRecord | None:
        """The last run, if any."""
        with self._read() as conn:
            if conn is None:
                return None
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "last_sync_status" not in meta:
            return None
        return RunRecord(meta["last_sync_time"], meta["last_sync_status"])


def _blob(vector: list[float] | None) -> bytes | None:
    return array("f", vector).tobytes() if vector is not None else None
