"""SQLite chat store: the embedded default for conversation history.

:class:`SQLiteChatStore` implements LlamaIndex's ``BaseChatStore`` and aof-index's
``HistoryStore`` on one SQLite table, with synchronous methods on :mod:`sqlite3` and
asynchronous ones on :mod:`aiosqlite`.

Layout: one row per message, ``(key, position, message, created_at)``, where ``message`` is
the text the store's ``codec`` makes of the message (``ChatMessage.model_dump_json()`` by
default; compressed and/or encrypted under a prefix otherwise, and rows of any codec stay
readable) and ``created_at`` is Unix time in seconds.  ``position`` is a sparse integer:
appends take the last position plus :data:`POSITION_GAP`, an insert in the middle takes the
midpoint of its two neighbours, and only when two neighbours are adjacent is the key
renumbered.  The index ``idx`` that the chat-store API speaks of is the rank in
``ORDER BY position``, never a row id, so deletes leave gaps that nothing has to close
(LlamaIndex's own ``SQLiteChatStore`` treats ``idx`` as a row id and deletes the wrong
message).  An index on ``(key, created_at)`` (schema version 2) serves ``get_keys(prefix)``
(an index range; SQLite compares text by its UTF-8 bytes, i.e. by code point), the TTL
(a conversation expires ``ttl`` seconds after the newest ``created_at`` of its rows, see
:mod:`aof_index.memory.sql_ops`) and purges.

Concurrency: every write runs in one ``BEGIN IMMEDIATE`` transaction, so writers from any
number of threads, tasks and processes are serialised by SQLite's own lock (waiting up to
``busy_timeout_ms``) and never lose or duplicate a message; ``edit_head`` reads, plans and
rewrites the head (and appends to the archive key) inside one such transaction.  Within a
process, one sqlite3 connection (guarded by a thread lock) serves the sync methods and one
aiosqlite connection (guarded by an asyncio lock) serves the async ones.

The SQL and the logic of every operation are written once, in
:mod:`aof_index.memory.sql_ops` (shared with the PostgreSQL store), as generators that yield
statements and receive rows; a sync driver here runs them on sqlite3 and an async driver on
aiosqlite, so the two paths cannot drift apart.  What is SQLite's own is :data:`_DIALECT`,
the connections, ``PRAGMA`` settings and the retries.
"""

from __future__ import annotations

__all__ = ["POSITION_GAP", "SCHEMA_VERSION", "JournalMode", "SQLiteChatStore"]

import asyncio
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
from llama_index.core.bridge.pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from aof_index.errors import BackendUnavailableError
from aof_index.memory.sql_ops import (
    MIGRATIONS,
    POSITION_GAP,
    SCHEMA_VERSION,
    Dialect,
    Op,
    Sql,
    SqlChatStore,
    Stmt,
    arun_op,
    op_schema,
    run_op,
    sql_for,
)

logger = logging.getLogger(__name__)

JournalMode = Literal["DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"]
"""SQLite journal modes accepted by ``spec.backend.sqlite.journalMode``."""

_JOURNAL_MODES: tuple[str, ...] = ("DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF")
_SQLITE_BUSY = 5  # primary result code; SQLite returns it at once, without its busy handler,
# when processes race to put a new file in WAL mode or one recovers the WAL
_SQLITE_LOCKED = 6  # primary result code; shared-cache in-memory databases return it at once
_MAX_RETRY_DELAY_S = 0.05

# Migrations (sql_ops.MIGRATIONS) bring a table to sql_ops.SCHEMA_VERSION (1: the messages
# table; 2: its (key, created_at) index; 3: the epochs table; 4: the append_id column and its
# unique index), which is written to ``PRAGMA user_version``.
# user_version belongs to the whole file: when a file may hold several chat tables, a
# migration has to be safe to run on a table that is already up to date (or find every chat
# table in sqlite_master itself).  Indexes are also ensured on every open (the dialect's
# indexes_every_open), and so is the append_id column, so a second table of a file another
# table brought to a newer version gets them too.

