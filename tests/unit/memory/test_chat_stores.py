"""Chat stores: the shared contract for each store, then SQLite- and in-memory-specific tests."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.storage.chat_store import SimpleChatStore
from llama_index.core.storage.chat_store.base import BaseChatStore
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from aof_index.errors import BackendUnavailableError
from aof_index.memory import InMemoryChatStore, SQLiteChatStore, sql_ops
from aof_index.memory import sqlite as sqlite_module
from aof_index.memory.codec import MessageCodec, generate_key, parse_keys
from aof_index.memory.edit import HeadEdit
from aof_index.memory.sql_ops import prefix_end
from aof_index.memory.sqlite import SCHEMA_VERSION
from aof_index.testing import ChatStoreContract, SharedChatStoreContract, store_factory

ASYNC_METHODS = [
    "aset_messages",
    "aget_messages",
    "async_add_message",
    "adelete_messages",
    "adelete_message",
    "adelete_last_message",
    "aget_keys",
]
SYNC_METHODS = [
    "set_messages",
    "get_messages",
    "add_message",
    "delete_messages",
    "delete_message",
    "delete_last_message",
    "get_keys",
]


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def texts(store: BaseChatStore, key: str) -> list[str | None]:
    return [m.content for m in store.get_messages(key)]


def sqlite_texts(
    target: str | Path, key: str, *, uri: bool = False, table: str = "aof_chat_messages"
) -> list[str]:
    """The stored texts of ``key``, read with a connection of this test's own."""
    conn = sqlite3.connect(target, uri=uri)
    try:
        query = f'SELECT message FROM "{table}" WHERE key = ? ORDER BY position'
        return [text for (text,) in conn.execute(query, (key,))]
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# The contract, once per store.


class TestSQLiteFileContract(SharedChatStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Callable[..., SQLiteChatStore]]:
        path = str(tmp_path / "chat.db")
        yield from store_factory(
            lambda **options: SQLiteChatStore(path=path, journal_mode="WAL", **options)
        )

    @pytest.fixture
    def store(self, make_store: Callable[..., SQLiteChatStore]) -> SQLiteChatStore:
        return make_store()

    @pytest.fixture
    def stored_texts(self, tmp_path: Path) -> Callable[[Any, str], list[str]]:
        return lambda store, key: sqlite_texts(tmp_path / "chat.db", key)


class TestSQLiteInMemoryContract(ChatStoreContract):
    @pytest.fixture
    def make_store(self) -> Iterator[Callable[..., SQLiteChatStore]]:
        yield from store_factory(lambda **options: SQLiteChatStore(inmemory=True, **options))

    @pytest.fixture
    def store(self, make_store: Callable[..., SQLiteChatStore]) -> SQLiteChatStore:
        return make_store()

    @pytest.fixture
    def stored_texts(self) -> Callable[[SQLiteChatStore, str], list[str]]:
        return lambda store, key: sqlite_texts(store._memory_uri, key, uri=True)


class TestInMemoryContract(ChatStoreContract):
    @pytest.fixture
    def make_store(self) -> Iterator[Callable[..., InMemoryChatStore]]:
        yield from store_factory(InMemoryChatStore)

    @pytest.fixture
    def store(self, make_store: Callable[..., InMemoryChatStore]) -> InMemoryChatStore:
        return make_store()

    @pytest.fixture
    def stored_texts(self) -> Callable[[InMemoryChatStore, str], list[str]]:
        def read(store: InMemoryChatStore, key: str) -> list[str]:
            conversation = store._data.get(key)
            return list(conversation.texts) if conversation else []

        return read


# --------------------------------------------------------------------------------------------
# Both stores against a Python list, on random operation sequences.

_texts = st.text(max_size=8)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _texts, st.none() | st.integers(-6, 6)),
        st.tuples(st.just("delete"), st.integers(-6, 6)),
        st.tuples(st.just("delete_last")),
        st.tuples(st.just("set"), st.lists(_texts, max_size=4)),
    ),
    max_size=25,
)


