"""The part of the SQL chat stores that does not depend on the database: layout, statements,
operations and the chat-store API, written once for SQLite and PostgreSQL.

Layout: one row per message, ``(key, position, message, created_at)``, where ``message`` is
the text :class:`~aof_index.memory.codec.MessageCodec` makes of the message (JSON, or
compressed and/or encrypted JSON under a prefix; rows of any codec stay readable) and
``created_at`` is Unix time in seconds.  ``position`` is a sparse integer: appends take the
last position plus :data:`POSITION_GAP`, an insert in the middle takes the midpoint of its two
neighbours, and only when two neighbours are adjacent is the key renumbered; a head edit
puts its messages on the freed positions of the dropped rows, or below the first remaining
one.  The index ``idx`` of the chat-store API is the rank in ``ORDER BY position``, never a
row id.  Besides the unique index on ``(key, position)``, an index on ``(key, created_at)``
(schema version 2; PostgreSQL builds it on ``key COLLATE "C"``) serves key listing, TTL
checks and purges.

TTL: the newest ``created_at`` of a key is the time of its last write; a write that adds no
row (a delete, a head edit that only drops) stamps the key's last row with the time.  With a
``ttl``, a key whose last write is more than ``ttl`` seconds old is expired: reads give
``[]``, key listing omits it, and a write first deletes its rows (in the same transaction),
so the conversation starts afresh.  :func:`op_purge` deletes expired keys in batches; it
scans the ``(key, created_at)`` index once per batch, and a store runs it before a write at
most once per ``min(ttl, 60 s)``.

Epochs (schema version 3): table ``<table>_epochs`` holds one row ``(key, epoch)`` per
conversation, a random 63-bit number renewed by every write that may change rows the key
already has (``set_messages``, an insert at an index, a delete, ``edit_head``, and a write
or purge after a TTL expiry) and created by an append when missing; an append keeps it.
:func:`op_read` reads the epoch, the last write and the rows after a given position (all
rows when the epoch is not the given one) in one statement, so the read cache
(:mod:`aof_index.memory.read_cache`) decodes only what was appended since its last read.

Append ids (schema version 4): every append stores a random id of its own in the
``append_id`` column, which a unique index covers (rows written otherwise leave it NULL),
and inserts with ``ON CONFLICT (append_id) DO NOTHING``.  Running the same append twice
therefore adds one row, which lets a store send an append's ``COMMIT`` with its other
statements (one round trip) and still retry it after a dropped connection left unknown
whether it committed (see :func:`op_add` and :attr:`Stmt.idempotent`).

Key listing: ``get_keys(prefix)`` reads the index range ``prefix <= key < prefix_end(prefix)``
(:func:`prefix_end`: the least string above every key with that prefix, in code-point order,
which is how SQLite compares text and how PostgreSQL does under ``COLLATE "C"``).

Every operation is a generator (``op_*``) that yields :class:`Stmt` statements, receives each
one's rows and returns its result (an :data:`Op`); it gets what it works on as an
:class:`OpContext` (the statement set, the codec, the TTL).  A store runs it inside one
transaction with a driver of its own (sqlite3, aiosqlite, psycopg, psycopg's async
connections) through :func:`run_op` or :func:`arun_op`, so the sync and async paths of every
backend run the same logic and cannot drift apart.  Messages are encoded before the first
statement, so a message over the codec's ``max_bytes`` raises before anything is written.

What differs between databases is a :class:`Dialect`: placeholder style, column types, how a
table is named, how writers to one key are serialised, and how the schema version is read
and recorded.  :func:`sql_for` turns a dialect and a table into the :class:`Sql` statement
set the operations use.  :class:`SqlChatStore` implements the ``BaseChatStore`` and
``HistoryStore`` APIs on top; a backend supplies ``_sql``, ``_run``, ``_arun``, ``close`` and
``aclose``.
"""

from __future__ import annotations

__all__ = [
    "APPEND_ID_COLUMN",
    "APPEND_ID_INDEX",
    "EPOCHS_TABLE",
    "MIGRATIONS",
    "MIN_POSITION",
    "POSITION_GAP",
    "PURGE_BATCH",
    "SCHEMA_VERSION",
    "WRITTEN_INDEX",
    "Dialect",
    "Migration",
    "Op",
    "OpContext",
    "Read",
    "Sql",
    "SqlChatStore",
    "Stmt",
    "arun_op",
    "check_identifier",
    "new_append_id",
    "op_add",
    "op_delete_at",
    "op_delete_key",
    "op_delete_last",
    "op_edit_head",
    "op_get",
    "op_keys",
    "op_purge",
    "op_read",
    "op_schema",
    "op_set",
    "prefix_end",
    "run_op",
    "sql_for",
]