_DIALECT = Dialect(
    placeholder="?",
    table='"{table}"',
    id_column="id INTEGER PRIMARY KEY",
    integer="INTEGER",
    real="REAL",
    key_collation="",  # SQLite compares TEXT by its bytes: code-point order
    key_lock=None,  # BEGIN IMMEDIATE already serialises every writer of the file
    key_try_lock=None,  # likewise
    schema_lock=None,  # likewise
    ensure=(),
    table_exists="SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}'",
    read_version="PRAGMA user_version",
    column_exists="SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{{column}}'",
    write_version="PRAGMA user_version = {{version}}",
    indexes_every_open=True,
)

T = TypeVar("T")


def _op_configure(journal_mode: str, busy_timeout_ms: int) -> Op[str]:
    yield Stmt(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    rows = yield Stmt(f"PRAGMA journal_mode = {journal_mode}")
    return str(rows[0][0]).upper()


# --------------------------------------------------------------------------------------------
# Drivers.


def _is_locked(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


class _Backoff:
    """Retry schedule for the contention SQLite's busy handler does not wait on.

    Connections to one shared-cache in-memory database lock each other per table and get
    SQLITE_LOCKED at once instead of waiting, and processes opening a new file together get
    SQLITE_BUSY at once while one of them switches it to WAL; so the drivers retry the
    whole transaction (rolled back first) until ``busy_timeout_ms`` has passed.  A busy
    wait that SQLite's own handler already spent ``busy_timeout_ms`` on ends the schedule,
    since both share one deadline.
    """

    def __init__(self, timeout_ms: int) -> None:
        self._deadline = time.monotonic() + timeout_ms / 1000
        self._delay = 0.001

    def delay(self, exc: sqlite3.Error) -> float | None:
        """Seconds to wait before retrying after ``exc``, or ``None`` to give up."""
        if not _is_locked(exc) or time.monotonic() >= self._deadline:
            return None
        delay, self._delay = self._delay, min(self._delay * 2, _MAX_RETRY_DELAY_S)
        return delay


def _drive(conn: sqlite3.Connection, op: Op[T], begin: str | None) -> T:
    def execute(stmt: Stmt) -> list[Any]:
        if stmt.many:
            conn.executemany(stmt.sql, stmt.params)  # type: ignore[arg-type]
            return []
        return conn.execute(stmt.sql, stmt.params).fetchall()  # type: ignore[arg-type]

    if begin:
        conn.execute(f"BEGIN {begin}")
    try:
        result = run_op(op, execute)
        if begin:
            conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


async def _adrive(conn: aiosqlite.Connection, op: Op[T], begin: str | None) -> T:
    async def execute(stmt: Stmt) -> list[Any]:
        if stmt.many:
            await conn.executemany(stmt.sql, stmt.params)  # type: ignore[arg-type]
            return []
        return list(await conn.execute_fetchall(stmt.sql, stmt.params))  # type: ignore[arg-type]

    if begin:
        await conn.execute(f"BEGIN {begin}")
    try:
        result = await arun_op(op, execute)
        if begin:
            await conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    """Mark an abandoned transaction's outcome as seen, logging a failure."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("SQLite chat store: a call abandoned by its caller failed: %s", exc)


# --------------------------------------------------------------------------------------------
# The store.


class SQLiteChatStore(SqlChatStore):
    """Chat history in SQLite: a file on disk, or an in-memory database.

    Implements the whole ``BaseChatStore`` contract and ``HistoryStore`` (``codec``, ``ttl``,
    ``get_keys(prefix)``, ``edit_head``, ``purge_expired``), sync and async.  Indices follow Python
    list semantics: ``delete_message(key, 1)`` removes the second message in order and
    returns it, ``-1`` is the last one, an index out of range returns ``None``, and
    ``add_message(key, m, idx=i)`` behaves like ``list.insert(i, m)``.  A key with no
    messages does not exist: ``get_messages`` gives ``[]`` and ``get_keys`` omits it.

    The constructor does no I/O.  The first call creates the parent directory if needed,
    opens the database, applies ``journal_mode`` and ``busy_timeout_ms`` and creates the table;
    problems there raise :class:`~aof_index.errors.BackendUnavailableError` naming the path.

    Sync and async methods may be mixed freely; the async methods use one event loop at a
    time (consecutive loops, such as repeated ``asyncio.run``, are fine).  ``close()`` or
    ``aclose()`` releases the connections, and ends an in-memory database.  A pickled copy
    reopens the file lazily (an in-memory database is not shared with the copy).

    Example::

        store = SQLiteChatStore(path="~/.local/share/aof/chat.db", ttl=7 * 86400)
        store.add_message("session-1", ChatMessage(role="user", content="hi"))
    """

    path: str | None = Field(
        default=None,
        description="Database file (``~`` is expanded), or ':memory:' for an in-memory database.",
    )
    inmemory: bool = Field(
        default=False, description="Keep the database in memory; ``path`` is then ignored."
    )
    journal_mode: JournalMode = Field(
        default="WAL", description="SQLite journal mode, applied with PRAGMA journal_mode."
    )
    table: str = Field(default="aof_chat_messages", description="Table holding the messages.")
    busy_timeout_ms: int = Field(
        default=5000, ge=0, description="How long a call waits for another writer's lock."
    )

    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _conn: sqlite3.Connection | None = PrivateAttr(default=None)
    _aconn: aiosqlite.Connection | None = PrivateAttr(default=None)
    _alock: asyncio.Lock | None = PrivateAttr(default=None)
    _alock_loop: weakref.ref[asyncio.AbstractEventLoop] | None = PrivateAttr(default=None)
    _memory_uri: str = PrivateAttr(
        default_factory=lambda: f"file:aof-{uuid.uuid4().hex}?mode=memory&cache=shared"
    )
    _closing: set[asyncio.Task[None]] = PrivateAttr(default_factory=set)

    @field_validator("path", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("journal_mode", mode="before")
    @classmethod
    def _upper_journal_mode(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_location(self) -> SQLiteChatStore:
        if self.path == ":memory:":
            self.inmemory = True
        if not self.inmemory and not self.path:
            raise ValueError("SQLiteChatStore needs a path, or inmemory=True")
        return self

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofSQLiteChatStore"

    # ----------------------------------------------------------------------------------------
    # Lifecycle.

    def close(self) -> None:
        """Close the connections; the next call reopens them.  Ends an in-memory database.

        An open async connection is closed too: on a fresh event loop when none runs in
        this thread, otherwise by a task on the running loop (prefer :meth:`aclose` there).
        """
        with self._lock:
            conn, self._conn = self._conn, None
        aconn, self._aconn = self._aconn, None
        if aconn is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(aconn.close())
            else:
                task = loop.create_task(aconn.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        if conn is not None:
            conn.close()

    async def aclose(self) -> None:
        """Close the connections from async code; the next call reopens them."""
        aconn, self._aconn = self._aconn, None
        if aconn is not None:
            await aconn.close()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ----------------------------------------------------------------------------------------
    # Internals.

    @property
    def _sql(self) -> Sql:
        return sql_for(_DIALECT, self.table)

    def _op_schema(self) -> Op[int]:
        # The module's globals are read on each call (tests patch them).
        return op_schema(self._sql, SCHEMA_VERSION, MIGRATIONS)

    @property
    def _where(self) -> str:
        return "in-memory database" if self.inmemory else f"database {self._file!r}"

    @property
    def _file(self) -> str:
        return str(Path(self.path or "").expanduser())

    def _target(self) -> tuple[str, bool]:
        """What ``sqlite3.connect`` opens, and whether it is a URI."""
        return (self._memory_uri, True) if self.inmemory else (self._file, False)

    def _error(self, exc: BaseException) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"SQLite chat store, {self._where} (table {self.table!r}): {exc}. Check that the "
            f"file is a SQLite database that this process can read and write, and that no "
            f"other process holds its lock for longer than busy_timeout_ms="
            f"{self.busy_timeout_ms}."
        )

    def _prepare_directory(self) -> None:
        if self.inmemory:
            return
        try:
            Path(self._file).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailableError(
                f"SQLite chat store cannot open database file {self._file!r}: its directory "
                f"cannot be created ({exc}). Check that the path's parent is a writable "
                f"directory."
            ) from exc

    def _check_opened(self, journal_mode: str, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BackendUnavailableError(
                f"SQLite chat store, {self._where}: schema version {version} (PRAGMA "
                f"user_version) is newer than this aof-index supports ({SCHEMA_VERSION}). "
                f"Upgrade aof-index or use another database file."
            )
        if journal_mode != self.journal_mode and not self.inmemory:
            logger.warning(
                "SQLite chat store %s: journal_mode %s requested, SQLite kept %s",
                self._where,
                self.journal_mode,
                journal_mode,
            )

    # sync path -------------------------------------------------------------------------------

    def _run(self, make_op: Callable[[], Op[T]], *, write: bool) -> T:
        with self._lock:
            conn = self._connection()
            return self._retry(conn, make_op, "IMMEDIATE" if write else "DEFERRED")

    def _retry(
        self, conn: sqlite3.Connection, make_op: Callable[[], Op[T]], begin: str | None
    ) -> T:
        backoff = _Backoff(self.busy_timeout_ms)
        while True:
            try:
                return _drive(conn, make_op(), begin)
            except sqlite3.Error as exc:
                delay = backoff.delay(exc)
                if delay is None:
                    raise self._error(exc) from exc
            time.sleep(delay)

    def _connection(self) -> sqlite3.Connection:
        """The sync connection, opened on first use (caller holds ``self._lock``)."""
        if self._conn is not None:
            return self._conn
        self._prepare_directory()
        target, uri = self._target()
        try:
            conn = sqlite3.connect(
                target,
                uri=uri,
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            mode = self._retry(
                conn, lambda: _op_configure(self.journal_mode, self.busy_timeout_ms), None
            )
            version = self._retry(conn, self._op_schema, "IMMEDIATE")
            self._check_opened(mode, version)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    # async path ------------------------------------------------------------------------------

    def _async_lock(self) -> asyncio.Lock:
        # asyncio.Lock belongs to one event loop; make a new one when the loop changes.
        loop = asyncio.get_running_loop()
        if self._alock is None or self._alock_loop is None or self._alock_loop() is not loop:
            self._alock = asyncio.Lock()
            self._alock_loop = weakref.ref(loop)
        return self._alock

    async def _arun(self, make_op: Callable[[], Op[T]], *, write: bool) -> T:
        # A caller's cancellation (a timeout, say) must not stop a transaction half way: the
        # statement in aiosqlite's thread runs on regardless, and a BEGIN that completes
        # after the task gave up would leave the connection holding the write lock.  So the
        # transaction runs in its own task, shielded, and finishes (commit or rollback) even
        # when the caller stops waiting; the async lock stays held until it has.
        task = asyncio.ensure_future(self._arun_locked(make_op, write))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_retrieve_outcome)
            raise

    async def _arun_locked(self, make_op: Callable[[], Op[T]], write: bool) -> T:
        async with self._async_lock():
            conn = await self._aconnection()
            return await self._aretry(conn, make_op, "IMMEDIATE" if write else "DEFERRED")

    async def _aretry(
        self, conn: aiosqlite.Connection, make_op: Callable[[], Op[T]], begin: str | None
    ) -> T:
        backoff = _Backoff(self.busy_timeout_ms)
        while True:
            try:
                return await _adrive(conn, make_op(), begin)
            except sqlite3.Error as exc:
                delay = backoff.delay(exc)
                if delay is None:
                    raise self._error(exc) from exc
            await asyncio.sleep(delay)

    async def _aconnection(self) -> aiosqlite.Connection:
        """The async connection, opened on first use (caller holds the async lock)."""
        if self._aconn is not None:
            return self._aconn
        if self.inmemory:
            # The sync connection keeps the shared in-memory database alive (in-memory, so
            # opening it does no blocking I/O).
            with self._lock:
                self._connection()
        else:
            await asyncio.to_thread(self._prepare_directory)
        target, uri = self._target()
        conn = aiosqlite.connect(
            target, uri=uri, timeout=self.busy_timeout_ms / 1000, isolation_level=None
        )
        # aiosqlite's worker thread is not a daemon: an unclosed store would keep the
        # interpreter from exiting.  SQLite's journal keeps the file consistent regardless.
        worker = getattr(conn, "_thread", conn)  # aiosqlite 0.21: the connection is the thread
        if isinstance(worker, threading.Thread):
            worker.daemon = True
        try:
            await conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            mode = await self._aretry(
                conn, lambda: _op_configure(self.journal_mode, self.busy_timeout_ms), None
            )
            version = await self._aretry(conn, self._op_schema, "IMMEDIATE")
            self._check_opened(mode, version)
        except BaseException:
            await conn.close()
            raise
        self._aconn = conn
        return conn
