"""SQLite chat store: the embedded default for conversation history.

:class:`SQLiteChatStore` implements LlamaIndex's ``BaseChatStore`` on one SQLite table, with
synchronous methods on :mod:`sqlite3` and asynchronous ones on :mod:`aiosqlite`.

Layout: one row per message, ``(key, position, message, created_at)``, where ``message`` is
``ChatMessage.model_dump_json()`` and ``created_at`` is Unix time in seconds (the hook for
``spec.conversational.ttl``).  ``position`` is a sparse integer: appends take the last
position plus :data:`POSITION_GAP`, an insert in the middle takes the midpoint of its two
neighbours, and only when two neighbours are adjacent is the key renumbered.  The index
``idx`` that the chat-store API speaks of is the rank in ``ORDER BY position``, never a row
id, so deletes leave gaps that nothing has to close (LlamaIndex's own ``SQLiteChatStore``
treats ``idx`` as a row id and deletes the wrong message).

Concurrency: every write runs in one ``BEGIN IMMEDIATE`` transaction, so writers from any
number of threads, tasks and processes are serialised by SQLite's own lock (waiting up to
``busy_timeout_ms``) and never lose or duplicate a message.  Within a process, one sqlite3
connection (guarded by a thread lock) serves the sync methods and one aiosqlite connection
(guarded by an asyncio lock) serves the async ones.

The SQL and the logic of every operation are written once, as generators that yield
statements and receive rows (``_op_*`` below); a sync driver runs them on sqlite3 and an
async driver on aiosqlite, so the two paths cannot drift apart.
"""

from __future__ import annotations

__all__ = ["POSITION_GAP", "SCHEMA_VERSION", "JournalMode", "SQLiteChatStore"]

import asyncio
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiosqlite
from llama_index.core.bridge.pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Schema version written to ``PRAGMA user_version``; bump it and add a migration below."""

POSITION_GAP = 1 << 20
"""Distance between the positions of consecutive appended messages."""

JournalMode = Literal["DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"]
"""SQLite journal modes accepted by ``spec.backend.sqlite.journalMode``."""

_JOURNAL_MODES: tuple[str, ...] = ("DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SQLITE_LOCKED = 6  # primary result code; shared-cache in-memory databases return it at once
_MAX_RETRY_DELAY_S = 0.05

# Migration hook: statements that bring an existing table from version N-1 to N, keyed by N
# ({table} is substituted).  Version 1 is the CREATE TABLE itself, which always creates the
# newest layout, so a new table skips migrations.  user_version belongs to the whole file:
# when a file may hold several chat tables, a migration has to be safe to run on a table
# that is already up to date (or find every chat table in sqlite_master itself).
_MIGRATIONS: dict[int, tuple[str, ...]] = {}
_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# SQL and row <-> message conversion, shared by the sync and async paths.


@dataclass(frozen=True)
class _Stmt:
    """One statement an operation asks its driver to run; the driver sends back the rows."""

    sql: str
    params: Sequence[Any] | Iterable[Sequence[Any]] = ()
    many: bool = False


_Op = Generator[_Stmt, list[Any], T]
"""An operation: yields statements, receives each one's rows, returns its result."""


@dataclass(frozen=True)
class _Sql:
    """The statements of one table."""

    create: str
    select_messages: str
    select_rows: str
    select_positions: str
    select_at: str
    select_last: str
    count: str
    insert: str
    append: str
    delete_key: str
    delete_at: str
    keys: str