import hashlib
import re
import secrets
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from llama_index.core.bridge.pydantic import field_validator
from llama_index.core.llms import ChatMessage

from aof_index.memory.codec import PLAIN, MessageCodec
from aof_index.memory.edit import EditPlan
from aof_index.memory.lifecycle import (
    ClosableStore,
    HistoryChatStore,
    check_archive_key,
    head_drop,
)
from aof_index.memory.read_cache import (
    CachedConversation,
    CachedReads,
    ReadCache,
    merge,
    new_epoch,
)

POSITION_GAP = 1 << 20
"""Distance between the positions of consecutive appended messages."""

PURGE_BATCH = 100
"""Expired keys one purge transaction deletes at most (PostgreSQL holds a lock on each)."""

WRITTEN_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} ({key}, created_at)"
"""The ``(key, created_at)`` index of schema version 2, as a migration template."""

EPOCHS_TABLE = "CREATE TABLE IF NOT EXISTS {epochs} (key TEXT PRIMARY KEY, epoch BIGINT NOT NULL)"
"""The epochs table of schema version 3 (one row per conversation, see
:mod:`aof_index.memory.read_cache`), as a migration template."""

APPEND_ID_COLUMN = ("{append_id_exists}", "ALTER TABLE {table} ADD COLUMN append_id TEXT")
"""The ``append_id`` column of schema version 4, as a migration step: (query, statement),
the statement running only when the query finds no such column."""

APPEND_ID_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS {append_index} ON {table} (append_id)"
"""The unique index on ``append_id`` of schema version 4 (NULLs, the rows no append wrote,
are distinct from each other in both databases), as a migration template."""

Migration = str | tuple[str, str]
"""A migration step: a statement, or (query, statement) where the statement runs only when
the query returns no row."""

MIGRATIONS: dict[int, tuple[Migration, ...]] = {
    2: (WRITTEN_INDEX,),
    3: (EPOCHS_TABLE,),
    4: (APPEND_ID_COLUMN, APPEND_ID_INDEX),
}
"""Steps bringing an existing table from version N-1 to N, keyed by N (``{table}``,
``{index}``, ``{key}``, ``{epochs}``, ``{append_index}`` and ``{append_id_exists}`` as
:func:`op_schema` says), the same in every dialect.  Version 1 is the CREATE TABLE itself,
which always creates the newest layout."""

MIN_POSITION = -(1 << 63)
"""The least ``position`` (BIGINT): a read from it reads the whole conversation."""

SCHEMA_VERSION = max(MIGRATIONS)
"""The newest table layout; bump it by adding its migration above."""

T = TypeVar("T")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)  # not characters: UTF-8 has none, so skip them


def check_identifier(value: str, what: str = "table") -> str:
    """Return ``value`` if it is a plain SQL identifier (it is quoted into statements)."""
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{what} must be a SQL identifier (letters, digits, underscore), got {value!r}"
        )
    return value


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix``, in code-point order.

    ``None`` when there is none (an empty prefix, or one of U+10FFFF only): every key from
    ``prefix`` on then starts with it.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= _MAX_CODE_POINT:
            if code in _SURROGATES:
                code = _SURROGATES.stop
            return "".join(chars) + chr(code)
    return None


def _index_name(table: str, suffix: str = "_written_idx") -> str:
    """``<table><suffix>``, shortened with a hash to fit PostgreSQL's 63 bytes."""
    name = table + suffix
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: 63 - len(suffix) - 9]}_{digest}{suffix}"


# --------------------------------------------------------------------------------------------
# Statements.


