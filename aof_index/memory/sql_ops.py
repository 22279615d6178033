"""The part of the SQL chat stores that does not depend on the database: layout, statements,
operations and the chat-store API, written once for SQLite and PostgreSQL.

Layout: one row per message, ``(key, position, message, created_at)``, where ``message`` is
``ChatMessage.model_dump_json()`` and ``created_at`` is Unix time in seconds.  ``position`` is
a sparse integer: appends take the last position plus :data:`POSITION_GAP`, an insert in the
middle takes the midpoint of its two neighbours, and only when two neighbours are adjacent is
the key renumbered.  The index ``idx`` of the chat-store API is the rank in
``ORDER BY position``, never a row id.

Every operation is a generator (``op_*``) that yields :class:`Stmt` statements, receives each
one's rows and returns its result (an :data:`Op`).  A store runs it inside one transaction
with a driver of its own (sqlite3, aiosqlite, psycopg, psycopg's async connections) through
:func:`run_op` or :func:`arun_op`, so the sync and async paths of every backend run the same
logic and cannot drift apart.

What differs between databases is a :class:`Dialect`: placeholder style, column types, how a
table is named, how writers to one key are serialised, and how the schema version is read
and recorded.  :func:`sql_for` turns a dialect and a table into the :class:`Sql` statement
set the operations use.  :class:`SqlChatStore` implements the ``BaseChatStore`` API on top;
a backend supplies ``_sql``, ``_run``, ``_arun``, ``close`` and ``aclose``.
"""

from __future__ import annotations

__all__ = [
    "POSITION_GAP",
    "Dialect",
    "Op",
    "Sql",
    "SqlChatStore",
    "Stmt",
    "arun_op",
    "check_identifier",
    "op_add",
    "op_delete_at",
    "op_delete_key",
    "op_delete_last",
    "op_get",
    "op_keys",
    "op_schema",
    "op_set",
    "run_op",
    "sql_for",
]

import re
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from llama_index.core.bridge.pydantic import field_validator
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.memory.lifecycle import ClosableStore

POSITION_GAP = 1 << 20
"""Distance between the positions of consecutive appended messages."""

T = TypeVar("T")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(value: str, what: str = "table") -> str:
    """Return ``value`` if it is a plain SQL identifier (it is quoted into statements)."""
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{what} must be a SQL identifier (letters, digits, underscore), got {value!r}"
        )
    return value


# --------------------------------------------------------------------------------------------
# Statements.


@dataclass(frozen=True)
class Stmt:
    """One statement an operation asks its driver to run; the driver sends back the rows."""

    sql: str
    params: Sequence[Any] | Iterable[Sequence[Any]] = ()
    many: bool = False


Op = Generator[Stmt, list[Any], T]
"""An operation: yields statements, receives each one's rows, returns its result."""


