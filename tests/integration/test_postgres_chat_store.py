"""The PostgreSQL chat store against the real server on 127.0.0.1:5432 (trust auth; started
here with ``pg_ctlcluster`` when it does not answer): the contract, the manifest builder,
schema creation and migration, errors, locking and concurrency.

Every test works in a schema of its own (``aof_test_<hex>``), dropped afterwards, so tests
running at the same time on the shared server never see each other's tables."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import pickle
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.storage.chat_store.base import BaseChatStore
from pydantic import SecretStr

from aof_index import build_memory
from aof_index.errors import BackendUnavailableError
from aof_index.memory import PostgresChatStore, sql_ops
from aof_index.memory import postgres as postgres_module
from aof_index.memory.codec import MessageCodec
from aof_index.memory.edit import HeadEdit
from aof_index.memory.postgres import SCHEMA_VERSION
from aof_index.spec import Memory, parse_resource
from aof_index.testing import SharedChatStoreContract, store_factory

pytestmark = pytest.mark.integration

HOST, PORT = "127.0.0.1", 5432
ADMIN: dict[str, Any] = {
    "host": HOST,
    "port": PORT,
    "user": "postgres",
    "dbname": "postgres",
    "sslmode": "disable",
    "autocommit": True,
}
TABLE = "aof_chat_messages"
# BaseChatStore's async methods, whose defaults merely call the sync ones.
ASYNC_METHODS = [n for n, v in vars(BaseChatStore).items() if inspect.iscoroutinefunction(v)]


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def texts(store: BaseChatStore, key: str) -> list[str | None]:
    return [m.content for m in store.get_messages(key)]


def answers() -> bool:
    try:
        psycopg.connect(**ADMIN, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(**ADMIN) as conn:
        cur = conn.execute(sql, params)  # type: ignore[call-overload]
        return cur.fetchall() if cur.description is not None else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_store(schema: str, **kwargs: Any) -> PostgresChatStore:
    settings: dict[str, Any] = {
        "host": HOST,
        "port": PORT,
        "user": "postgres",
        "database": "postgres",
        "sslmode": "disable",
        "db_schema": schema,
    }
    return PostgresChatStore(**(settings | kwargs))


def holding_key_lock(schema: str, key: str) -> psycopg.Connection[Any]:
    """A connection inside a transaction that holds the store's lock on ``key``."""
    conn = psycopg.connect(**(ADMIN | {"autocommit": False}))
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (f"{schema}.{TABLE}", key)
    )
    return conn


# --------------------------------------------------------------------------------------------
# Server and per-test schemas.


@pytest.fixture(scope="session")
def postgres() -> None:
    """The server on 5432, started with the machine's own cluster when it does not answer."""
    if answers():
        return
    clusters = sorted(Path("/etc/postgresql").glob("*/main"))
    if not clusters or shutil.which("pg_ctlcluster") is None:
        pytest.fail(
            "PostgreSQL does not answer on 127.0.0.1:5432 and no cluster can be started here "
            "(install Debian's postgresql package)"
        )
    version = clusters[-1].parent.name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    deadline = time.monotonic() + 60
    while not answers():
        if time.monotonic() > deadline:
            pytest.fail(f"PostgreSQL {version} was started but does not answer on 127.0.0.1:5432")
        time.sleep(0.2)