@dataclass(frozen=True)
class Stmt:
    """One statement an operation asks its driver to run; the driver sends back the rows."""

    sql: str
    params: Sequence[Any] | Iterable[Sequence[Any]] = ()
    many: bool = False
    idempotent: bool = False
    """The operation yielding this may run again from the start even after it committed,
    with the same effect (an append carrying its id): a driver may then retry it after a
    failure whose outcome it cannot know, and need not wait for its statements' answers
    before sending ``COMMIT``."""


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
    """Suffix making ``key`` compare by code point (``''`` where that is the default); key
    listing and the ``(key, created_at)`` index use it."""
    key_lock: str | None
    """Statement taking a transaction-scoped lock on one key (its one parameter), run first
    in every write; ``None`` where the transaction already serialises all writers."""
    key_try_lock: str | None
    """Like :attr:`key_lock` but never waiting: returns one row, true when it got the lock
    (purges skip a key a writer holds; that writer deals with its expiry)."""
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
    column_exists: str
    """Query returning a row when the messages table has the column named ``{{column}}``
    (written with double braces, which :func:`sql_for` fills in)."""
    write_version: str
    """Statement recording the version: written with ``{{version}}``, which :func:`sql_for`
    leaves as ``{version}`` for :func:`op_schema` to fill in."""
    indexes_every_open: bool = False
    """Create missing indexes on every open, not only when migrating: where that is cheap
    and needs no privilege (SQLite), and the version cannot tell which tables were
    migrated (SQLite records one version per file)."""


@dataclass(frozen=True)
class Sql:
    """The statements of one table in one dialect."""

    table: str
    index: str
    key: str
    key_lock: str | None
    key_try_lock: str | None
    schema_lock: str | None
    ensure: tuple[tuple[str, str], ...]
    table_exists: str
    read_version: str
    write_version: str
    indexes_every_open: bool
    append_index: str
    append_id_exists: str
    create: str
    indexes: tuple[str, ...]
    """Statements creating what goes with the table (indexes, the epochs table), each
    only when missing."""
    epochs: str
    select_rows: str
    select_since: str
    select_entries: str
    select_positions: str
    select_at: str
    select_last: str
    last_written: str
    last_position: str
    count: str
    insert: str
    append: str
    touch: str
    delete_key: str
    delete_at: str
    delete_head: str
    keys_from: str
    keys_between: str
    expired_keys: str
    expire_rows: str
    expire_epoch: str
    epoch_ensure: str
    epoch_set: str
    epoch_delete: str