def _check_against_list(store: BaseChatStore, ops: list[tuple[Any, ...]]) -> None:
    model: list[str] = []
    for op in ops:
        if op[0] == "add":
            _, text, idx = op
            store.add_message("k", msg(text), idx)  # type: ignore[call-arg]
            model.append(text) if idx is None else model.insert(idx, text)
        elif op[0] == "delete":
            expected = model.pop(op[1]) if -len(model) <= op[1] < len(model) else None
            got = store.delete_message("k", op[1])
            assert (got.content if got else None) == expected
        elif op[0] == "delete_last":
            expected = model.pop() if model else None
            got = store.delete_last_message("k")
            assert (got.content if got else None) == expected
        else:
            model = list(op[1])
            store.set_messages("k", [msg(t) for t in model])
        assert [m.content for m in store.get_messages("k")] == model
        assert store.get_keys() == (["k"] if model else [])


@settings(max_examples=60, deadline=None)
@given(_ops)
def test_sqlite_store_behaves_like_a_list(ops: list[tuple[Any, ...]]) -> None:
    with SQLiteChatStore(inmemory=True) as store:
        _check_against_list(store, ops)


@settings(max_examples=60, deadline=None)
@given(_ops)
def test_in_memory_store_behaves_like_a_list(ops: list[tuple[Any, ...]]) -> None:
    _check_against_list(InMemoryChatStore(), ops)


# --------------------------------------------------------------------------------------------
# SQLite: upstream defect, configuration, persistence, I/O, errors.


def test_delete_message_uses_the_index_in_order_not_a_row_id(tmp_path: Path) -> None:
    # LlamaIndex's SQLiteChatStore.delete_message(key, idx) deletes the row whose id is idx.
    with SQLiteChatStore(path=tmp_path / "chat.db") as store:
        store.set_messages("k", [msg("a"), msg("b"), msg("c")])
        removed = store.delete_message("k", 1)
        assert removed is not None and removed.content == "b"
        assert texts(store, "k") == ["a", "c"]
        # Row ids and indices no longer agree once other keys and deletes are involved.
        store.set_messages("other", [msg("x"), msg("y")])
        store.set_messages("k2", [msg("a"), msg("b"), msg("c"), msg("d")])
        store.delete_message("k2", 0)
        removed = store.delete_message("k2", 1)
        assert removed is not None and removed.content == "c"
        assert texts(store, "k2") == ["b", "d"]


