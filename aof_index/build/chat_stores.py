"""Chat store factories registered under ``aof_index.chat_stores``.

The manifest field is ``spec.backend.type``; without a backend the embedded default is a
SQLite file in the Memory's data folder.  Every store gets the same history settings:

- ``spec.conversational.ttl`` (default 7d; ``0s`` keeps conversations forever): a
  conversation expires that long after its last write (Redis: ``backend.redis.ttl`` wins);
- ``spec.conversational.compression`` and ``spec.access.encryption.keySecretRef``: how
  messages are encoded at rest (:class:`~aof_index.memory.codec.MessageCodec`).
"""

from __future__ import annotations

from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.build.context import BuildContext
from aof_index.memory.codec import MessageCodec, parse_keys
from aof_index.spec.memory import ConversationalMemory

__all__ = [
    "build_in_memory",
    "build_postgresql",
    "build_redis",
    "build_sqlite",
    "conversation_ttl",
    "message_codec",
]


def message_codec(ctx: BuildContext) -> MessageCodec:
    """The codec of ``conversational.compression`` and ``access.encryption`` (keys resolved now).

    Encryption is on when ``access.encryption.keySecretRef`` is set and ``atRest`` is not
    false; the secret holds one key, or several (newest first) while keys are rotated.
    """
    conversational = ctx.spec.conversational
    compression = conversational.compression if conversational is not None else None
    algorithm = compression.algorithm if compression is not None and compression.enabled else None
    access = ctx.spec.access
    encryption = access.encryption if access is not None else None
    keys: list[bytes] = []
    if encryption is not None and encryption.at_rest and encryption.key_secret_ref is not None:
        secret = encryption.key_secret_ref.resolve().get_secret_value()
        keys = parse_keys(secret, field="spec.access.encryption.keySecretRef")
    return MessageCodec(algorithm, keys=keys)


def conversation_ttl(ctx: BuildContext) -> float | None:
    """Seconds a conversation lives after its last write (``None``: forever)."""
    conversational = ctx.spec.conversational or ConversationalMemory()
    seconds = conversational.ttl.timedelta.total_seconds()
    return seconds if seconds > 0 else None


def build_sqlite(ctx: BuildContext) -> BaseChatStore:
    """SQLite: ``backend.sqlite.path`` (default ``<data dir>/chat.db``), journal mode, in-memory."""
    from aof_index.memory.sqlite import SQLiteChatStore

    backend = ctx.spec.backend
    cfg = backend.sqlite if backend is not None else None
    codec, ttl = message_codec(ctx), conversation_ttl(ctx)
    if cfg is not None and cfg.inmemory:
        return SQLiteChatStore(path=":memory:", journal_mode=cfg.journal_mode, codec=codec, ttl=ttl)
    path = (cfg.path if cfg and cfg.path else None) or str(ctx.data_dir / "chat.db")
    journal = cfg.journal_mode if cfg else "WAL"
    return SQLiteChatStore(path=path, journal_mode=journal, codec=codec, ttl=ttl)


def build_in_memory(ctx: BuildContext) -> BaseChatStore:
    """A process-local store for tests and ephemeral agents."""
    from aof_index.memory.in_memory import InMemoryChatStore

    return InMemoryChatStore(codec=message_codec(ctx), ttl=conversation_ttl(ctx))


def build_postgresql(ctx: BuildContext) -> BaseChatStore:
    """PostgreSQL: ``backend.postgresql`` (host, port, database, user, passwordSecretRef,
    sslMode, maxConnections, schema), in a table of this Memory's own.

    The table is ``aof_chat_<namespace>_<name>`` (``-`` and ``.`` become ``_``; a name too
    long for PostgreSQL is cut and ends in a hash), so Memories sharing a schema keep their
    conversations apart.  The password is resolved from ``passwordSecretRef`` now.
    """
    import hashlib
    import re

    from aof_index.memory.postgres import PostgresChatStore
    from aof_index.spec.memory import PostgreSQLBackend

    backend = ctx.spec.backend
    cfg = (backend.postgresql if backend is not None else None) or PostgreSQLBackend()
    meta = ctx.memory.metadata
    table = re.sub(r"[^a-z0-9_]", "_", f"aof_chat_{meta.namespace}_{meta.name}".lower())
    if len(table) > 63:  # PostgreSQL's identifier limit
        table = f"{table[:54]}_{hashlib.sha256(table.encode()).hexdigest()[:8]}"
    secret = cfg.password_secret_ref
    return PostgresChatStore(
        host=cfg.host or "localhost",
        port=cfg.port,
        database=cfg.database or "postgres",
        user=cfg.user,
        password=secret.resolve() if secret is not None else None,
        sslmode=cfg.ssl_mode,
        db_schema=cfg.db_schema,
        table=table,
        max_connections=cfg.max_connections,
        codec=message_codec(ctx),
        ttl=conversation_ttl(ctx),
    )


def build_redis(ctx: BuildContext) -> BaseChatStore:
    """Redis: ``backend.redis`` (url, secretRef, db, poolSize, ttl, tls) under a per-Memory prefix.

    The TTL is ``backend.redis.ttl``, else ``conversational.ttl`` (default 7d); ``0s`` keeps
    conversations forever.  ``db`` wins over a database number in the URL only when the
    manifest sets it.  The password is resolved from ``secretRef`` now, at build time.
    """
    from aof_index.memory.redis import DEFAULT_URL, RedisChatStore
    from aof_index.spec.memory import RedisBackend

    backend = ctx.spec.backend
    cfg = (backend.redis if backend is not None else None) or RedisBackend()
    seconds = cfg.ttl.timedelta.total_seconds() if cfg.ttl is not None else conversation_ttl(ctx)
    meta = ctx.memory.metadata
    return RedisChatStore(
        url=cfg.url or DEFAULT_URL,
        password=cfg.secret_ref.resolve() if cfg.secret_ref is not None else None,
        db=cfg.db if "db" in cfg.model_fields_set else None,
        pool_size=cfg.pool_size,
        ttl=seconds or None,
        codec=message_codec(ctx),
        tls=bool(cfg.tls and cfg.tls.enabled),
        tls_insecure_skip_verify=bool(cfg.tls and cfg.tls.insecure_skip_verify),
        prefix=f"aof:{meta.namespace}:{meta.name}:chat:",
    )