@lru_cache(maxsize=64)
def sql_for(dialect: Dialect, table: str, schema: str = "") -> Sql:
    """The statement set of ``table`` (in ``schema``, where the dialect has schemas)."""
    names = {"schema": schema, "table": table}

    def fill(template: str) -> str:
        return template.format(**names).replace("?", dialect.placeholder)

    def optional(template: str | None) -> str | None:
        return None if template is None else fill(template)

    t = dialect.table.format(**names)
    index = f'"{_index_name(table)}"'
    append_index = f'"{_index_name(table, "_append_idx")}"'
    epochs = dialect.table.format(schema=schema, table=_index_name(table, "_epochs"))
    k = f"key{dialect.key_collation}"  # key as listing and the (key, created_at) index see it
    return Sql(
        table=t,
        index=index,
        key=k,
        key_lock=optional(dialect.key_lock),
        key_try_lock=optional(dialect.key_try_lock),
        schema_lock=optional(dialect.schema_lock),
        ensure=tuple((fill(query), fill(statement)) for query, statement in dialect.ensure),
        table_exists=fill(dialect.table_exists),
        read_version=fill(dialect.read_version),
        write_version=fill(dialect.write_version),
        indexes_every_open=dialect.indexes_every_open,
        append_index=append_index,
        append_id_exists=fill(dialect.column_exists).format(column="append_id"),
        create=fill(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            f" {dialect.id_column},"
            " key TEXT NOT NULL,"
            f" position {dialect.integer} NOT NULL,"
            " message TEXT NOT NULL,"
            f" created_at {dialect.real} NOT NULL,"
            " append_id TEXT,"
            " UNIQUE (key, position))"
        ),
        indexes=(
            WRITTEN_INDEX.format(index=index, table=t, key=k),
            EPOCHS_TABLE.format(epochs=epochs),
            APPEND_ID_INDEX.format(append_index=append_index, table=t),
        ),
        epochs=epochs,
        select_rows=fill(f"SELECT message, created_at FROM {t} WHERE key = ? ORDER BY position"),
        # One statement, so one snapshot: the epoch, the last write (TTL), and the rows from
        # the given position when the epoch is the given one, else every row (see op_read).
        # Always one row at least (the messages' columns NULL when no row matches).
        select_since=fill(
            "SELECT x.epoch, x.written, r.position, r.message FROM"
            f" (SELECT (SELECT epoch FROM {epochs} WHERE key = ?) AS epoch,"
            f" (SELECT MAX(created_at) FROM {t} WHERE {k} = ?) AS written) x"
            f" LEFT JOIN {t} r ON r.key = ? AND r.position >="
            f" CASE WHEN x.epoch = ? THEN ? ELSE {MIN_POSITION} END"
            " ORDER BY r.position"
        ),
        select_entries=fill(f"SELECT position, message FROM {t} WHERE key = ? ORDER BY position"),
        select_positions=fill(f"SELECT position FROM {t} WHERE key = ? ORDER BY position"),
        select_at=fill(
            f"SELECT position, message FROM {t} WHERE key = ? ORDER BY position LIMIT 1 OFFSET ?"
        ),
        select_last=fill(
            f"SELECT position, message FROM {t} WHERE key = ? ORDER BY position DESC LIMIT 1"
        ),
        last_written=fill(f"SELECT MAX(created_at) FROM {t} WHERE {k} = ?"),
        last_position=fill(f"SELECT MAX(position) FROM {t} WHERE key = ?"),
        count=fill(f"SELECT COUNT(*) FROM {t} WHERE key = ?"),
        insert=fill(f"INSERT INTO {t} (key, position, message, created_at) VALUES (?, ?, ?, ?)"),
        # An append carries its id: run again after a lost reply, it adds nothing when the
        # first run committed (see op_add).
        append=fill(
            f"INSERT INTO {t} (key, position, message, created_at, append_id)"
            f" SELECT ?, COALESCE(MAX(position), {-POSITION_GAP}) + {POSITION_GAP}, ?, ?, ?"
            f" FROM {t} WHERE key = ? ON CONFLICT (append_id) DO NOTHING"
        ),
        touch=fill(
            f"UPDATE {t} SET created_at = ? WHERE key = ?"
            f" AND position = (SELECT MAX(position) FROM {t} WHERE key = ?)"
        ),
        delete_key=fill(f"DELETE FROM {t} WHERE key = ?"),
        delete_at=fill(f"DELETE FROM {t} WHERE key = ? AND position = ?"),
        delete_head=fill(f"DELETE FROM {t} WHERE key = ? AND position <= ?"),
        keys_from=fill(
            f"SELECT {k} FROM {t} WHERE {k} >= ?"
            f" GROUP BY {k} HAVING MAX(created_at) >= ? ORDER BY 1"
        ),
        keys_between=fill(
            f"SELECT {k} FROM {t} WHERE {k} >= ? AND {k} < ?"
            f" GROUP BY {k} HAVING MAX(created_at) >= ? ORDER BY 1"
        ),
        expired_keys=fill(f"SELECT {k} FROM {t} GROUP BY {k} HAVING MAX(created_at) < ? LIMIT ?"),
        # The TTL check and its delete as one statement each (no rows to wait for); the
        # epoch goes first, while the rows it checks are still there.
        expire_rows=fill(
            f"DELETE FROM {t} WHERE key = ? AND (SELECT MAX(created_at) FROM {t} WHERE {k} = ?) < ?"
        ),
        expire_epoch=fill(
            f"DELETE FROM {epochs} WHERE key = ?"
            f" AND (SELECT MAX(created_at) FROM {t} WHERE {k} = ?) < ?"
        ),
        epoch_ensure=fill(
            f"INSERT INTO {epochs} (key, epoch) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
        ),
        epoch_set=fill(
            f"INSERT INTO {epochs} (key, epoch) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET epoch = excluded.epoch"
        ),
        epoch_delete=fill(f"DELETE FROM {epochs} WHERE key = ?"),
    )


@dataclass(frozen=True)
class OpContext:
    """What an operation works on besides its arguments: the statements of its table, how
    messages are stored, and how long a conversation lives after its last write."""

    sql: Sql
    codec: MessageCodec = PLAIN
    ttl: float | None = None

    def expired(self, written: float | None, now: float) -> bool:
        """Whether a key last written at ``written`` (``None``: no rows) is gone at ``now``."""
        return self.ttl is not None and written is not None and written < now - self.ttl

    def cutoff(self, now: float) -> float:
        """The oldest last write a live key can have at ``now``."""
        return -float("inf") if self.ttl is None else now - self.ttl


# --------------------------------------------------------------------------------------------
# Positions.


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


def _head_positions(freed: Sequence[int], first_kept: int | None, count: int) -> list[int]:
    """Positions for ``count`` messages put before ``first_kept`` (``None``: nothing kept),
    in order: the last of the ``freed`` positions of dropped rows, else just below."""
    if count <= len(freed):
        return list(freed[len(freed) - count :])
    if first_kept is None:
        first_kept = freed[-1] + POSITION_GAP if freed else count * POSITION_GAP
    return [first_kept - (count - i) * POSITION_GAP for i in range(count)]