@pytest.mark.parametrize("mode", ["DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"])
def test_journal_mode_is_applied(tmp_path: Path, mode: str) -> None:
    with SQLiteChatStore(path=tmp_path / "chat.db", journal_mode=mode) as store:
        store.add_message("k", msg("a"))

        async def async_mode() -> str:
            await store.aget_keys()
            assert store._aconn is not None
            rows = await store._aconn.execute_fetchall("PRAGMA journal_mode")
            return str(next(iter(rows))[0])

        assert store._conn is not None
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0].upper() == mode
        assert asyncio.run(async_mode()).upper() == mode
    if mode == "WAL":  # WAL is a property of the file, seen by any other connection
        conn = sqlite3.connect(tmp_path / "chat.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def test_journal_mode_is_case_insensitive_and_validated() -> None:
    assert SQLiteChatStore(inmemory=True, journal_mode="wal").journal_mode == "WAL"
    with pytest.raises(ValidationError):
        SQLiteChatStore(inmemory=True, journal_mode="FAST")


def test_location_and_table_are_validated() -> None:
    with pytest.raises(ValidationError, match="needs a path"):
        SQLiteChatStore()
    with pytest.raises(ValidationError, match="SQL identifier"):
        SQLiteChatStore(inmemory=True, table='messages"; DROP TABLE x; --')
    with pytest.raises(ValidationError):
        SQLiteChatStore(inmemory=True, busy_timeout_ms=-1)
    assert SQLiteChatStore(path=":memory:").inmemory


def test_data_persists_across_store_instances(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    first = SQLiteChatStore(path=path)
    first.set_messages("k", [msg("a"), msg("b")])
    asyncio.run(first.async_add_message("k", msg("c")))
    # A second instance sees the data while the first is still open, and after it closes.
    second = SQLiteChatStore(path=path)
    assert texts(second, "k") == ["a", "b", "c"]
    first.close()
    second.close()
    with SQLiteChatStore(path=path) as third:
        assert texts(third, "k") == ["a", "b", "c"]
        assert third.get_keys() == ["k"]


def test_tables_in_one_file_are_separate(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with SQLiteChatStore(path=path, table="a") as a, SQLiteChatStore(path=path, table="b") as b:
        a.add_message("k", msg("in a"))
        b.add_message("k", msg("in b"))
        assert texts(a, "k") == ["in a"]
        assert texts(b, "k") == ["in b"]


V1_TABLE = (
    "CREATE TABLE {table} (id INTEGER PRIMARY KEY, key TEXT NOT NULL,"
    " position INTEGER NOT NULL, message TEXT NOT NULL, created_at REAL NOT NULL,"
    " UNIQUE (key, position))"
)
"""The table as schema version 1 (aof-index before TTL and prefix listing) created it."""


def indexes(conn: sqlite3.Connection, table: str = "aof_chat_messages") -> dict[str, list[str]]:
    names = [row[1] for row in conn.execute(f'PRAGMA index_list("{table}")')]
    return {
        name: [row[2] for row in conn.execute(f'PRAGMA index_info("{name}")')] for name in names
    }


def make_v1_file(path: Path, *tables: str) -> None:
    conn = sqlite3.connect(path)
    for table in tables:
        conn.execute(V1_TABLE.format(table=table))
        conn.executemany(
            f"INSERT INTO {table} (key, position, message, created_at) VALUES (?, ?, ?, ?)",
            [
                ("user-1/a", 0, msg("first").model_dump_json(), time.time() - 100),
                ("user-1/a", 1 << 20, msg("second").model_dump_json(), time.time() - 50),
                ("user-2/b", 0, msg("other").model_dump_json(), time.time() - 10),
            ],
        )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with SQLiteChatStore(path=path) as store:
        store.get_keys()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    columns = [row[1] for row in conn.execute("PRAGMA table_info(aof_chat_messages)")]
    assert columns == ["id", "key", "position", "message", "created_at", "append_id"]
    assert ["key", "created_at"] in indexes(conn).values()
    assert ["append_id"] in indexes(conn).values()
    epochs = [row[1] for row in conn.execute("PRAGMA table_info(aof_chat_messages_epochs)")]
    assert epochs == ["key", "epoch"]
    conn.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteChatStore(path=path)
    with pytest.raises(BackendUnavailableError, match="newer than this aof-index supports"):
        store.get_keys()
    with pytest.raises(BackendUnavailableError, match="newer than this aof-index supports"):
        asyncio.run(store.aget_keys())


def test_version_1_table_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    make_v1_file(path, "aof_chat_messages")
    with SQLiteChatStore(path=path) as store:
        assert store.get_keys("user-1/") == ["user-1/a"]  # written before prefixes existed
        assert texts(store, "user-1/a") == ["first", "second"]
    with SQLiteChatStore(path=path, ttl=30, codec=MessageCodec("zstd", threshold=0)) as store:
        assert store.get_keys() == ["user-2/b"]  # user-1/a: last written 50 s ago
        assert store.purge_expired() == 1
        store.edit_head("user-2/b", lambda ms: HeadEdit(1, [msg("summary " * 100)]))
        assert texts(store, "user-2/b") == ["summary " * 100]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert ["key", "created_at"] in indexes(conn).values()
    assert ["append_id"] in indexes(conn).values()  # version 4's column, under its index
    assert conn.execute("SELECT key FROM aof_chat_messages_epochs").fetchall() == [("user-2/b",)]
    conn.close()


def test_every_table_of_a_file_gets_its_index(tmp_path: Path) -> None:
    # user_version belongs to the file: once the first table brought it to 2, the second
    # table's migration does not run, and the index is created on open instead.
    path = tmp_path / "chat.db"
    make_v1_file(path, "first", "second")
    for table in ("first", "second"):
        with SQLiteChatStore(path=path, table=table) as store:
            assert store.get_keys("user-") == ["user-1/a", "user-2/b"]
    conn = sqlite3.connect(path)
    for table in ("first", "second"):
        assert ["key", "created_at"] in indexes(conn, table).values(), table
        assert ["append_id"] in indexes(conn, table).values(), table  # the column, too
        assert conn.execute(f"SELECT COUNT(*) FROM {table}_epochs").fetchone() == (0,)
    conn.close()
    with SQLiteChatStore(path=path, table="second") as store:
        store.add_message("user-2/b", msg("appended"))
        assert texts(store, "user-2/b") == ["other", "appended"]


def test_migration_hook_upgrades_an_existing_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.db"
    with SQLiteChatStore(path=path) as store:
        store.add_message("k", msg(f"written by version {SCHEMA_VERSION}"))
    newer = SCHEMA_VERSION + 1
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", newer)
    monkeypatch.setattr(
        sqlite_module,
        "MIGRATIONS",
        {**sql_ops.MIGRATIONS, newer: ("ALTER TABLE {table} ADD COLUMN expires_at REAL",)},
    )
    with SQLiteChatStore(path=path) as store:
        assert texts(store, "k") == [f"written by version {SCHEMA_VERSION}"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == newer
    columns = [row[1] for row in conn.execute("PRAGMA table_info(aof_chat_messages)")]
    assert columns[-1] == "expires_at"
    conn.close()


def test_key_listing_and_ttl_checks_read_the_index(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with SQLiteChatStore(path=path, ttl=60) as store:
        store.add_message("user-1/a", msg("a"))
        sql = store._sql
    conn = sqlite3.connect(path)
    for statement, params in [
        (sql.keys_between, ("user-1/", "user-10", 0.0)),
        (sql.keys_from, ("\U0010ffff", 0.0)),
        (sql.last_written, ("user-1/a",)),
    ]:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", params))
        assert "USING COVERING INDEX" in plan and "SCAN" not in plan, (statement, plan)
    conn.close()


def test_writes_purge_expired_conversations_at_most_once_per_ttl(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"

    def stored_keys() -> list[str]:
        conn = sqlite3.connect(path)
        try:
            return [key for (key,) in conn.execute("SELECT DISTINCT key FROM aof_chat_messages")]
        finally:
            conn.close()

    with SQLiteChatStore(path=path, ttl=0.4) as store:
        store.add_message("old", msg("a"))  # the first write purges (nothing yet)
        time.sleep(0.6)  # "old" expired; the next write purges
        store.add_message("new-1", msg("b"))
        assert stored_keys() == ["new-1"]
        store.set_messages("old", [msg("c")])
        time.sleep(0.45)  # "old" expired again 0.05 s ago, but a purge ran 0.45 s ago
        asyncio.run(store.async_add_message("new-2", msg("d")))  # purges: 0.4 s passed
        assert sorted(stored_keys()) == ["new-2"]
        store.add_message("new-3", msg("e"))  # just purged: no purge
        assert sorted(stored_keys()) == ["new-2", "new-3"]


def test_prefix_end_is_the_least_string_above_the_prefix() -> None:
    assert prefix_end("") is None
    assert prefix_end("a") == "b"
    assert prefix_end("user-1/") == "user-10"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff\U0010ffff") is None
    assert prefix_end("\ud7ff") == "\ue000"  # surrogates are not characters
    assert prefix_end("é") == "ê"
    keys = ["a", "a\U0010ffff", "ab", "b", "\ud7ff", "\ud7ff\U0010ffff", "\ue000"]
    for prefix in ["a", "\ud7ff", "a\U0010ffff"]:
        end = prefix_end(prefix)
        inside = [k for k in keys if k >= prefix and (end is None or k < end)]
        assert inside == [k for k in keys if k.startswith(prefix)], prefix


def test_codec_is_kept_by_pickling_and_left_out_of_serialisation(tmp_path: Path) -> None:
    key = generate_key()
    codec = MessageCodec("gzip", keys=parse_keys(key))
    store = SQLiteChatStore(path=tmp_path / "chat.db", codec=codec, ttl=30)
    store.add_message("k", msg("secret"))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.codec == codec and copy.ttl == 30
    assert texts(copy, "k") == ["secret"]
    assert "codec" not in store.to_dict() and key not in store.to_json()
    restored = SQLiteChatStore.from_dict(store.to_dict())  # a codec is configured, not saved
    assert restored.codec == MessageCodec() and restored.ttl == 30
    store.close()
    copy.close()


def test_home_directory_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with SQLiteChatStore(path="~/aof/chat.db") as store:
        store.add_message("k", msg("a"))
    assert (tmp_path / "aof" / "chat.db").is_file()


def test_unserialisable_message_leaves_the_key_unchanged(tmp_path: Path) -> None:
    class Opaque:
        pass

    bad = ChatMessage(content="x", additional_kwargs={"handle": Opaque()})
    with SQLiteChatStore(path=tmp_path / "chat.db") as store:
        store.set_messages("k", [msg("a"), msg("b")])
        with pytest.raises(PydanticSerializationError):
            store.set_messages("k", [msg("c"), bad])
        with pytest.raises(PydanticSerializationError):
            asyncio.run(store.async_add_message("k", bad, idx=0))
        assert texts(store, "k") == ["a", "b"]


def test_pydantic_objects_in_additional_kwargs_are_stored_as_json(tmp_path: Path) -> None:
    # Provider SDKs put their own models in additional_kwargs (e.g. OpenAI's tool calls);
    # they come back as the plain JSON they serialise to.
    class Function(BaseModel):
        name: str
        arguments: str

    class ToolCall(BaseModel):
        id: str
        type: str = "function"
        function: Function

    call = ToolCall(id="call_1", function=Function(name="kubectl_get", arguments="{}"))
    message = ChatMessage(role="assistant", content=None, additional_kwargs={"tool_calls": [call]})
    with SQLiteChatStore(path=tmp_path / "chat.db") as store:
        store.add_message("k", message)
        got = store.get_messages("k")[0]
    assert got.additional_kwargs == {"tool_calls": [call.model_dump()]}


def test_constructor_does_no_io(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "chat.db"
    store = SQLiteChatStore(path=path)
    assert not (tmp_path / "not").exists()
    assert store._conn is None and store._aconn is None
    assert store.get_keys() == []
    assert path.is_file()
    store.close()


def test_async_first_use_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "chat.db"

    async def main() -> None:
        async with SQLiteChatStore(path=path) as store:
            await store.async_add_message("k", msg("a"))

    asyncio.run(main())
    with SQLiteChatStore(path=path) as store:
        assert texts(store, "k") == ["a"]


def test_unopenable_path_raises_backend_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "chat.db"
    store = SQLiteChatStore(path=path)
    with pytest.raises(BackendUnavailableError) as sync_error:
        store.add_message("k", msg("a"))
    assert str(path) in str(sync_error.value)
    with pytest.raises(BackendUnavailableError) as async_error:
        asyncio.run(store.aget_messages("k"))
    assert str(path) in str(async_error.value)


def test_file_that_is_not_a_database_raises_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(b"this is not a sqlite database, it is just some text " * 100)
    store = SQLiteChatStore(path=path)
    with pytest.raises(BackendUnavailableError, match="not a database") as error:
        store.get_keys()
    assert str(path) in str(error.value)
    with pytest.raises(BackendUnavailableError, match="not a database"):
        asyncio.run(store.aget_keys())


def test_lock_held_past_busy_timeout_raises_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    store = SQLiteChatStore(path=path, busy_timeout_ms=100)
    store.get_keys()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendUnavailableError, match="busy_timeout_ms=100"):
            store.add_message("k", msg("a"))
        with pytest.raises(BackendUnavailableError, match="locked"):
            asyncio.run(store.async_add_message("k", msg("a")))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.add_message("k", msg("after"))
    assert texts(store, "k") == ["after"]
    store.close()


def test_cancelled_async_call_leaves_no_open_transaction(tmp_path: Path) -> None:
    # A caller's timeout must not strand the connection inside BEGIN IMMEDIATE (holding
    # the file's write lock); the transaction finishes, and the next call works.
    path = tmp_path / "chat.db"
    store = SQLiteChatStore(path=path)
    store.get_keys()
    holder = sqlite3.connect(path, isolation_level=None)

    async def main() -> list[str | None]:
        await store.aget_keys()
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.async_add_message("k", msg("timed out")), 0.2)
        holder.execute("ROLLBACK")
        await store.async_add_message("k", msg("after"))
        return [m.content for m in await store.aget_messages("k")]

    try:
        assert asyncio.run(main()) == ["timed out", "after"]
    finally:
        holder.close()
    assert texts(store, "k") == ["timed out", "after"]
    store.close()


def test_close_and_aclose_then_reuse(tmp_path: Path) -> None:
    store = SQLiteChatStore(path=tmp_path / "chat.db")
    store.add_message("k", msg("a"))
    asyncio.run(store.async_add_message("k", msg("b")))
    store.close()
    assert store._conn is None and store._aconn is None
    assert texts(store, "k") == ["a", "b"]

    async def main() -> list[ChatMessage]:
        await store.aclose()
        return await store.aget_messages("k")

    assert [m.content for m in asyncio.run(main())] == ["a", "b"]
    store.close()


def test_async_use_across_event_loops(tmp_path: Path) -> None:
    store = SQLiteChatStore(path=tmp_path / "chat.db")
    for i in range(3):  # each asyncio.run is a new loop; the store keeps working
        asyncio.run(store.async_add_message("k", msg(str(i))))
    assert texts(store, "k") == ["0", "1", "2"]
    store.close()


def test_async_methods_are_native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteChatStore(path=tmp_path / "chat.db")
    for name in ASYNC_METHODS:
        assert getattr(SQLiteChatStore, name) is not getattr(BaseChatStore, name), name

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an async method called a sync one")

    for name in SYNC_METHODS:
        monkeypatch.setattr(SQLiteChatStore, name, refuse)

    async def main() -> list[str | None]:
        await store.aset_messages("k", [msg("a"), msg("b")])
        await store.async_add_message("k", msg("c"), idx=1)
        await store.adelete_message("k", 0)
        await store.adelete_last_message("k")
        assert await store.aget_keys() == ["k"]
        messages = await store.aget_messages("k")
        await store.adelete_messages("k")
        await store.aclose()
        return [m.content for m in messages]

    assert asyncio.run(main()) == ["c"]


def test_in_memory_stores_are_separate_and_shared_between_paths() -> None:
    one, two = SQLiteChatStore(inmemory=True), SQLiteChatStore(path=":memory:")
    one.add_message("k", msg("one"))
    asyncio.run(two.async_add_message("k", msg("two")))
    assert texts(one, "k") == ["one"]
    assert texts(two, "k") == ["two"]  # written async, read sync: one database
    assert [m.content for m in asyncio.run(one.aget_messages("k"))] == ["one"]
    one.close()
    two.close()
    assert SQLiteChatStore(inmemory=True).get_keys() == []


def test_in_memory_database_lives_while_the_store_is_open() -> None:
    async def main(store: SQLiteChatStore) -> None:
        # The async path opens first; the database must outlive its connection.
        await store.async_add_message("k", msg("a"))
        assert store._aconn is not None
        await store._aconn.close()
        store._aconn = None
        await store.async_add_message("k", msg("b"))

    store = SQLiteChatStore(inmemory=True)
    asyncio.run(main(store))
    assert texts(store, "k") == ["a", "b"]
    store.close()


@pytest.mark.parametrize("inmemory", [True, False], ids=["in-memory", "file"])
def test_sync_threads_and_async_tasks_mixed(tmp_path: Path, inmemory: bool) -> None:
    # Two connections to one database at once; in memory they lock each other per table
    # (SQLITE_LOCKED, which SQLite does not wait on), so the store retries.
    store = SQLiteChatStore(path=tmp_path / "chat.db", inmemory=inmemory)
    store.get_keys()

    def sync_writer() -> None:
        for i in range(100):
            store.add_message("k", msg(f"sync:{i}"))

    async def async_writer(t: int) -> None:
        for i in range(20):
            await store.async_add_message("k", msg(f"async{t}:{i}"))
            await store.aget_messages("k")

    async def main() -> None:
        thread = threading.Thread(target=sync_writer)
        thread.start()
        await asyncio.gather(*(async_writer(t) for t in range(5)))
        await asyncio.to_thread(thread.join)

    asyncio.run(main())
    got = [str(t) for t in texts(store, "k")]
    expected = [f"sync:{i}" for i in range(100)]
    expected += [f"async{t}:{i}" for t in range(5) for i in range(20)]
    assert sorted(got) == sorted(expected)
    assert [x for x in got if x.startswith("sync:")] == [f"sync:{i}" for i in range(100)]
    store.close()


def test_pickled_store_reopens(tmp_path: Path) -> None:
    store = SQLiteChatStore(path=tmp_path / "chat.db", table="t1", busy_timeout_ms=1234)
    store.add_message("k", msg("a"))
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.path, copy.table, copy.busy_timeout_ms) == (store.path, "t1", 1234)
    assert texts(copy, "k") == ["a"]
    store.close()
    copy.close()


def test_unclosed_store_does_not_keep_the_interpreter_alive(tmp_path: Path) -> None:
    # aiosqlite's worker thread is not a daemon; the store makes it one.
    script = textwrap.dedent(
        f"""
        import asyncio
        from llama_index.core.llms import ChatMessage
        from aof_index.memory import SQLiteChatStore
        store = SQLiteChatStore(path={str(tmp_path / "chat.db")!r})
        asyncio.run(store.async_add_message("k", ChatMessage(content="a")))
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


# --------------------------------------------------------------------------------------------
# In-memory store: LlamaIndex SimpleChatStore's defects are gone.


def test_in_memory_store_fixes_simple_chat_store_defects() -> None:
    simple = SimpleChatStore()
    simple.set_messages("k", [msg("a")])
    simple.delete_last_message("k")
    with pytest.raises(IndexError):  # the upstream behaviour this store avoids
        simple.delete_last_message("k")

    store = InMemoryChatStore()
    store.set_messages("k", [msg("a")])
    assert store.delete_last_message("k") is not None
    assert store.delete_last_message("k") is None
    assert store.get_keys() == []
    assert store.delete_message("k", -1) is None


def test_in_memory_store_pickles_with_its_messages() -> None:
    store = InMemoryChatStore()
    store.set_messages("k", [msg("a"), msg("b", MessageRole.ASSISTANT)])
    copy = pickle.loads(pickle.dumps(store))
    assert [m.model_dump() for m in copy.get_messages("k")] == [
        m.model_dump() for m in store.get_messages("k")
    ]
    copy.add_message("k", msg("only in the copy"))
    assert len(store.get_messages("k")) == 2


def test_stores_are_llama_index_chat_stores() -> None:
    from llama_index.core.memory import ChatMemoryBuffer

    for store in (InMemoryChatStore(), SQLiteChatStore(inmemory=True)):
        assert isinstance(store, BaseChatStore)
        memory = ChatMemoryBuffer.from_defaults(chat_store=store, chat_store_key="user-1")
        memory.put(msg("hello"))
        memory.put(msg("hi", MessageRole.ASSISTANT))
        assert [m.content for m in memory.get_all()] == ["hello", "hi"]
        assert store.get_keys() == ["user-1"]


def test_an_append_run_twice_with_its_id_adds_one_message(tmp_path: Path) -> None:
    # What a store that retries an append after a lost reply relies on (see op_add).
    from aof_index.memory.sql_ops import new_append_id, op_add

    with SQLiteChatStore(path=tmp_path / "chat.db") as store:
        append_id = new_append_id()
        for _ in range(2):
            store._write(lambda ctx: op_add(ctx, "k", msg("once"), None, append_id))
        store.add_message("k", msg("once"))  # the same message again: a new append
        assert texts(store, "k") == ["once", "once"]