@lru_cache(maxsize=64)
def _sql_for(table: str) -> _Sql:
    t = f'"{table}"'
    return _Sql(
        create=(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            " id INTEGER PRIMARY KEY,"
            " key TEXT NOT NULL,"
            " position INTEGER NOT NULL,"
            " message TEXT NOT NULL,"
            " created_at REAL NOT NULL,"
            " UNIQUE (key, position))"
        ),
        select_messages=f"SELECT message FROM {t} WHERE key = ? ORDER BY position",
        select_rows=f"SELECT message, created_at FROM {t} WHERE key = ? ORDER BY position",
        select_positions=f"SELECT position FROM {t} WHERE key = ? ORDER BY position",
        select_at=(
            f"SELECT position, message FROM {t} WHERE key = ? ORDER BY position LIMIT 1 OFFSET ?"
        ),
        select_last=(
            f"SELECT position, message FROM {t} WHERE key = ? ORDER BY position DESC LIMIT 1"
        ),
        count=f"SELECT COUNT(*) FROM {t} WHERE key = ?",
        insert=f"INSERT INTO {t} (key, position, message, created_at) VALUES (?, ?, ?, ?)",
        append=(
            f"INSERT INTO {t} (key, position, message, created_at)"
            f" SELECT ?, COALESCE(MAX(position), {-POSITION_GAP}) + {POSITION_GAP}, ?, ?"
            f" FROM {t} WHERE key = ?"
        ),
        delete_key=f"DELETE FROM {t} WHERE key = ?",
        delete_at=f"DELETE FROM {t} WHERE key = ? AND position = ?",
        keys=f"SELECT DISTINCT key FROM {t} ORDER BY key",
    )


def _dump(message: ChatMessage) -> str:
    return message.model_dump_json()


def _load(text: str) -> ChatMessage:
    return ChatMessage.model_validate_json(text)


def _insert_index(idx: int, n: int) -> int:
    """Where ``list.insert(idx, x)`` puts ``x`` in a list of length ``n``."""
    if idx < 0:
        idx = max(0, idx + n)
    return min(idx, n)


def _insert_position(positions: Sequence[int], k: int) -> int | None:
    """Position for a message placed before ``positions[k]``; ``None`` when there is no gap."""
    if not positions:
        return 0
    if k >= len(positions):
        return positions[-1] + POSITION_GAP
    if k == 0:
        return positions[0] - POSITION_GAP
    low, high = positions[k - 1], positions[k]
    return (low + high) // 2 if high - low > 1 else None


# --------------------------------------------------------------------------------------------
# Operations: written once, run by either driver.