# --------------------------------------------------------------------------------------------
# Operations.


def op_schema(sql: Sql, version: int, migrations: Mapping[int, Sequence[Migration]]) -> Op[int]:
    """Create or migrate the table; returns the version found (newer ones are left alone).

    ``migrations`` maps a version N to the steps bringing an existing table from N-1 to N
    (a statement, or a (query, statement) pair whose statement runs only when the query
    returns no row); they may name ``{table}`` (quoted, qualified), ``{index}`` (the name
    of the ``(key, created_at)`` index), ``{key}`` (``key`` with the dialect's collation),
    ``{epochs}`` (the epochs table, quoted, qualified), ``{append_index}`` (the name of the
    ``append_id`` index) and ``{append_id_exists}`` (a query finding the ``append_id``
    column).  A new table is created in the newest layout, indexes and epochs table
    included.  Where indexes are ensured on every open (SQLite), so is the ``append_id``
    column (a file records one version for all its tables).
    """
    names = {
        "table": sql.table,
        "index": sql.index,
        "key": sql.key,
        "epochs": sql.epochs,
        "append_index": sql.append_index,
        "append_id_exists": sql.append_id_exists,
    }
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
            for migration in migrations.get(step, ()):
                yield from _migrate(migration, names)
        if sql.indexes_every_open:
            yield from _migrate(APPEND_ID_COLUMN, names)
            for statement in sql.indexes:
                yield Stmt(statement)
    else:
        yield Stmt(sql.create)
        for statement in sql.indexes:
            yield Stmt(statement)
    if found < version:
        yield Stmt(sql.write_version.format(version=version))
    return found


def _migrate(step: Migration, names: Mapping[str, str]) -> Op[None]:
    if isinstance(step, str):
        yield Stmt(step.format(**names))
        return
    query, statement = (part.format(**names) for part in step)
    if not (yield Stmt(query)):
        yield Stmt(statement)


def _lock(ctx: OpContext, *keys: str) -> Op[None]:
    """Lock ``keys`` in sorted order, so that two writers never wait for each other."""
    if ctx.sql.key_lock is not None:
        for key in sorted(set(keys)):
            yield Stmt(ctx.sql.key_lock, (key,))


def _begin(ctx: OpContext, now: float, *keys: str) -> Op[None]:
    """Start a write to ``keys``: lock them, and delete the rows and the epoch of those past
    their TTL (a write to an expired conversation starts a fresh one, with a new epoch)."""
    yield from _lock(ctx, *keys)
    if ctx.ttl is None:
        return
    cutoff = ctx.cutoff(now)
    for key in keys:
        yield Stmt(ctx.sql.expire_epoch, (key, key, cutoff))
        yield Stmt(ctx.sql.expire_rows, (key, key, cutoff))


def _new_epoch(ctx: OpContext, key: str) -> Op[None]:
    """Record that the messages ``key`` held may have changed: a new epoch."""
    yield Stmt(ctx.sql.epoch_set, (key, new_epoch()))


def _keep_epoch(ctx: OpContext, key: str) -> Op[None]:
    """After an append: give ``key`` an epoch if it has none (new, or written before
    epochs existed); an existing one stays, since an append changes no earlier message."""
    yield Stmt(ctx.sql.epoch_ensure, (key, new_epoch()))


def _touch(ctx: OpContext, key: str, now: float) -> Op[None]:
    """Record a write that added no row: the key's last row takes the time (see TTL)."""
    yield Stmt(ctx.sql.touch, (now, key, key))


def op_get(ctx: OpContext, key: str) -> Op[list[ChatMessage]]:
    """Messages of ``key`` in order (``[]`` once expired)."""
    rows = yield Stmt(ctx.sql.select_rows, (key,))
    if not rows or ctx.expired(max(row[1] for row in rows), time.time()):
        return []
    return [ctx.codec.decode(row[0]) for row in rows]


@dataclass(frozen=True)
class Read:
    """What :func:`op_read` found: the conversation's epoch (``None``: it has none, or no
    messages), whether ``messages`` are only those after the given position (the epoch
    was the given one) or all of them, the position of the last message, and the size of
    the stored text of ``messages``."""

    epoch: int | None
    incremental: bool
    messages: list[ChatMessage]
    end: int
    size: int


