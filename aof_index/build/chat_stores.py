"""Chat store factories registered under ``aof_index.chat_stores``.

The manifest field is ``spec.backend.type``; without a backend the embedded default is a
SQLite file in the Memory's data folder.
"""

from __future__ import annotations

from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.build.context import BuildContext

__all__ = ["build_in_memory", "build_sqlite"]


def build_sqlite(ctx: BuildContext) -> BaseChatStore:
    """SQLite: ``backend.sqlite.path`` (default ``<data dir>/chat.db``), journal mode, in-memory."""
    from aof_index.memory.sqlite import SQLiteChatStore

    backend = ctx.spec.backend
    cfg = backend.sqlite if backend is not None else None
    if cfg is not None and cfg.inmemory:
        return SQLiteChatStore(path=":memory:", journal_mode=cfg.journal_mode)
    path = (cfg.path if cfg and cfg.path else None) or str(ctx.data_dir / "chat.db")
    return SQLiteChatStore(path=path, journal_mode=cfg.journal_mode if cfg else "WAL")


def build_in_memory(ctx: BuildContext) -> BaseChatStore:
    """A process-local store for tests and ephemeral agents."""
    from aof_index.memory.in_memory import InMemoryChatStore

    return InMemoryChatStore()