@dataclass(frozen=True)
class Dialect:
    """What differs between the databases the SQL chat stores run on.

    Templates may name ``{schema}`` and ``{table}`` (checked identifiers, so they can stand
    in SQL text and string literals alike); statements are written with ``?`` placeholders,
    which become :attr:`placeholder`.
    """

    placeholder: str
    """Parameter placeholder of the driver: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    table: str
    """Quoted, possibly schema-qualified, name of the messages table."""
    id_column: str
    """Definition of the surrogate key column."""
    integer: str
    """Type of ``position`` (64-bit)."""
    real: str
    """Type of ``created_at`` (double precision)."""
    key_collation: str
    """Suffix making ``get_keys`` sort by code point (``''`` where that is the default)."""
    key_lock: str | None
    """Statement taking a transaction-scoped lock on one key (its one parameter), run first
    in every write; ``None`` where the transaction already serialises all writers."""
    schema_lock: str | None
    """Statement serialising schema creation between processes, run first; or ``None``."""
    ensure: tuple[tuple[str, str], ...]
    """Pairs (query, statement): the statement runs when the query returns no row; they set
    up what the version is recorded in.  Checking first keeps a user without the privilege
    to create able to use what exists."""
    table_exists: str
    """Query returning a row when the messages table exists."""
    read_version: str
    """Query returning the recorded schema version in its first column (no row: 0)."""
    write_version: str
    """Statement recording the version: written with ``{{version}}``, which :func:`sql_for`
    leaves as ``{version}`` for :func:`op_schema` to fill in."""


@dataclass(frozen=True)
class Sql:
    """The statements of one table in one dialect."""

    table: str
    key_lock: str | None
    schema_lock: str | None
    ensure: tuple[tuple[str, str], ...]
    table_exists: str
    read_version: str
    write_version: str
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
def sql_for(dialect: Dialect, table: str, schema: str = "") -> Sql:
    """The statement set of ``table`` (in ``schema``, where the dialect has schemas)."""
    names = {"schema": schema, "table": table}

    def fill(template: str) -> str:
        return template.format(**names).replace("?", dialect.placeholder)

    def optional(template: str | None) -> str | None:
        return None if template is None else fill(template)

    t = dialect.table.format(**names)
    return Sql(
        table=t,
        key_lock=optional(dialect.key_lock),
        schema_lock=optional(dialect.schema_lock),
        ensure=tuple((fill(query), fill(statement)) for query, statement in dialect.ensure),
        table_exists=fill(dialect.table_exists),
        read_version=fill(dialect.read_version),
        write_version=fill(dialect.write_version),
        create=fill(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            f" {dialect.id_column},"
            " key TEXT NOT NULL,"
            f" position {dialect.integer} NOT NULL,"
            " message TEXT NOT NULL,"
            f" created_at {dialect.real} NOT NULL,"
            " UNIQUE (key, position))"
        ),
        select_messages=fill(f"SELECT message FROM {t} WHERE key = ? ORDER BY position"),
        select_rows=fill(f"SELECT message, created_at FROM {t} WHERE key = ? ORDER BY position"),
        select_positions=fill(f"SELECT position FROM {t} WHERE key = ? ORDER BY position"),
        select_at=fill(
            f"SELECT position, message FROM {t} WHERE key = ? ORDER BY position LIMIT 1 OFFSET ?"
        ),
        select_last=fill(
            f"SELECT position, message FROM {t} WHERE key = ? ORDER BY position DESC LIMIT 1"
        ),
        count=fill(f"SELECT COUNT(*) FROM {t} WHERE key = ?"),
        insert=fill(f"INSERT INTO {t} (key, position, message, created_at) VALUES (?, ?, ?, ?)"),
        append=fill(
            f"INSERT INTO {t} (key, position, message, created_at)"
            f" SELECT ?, COALESCE(MAX(position), {-POSITION_GAP}) + {POSITION_GAP}, ?, ?"
            f" FROM {t} WHERE key = ?"
        ),
        delete_key=fill(f"DELETE FROM {t} WHERE key = ?"),
        delete_at=fill(f"DELETE FROM {t} WHERE key = ? AND position = ?"),
        keys=fill(f"SELECT DISTINCT key{dialect.key_collation} FROM {t} ORDER BY 1"),
    )


# --------------------------------------------------------------------------------------------
# Row <-> message conversion and positions.


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
# Operations.


def op_schema(sql: Sql, version: int, migrations: Mapping[int, Sequence[str]]) -> Op[int]:
    """Create or migrate the table; returns the version found (newer ones are left alone).

    ``migrations`` maps a version N to the statements bringing an existing table from N-1
    to N (``{table}`` is substituted).  A new table is created in the newest layout.
    """
    if sql.schema_lock is not None:
        yield Stmt(sql.schema_lock)
    for query, statement in sql.ensure:
        if not (yield Stmt(query)):
            yield Stmt(statement)
    rows = yield Stmt(sql.read_version)
    found = int(rows[0][0]) if rows else 0
    if found > version:
        return found
    if (yield Stmt(sql.table_exists)):
        for step in range(found + 1, version + 1):
            for statement in migrations.get(step, ()):
                yield Stmt(statement.format(table=sql.table))
    else:
        yield Stmt(sql.create)
    if found < version:
        yield Stmt(sql.write_version.format(version=version))
    return found


def _lock(sql: Sql, key: str) -> Op[None]:
    if sql.key_lock is not None:
        yield Stmt(sql.key_lock, (key,))


def op_get(sql: Sql, key: str) -> Op[list[ChatMessage]]:
    """Messages of ``key`` in order."""
    rows = yield Stmt(sql.select_messages, (key,))
    return [_load(row[0]) for row in rows]


def op_set(sql: Sql, key: str, messages: Sequence[ChatMessage]) -> Op[None]:
    """Replace the messages of ``key``."""
    now = time.time()
    data = [(key, i * POSITION_GAP, _dump(m), now) for i, m in enumerate(messages)]
    yield from _lock(sql, key)
    yield Stmt(sql.delete_key, (key,))
    if data:
        yield Stmt(sql.insert, data, many=True)


def op_add(sql: Sql, key: str, message: ChatMessage, idx: int | None) -> Op[None]:
    """Append ``message``, or insert it at ``idx`` like ``list.insert``."""
    text, now = _dump(message), time.time()
    yield from _lock(sql, key)
    if idx is None:
        yield Stmt(sql.append, (key, text, now, key))
        return
    positions = [row[0] for row in (yield Stmt(sql.select_positions, (key,)))]
    k = _insert_index(idx, len(positions))
    position = _insert_position(positions, k)
    if position is not None:
        yield Stmt(sql.insert, (key, position, text, now))
        return
    # No room between the neighbours: renumber the key with the new message in place.
    rows: list[Any] = list((yield Stmt(sql.select_rows, (key,))))
    rows.insert(k, (text, now))
    yield Stmt(sql.delete_key, (key,))
    renumbered = [(key, i * POSITION_GAP, m, c) for i, (m, c) in enumerate(rows)]
    yield Stmt(sql.insert, renumbered, many=True)


def _pop(sql: Sql, key: str, rows: list[Any]) -> Op[ChatMessage | None]:
    if not rows:
        return None
    position, text = rows[0]
    yield Stmt(sql.delete_at, (key, position))
    return _load(text)


def op_delete_at(sql: Sql, key: str, idx: int) -> Op[ChatMessage | None]:
    """Delete and return the ``idx``-th message (list semantics), or ``None``."""
    yield from _lock(sql, key)
    if idx < 0:
        idx += (yield Stmt(sql.count, (key,)))[0][0]
        if idx < 0:
            return None
    rows = yield Stmt(sql.select_at, (key, idx))
    return (yield from _pop(sql, key, rows))


def op_delete_last(sql: Sql, key: str) -> Op[ChatMessage | None]:
    """Delete and return the last message, or ``None``."""
    yield from _lock(sql, key)
    rows = yield Stmt(sql.select_last, (key,))
    return (yield from _pop(sql, key, rows))


def op_delete_key(sql: Sql, key: str) -> Op[list[ChatMessage] | None]:
    """Delete and return every message of ``key``, or ``None`` for an unknown key."""
    yield from _lock(sql, key)
    rows = yield Stmt(sql.select_messages, (key,))
    if not rows:
        return None
    yield Stmt(sql.delete_key, (key,))
    return [_load(row[0]) for row in rows]


def op_keys(sql: Sql) -> Op[list[str]]:
    """Keys holding messages, sorted."""
    rows = yield Stmt(sql.keys)
    return [str(row[0]) for row in rows]


# --------------------------------------------------------------------------------------------
# Running an operation: the driver supplies how one statement executes.


def run_op(op: Op[T], execute: Callable[[Stmt], list[Any]]) -> T:
    """Run ``op`` to its end, executing each statement with ``execute``."""
    try:
        stmt = next(op)
        while True:
            stmt = op.send(execute(stmt))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def arun_op(op: Op[T], execute: Callable[[Stmt], Awaitable[list[Any]]]) -> T:
    """Run ``op`` to its end, executing each statement with the coroutine ``execute``."""
    try:
        stmt = next(op)
        while True:
            stmt = op.send(await execute(stmt))
    except StopIteration as stop:
        result: T = stop.value
        return result


# --------------------------------------------------------------------------------------------
# The chat-store API, on any backend that can run an operation in a transaction.


class SqlChatStore(ClosableStore, BaseChatStore):
    """``BaseChatStore`` on the operations above, sync and async.

    Indices follow Python list semantics: ``delete_message(key, 1)`` removes the second
    message in order and returns it, ``-1`` is the last one, an index out of range returns
    ``None``, and ``add_message(key, m, idx=i)`` behaves like ``list.insert(i, m)``.  A key
    with no messages does not exist: ``get_messages`` gives ``[]`` and ``get_keys`` omits it.

    Subclasses provide the statement set (``_sql``), and run an operation in one transaction
    with ``_run`` (sync) and ``_arun`` (async); ``write`` tells whether it writes.
    """

    @field_validator("table", check_fields=False)  # each store declares its ``table``
    @classmethod
    def _check_table(cls, value: str) -> str:
        return check_identifier(value)

    @property
    @abstractmethod
    def _sql(self) -> Sql: ...

    @abstractmethod
    def _run(self, make_op: Callable[[], Op[T]], *, write: bool) -> T: ...

    @abstractmethod
    async def _arun(self, make_op: Callable[[], Op[T]], *, write: bool) -> T: ...

    # sync ------------------------------------------------------------------------------------

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the messages of ``key`` (an empty list removes the key)."""
        self._run(lambda: op_set(self._sql, key, messages), write=True)

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Messages of ``key`` in order; ``[]`` for an unknown key."""
        return self._run(lambda: op_get(self._sql, key), write=False)

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message`` to ``key``, or insert it at ``idx`` like ``list.insert``."""
        self._run(lambda: op_add(self._sql, key, message, idx), write=True)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete every message of ``key``; returns them, or ``None`` for an unknown key."""
        return self._run(lambda: op_delete_key(self._sql, key), write=True)

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th message of ``key`` in order and return it (``None`` if absent)."""
        return self._run(lambda: op_delete_at(self._sql, key, idx), write=True)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key`` and return it (``None`` if there is none)."""
        return self._run(lambda: op_delete_last(self._sql, key), write=True)

    def get_keys(self) -> list[str]:
        """Keys holding at least one message, sorted."""
        return self._run(lambda: op_keys(self._sql), write=False)

    # async -----------------------------------------------------------------------------------

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        await self._arun(lambda: op_set(self._sql, key, messages), write=True)

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        return await self._arun(lambda: op_get(self._sql, key), write=False)

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        """Async :meth:`add_message` (LlamaIndex names it ``async_add_message``)."""
        await self._arun(lambda: op_add(self._sql, key, message, idx), write=True)

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        return await self._arun(lambda: op_delete_key(self._sql, key), write=True)

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        return await self._arun(lambda: op_delete_at(self._sql, key, idx), write=True)

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return await self._arun(lambda: op_delete_last(self._sql, key), write=True)

    async def aget_keys(self) -> list[str]:
        """Async :meth:`get_keys`."""
        return await self._arun(lambda: op_keys(self._sql), write=False)