def op_read(ctx: OpContext, key: str, epoch: int | None = None, after: int = 0) -> Op[Read]:
    """The messages of ``key`` after position ``after`` if its epoch is still ``epoch``,
    else all of them (``[]`` once expired), in one statement (one snapshot)."""
    since = after + 1 if epoch is not None else MIN_POSITION
    rows = yield Stmt(ctx.sql.select_since, (key, key, key, epoch, since))
    current, written = rows[0][0], rows[0][1]
    if written is None or ctx.expired(written, time.time()):
        return Read(None, False, [], MIN_POSITION, 0)
    incremental = epoch is not None and current == epoch
    found = [(row[2], row[3]) for row in rows if row[2] is not None]
    decode = ctx.codec.decode
    return Read(
        None if current is None else int(current),
        incremental,
        [decode(text) for _, text in found],
        found[-1][0] if found else after,
        sum(len(text) for _, text in found),
    )


def op_set(ctx: OpContext, key: str, messages: Sequence[ChatMessage]) -> Op[None]:
    """Replace the messages of ``key``."""
    now = time.time()
    data = [(key, i * POSITION_GAP, ctx.codec.encode(m), now) for i, m in enumerate(messages)]
    yield from _lock(ctx, key)
    yield Stmt(ctx.sql.delete_key, (key,))
    if data:
        yield Stmt(ctx.sql.insert, data, many=True)
        yield from _new_epoch(ctx, key)
    else:
        yield Stmt(ctx.sql.epoch_delete, (key,))


def new_append_id() -> str:
    """A fresh append id: 128 random bits (as 22 URL-safe characters), unique in practice
    across every append anywhere."""
    return secrets.token_urlsafe(16)


def op_add(
    ctx: OpContext,
    key: str,
    message: ChatMessage,
    idx: int | None,
    append_id: str | None = None,
) -> Op[None]:
    """Append ``message``, or insert it at ``idx`` like ``list.insert``.

    An append stores ``append_id`` (default: a new one) with its row, under a unique index,
    and adds nothing when a row already has it.  So the same append (same id) run again,
    after a failure that left unknown whether it committed, never adds a second copy: the
    operation is idempotent (:attr:`Stmt.idempotent`).  The caller draws the id once and
    passes it to every attempt.  (Only a delete of that very row, or a renumbering of the
    key by an insert, between the attempts could let the second one add it again.)
    """
    sql, text, now = ctx.sql, ctx.codec.encode(message), time.time()
    yield from _begin(ctx, now, key)
    if idx is None:
        append_id = append_id or new_append_id()
        yield Stmt(sql.append, (key, text, now, append_id, key), idempotent=True)
        yield from _keep_epoch(ctx, key)
        return
    yield from _new_epoch(ctx, key)
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


def _pop(ctx: OpContext, key: str, rows: list[Any], now: float) -> Op[ChatMessage | None]:
    if not rows:
        return None
    position, text = rows[0]
    yield Stmt(ctx.sql.delete_at, (key, position))
    yield from _new_epoch(ctx, key)
    yield from _touch(ctx, key, now)
    return ctx.codec.decode(text)


def op_delete_at(ctx: OpContext, key: str, idx: int) -> Op[ChatMessage | None]:
    """Delete and return the ``idx``-th message (list semantics), or ``None``."""
    now = time.time()
    yield from _begin(ctx, now, key)
    if idx < 0:
        idx += (yield Stmt(ctx.sql.count, (key,)))[0][0]
        if idx < 0:
            return None
    rows = yield Stmt(ctx.sql.select_at, (key, idx))
    return (yield from _pop(ctx, key, rows, now))


def op_delete_last(ctx: OpContext, key: str) -> Op[ChatMessage | None]:
    """Delete and return the last message, or ``None``."""
    now = time.time()
    yield from _begin(ctx, now, key)
    rows = yield Stmt(ctx.sql.select_last, (key,))
    return (yield from _pop(ctx, key, rows, now))


def op_delete_key(ctx: OpContext, key: str) -> Op[list[ChatMessage] | None]:
    """Delete and return every message of ``key``, or ``None`` for an unknown key."""
    yield from _begin(ctx, time.time(), key)
    rows = yield Stmt(ctx.sql.select_rows, (key,))
    if not rows:
        return None
    yield Stmt(ctx.sql.delete_key, (key,))
    yield Stmt(ctx.sql.epoch_delete, (key,))
    return [ctx.codec.decode(row[0]) for row in rows]


