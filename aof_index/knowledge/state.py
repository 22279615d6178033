"""What has been ingested: one row per document with its version and chunk ids.

The ingest state lives in a small SQLite file beside the stores.  A document is recorded
only after its chunks are in the vector store and the keyword index, so a run that dies
half-way leaves those documents unrecorded and the next run simply redoes them (chunk ids
are deterministic, so redoing is an upsert).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["DocumentRecord", "IngestState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id     TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    source     TEXT NOT NULL,
    node_ids   TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class DocumentRecord:
    """One ingested document."""

    doc_id: str
    version: str
    source: str
    node_ids: tuple[str, ...]
    updated_at: str


class IngestState:
    """Versions and chunk ids of ingested documents, in ``<path>`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute(_SCHEMA)
            with conn:
                yield conn
        finally:
            conn.close()

    def versions(self) -> dict[str, str]:
        """``doc_id → version`` of every recorded document."""
        if not self.path.exists():  # reading creates nothing
            return {}
        with self._connect() as conn:
            return dict(conn.execute("SELECT doc_id, version FROM documents").fetchall())

    def get(self, doc_id: str) -> DocumentRecord | None:
        """The record of one document, if any."""
        if not self.path.exists():
            return None
        with self._connect() as conn:
            row = conn.execute(
                "SELECT doc_id, version, source, node_ids, updated_at FROM documents "
                "WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
        return _record(row) if row else None

    def records(self) -> list[DocumentRecord]:
        """Every recorded document, ordered by source."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT doc_id, version, source, node_ids, updated_at FROM documents "
                "ORDER BY source"
            ).fetchall()
        return [_record(r) for r in rows]

    def record(self, entries: Iterable[tuple[str, str, str, list[str]]]) -> None:
        """Record ``(doc_id, version, source, node_ids)`` entries in one transaction."""
        now = datetime.now(UTC).isoformat()
        with self._connect() as conn:
            conn.executemany(
                "INSERT INTO documents (doc_id, version, source, node_ids, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET "
                "version = excluded.version, source = excluded.source, "
                "node_ids = excluded.node_ids, updated_at = excluded.updated_at",
                [(d, v, s, json.dumps(n), now) for d, v, s, n in entries],
            )

    def forget(self, doc_ids: Iterable[str]) -> None:
        """Remove documents from the state (after their chunks were deleted)."""
        with self._connect() as conn:
            conn.executemany("DELETE FROM documents WHERE doc_id = ?", [(d,) for d in doc_ids])

    def counts(self) -> tuple[int, int]:
        """(documents, chunks) recorded."""
        records = self.records()
        return len(records), sum(len(r.node_ids) for r in records)


def _record(row: tuple[str, str, str, str, str]) -> DocumentRecord:
    doc_id, version, source, node_ids, updated_at = row
    return DocumentRecord(doc_id, version, source, tuple(json.loads(node_ids)), updated_at)
