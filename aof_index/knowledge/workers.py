"""Several worker processes share one KnowledgeBase's sync through Redis, with RQ.

The sync stays in charge: it lists each source, compares the listing with its state and,
instead of reading and embedding the new and changed documents itself, enqueues one job
per document (a *unit*) on an RQ queue. Workers (``aof-index kb worker``) take units and do
the expensive part: read the document, process, chunk and embed it. The syncing process
collects the results as they complete and journals and writes them, so it remains the
only writer of the vector store, the keyword index and the sync state: every backend,
including the embedded ones, stays consistent, and the crash safety of
:mod:`aof_index.knowledge.sync` holds unchanged.

Units are idempotent and deduplicated:

- a unit's job id is a hash of the KnowledgeBase, the pipeline (chunking, processing and
  embedding settings), the source, the document, its listing version, the chunks it has now
  and the mode. It is enqueued with RQ's ``unique=True``, an atomic check in Redis, so a
  unit already queued, running or finished is never enqueued twice: a sync that was killed
  and started again picks up the results its workers already produced (kept
  ``result_ttl``, a day by default) instead of redoing them;
- a worker holds a Redis lock per document while it prepares it (redis-py's ``Lock``), so
  two versions of one document are never processed at the same time either;
- a worker checks that its pipeline fingerprint is the syncing process's: a worker with
  another Memory, model or chunking refuses the unit instead of mixing vectors.

RQ (``rq``, maintained, Redis-only) is the task queue: jobs survive a worker's death
(``StartedJobRegistry`` cleanup re-queues or fails them), failed units are retried
``retries`` times, and the workers are plain processes that need only the manifest (the
same path), the same ``$AOF_INDEX_HOME`` (sync state for cached vectors, source caches) and
Redis. Workers use RQ's ``SimpleWorker`` (no fork per job), so the embedding model is loaded
once per worker and reused.

Example:
    >>> from aof_index.knowledge.sync import open_sync
    >>> from aof_index.knowledge.workers import RedisDispatcher
    >>> dispatcher = RedisDispatcher("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> open_sync("kb.yaml", dispatcher=dispatcher).sync()  # doctest: +SKIP
    ... # meanwhile, in other processes or on other machines: aof-index kb worker
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import Queue, Retry, SimpleWorker, get_current_job
from rq.exceptions import DuplicateJobError
from rq.job import Job, JobStatus

from aof_index.errors import AofIndexError
from aof_index.knowledge.sync import (
    KnowledgeBaseSync,
    SyncMode,
    SyncOrigin,
    UnitResult,
)
from aof_index.knowledge.sync_state import DocumentRow, DocumentWrite

if TYPE_CHECKING:
    from aof_index_readers.base import DocumentRef

__all__ = [
    "DEFAULT_QUEUE",
    "RedisDispatcher",
    "UnitWorker",
    "prepare_unit",
    "run_worker",
]

DEFAULT_QUEUE = "aof-index-kb"
"""The RQ queue units go to unless another is named."""

log = logging.getLogger(__name__)

_opened: dict[SyncOrigin, KnowledgeBaseSync] = {}
_opened_lock = threading.Lock()


def _connect(url: str) -> Redis:
    return Redis.from_url(url)


def _open(origin: SyncOrigin, pipeline: str) -> KnowledgeBaseSync:
    """The worker's sync of ``origin``, opened once per worker process; re-opened when the
    manifest changed since (the pipeline fingerprint differs)."""
    with _opened_lock:
        kb = _opened.get(origin)
        if kb is None or kb.pipeline_id != pipeline:
            kb = _opened[origin] = origin.open()
    if kb.pipeline_id != pipeline:
        raise AofIndexError(
            f"this worker's pipeline for KnowledgeBase {origin.name!r} differs from the "
            "syncing process's (another Memory, embedding model, chunking or processing): "
            f"check that the worker reads the same manifest ({origin.manifest}) and Memory"
        )
    return kb


def prepare_unit(
    origin: SyncOrigin,
    pipeline: str,
    source: str,
    ref: DocumentRef,
    known: DocumentRow | None,
    mode: SyncMode,
) -> dict[str, Any]:
    """The RQ job of one unit: read, process, chunk and embed one document.

    Holds the document's Redis lock meanwhile. Returns plain data (the journal entry as
    JSON), read back by :class:`RedisDispatcher`.
    """
    kb = _open(origin, pipeline)
    job = get_current_job()
    key = hashlib.sha256(f"{origin.manifest}\0{origin.name}\0{source}\0{ref.id}".encode())
    lock = (
        job.connection.lock(f"aof-index:unit-lock:{key.hexdigest()}", timeout=3600)
        if job is not None
        else None
    )
    if lock is not None:
        lock.acquire()
    started = time.time()
    try:
        unit = kb.prepare_unit(source, ref, known, mode)
    finally:
        if lock is not None:
            lock.release()
    return {
        "doc_id": unit.doc_id,
        "write": unit.write.to_json() if unit.write is not None else None,
        "loaded": unit.loaded,
        "embedded": unit.embedded,
        "worker": job.worker_name if job is not None else None,
        "started": started,
        "ended": time.time(),
    }


@dataclass
class RedisDispatcher:
    """Hands a sync's documents to ``aof-index kb worker`` processes through an RQ queue.

    Args:
        url: the Redis URL (``redis://host:6379/0``; ``rediss://`` for TLS).
        queue: the RQ queue name the workers listen on.
        job_timeout: seconds one unit may take before RQ stops it.
        result_ttl: seconds a finished unit's result is kept (a restarted sync re-uses it).
        retries: times RQ retries a failed unit before the sync records it as failed.
        poll: seconds between checks on the units still running.
    """

    url: str
    queue: str = DEFAULT_QUEUE
    job_timeout: int = 600
    result_ttl: int = 86_400
    retries: int = 2
    poll: float = 0.05

    def run(
        self,
        kb: KnowledgeBaseSync,
        source: str,
        refs: Sequence[DocumentRef],
        known: Mapping[str, DocumentRow],
        mode: SyncMode,
    ) -> Iterator[UnitResult]:
        """Enqueue one unit per document of ``refs`` and yield each result once, in the
        order the units complete."""
        if kb.origin is None:
            raise AofIndexError(
                "workers need to know where the KnowledgeBase came from: open it with "
                "aof_index.knowledge.sync.open_sync (which sets KnowledgeBaseSync.origin)"
            )
        connection = _connect(self.url)
        queue = Queue(self.queue, connection=connection)
        pending = {
            self._enqueue(queue, kb, kb.origin, source, ref, known.get(ref.id), mode): ref.id
            for ref in refs
        }
        while pending:
            done = self._collect(connection, pending)
            for job_id, result in done:
                del pending[job_id]
                yield result
            if pending and not done:
                time.sleep(self.poll)

    def _enqueue(
        self,
        queue: Queue,
        kb: KnowledgeBaseSync,
        origin: SyncOrigin,
        source: str,
        ref: DocumentRef,
        known: DocumentRow | None,
        mode: SyncMode,
    ) -> str:
        had = known.node_ids if known is not None else ()
        identity = "\0".join(
            [origin.manifest, origin.name, kb.pipeline_id, source, ref.id, ref.version, mode]
        )
        job_id = "aof-unit-" + hashlib.sha256(f"{identity}\0{had}".encode()).hexdigest()[:40]
        for _ in range(2):
            try:
                queue.enqueue_call(
                    prepare_unit,
                    args=(origin, kb.pipeline_id, source, ref, known, mode),
                    job_id=job_id,
                    unique=True,
                    timeout=self.job_timeout,
                    result_ttl=self.result_ttl,
                    failure_ttl=self.result_ttl,
                    retry=Retry(max=self.retries) if self.retries else None,
                    description=f"{origin.name}/{source}: {ref.id}",
                )
            except DuplicateJobError:
                existing = Job.fetch(job_id, connection=queue.connection)
                if existing.get_status() in _ENDED_BADLY:
                    existing.delete()  # a unit that failed before gets a fresh try
                    continue
            return job_id
        return job_id

    def _collect(
        self, connection: Redis, pending: Mapping[str, str]
    ) -> list[tuple[str, UnitResult]]:
        done: list[tuple[str, UnitResult]] = []
        ids = list(pending)
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=connection), strict=True):
            doc_id = pending[job_id]
            if job is None:
                done.append((job_id, UnitResult(doc_id, loaded=False, error="unit lost")))
                continue
            status = job.get_status(refresh=False)
            if status == JobStatus.FINISHED:
                done.append((job_id, _result(doc_id, job)))
            elif status in _ENDED_BADLY:
                done.append((job_id, UnitResult(doc_id, loaded=False, error=_failure(job))))
        return done


def _result(doc_id: str, job: Job) -> UnitResult:
    value = job.return_value()
    if not isinstance(value, dict):
        return UnitResult(doc_id, loaded=False, error="the unit returned no result")
    write = value.get("write")
    return UnitResult(
        doc_id,
        write=DocumentWrite.from_json(write) if isinstance(write, str) else None,
        loaded=bool(value.get("loaded")),
        embedded=int(value.get("embedded") or 0),
    )


def _failure(job: Job) -> str:
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or "failed"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


_ENDED_BADLY = frozenset({JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})


class UnitWorker(SimpleWorker):
    """RQ's ``SimpleWorker`` (jobs run in this process, so each model loads once) whose
    command listener stops within a second on shutdown.

    RQ polls its pub/sub command channel with a 60 s wait, and since redis-py 8
    ``PubSubWorkerThread.stop()`` joins the thread, so an idle worker given SIGTERM took up to
    a minute to exit instead of RQ's intended one second.
    """

    def unsubscribe(self) -> None:
        """Leave the command channel, waiting at most a second for the listener thread."""
        thread = self.pubsub_thread
        if thread is None or self.pubsub is None:
            return
        self.pubsub.unsubscribe()
        try:
            thread.stop(timeout=1)  # type: ignore[call-arg, unused-ignore]
        except TypeError:  # redis-py < 8: stop() takes no timeout and does not join
            thread.stop()
            thread.join(timeout=1)
        self.pubsub.close()


def run_worker(
    url: str,
    *,
    queues: Sequence[str] = (DEFAULT_QUEUE,),
    name: str | None = None,
    burst: bool = False,
) -> bool:
    """Process units from ``queues`` until stopped (``burst``: until they are empty).

    One :class:`UnitWorker` (an RQ ``SimpleWorker``): jobs run in this process, so each
    KnowledgeBase's embedding model is loaded once and re-used. Returns whether any job was
    processed.
    """
    connection = _connect(url)
    worker = UnitWorker(
        [Queue(q, connection=connection) for q in queues], connection=connection, name=name
    )
    return bool(worker.work(burst=burst, logging_level="WARNING"))
