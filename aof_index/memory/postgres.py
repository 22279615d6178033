"""PostgreSQL chat store: conversation history in a PostgreSQL table, sync and natively async.

:class:`PostgresChatStore` implements LlamaIndex's ``BaseChatStore`` and aof-index's
``HistoryStore`` with synchronous methods on a :class:`psycopg_pool.ConnectionPool` and
asynchronous ones on a :class:`psycopg_pool.AsyncConnectionPool` (psycopg's own asyncio
connections, no threads).  The constructor does no I/O; each pool opens on first use, with
at most ``max_connections`` connections.  psycopg comes with the ``postgres`` extra
(``pip install 'aof-index[postgres]'``); without it, first use says so.

Layout and operations are the SQLite store's, written once in
:mod:`aof_index.memory.sql_ops`: table ``"<schema>"."<table>"`` holds one row per message
``(key, position, message, created_at)`` (``message`` as the store's ``codec`` encodes it)
with a unique index on ``(key, position)`` and, since schema version 2, an index on
``(key COLLATE "C", created_at)``: ``get_keys(prefix)`` reads a range of it in code-point
order whatever the database's collation, and the TTL checks and purges read it too.
``idx`` is the rank in ``ORDER BY position``.

Schema: the first use creates the schema, the table and ``"<schema>".aof_schema_versions``
(the layout version of each table), or migrates an older table, inside one transaction that
holds an advisory lock, so processes starting at once do not race.  Each object is created
only when missing, so a role without CREATE privileges can use a schema prepared for it.
A table recorded by a newer aof-index is refused.  Migrating to version 2 builds the
index, which needs the table's owner and blocks writes to the table while it builds.

Concurrency: every write is one transaction, and first takes
``pg_advisory_xact_lock(hashtext('<schema>.<table>'), hashtext(key))``, so the writers of one
conversation (tasks, threads, processes, hosts) take turns and never lose, duplicate or
reorder a message, while other conversations proceed in parallel.  ``edit_head`` locks its
key and its archive key (in sorted order, so two edits never deadlock) and reads, plans and
rewrites within that transaction.  A purge only deletes a key whose lock it gets without
waiting, after checking its expiry again.  Reads take no lock: each is one ``SELECT`` run
in autocommit (its own transaction, one snapshot, TTL check included), one round trip.

Round trips: a write runs in pipeline mode: ``BEGIN``, the lock and the statements whose
rows the operation does not read (its inserts, updates and deletes) go out together.  An
append sends its ``COMMIT`` with them too and is one round trip: it carries an id of its
own (schema version 4, see :func:`~aof_index.memory.sql_ops.op_add`), so running it again
never adds a second copy.  Any other write waits for those answers and then sends
``COMMIT`` alone (two round trips), so that a failure before it is known to have committed
nothing.  Each statement still runs after the one before it on the server, so the lock is
held before the ``INSERT`` takes its snapshot and reads the last position (folding the lock
into the ``INSERT`` would not do: a statement's snapshot predates its own lock wait).  A
statement whose rows the operation reads (a TTL check, positions to insert between) waits
for them.

Dropped connections: pooled connections are not checked as they leave the pool (that was a
round trip per call).  Instead, a call that finds its connection closed by the server (a
restart, a failover, an idle timeout) checks the pool's idle connections, dropping the
dead ones, and runs once more on a sound one: a read, an append (the same append, with the
same id: if the first run committed after all, the second adds nothing), and any other
write only when the failure came before its ``COMMIT`` was sent (the server then rolled it
back), since after that it may have committed.  A second failure, or a failure during the
``COMMIT`` of a write other than an append, raises.

Bounded waiting: connecting, waiting for a pooled connection, and each statement (a wait
for a conversation's lock included: ``lock_timeout`` and ``statement_timeout`` are set on
every connection) give up after ``pool_timeout_s``.  Failures raise
:class:`~aof_index.errors.BackendUnavailableError` naming ``host:port/database``, the schema
and what to change.  The two settings travel in the startup packet (libpq's ``options``):
a PgBouncer in front of the server refuses them unless it lists ``options`` in
``ignore_startup_parameters``, and then drops them.

Event loops: an asyncio pool belongs to the loop that opened it, so the store keeps one per
running loop.  A task on that loop holds the pool open and closes it when cancelled: by
:meth:`PostgresChatStore.aclose`, or by ``asyncio.run`` as it returns (it cancels every
task of its loop).  The pool must close at that point: psycopg_pool's workers are tasks
too, and one cancelled in the middle of its work carries on, so a loop left with an open
pool could wait for it forever.

Pickling keeps the settings, password and codec included (a child process needs them); the
pools stay behind and the copy opens its own.  ``to_dict``/``to_json`` leave the password
and the codec out, ``repr`` masks the password and omits the codec.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "PostgresChatStore", "SslMode"]

import asyncio
import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from llama_index.core.bridge.pydantic import Field, PrivateAttr, SecretStr, field_validator

from aof_index.errors import BackendUnavailableError
from aof_index.memory.sql_ops import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Dialect,
    Op,
    Sql,
    SqlChatStore,
    Stmt,
    arun_op,
    check_identifier,
    op_schema,
    run_op,
    sql_for,
)
from aof_index.registry import missing_extra

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

T = TypeVar("T")

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
"""libpq's ``sslmode`` values (the manifest allows disable, require, verify-ca, verify-full)."""