def _op_configure(journal_mode: str, busy_timeout_ms: int) -> _Op[str]:
    yield _Stmt(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    rows = yield _Stmt(f"PRAGMA journal_mode = {journal_mode}")
    return str(rows[0][0]).upper()


def _op_schema(table: str) -> _Op[int]:
    """Create or migrate the table; returns the version found (newer ones are left alone)."""
    rows = yield _Stmt("PRAGMA user_version")
    found = int(rows[0][0])
    if found > SCHEMA_VERSION:
        return found
    if (yield _Stmt(_TABLE_EXISTS, (table,))):
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS.get(version, ()):
                yield _Stmt(statement.format(table=f'"{table}"'))
    else:
        yield _Stmt(_sql_for(table).create)
    if found < SCHEMA_VERSION:
        yield _Stmt(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def _op_get(sql: _Sql, key: str) -> _Op[list[ChatMessage]]:
    rows = yield _Stmt(sql.select_messages, (key,))
    return [_load(row[0]) for row in rows]


def _op_set(sql: _Sql, key: str, messages: Sequence[ChatMessage]) -> _Op[None]:
    now = time.time()
    data = [(key, i * POSITION_GAP, _dump(m), now) for i, m in enumerate(messages)]
    yield _Stmt(sql.delete_key, (key,))
    if data:
        yield _Stmt(sql.insert, data, many=True)


def _op_add(sql: _Sql, key: str, message: ChatMessage, idx: int | None) -> _Op[None]:
    text, now = _dump(message), time.time()
    if idx is None:
        yield _Stmt(sql.append, (key, text, now, key))
        return
    positions = [row[0] for row in (yield _Stmt(sql.select_positions, (key,)))]
    k = _insert_index(idx, len(positions))
    position = _insert_position(positions, k)
    if position is not None:
        yield _Stmt(sql.insert, (key, position, text, now))
        return
    # No room between the neighbours: renumber the key with the new message in place.
    rows: list[Any] = list((yield _Stmt(sql.select_rows, (key,))))
    rows.insert(k, (text, now))
    yield _Stmt(sql.delete_key, (key,))
    renumbered = [(key, i * POSITION_GAP, m, c) for i, (m, c) in enumerate(rows)]
    yield _Stmt(sql.insert, renumbered, many=True)


def _op_pop(sql: _Sql, key: str, rows: list[Any]) -> _Op[ChatMessage | None]:
    if not rows:
        return None
    position, text = rows[0]
    yield _Stmt(sql.delete_at, (key, position))
    return _load(text)


def _op_delete_at(sql: _Sql, key: str, idx: int) -> _Op[ChatMessage | None]:
    if idx < 0:
        idx += (yield _Stmt(sql.count, (key,)))[0][0]
        if idx < 0:
            return None
    rows = yield _Stmt(sql.select_at, (key, idx))
    return (yield from _op_pop(sql, key, rows))


def _op_delete_last(sql: _Sql, key: str) -> _Op[ChatMessage | None]:
    rows = yield _Stmt(sql.select_last, (key,))
    return (yield from _op_pop(sql, key, rows))


def _op_delete_key(sql: _Sql, key: str) -> _Op[list[ChatMessage] | None]:
    rows = yield _Stmt(sql.select_messages, (key,))
    if not rows:
        return None
    yield _Stmt(sql.delete_key, (key,))
    return [_load(row[0]) for row in rows]


def _op_keys(sql: _Sql) -> _Op[list[str]]:
    rows = yield _Stmt(sql.keys)
    return [str(row[0]) for row in rows]


# --------------------------------------------------------------------------------------------
# Drivers.


def _is_locked(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_LOCKED


class _Backoff:
    """Retry schedule for SQLITE_LOCKED, which SQLite's busy handler does not wait on.

    Connections to one shared-cache in-memory database lock each other per table and get
    SQLITE_LOCKED at once instead of waiting, so the drivers retry the whole transaction
    until ``busy_timeout_ms`` has passed.
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


def _drive(conn: sqlite3.Connection, op: _Op[T], begin: str | None) -> T:
    def execute(stmt: _Stmt) -> list[Any]:
        if stmt.many:
            conn.executemany(stmt.sql, stmt.params)  # type: ignore[arg-type]
            return []
        return conn.execute(stmt.sql, stmt.params).fetchall()  # type: ignore[arg-type]

    if begin:
        conn.execute(f"BEGIN {begin}")
    try:
        try:
            stmt = next(op)
            while True:
                stmt = op.send(execute(stmt))
        except StopIteration as stop:
            result: T = stop.value
        if begin:
            conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


async def _adrive(conn: aiosqlite.Connection, op: _Op[T], begin: str | None) -> T:
    async def execute(stmt: _Stmt) -> list[Any]:
        if stmt.many:
            await conn.executemany(stmt.sql, stmt.params)  # type: ignore[arg-type]
            return []
        return list(await conn.execute_fetchall(stmt.sql, stmt.params))  # type: ignore[arg-type]

    if begin:
        await conn.execute(f"BEGIN {begin}")
    try:
        try:
            stmt = next(op)
            while True:
                stmt = op.send(await execute(stmt))
        except StopIteration as stop:
            result: T = stop.value
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


class SQLiteChatStore(BaseChatStore):
    """Chat history in SQLite: a file on disk, or an in-memory database.

    Implements the whole ``BaseChatStore`` contract, sync and async.  Indices follow Python
    list semantics: ``delete_message(key, 1)`` removes the second message in order and
    returns it, ``-1`` is the last one, an index out of range returns ``None``, and
    ``add_message(key, m, idx=i)`` behaves like ``list.insert(i, m)``.  A key with no
    messages does not exist: ``get_messages`` gives ``[]`` and ``get_keys`` omits it.

    The constructor does no I/O.  The first call creates the parent directory if needed,
    opens the database, applies ``journal_mode`` and ``busy_timeout_ms`` and creates the table;
    problems there raise :class:`~aof_index.errors.BackendUnavailableError` naming the path.

    Sync and async methods may be mixed freely; the async methods use one event loop at a
    time (consecutive loops, such as repeated ``asyncio.run``, are fine).  ``close()`` or
    ``aclose()`` releases the connections, and ends an in-memory database.

    Example::

        store = SQLiteChatStore(path="~/.local/share/aof/chat.db")
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

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        if not _TABLE_NAME.match(value):
            raise ValueError(
                f"table must be a SQL identifier (letters, digits, underscore), got {value!r}"
            )
        return value

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
    # Chat-store API, sync.

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the messages of ``key`` (an empty list removes the key)."""
        self._run(lambda: _op_set(self._sql, key, messages), write=True)

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Messages of ``key`` in order; ``[]`` for an unknown key."""
        return self._run(lambda: _op_get(self._sql, key), write=False)

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message`` to ``key``, or insert it at ``idx`` like ``list.insert``."""
        self._run(lambda: _op_add(self._sql, key, message, idx), write=True)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete every message of ``key``; returns them, or ``None`` for an unknown key."""
        return self._run(lambda: _op_delete_key(self._sql, key), write=True)

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th message of ``key`` in order and return it (``None`` if absent)."""
        return self._run(lambda: _op_delete_at(self._sql, key, idx), write=True)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key`` and return it (``None`` if there is none)."""
        return self._run(lambda: _op_delete_last(self._sql, key), write=True)

    def get_keys(self) -> list[str]:
        """Keys holding at least one message, sorted."""
        return self._run(lambda: _op_keys(self._sql), write=False)

    # ----------------------------------------------------------------------------------------
    # Chat-store API, async (aiosqlite).

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        await self._arun(lambda: _op_set(self._sql, key, messages), write=True)

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        return await self._arun(lambda: _op_get(self._sql, key), write=False)

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        """Async :meth:`add_message` (LlamaIndex names it ``async_add_message``)."""
        await self._arun(lambda: _op_add(self._sql, key, message, idx), write=True)

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        return await self._arun(lambda: _op_delete_key(self._sql, key), write=True)

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        return await self._arun(lambda: _op_delete_at(self._sql, key, idx), write=True)

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return await self._arun(lambda: _op_delete_last(self._sql, key), write=True)

    async def aget_keys(self) -> list[str]:
        """Async :meth:`get_keys`."""
        return await self._arun(lambda: _op_keys(self._sql), write=False)

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

    def __enter__(self) -> SQLiteChatStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> SQLiteChatStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __getstate__(self) -> dict[Any, Any]:
        # Connections and locks stay behind; the copy reopens lazily (an in-memory
        # database is not shared with the copy).
        state = dict(BaseModel.__getstate__(self))
        state["__pydantic_private__"] = None
        return state

    # ----------------------------------------------------------------------------------------
    # Internals.

    @property
    def _sql(self) -> _Sql:
        return _sql_for(self.table)

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

    def _run(self, make_op: Callable[[], _Op[T]], *, write: bool) -> T:
        with self._lock:
            conn = self._connection()
            return self._retry(conn, make_op, "IMMEDIATE" if write else "DEFERRED")

    def _retry(
        self, conn: sqlite3.Connection, make_op: Callable[[], _Op[T]], begin: str | None
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
            version = self._retry(conn, lambda: _op_schema(self.table), "IMMEDIATE")
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

    async def _arun(self, make_op: Callable[[], _Op[T]], *, write: bool) -> T:
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

    async def _arun_locked(self, make_op: Callable[[], _Op[T]], write: bool) -> T:
        async with self._async_lock():
            conn = await self._aconnection()
            return await self._aretry(conn, make_op, "IMMEDIATE" if write else "DEFERRED")

    async def _aretry(
        self, conn: aiosqlite.Connection, make_op: Callable[[], _Op[T]], begin: str | None
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
        worker = getattr(conn, "_thread", None)
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
            version = await self._aretry(conn, lambda: _op_schema(self.table), "IMMEDIATE")
            self._check_opened(mode, version)
        except BaseException:
            await conn.close()
            raise
        self._aconn = conn
        return conn