@pytest.fixture
def schema(postgres: None) -> Iterator[str]:
    """A schema name of this test's own (not created); dropped afterwards."""
    name = f"aof_test_{uuid.uuid4().hex[:12]}"
    yield name
    query(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def stored_texts(schema: str, key: str, table: str = TABLE) -> list[str]:
    """The texts at rest of ``key``, read with a connection of this test's own."""
    rows = query(f'SELECT message FROM "{schema}"."{table}" WHERE key = %s ORDER BY position', key)
    return [text for (text,) in rows]


class TestPostgresContract(SharedChatStoreContract):
    @pytest.fixture
    def make_store(self, schema: str) -> Iterator[Callable[..., PostgresChatStore]]:
        yield from store_factory(
            lambda **options: make_store(schema, max_connections=10, **options)
        )

    @pytest.fixture
    def store(self, make_store: Callable[..., PostgresChatStore]) -> PostgresChatStore:
        return make_store()

    @pytest.fixture
    def stored_texts(self, schema: str) -> Callable[[Any, str], list[str]]:
        return lambda store, key: stored_texts(schema, key)


# --------------------------------------------------------------------------------------------
# Built from a manifest.


def test_built_from_a_memory_manifest(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOF_SECRET_PG_CREDS_PASSWORD", "s3cret-from-env")
    manifest = {
        "apiVersion": "aof.agenticops.org/v1alpha1",
        "kind": "Memory",
        "metadata": {"name": "ops-memory", "namespace": "sre"},
        "spec": {
            "backend": {
                "type": "PostgreSQL",
                "postgresql": {
                    "host": HOST,
                    "port": PORT,
                    "database": "postgres",
                    "user": "postgres",
                    "passwordSecretRef": {"name": "pg-creds", "key": "password"},
                    "sslMode": "disable",
                    "maxConnections": 7,
                    "schema": schema,
                },
            }
        },
    }
    resource = parse_resource(manifest)
    assert isinstance(resource, Memory)
    store = build_memory(resource).chat_store
    assert isinstance(store, PostgresChatStore)
    assert (store.host, store.port, store.database, store.user) == (
        HOST,
        PORT,
        "postgres",
        "postgres",
    )
    assert (store.sslmode, store.max_connections, store.db_schema) == ("disable", 7, schema)
    assert store.table == "aof_chat_sre_ops_memory"
    assert store.password is not None
    assert store.password.get_secret_value() == "s3cret-from-env"
    assert "s3cret" not in repr(store) and "s3cret" not in store.to_json()
    try:
        store.add_message("user-1", msg("hello"))
        asyncio.run(store.async_add_message("user-1", msg("hi", MessageRole.ASSISTANT)))
        assert texts(store, "user-1") == ["hello", "hi"]
    finally:
        store.close()
    rows = query(f'SELECT key FROM "{schema}".aof_chat_sre_ops_memory ORDER BY position')
    assert rows == [("user-1",), ("user-1",)]


def test_manifest_default_table_names_fit_postgresql(schema: str) -> None:
    long_name = "a-very-long-memory-name-" + "x" * 60
    resource = parse_resource(
        {
            "apiVersion": "aof.agenticops.org/v1alpha1",
            "kind": "Memory",
            "metadata": {"name": long_name},
            "spec": {"backend": {"type": "PostgreSQL", "postgresql": {"schema": schema}}},
        }
    )
    assert isinstance(resource, Memory)
    store = build_memory(resource).chat_store
    assert isinstance(store, PostgresChatStore)
    assert len(store.table) <= 63 and store.table.startswith("aof_chat_default_a_very_long")
    assert store.sslmode == "require"  # the manifest's default
    assert (store.host, store.database, store.max_connections) == ("localhost", "postgres", 25)


# --------------------------------------------------------------------------------------------
# Schema: created on first use, reused, migrated, refused when newer.


def schema_exists(schema: str) -> bool:
    return bool(query("SELECT 1 FROM pg_namespace WHERE nspname = %s", schema))


def test_schema_created_on_first_use_and_reused(schema: str) -> None:
    first = make_store(schema)
    assert not schema_exists(schema)  # the constructor does no I/O
    first.add_message("k", msg("a"))
    assert schema_exists(schema)
    tables = query("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", schema)
    assert tables == [
        ("aof_chat_messages",),
        ("aof_chat_messages_epochs",),
        ("aof_schema_versions",),
    ]
    versions = f'SELECT table_name, version FROM "{schema}".aof_schema_versions'
    assert query(versions) == [(TABLE, SCHEMA_VERSION)]
    indexes = query("SELECT indexdef FROM pg_indexes WHERE schemaname = %s", schema)
    assert any("UNIQUE" in d and '(key, "position")' in d for (d,) in indexes), indexes

    second = make_store(schema)
    assert texts(second, "k") == ["a"]
    second.add_message("k", msg("b"))
    assert texts(first, "k") == ["a", "b"]
    assert query(versions) == [(TABLE, SCHEMA_VERSION)]
    other_table = make_store(schema, table="other_messages")
    assert other_table.get_messages("k") == []
    assert sorted(query(versions)) == [(TABLE, SCHEMA_VERSION), ("other_messages", SCHEMA_VERSION)]
    for store in (first, second, other_table):
        store.close()


def test_stores_starting_at_once_create_the_schema_once(schema: str) -> None:
    stores = [make_store(schema) for _ in range(8)]
    barrier = threading.Barrier(len(stores))

    def first_use(i: int) -> None:
        barrier.wait(timeout=60)
        stores[i].add_message("k", msg(str(i)))

    with ThreadPoolExecutor(len(stores)) as executor:
        list(executor.map(first_use, range(len(stores))))  # re-raises a failure
    assert sorted(str(t) for t in texts(stores[0], "k")) == [str(i) for i in range(8)]
    assert query(f'SELECT count(*) FROM "{schema}".aof_schema_versions') == [(1,)]
    for store in stores:
        store.close()


def test_newer_schema_version_is_refused(schema: str) -> None:
    with make_store(schema) as store:
        store.get_keys()
    query(f'UPDATE "{schema}".aof_schema_versions SET version = %s', SCHEMA_VERSION + 1)
    store = make_store(schema)
    with pytest.raises(BackendUnavailableError, match="newer than this aof-index supports"):
        store.get_keys()
    with pytest.raises(BackendUnavailableError, match="newer than this aof-index supports"):
        asyncio.run(store.aget_keys())


def make_v1_table(schema: str) -> None:
    """The table and version record as schema version 1 (before TTL and prefixes) left them."""
    query(f'CREATE SCHEMA "{schema}"')
    query(
        f'CREATE TABLE "{schema}".aof_schema_versions'
        " (table_name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )
    query(f"INSERT INTO \"{schema}\".aof_schema_versions VALUES ('{TABLE}', 1)")
    query(
        f'CREATE TABLE "{schema}"."{TABLE}" (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,'
        " key TEXT NOT NULL, position BIGINT NOT NULL, message TEXT NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL, UNIQUE (key, position))"
    )
    rows = [
        ("user-1/a", 0, "first", time.time() - 100),
        ("user-1/a", 1 << 20, "second", time.time() - 50),
        ("user-2/b", 0, "other", time.time() - 10),
    ]
    for key, position, text, created_at in rows:
        query(
            f'INSERT INTO "{schema}"."{TABLE}" (key, position, message, created_at)'
            " VALUES (%s, %s, %s, %s)",
            *(key, position, msg(text).model_dump_json(), created_at),
        )


def index_definitions(schema: str) -> list[str]:
    rows = query("SELECT indexdef FROM pg_indexes WHERE schemaname = %s", schema)
    return [definition for (definition,) in rows]


def test_version_1_table_is_migrated(schema: str) -> None:
    make_v1_table(schema)
    assert not any("created_at" in d for d in index_definitions(schema))
    with make_store(schema) as store:
        assert store.get_keys("user-1/") == ["user-1/a"]  # written before prefixes existed
        assert texts(store, "user-1/a") == ["first", "second"]
    assert query(f'SELECT version FROM "{schema}".aof_schema_versions') == [(SCHEMA_VERSION,)]
    assert any('(key COLLATE "C", created_at)' in d for d in index_definitions(schema))
    assert query(f'SELECT key FROM "{schema}"."{TABLE}_epochs"') == []  # version 3's table
    assert any("UNIQUE INDEX" in d and "(append_id)" in d for d in index_definitions(schema))
    codec = MessageCodec("gzip", threshold=0)
    with make_store(schema, ttl=30, codec=codec) as store:
        assert store.get_keys() == ["user-2/b"]  # user-1/a: last written 50 s ago
        assert asyncio.run(store.apurge_expired()) == 1
        store.edit_head("user-2/b", lambda ms: HeadEdit(1, [msg("summary " * 100)]))
        assert texts(store, "user-2/b") == ["summary " * 100]
    assert stored_texts(schema, "user-2/b")[0].startswith("aof:gz:")
    assert stored_texts(schema, "user-1/a") == []


def test_migration_hook_upgrades_an_existing_table(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_store(schema) as store:
        store.add_message("k", msg(f"written by version {SCHEMA_VERSION}"))
    newer = SCHEMA_VERSION + 1
    monkeypatch.setattr(postgres_module, "SCHEMA_VERSION", newer)
    monkeypatch.setattr(
        postgres_module,
        "MIGRATIONS",
        {
            **sql_ops.MIGRATIONS,
            newer: ("ALTER TABLE {table} ADD COLUMN expires_at DOUBLE PRECISION",),
        },
    )
    with make_store(schema) as store:
        assert texts(store, "k") == [f"written by version {SCHEMA_VERSION}"]
        store.add_message("k", msg(f"written by version {newer}"))
    assert query(f'SELECT version FROM "{schema}".aof_schema_versions') == [(newer,)]
    columns = query(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        schema,
        TABLE,
    )
    assert [c for (c,) in columns] == [
        "id",
        "key",
        "position",
        "message",
        "created_at",
        "append_id",
        "expires_at",
    ]


@pytest.fixture
def icu_database(postgres: None) -> Iterator[str]:
    """A database of this test's own whose collation is ICU's English (not code points)."""
    name = f"aof_test_icu_{uuid.uuid4().hex[:12]}"
    query(
        f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"
        " LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
    )
    yield name
    query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_key_listing_is_an_index_range_in_code_point_order(schema: str, icu_database: str) -> None:
    keys = ["a", "B", "b", "é", "e", "f", "z", "ä/1", "ä/2", "a b", "a-b", "ab", "aB"]
    with psycopg.connect(**(ADMIN | {"dbname": icu_database})) as conn:
        english = [k for (k,) in conn.execute("SELECT unnest(%s::text[]) ORDER BY 1", (keys,))]
    assert english != sorted(keys)  # this database does not sort by code point
    with make_store(schema, database=icu_database) as store:
        for key in keys:
            store.add_message(key, msg(key))
        assert store.get_keys() == sorted(keys)
        for prefix in ["a", "B", "e", "ä/"]:
            assert store.get_keys(prefix) == sorted(k for k in keys if k.startswith(prefix))
        sql = store._sql
    statement = sql.keys_between.replace("%s", "{}").format("'ä/'", "'ä0'", "0")
    with psycopg.connect(**(ADMIN | {"dbname": icu_database})) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table: show that an index can serve
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {statement}"))
    assert "_written_idx" in plan and "Index Cond" in plan, plan


def test_role_without_create_privilege_uses_a_prepared_schema(schema: str) -> None:
    role = f"aof_test_role_{uuid.uuid4().hex[:8]}"
    with make_store(schema) as owner:
        owner.add_message("k", msg("prepared"))
    query(f'CREATE ROLE "{role}" LOGIN')
    try:
        # No CREATE anywhere: the store must not try to create what exists.
        query(f'REVOKE CREATE ON SCHEMA public FROM "{role}"')
        query(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        query(f'GRANT SELECT, INSERT, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        with make_store(schema, user=role) as store:
            store.add_message("k", msg("by the role"))
            assert texts(store, "k") == ["prepared", "by the role"]
        # A schema that does not exist yet, which the role may not create: a clear error.
        with pytest.raises(BackendUnavailableError) as error:
            make_store(f"{schema}_new", user=role).get_keys()
        assert "permission denied" in str(error.value)
        assert f"Grant the role CREATE on database postgres (to create schema {schema}_new)" in (
            str(error.value)
        )
    finally:
        query(f'DROP OWNED BY "{role}"')
        query(f'DROP ROLE "{role}"')


# --------------------------------------------------------------------------------------------
# Errors: bounded, and naming the server, the schema and the fix.


def test_unreachable_port_raises_backend_unavailable(schema: str) -> None:
    port = free_port()  # bound and closed again: nothing listens there
    store = make_store(schema, port=port, pool_timeout_s=2)
    with pytest.raises(BackendUnavailableError) as sync_error:
        store.add_message("k", msg("a"))
    with pytest.raises(BackendUnavailableError) as async_error:
        asyncio.run(store.aget_messages("k"))
    for error in (sync_error, async_error):
        text = str(error.value)
        assert f"{HOST}:{port}/postgres" in text
        assert repr(schema) in text
        assert "Connection refused" in text
        assert "spec.backend.postgresql.host and port" in text


def test_ssl_required_against_a_server_without_tls(schema: str) -> None:
    store = make_store(schema, sslmode="require", pool_timeout_s=5)
    with pytest.raises(BackendUnavailableError) as sync_error:
        store.get_keys()
    with pytest.raises(BackendUnavailableError) as async_error:
        asyncio.run(store.aget_keys())
    for error in (sync_error, async_error):
        text = str(error.value)
        assert f"{HOST}:{PORT}/postgres" in text
        assert "server does not support SSL" in text
        assert "set spec.backend.postgresql.sslMode: disable for a server without TLS" in text
    assert not schema_exists(schema)


def test_missing_database_and_unknown_role(schema: str) -> None:
    with pytest.raises(BackendUnavailableError) as db_error:
        make_store(schema, database="aof_no_such_database").get_keys()
    assert f"{HOST}:{PORT}/aof_no_such_database" in str(db_error.value)
    assert "CREATE DATABASE aof_no_such_database" in str(db_error.value)
    with pytest.raises(BackendUnavailableError) as role_error:
        asyncio.run(make_store(schema, user="aof_no_such_role").aget_keys())
    assert 'role "aof_no_such_role" does not exist' in str(role_error.value)
    assert "passwordSecretRef" in str(role_error.value)


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    postgres_module._backend_errors.cache_clear()
    monkeypatch.setitem(sys.modules, "psycopg", None)
    try:
        with pytest.raises(BackendUnavailableError, match=r"aof-index\[postgres\]"):
            make_store("public").get_keys()
        with pytest.raises(BackendUnavailableError, match=r"aof-index\[postgres\]"):
            asyncio.run(make_store("public").aget_keys())
    finally:
        postgres_module._backend_errors.cache_clear()


def test_package_imports_without_psycopg() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None
        sys.modules["psycopg_pool"] = None
        from aof_index.memory import PostgresChatStore
        print(PostgresChatStore(host="db").class_name())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "AofPostgresChatStore"


# --------------------------------------------------------------------------------------------
# Locking: writers of one key take turns, bounded by pool_timeout_s.


def test_writer_waits_for_its_key_only_and_gives_up_in_time(schema: str) -> None:
    store = make_store(schema, pool_timeout_s=1)
    store.set_messages("k", [msg("a")])
    holder = holding_key_lock(schema, "k")
    try:
        with pytest.raises(BackendUnavailableError) as error:
            store.add_message("k", msg("blocked"))
        assert "pool_timeout_s=1" in str(error.value)
        assert "lock" in str(error.value)
        store.add_message("other", msg("not blocked"))  # another key: no wait
        assert texts(store, "k") == ["a"]  # reads take no lock
    finally:
        holder.rollback()
        holder.close()
    store.add_message("k", msg("after"))
    assert texts(store, "k") == ["a", "after"]
    assert texts(store, "other") == ["not blocked"]
    store.close()


def test_cancelled_async_call_leaves_nothing_behind(schema: str) -> None:
    store = make_store(schema)
    store.get_keys()
    holder = holding_key_lock(schema, "k")

    async def main() -> list[str | None]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.async_add_message("k", msg("cancelled")), 0.3)
        holder.rollback()
        await store.async_add_message("k", msg("after"))
        return [m.content for m in await store.aget_messages("k")]

    try:
        assert asyncio.run(main()) == ["after"]
    finally:
        holder.close()
    assert texts(store, "k") == ["after"]
    store.close()


# --------------------------------------------------------------------------------------------
# Concurrency and pools.


def test_500_concurrent_async_appends_through_5_connections(schema: str) -> None:
    store = make_store(schema, max_connections=5)
    tasks, per_task = 100, 5

    async def writer(t: int) -> None:
        for i in range(per_task):
            await store.async_add_message("k", msg(f"{t}:{i}"))

    async def main() -> dict[str, int]:
        await asyncio.gather(*(writer(t) for t in range(tasks)))
        entry = store._apools[asyncio.get_running_loop()]
        assert entry.pool is not None
        stats = entry.pool.get_stats()
        await store.aclose()
        return stats

    stats = asyncio.run(main())
    assert stats["pool_max"] == 5
    assert stats["connections_num"] <= 5  # never more than five connections opened
    assert stats.get("requests_queued", 0) > 0  # and the tasks did queue for them
    got = [str(t) for t in texts(store, "k")]
    assert len(got) == tasks * per_task
    assert sorted(got) == sorted(f"{t}:{i}" for t in range(tasks) for i in range(per_task))
    for t in range(tasks):
        assert [x for x in got if x.split(":")[0] == str(t)] == [
            f"{t}:{i}" for i in range(per_task)
        ]
    store.close()


def test_connections_dropped_by_the_server_cost_no_failed_call(schema: str) -> None:
    # What a server restart, a failover or an idle timeout does to pooled connections.
    store = make_store(schema, max_connections=3)

    def drop_store_connections() -> int:
        rows = query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            f"aof-index {schema}.{TABLE}",
        )
        return len(rows)

    async def main() -> list[str | None]:
        await store.async_add_message("k", msg("async before"))
        assert drop_store_connections() >= 1
        await store.async_add_message("k", msg("async after"))
        messages = await store.aget_messages("k")
        await store.aclose()
        return [m.content for m in messages]

    store.add_message("k", msg("sync before"))
    assert drop_store_connections() >= 1
    store.add_message("k", msg("sync after"))
    assert asyncio.run(main()) == ["sync before", "sync after", "async before", "async after"]
    store.close()


def test_every_pooled_connection_dropped_at_once_costs_no_failed_call(schema: str) -> None:
    # Connections are not checked as they leave the pool: the first call to meet a dead
    # one checks the idle ones and runs once more, so one retry is enough for all of them.
    store = make_store(schema, max_connections=4)
    store.add_message("k", msg("before"))
    pg_pool = store._sync_pool()
    with contextlib.ExitStack() as held:  # open all four, then give them back
        for _ in range(4):
            held.enter_context(pg_pool.connection())
    assert pg_pool.get_stats()["pool_available"] == 4
    query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        f"aof-index {schema}.{TABLE}",
    )
    store.add_message("k", msg("after"))  # a write: nothing was sent before the drop
    assert texts(store, "k") == ["before", "after"]  # once each
    query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        f"aof-index {schema}.{TABLE}",
    )
    assert texts(store, "k") == ["before", "after"]  # a read
    store.close()


def test_version_3_table_gets_append_ids(schema: str) -> None:
    with make_store(schema) as store:
        store.add_message("k", msg("before"))
    query(f'ALTER TABLE "{schema}"."{TABLE}" DROP COLUMN append_id')  # its index goes too
    query(f'UPDATE "{schema}".aof_schema_versions SET version = 3')
    with make_store(schema) as store:
        store.add_message("k", msg("after"))
        assert texts(store, "k") == ["before", "after"]
    assert query(f'SELECT version FROM "{schema}".aof_schema_versions') == [(SCHEMA_VERSION,)]
    assert any("UNIQUE INDEX" in d and "(append_id)" in d for d in index_definitions(schema))
    ids = query(f'SELECT append_id FROM "{schema}"."{TABLE}" ORDER BY position')
    assert ids[0] == (None,) and ids[1][0]  # written before version 4: no id


def lose_the_reply_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the next write commit, then fail as if the connection dropped before its answer
    came back (sync and async drivers alike); returns a log of the attempts."""
    attempts: list[str] = []
    real, areal = postgres_module._drive_write, postgres_module._adrive_write

    lost = "server closed the connection unexpectedly"

    def drive(conn: Any, sql: Any, op: Any, progress: Any) -> Any:
        result = real(conn, sql, op, progress)
        attempts.append("committed")
        if len(attempts) == 1:
            conn.close()
            raise psycopg.OperationalError(lost)
        return result

    async def adrive(conn: Any, sql: Any, op: Any, progress: Any) -> Any:
        result = await areal(conn, sql, op, progress)
        attempts.append("committed")
        if len(attempts) == 1:
            await conn.close()
            raise psycopg.OperationalError(lost)
        return result

    monkeypatch.setattr(postgres_module, "_drive_write", drive)
    monkeypatch.setattr(postgres_module, "_adrive_write", adrive)
    return attempts


def test_append_whose_reply_was_lost_is_retried_without_a_duplicate(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(schema, max_connections=2)
    store.add_message("k", msg("first"))
    attempts = lose_the_reply_once(monkeypatch)
    store.add_message("k", msg("second"))  # committed, reply lost, run again: no second copy
    assert attempts == ["committed", "committed"]
    assert stored_texts(schema, "k") == [msg(t).model_dump_json() for t in ("first", "second")]

    async def main() -> list[str | None]:
        attempts.clear()
        await store.async_add_message("k", msg("third"))
        assert attempts == ["committed", "committed"]
        messages = await store.aget_messages("k")
        await store.aclose()
        return [m.content for m in messages]

    assert asyncio.run(main()) == ["first", "second", "third"]
    store.close()


def test_other_write_whose_reply_was_lost_is_not_retried(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not idempotent: running it again could apply it twice, so the error goes to the caller.
    store = make_store(schema, max_connections=2)
    store.add_message("k", msg("first"))
    attempts = lose_the_reply_once(monkeypatch)
    with pytest.raises(BackendUnavailableError, match="server closed the connection"):
        store.add_message("k", msg("inserted"), idx=0)
    assert attempts == ["committed"]
    assert texts(store, "k") == ["inserted", "first"]  # it had committed
    store.close()


def test_round_trips_per_call(schema: str, tmp_path: Path) -> None:
    # A read is one statement in autocommit; an append sends BEGIN, the lock, the INSERT and
    # COMMIT together (it carries its id: safe to run again); another write sends COMMIT
    # after the answers to the rest; no connection check on checkout.
    store = make_store(schema, max_connections=1)
    store.add_message("k", msg("a"))
    (conn,) = store._sync_pool()._pool  # the one idle connection

    def round_trips(call: Callable[[], Any]) -> int:
        trace = tmp_path / "trace"
        with trace.open("w") as out:
            conn.pgconn.trace(out.fileno())
            try:
                call()
            finally:
                conn.pgconn.untrace()
        lines = [line.split("\t") for line in trace.read_text().splitlines()]
        return sum(1 for line in lines if len(line) > 3 and line[3] == "ReadyForQuery")

    assert round_trips(lambda: store.get_messages("k")) == 1
    assert round_trips(lambda: store.get_keys()) == 1
    assert round_trips(lambda: store.add_message("k", msg("b"))) == 1
    assert texts(store, "k") == ["a", "b"]
    assert round_trips(lambda: store.set_messages("k", [msg("c")])) == 2
    assert texts(store, "k") == ["c"]
    store.close()


def test_async_pool_per_loop_closes_with_its_loop(schema: str) -> None:
    store = make_store(schema)
    for i in range(3):  # each asyncio.run is a new loop; the store keeps working
        asyncio.run(store.async_add_message("k", msg(str(i))))
    assert texts(store, "k") == ["0", "1", "2"]
    # Only the last loop's pool is still known, and asyncio.run closed it on return.
    assert len(store._apools) == 1
    (entry,) = store._apools.values()
    assert entry.pool is not None and entry.pool.closed
    store.close()
    assert store._apools == {} and store._pool is None


def test_async_path_opens_no_sync_connection(schema: str) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async path opened a sync connection")

    for name in ASYNC_METHODS:  # its own coroutines, not BaseChatStore's sync fallbacks
        assert getattr(PostgresChatStore, name) is not getattr(BaseChatStore, name), name
    store = make_store(schema)

    async def main() -> tuple[Any, ...]:
        await store.aset_messages("k", [msg("a"), msg("b")])
        await store.async_add_message("k", msg("c"), idx=0)
        removed = await store.adelete_message("k", -1)
        keys = await store.aget_keys()
        got = [m.content for m in await store.aget_messages("k")]
        last = await store.adelete_last_message("k")
        await store.aclose()
        return getattr(removed, "content", None), keys, got, getattr(last, "content", None)

    with pytest.MonkeyPatch.context() as patch:  # undone before the schema is dropped
        patch.setattr(psycopg, "connect", refuse)
        patch.setattr(psycopg.Connection, "connect", classmethod(refuse))
        assert asyncio.run(main()) == ("b", ["k"], ["c", "a"], "a")
    assert store._pool is None  # the sync pool was never opened


def test_pickled_store_reopens_and_keeps_its_password_out_of_sight(schema: str) -> None:
    store = make_store(schema, password=SecretStr("trust-ignores-it"), table="t1")
    store.add_message("k", msg("a"))
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.db_schema, copy.table) == (schema, "t1")
    assert copy.password is not None and copy.password.get_secret_value() == "trust-ignores-it"
    assert texts(copy, "k") == ["a"]
    assert "trust-ignores-it" not in repr(copy)
    assert "password" not in copy.to_dict()
    store.close()
    copy.close()


def test_names_are_validated() -> None:
    with pytest.raises(ValueError, match="SQL identifier"):
        PostgresChatStore(db_schema='x"; DROP SCHEMA public; --')
    with pytest.raises(ValueError, match="SQL identifier"):
        PostgresChatStore(table="a b")
    with pytest.raises(ValueError):
        PostgresChatStore(max_connections=0)