def op_keys(ctx: OpContext, prefix: str = "") -> Op[list[str]]:
    """Live keys starting with ``prefix``, in code-point order, from an index range."""
    cutoff, end = ctx.cutoff(time.time()), prefix_end(prefix)
    if end is None:
        rows = yield Stmt(ctx.sql.keys_from, (prefix, cutoff))
    else:
        rows = yield Stmt(ctx.sql.keys_between, (prefix, end, cutoff))
    return [str(row[0]) for row in rows]


def op_edit_head(
    ctx: OpContext, key: str, plan: EditPlan, archive_key: str | None
) -> Op[list[ChatMessage]]:
    """Apply ``plan`` to the head of ``key`` (see ``HistoryStore.edit_head``); returns the
    removed messages, which go to the end of ``archive_key`` when one is given.  A key
    without messages is left alone (``plan`` is not called)."""
    sql, now = ctx.sql, time.time()
    check_archive_key(key, archive_key)
    yield from _begin(ctx, now, key, *([] if archive_key is None else [archive_key]))
    rows = yield Stmt(sql.select_entries, (key,))
    if not rows:
        return []
    messages = [ctx.codec.decode(text) for _, text in rows]
    edit = plan(list(messages))
    if edit is None:
        return []
    drop = head_drop(edit, len(rows))
    inserts = [ctx.codec.encode(message) for message in edit.insert]
    if not drop and not inserts:
        return []
    dropped, kept = rows[:drop], rows[drop:]
    yield from _new_epoch(ctx, key)
    if dropped:
        yield Stmt(sql.delete_head, (key, dropped[-1][0]))
    if inserts:
        freed = [position for position, _ in dropped]
        positions = _head_positions(freed, kept[0][0] if kept else None, len(inserts))
        data = [(key, p, text, now) for p, text in zip(positions, inserts, strict=True)]
        yield Stmt(sql.insert, data, many=True)
    else:
        yield from _touch(ctx, key, now)
    if archive_key is not None and dropped:
        last = (yield Stmt(sql.last_position, (archive_key,)))[0][0]
        start = POSITION_GAP + (-POSITION_GAP if last is None else last)
        data = [
            (archive_key, start + i * POSITION_GAP, text, now)
            for i, (_, text) in enumerate(dropped)
        ]
        yield Stmt(sql.insert, data, many=True)
        yield from _keep_epoch(ctx, archive_key)  # appended to: its epoch stays
    return messages[:drop]


def op_purge(ctx: OpContext, limit: int = PURGE_BATCH) -> Op[tuple[int, int]]:
    """Delete up to ``limit`` expired keys; returns (expired keys found, keys deleted).

    A key is checked again under its lock before it goes; a key another writer holds is
    skipped (that writer deletes it, if it is still expired).
    """
    if ctx.ttl is None:
        return 0, 0
    sql, now = ctx.sql, time.time()
    found = yield Stmt(sql.expired_keys, (ctx.cutoff(now), limit))
    purged = 0
    for (key,) in found:
        if sql.key_try_lock is not None and not (yield Stmt(sql.key_try_lock, (key,)))[0][0]:
            continue
        rows = yield Stmt(sql.last_written, (key,))
        if rows and ctx.expired(rows[0][0], now):
            yield Stmt(sql.epoch_delete, (key,))
            yield Stmt(sql.delete_key, (key,))
            purged += 1
    return len(found), purged


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


