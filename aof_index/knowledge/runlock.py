"""One sync of a KnowledgeBase at a time, across processes: a file lock in its data folder.

:func:`run_lock` holds an OS file lock (``flock``, through the ``filelock`` package) on
``$AOF_INDEX_HOME/knowledge/<namespace>/<name>/sync.lock`` for the length of a sync.
``aof-index kb sync`` and the scheduler of ``aof-index kb serve`` both take it, so a cron
run never overlaps a manual one, nor a second ``kb serve`` on the same data. The operating
system drops the lock when its process dies (even by ``kill -9``), so a crashed sync never
leaves a KnowledgeBase locked; its journal is then redone by the next sync.

Example:
    >>> from aof_index.knowledge.runlock import SyncBusyError, run_lock
    >>> with run_lock(kb):  # doctest: +SKIP
    ...     kb.sync()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from aof_index.errors import AofIndexError
from aof_index.home import knowledge_dir

if TYPE_CHECKING:
    from aof_index.knowledge.sync import KnowledgeBaseSync

__all__ = ["SyncBusyError", "lock_path", "run_lock"]


class SyncBusyError(AofIndexError):
    """Another sync of the same KnowledgeBase holds its run lock.

    Attributes:
        knowledge_base: ``namespace/name`` of the KnowledgeBase.
        lock_file: the lock file that is held.
        waited: seconds waited for it before giving up.
    """

    def __init__(self, knowledge_base: str, lock_file: Path, waited: float = 0.0) -> None:
        self.knowledge_base = knowledge_base
        self.lock_file = lock_file
        self.waited = waited
        after = f" after waiting {waited:g}s" if waited > 0 else ""
        super().__init__(
            f"KnowledgeBase {knowledge_base} is already being synced by another process "
            f"(lock {lock_file} is held{after}); wait for that sync to finish (or stop it: "
            "the sync is crash-safe) and run again"
        )


def lock_path(sync: KnowledgeBaseSync) -> Path:
    """The run lock file of ``sync``'s KnowledgeBase (its folder is not created here)."""
    meta = sync.resource.metadata
    return knowledge_dir(meta.namespace, meta.name, sync.home) / "sync.lock"


@contextmanager
def run_lock(sync: KnowledgeBaseSync, wait: float | None = None) -> Iterator[Path]:
    """Hold the KnowledgeBase's run lock while the ``with`` block runs.

    Args:
        sync: the KnowledgeBase's sync (its namespace, name and data root pick the lock).
        wait: seconds to wait for a lock another process holds; ``None`` or ``0`` tries
            once and fails at once (the lock is non-blocking by default).

    Yields:
        The lock file's path.

    Raises:
        SyncBusyError: another process (or another lock object in this one) holds it.
    """
    path = lock_path(sync)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    timeout = max(wait or 0.0, 0.0)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        meta = sync.resource.metadata
        raise SyncBusyError(f"{meta.namespace}/{meta.name}", path, timeout) from None
    try:
        yield path
    finally:
        lock.release()