# The layout version (sql_ops.SCHEMA_VERSION) is recorded in ``aof_schema_versions``;
# 1: the messages table; 2: its ``(key COLLATE "C", created_at)`` index; 3: the epochs
# table; 4: the ``append_id`` column and its unique index.

_DIALECT = Dialect(
    placeholder="%s",
    table='"{schema}"."{table}"',
    id_column="id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    integer="BIGINT",
    real="DOUBLE PRECISION",
    key_collation=' COLLATE "C"',  # code-point order, whatever the database's collation
    key_lock="SELECT pg_advisory_xact_lock(hashtext('{schema}.{table}'), hashtext(?))",
    key_try_lock="SELECT pg_try_advisory_xact_lock(hashtext('{schema}.{table}'), hashtext(?))",
    schema_lock="SELECT pg_advisory_xact_lock(hashtextextended('aof_index schema {schema}', 0))",
    ensure=(
        (
            "SELECT 1 FROM pg_namespace WHERE nspname = '{schema}'",
            'CREATE SCHEMA IF NOT EXISTS "{schema}"',
        ),
        (
            "SELECT 1 FROM pg_tables"
            " WHERE schemaname = '{schema}' AND tablename = 'aof_schema_versions'",
            'CREATE TABLE IF NOT EXISTS "{schema}".aof_schema_versions'
            " (table_name TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        ),
    ),
    table_exists="SELECT 1 FROM pg_tables WHERE schemaname = '{schema}' AND tablename = '{table}'",
    read_version=(
        'SELECT version FROM "{schema}".aof_schema_versions'  # no row: 0
        " WHERE table_name = '{table}'"
    ),
    column_exists=(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = '{schema}'"
        " AND table_name = '{table}' AND column_name = '{{column}}'"
    ),
    write_version=(
        'INSERT INTO "{schema}".aof_schema_versions (table_name, version)'
        " VALUES ('{table}', {{version}})"
        " ON CONFLICT (table_name) DO UPDATE SET version = EXCLUDED.version"
    ),
)


@cache
def _backend_errors() -> tuple[type[BaseException], ...]:
    """What a call reports as BackendUnavailableError (checks that psycopg is installed)."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise missing_extra("PostgreSQL chat store", "postgres") from exc
    return (
        psycopg.OperationalError,  # connection, authentication, TLS, timeouts, shutdown
        psycopg.InterfaceError,
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
        psycopg_pool.PoolTimeout,
        psycopg_pool.PoolClosed,
    )


def _execute(cur: psycopg.Cursor[Any], stmt: Stmt) -> list[Any]:
    if stmt.many:
        cur.executemany(stmt.sql, stmt.params)
        return []
    cur.execute(stmt.sql, stmt.params)  # type: ignore[arg-type]  # not many: a row
    return cur.fetchall() if cur.description is not None else []


async def _aexecute(cur: psycopg.AsyncCursor[Any], stmt: Stmt) -> list[Any]:
    if stmt.many:
        await cur.executemany(stmt.sql, stmt.params)
        return []
    await cur.execute(stmt.sql, stmt.params)  # type: ignore[arg-type]  # not many: a row
    return await cur.fetchall() if cur.description is not None else []


def _drive(conn: psycopg.Connection[Any], op: Op[T]) -> T:
    with conn.transaction(), conn.cursor() as cur:
        return run_op(op, lambda stmt: _execute(cur, stmt))


async def _adrive(conn: psycopg.AsyncConnection[Any], op: Op[T]) -> T:
    async with conn.transaction(), conn.cursor() as cur:
        return await arun_op(op, lambda stmt: _aexecute(cur, stmt))


_BEGIN, _COMMIT = Stmt("BEGIN"), Stmt("COMMIT")
_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE, without importing psycopg here


class _Stale(Exception):
    """A call met a connection the server had closed, before anything could commit."""


@dataclass
class _Progress:
    """How far a write got: ``pending`` while statements sent wait for their answer; once
    ``committing``, a failure may have committed the write, which only an ``idempotent``
    operation (an append, see :func:`~aof_index.memory.sql_ops.op_add`) may run again."""

    pending: bool = False
    committing: bool = False
    idempotent: bool = False

    @property
    def retryable(self) -> bool:
        """Whether running the operation again after a dropped connection is safe."""
        return self.idempotent or not self.committing


def _one_statement(execute: Callable[[Stmt], T]) -> Callable[[Stmt], T]:
    """``execute`` for a read: one statement, its own transaction (autocommit)."""
    ran = False

    def once(stmt: Stmt) -> T:
        nonlocal ran
        if ran:
            raise RuntimeError("a read operation runs one statement, outside a transaction")
        ran = True
        return execute(stmt)

    return once


def _needs_rows(sql: Sql, stmt: Stmt) -> bool:
    """Whether an operation reads the rows of ``stmt``: a query, but not the key lock (its
    one row is void).  The others are queued in the pipeline without waiting for them."""
    return stmt.sql.startswith("SELECT") and stmt.sql != sql.key_lock


def _pexecute(
    conn: psycopg.Connection[Any], sql: Sql, stmt: Stmt, progress: _Progress
) -> list[Any]:
    cur = conn.cursor()  # one per statement: a cursor holds the result of its last one
    progress.idempotent = progress.idempotent or stmt.idempotent
    if stmt.many:
        cur.executemany(stmt.sql, stmt.params)
    else:
        cur.execute(stmt.sql, stmt.params)  # type: ignore[arg-type]  # not many: a row
        if _needs_rows(sql, stmt):
            progress.pending = False  # the answers come in order: the earlier ones are in
            return cur.fetchall()  # fetching waits for it
    progress.pending = True
    return []


async def _apexecute(
    conn: psycopg.AsyncConnection[Any], sql: Sql, stmt: Stmt, progress: _Progress
) -> list[Any]:
    cur = conn.cursor()
    progress.idempotent = progress.idempotent or stmt.idempotent
    if stmt.many:
        await cur.executemany(stmt.sql, stmt.params)
    else:
        await cur.execute(stmt.sql, stmt.params)  # type: ignore[arg-type]  # not many: a row
        if _needs_rows(sql, stmt):
            progress.pending = False
            return await cur.fetchall()
    progress.pending = True
    return []


def _drive_read(conn: psycopg.Connection[Any], op: Op[T]) -> T:
    with conn.cursor() as cur:
        return run_op(op, _one_statement(lambda stmt: _execute(cur, stmt)))


async def _adrive_read(conn: psycopg.AsyncConnection[Any], op: Op[T]) -> T:
    async with conn.cursor() as cur:
        return await arun_op(op, _one_statement(lambda stmt: _aexecute(cur, stmt)))


def _drive_write(conn: psycopg.Connection[Any], sql: Sql, op: Op[T], progress: _Progress) -> T:
    try:
        with conn.pipeline() as pipeline:
            _pexecute(conn, sql, _BEGIN, progress)
            result = run_op(op, lambda stmt: _pexecute(conn, sql, stmt, progress))
            if progress.pending and not progress.idempotent:
                pipeline.sync()  # all but the COMMIT has run: a failure so far committed nothing
            progress.committing = True
            _pexecute(conn, sql, _COMMIT, progress)  # sent, and waited for, as the pipeline ends
    except BaseException:
        if not conn.closed and conn.info.transaction_status != _IDLE:
            with contextlib.suppress(Exception):  # the failure says more than this one
                conn.rollback()
        raise
    return result


async def _adrive_write(
    conn: psycopg.AsyncConnection[Any], sql: Sql, op: Op[T], progress: _Progress
) -> T:
    try:
        async with conn.pipeline() as pipeline:
            await _apexecute(conn, sql, _BEGIN, progress)
            result = await arun_op(op, lambda stmt: _apexecute(conn, sql, stmt, progress))
            if progress.pending and not progress.idempotent:
                await pipeline.sync()
            progress.committing = True
            await _apexecute(conn, sql, _COMMIT, progress)
    except BaseException:
        if not conn.closed and conn.info.transaction_status != _IDLE:
            with contextlib.suppress(Exception):
                await conn.rollback()
        raise
    return result


@dataclass
class _LoopPool:
    """The asyncio pool of one event loop, and the task that closes it."""

    lock: asyncio.Lock
    pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
    keeper: asyncio.Task[None] | None = None


async def _keep_open(pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
    """Hold ``pool`` open until cancelled, then close it (see the module docstring)."""
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await pool.close()


class PostgresChatStore(SqlChatStore):
    """Chat history in a PostgreSQL table, shared by every process that connects to it.

    Implements the whole ``BaseChatStore`` contract and ``HistoryStore`` (``codec``, ``ttl``,
    ``get_keys(prefix)``, ``edit_head``, ``purge_expired``), sync and async, with Python list
    semantics for indices (see :class:`~aof_index.memory.sql_ops.SqlChatStore`).  The
    constructor does no I/O; the first call connects, creates or migrates the schema and
    opens a pool (one for the sync methods, one per event loop for the async ones).
    Problems raise :class:`~aof_index.errors.BackendUnavailableError` naming the server, the
    schema and the fix.  ``close()`` or ``aclose()`` closes the pools; the next call reopens.

    Example::

        store = PostgresChatStore(
            host="db.internal", database="agents", user="aof",
            password=SecretStr("..."), db_schema="aof_memory",
        )
        store.add_message("session-1", ChatMessage(role="user", content="hi"))
    """

    host: str = Field(default="localhost", description="Server host name or address.")
    port: int = Field(default=5432, ge=1, le=65535, description="Server port.")
    database: str = Field(default="postgres", description="Database to connect to.")
    user: str | None = Field(
        default=None, description="Role to connect as (libpq's default: the OS user name)."
    )
    password: SecretStr | None = Field(
        default=None,
        exclude=True,
        description="Password of the role; masked in repr and left out of serialisation.",
    )
    sslmode: SslMode = Field(
        default="require", description="libpq sslmode; 'disable' for a server without TLS."
    )
    db_schema: str = Field(default="public", description="Schema holding the table.")
    table: str = Field(default="aof_chat_messages", description="Table holding the messages.")
    max_connections: int = Field(
        default=25, ge=1, description="Largest size of each pool (sync, and each event loop's)."
    )
    pool_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a call waits to connect, for a pooled connection, or for a "
        "conversation's lock, before raising BackendUnavailableError.",
    )

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _pool: psycopg_pool.ConnectionPool[Any] | None = PrivateAttr(default=None)
    _apools: dict[asyncio.AbstractEventLoop, _LoopPool] = PrivateAttr(default_factory=dict)

    @field_validator("db_schema")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        return check_identifier(value, "db_schema")

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofPostgresChatStore"

    # ----------------------------------------------------------------------------------------
    # Lifecycle.

    def close(self) -> None:
        """Close the pools; the next call reopens them.

        Each asyncio pool is closed on its own loop: at once when that loop is not running,
        otherwise by its task as soon as the loop gets to it (prefer :meth:`aclose` there).
        """
        with self._lock:
            pool, self._pool = self._pool, None
            loops, self._apools = self._apools, {}
        if pool is not None:
            pool.close()
        for loop, entry in loops.items():
            _close_on(loop, entry)

    async def aclose(self) -> None:
        """Close the pools from async code (this loop's before returning); the next call
        reopens them."""
        with self._lock:
            entry = self._apools.pop(asyncio.get_running_loop(), None)
        if entry is not None and entry.keeper is not None:
            entry.keeper.cancel()
            await asyncio.wait([entry.keeper])
        self.close()

    # ----------------------------------------------------------------------------------------
    # Internals.

    @property
    def _sql(self) -> Sql:
        return sql_for(_DIALECT, self.table, self.db_schema)

    def _op_schema(self) -> Op[int]:
        return op_schema(self._sql, SCHEMA_VERSION, MIGRATIONS)

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def _connect_kwargs(self) -> dict[str, Any]:
        timeout_ms = math.ceil(self.pool_timeout_s * 1000)
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "sslmode": self.sslmode,
            "connect_timeout": max(2, math.ceil(self.pool_timeout_s)),  # libpq's least is 2
            # pg_stat_activity shows whose connections these are (63 bytes at most).
            "application_name": f"aof-index {self.db_schema}.{self.table}"[:63],
            "options": f"-c lock_timeout={timeout_ms} -c statement_timeout={timeout_ms}",
            "autocommit": True,  # operations open their transactions themselves
        }
        if self.user:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password.get_secret_value()
        return kwargs

    def _pool_kwargs(self) -> dict[str, Any]:
        return {
            "kwargs": self._connect_kwargs(),
            "min_size": 1,
            "max_size": self.max_connections,
            "timeout": self.pool_timeout_s,
            "name": f"aof-chat {self._where} {self.db_schema}.{self.table}",
            "open": False,
        }

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BackendUnavailableError(
                f"PostgreSQL chat store at {self._where}: table {self.db_schema}.{self.table} "
                f"has schema version {version} (in {self.db_schema}.aof_schema_versions), "
                f"newer than this aof-index supports ({SCHEMA_VERSION}). Upgrade aof-index "
                f"or use another schema (spec.backend.postgresql.schema)."
            )

    def _error(self, exc: BaseException) -> BackendUnavailableError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return BackendUnavailableError(
            f"PostgreSQL chat store at {self._where} (schema {self.db_schema!r}, table "
            f"{self.table!r}): {text}. {self._advice(exc, text.lower())}"
        )

    def _advice(self, exc: BaseException, text: str) -> str:
        import psycopg_pool

        state = getattr(exc, "sqlstate", None)
        if isinstance(exc, psycopg_pool.PoolTimeout):
            return (
                f"No connection came free within pool_timeout_s={self.pool_timeout_s:g}: all "
                f"{self.max_connections} are busy or the server stopped answering. Raise "
                f"spec.backend.postgresql.maxConnections, or check the server."
            )
        if "does not support ssl" in text:
            return (
                "The server offers no TLS: set spec.backend.postgresql.sslMode: disable for "
                "a server without TLS (sslmode='disable'), or enable ssl on the server."
            )
        if "ssl" in text or "certificate" in text:
            return (
                f"Check the server's TLS certificate against sslMode {self.sslmode!r} "
                f"(spec.backend.postgresql.sslMode)."
            )
        if state in ("28000", "28P01") or "authentication" in text or "password" in text:
            return self._auth_advice()
        if "role" in text and "does not exist" in text:
            return self._auth_advice()
        if state == "3D000" or ("database" in text and "does not exist" in text):
            return (
                f"Create the database (CREATE DATABASE {self.database}) or fix "
                f"spec.backend.postgresql.database."
            )
        if state == "42501":
            return (
                f"Grant the role CREATE on database {self.database} (to create schema "
                f"{self.db_schema}) and on the schema, or create the schema and table first."
            )
        if state in ("55P03", "57014"):
            return (
                f"Another writer held the conversation's lock, or a statement ran, for longer "
                f"than pool_timeout_s={self.pool_timeout_s:g}; look for long transactions in "
                f"pg_stat_activity, or raise the timeout."
            )
        if state in ("42P01", "3F000"):
            return (
                "The table or schema was dropped after this store created it; close() the "
                "store and the next call creates it again."
            )
        if state == "53300":
            return (
                "The server refuses more connections: lower "
                "spec.backend.postgresql.maxConnections or raise the server's max_connections."
            )
        return (
            f"Check that the server runs and accepts connections at {self.host}:{self.port} "
            f"(spec.backend.postgresql.host and port)."
        )

    def _auth_advice(self) -> str:
        return (
            f"Check the role ({self.user or 'the OS user name'}) and its password: "
            f"spec.backend.postgresql.user and passwordSecretRef."
        )

    # sync path -------------------------------------------------------------------------------

    def _run(self, make_op: Callable[[], Op[T]], *, write: bool) -> T:
        errors = _backend_errors()
        try:
            pool = self._sync_pool()
            try:
                return self._attempt(pool, make_op, write=write, last=False)
            except _Stale:
                pool.check()  # drop the other connections the server closed, then retry
                return self._attempt(pool, make_op, write=write, last=True)
        except errors as exc:
            raise self._error(exc) from exc

    def _attempt(
        self,
        pool: psycopg_pool.ConnectionPool[Any],
        make_op: Callable[[], Op[T]],
        *,
        write: bool,
        last: bool,
    ) -> T:
        import psycopg

        progress = _Progress()
        with pool.connection() as conn:
            try:
                if write:
                    return _drive_write(conn, self._sql, make_op(), progress)
                return _drive_read(conn, make_op())
            except psycopg.OperationalError as exc:
                if last or not progress.retryable or not conn.closed:
                    raise
                raise _Stale from exc

    def _sync_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = self._open_pool()
            return self._pool

    def _open_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        import psycopg
        import psycopg_pool

        # A connection of its own first: it creates the schema, and a failure to connect
        # surfaces with libpq's reason (the pool would only time out).
        with psycopg.connect(**self._connect_kwargs()) as conn:
            self._check_version(_drive(conn, self._op_schema()))
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(**self._pool_kwargs())
        try:
            pool.open(wait=True, timeout=self.pool_timeout_s)
        except BaseException:
            pool.close()
            raise
        return pool

    # async path ------------------------------------------------------------------------------

    async def _arun(self, make_op: Callable[[], Op[T]], *, write: bool) -> T:
        errors = _backend_errors()
        try:
            pool = await self._async_pool()
            try:
                return await self._aattempt(pool, make_op, write=write, last=False)
            except _Stale:
                await pool.check()
                return await self._aattempt(pool, make_op, write=write, last=True)
        except errors as exc:
            raise self._error(exc) from exc

    async def _aattempt(
        self,
        pool: psycopg_pool.AsyncConnectionPool[Any],
        make_op: Callable[[], Op[T]],
        *,
        write: bool,
        last: bool,
    ) -> T:
        import psycopg

        progress = _Progress()
        async with pool.connection() as conn:
            try:
                if write:
                    return await _adrive_write(conn, self._sql, make_op(), progress)
                return await _adrive_read(conn, make_op())
            except psycopg.OperationalError as exc:
                if last or not progress.retryable or not conn.closed:
                    raise
                raise _Stale from exc

    async def _async_pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._apools.get(loop)
            if entry is None:
                for old in [other for other in self._apools if other.is_closed()]:
                    del self._apools[old]
                entry = self._apools[loop] = _LoopPool(asyncio.Lock())
        async with entry.lock:
            if entry.pool is None or entry.pool.closed:
                entry.pool = await self._aopen_pool()
                entry.keeper = loop.create_task(_keep_open(entry.pool))
                await asyncio.sleep(0)  # the keeper starts: cancelled from now on, it closes
            return entry.pool

    async def _aopen_pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        import psycopg
        import psycopg_pool

        async with await psycopg.AsyncConnection.connect(**self._connect_kwargs()) as conn:
            self._check_version(await _adrive(conn, self._op_schema()))
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            **self._pool_kwargs()
        )
        try:
            await pool.open(wait=True, timeout=self.pool_timeout_s)
        except BaseException:
            await pool.close()
            raise
        return pool


def _close_on(loop: asyncio.AbstractEventLoop, entry: _LoopPool) -> None:
    """Have ``entry``'s keeper close its pool on ``loop``, however that loop is doing."""
    keeper = entry.keeper
    if keeper is None or loop.is_closed():
        return  # never opened, or closed as its loop shut down
    if loop.is_running():
        loop.call_soon_threadsafe(keeper.cancel)
        return
    keeper.cancel()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop.run_until_complete(asyncio.wait([keeper]))
    # else: another loop runs in this thread; the keeper closes the pool when its loop runs.