class SqlChatStore(ClosableStore, CachedReads, HistoryChatStore):
    """``BaseChatStore`` and ``HistoryStore`` on the operations above, sync and async.

    Indices follow Python list semantics: ``delete_message(key, 1)`` removes the second
    message in order and returns it, ``-1`` is the last one, an index out of range returns
    ``None``, and ``add_message(key, m, idx=i)`` behaves like ``list.insert(i, m)``.  A key
    with no messages does not exist: ``get_messages`` gives ``[]`` and ``get_keys`` omits it.
    With ``ttl``, a write first purges expired keys, at most once per ``min(ttl, 60 s)``.

    Reads go through the store's read cache (:mod:`aof_index.memory.read_cache`): a read
    of a conversation read before fetches and decodes only the rows appended since, when
    its epoch (a row of the epochs table, renewed by every write that is not an append)
    is unchanged, and the whole conversation otherwise.

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

    @property
    def _ctx(self) -> OpContext:
        return OpContext(self._sql, self.codec, self.ttl)

    def _read(self, make_op: Callable[[OpContext], Op[T]]) -> T:
        ctx = self._ctx
        return self._run(lambda: make_op(ctx), write=False)

    def _write(self, make_op: Callable[[OpContext], Op[T]]) -> T:
        if self._purge_due():
            self.purge_expired()
        ctx = self._ctx
        return self._run(lambda: make_op(ctx), write=True)

    async def _aread(self, make_op: Callable[[OpContext], Op[T]]) -> T:
        ctx = self._ctx
        return await self._arun(lambda: make_op(ctx), write=False)

    async def _awrite(self, make_op: Callable[[OpContext], Op[T]]) -> T:
        if self._purge_due():
            await self.apurge_expired()
        ctx = self._ctx
        return await self._arun(lambda: make_op(ctx), write=True)

    # sync ------------------------------------------------------------------------------------

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the messages of ``key`` (an empty list removes the key)."""
        self._write(lambda ctx: op_set(ctx, key, messages))

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Messages of ``key`` in order; ``[]`` for an unknown or expired key."""
        cache = self.read_cache
        if not cache.enabled:
            return self._read(lambda ctx: op_get(ctx, key))
        cached = cache.get(key)
        epoch, after = (None, 0) if cached is None else (int(cached.epoch), cached.end)
        read = self._read(lambda ctx: op_read(ctx, key, epoch, after))
        return _merged(cache, key, cached, read)

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message`` to ``key``, or insert it at ``idx`` like ``list.insert``."""
        append_id = new_append_id()  # the same for every attempt
        self._write(lambda ctx: op_add(ctx, key, message, idx, append_id))

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete every message of ``key``; returns them, or ``None`` for an unknown key."""
        return self._write(lambda ctx: op_delete_key(ctx, key))

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th message of ``key`` in order and return it (``None`` if absent)."""
        return self._write(lambda ctx: op_delete_at(ctx, key, idx))

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key`` and return it (``None`` if there is none)."""
        return self._write(lambda ctx: op_delete_last(ctx, key))

    def get_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` that hold messages, in code-point order."""
        return self._read(lambda ctx: op_keys(ctx, prefix))

    def edit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Apply ``plan`` to the head of ``key`` in one transaction (see ``HistoryStore``)."""
        return self._write(lambda ctx: op_edit_head(ctx, key, plan, archive_key))

    def purge_expired(self) -> int:
        """Delete the conversations past their TTL now; returns how many went."""
        ctx, total = self._ctx, 0
        while True:
            found, purged = self._run(lambda: op_purge(ctx), write=True)
            total += purged
            if found < PURGE_BATCH or not purged:
                return total

    # async -----------------------------------------------------------------------------------

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        await self._awrite(lambda ctx: op_set(ctx, key, messages))

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        cache = self.read_cache
        if not cache.enabled:
            return await self._aread(lambda ctx: op_get(ctx, key))
        cached = cache.get(key)
        epoch, after = (None, 0) if cached is None else (int(cached.epoch), cached.end)
        read = await self._aread(lambda ctx: op_read(ctx, key, epoch, after))
        return _merged(cache, key, cached, read)

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        """Async :meth:`add_message` (LlamaIndex names it ``async_add_message``)."""
        append_id = new_append_id()  # the same for every attempt
        await self._awrite(lambda ctx: op_add(ctx, key, message, idx, append_id))

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        return await self._awrite(lambda ctx: op_delete_key(ctx, key))

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        return await self._awrite(lambda ctx: op_delete_at(ctx, key, idx))

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return await self._awrite(lambda ctx: op_delete_last(ctx, key))

    async def aget_keys(self, prefix: str = "") -> list[str]:
        """Async :meth:`get_keys`."""
        return await self._aread(lambda ctx: op_keys(ctx, prefix))

    async def aedit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Async :meth:`edit_head`."""
        return await self._awrite(lambda ctx: op_edit_head(ctx, key, plan, archive_key))

    async def apurge_expired(self) -> int:
        """Async :meth:`purge_expired`."""
        ctx, total = self._ctx, 0
        while True:
            found, purged = await self._arun(lambda: op_purge(ctx), write=True)
            total += purged
            if found < PURGE_BATCH or not purged:
                return total


def _merged(
    cache: ReadCache, key: str, cached: CachedConversation | None, read: Read
) -> list[ChatMessage]:
    return merge(
        cache, key, cached, read.epoch, read.incremental, read.messages, read.end, read.size
    )
