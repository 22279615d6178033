"""The Redis chat store against real servers: the shared one on 127.0.0.1:6379 (started here
when absent) for the contract, scale and TTL tests, and a private ``redis-server`` with a
password and TLS for authentication, TLS and pool-exhaustion tests.

Every test writes under its own key prefix (and cleans it up), so tests running at the same
time on the shared server never see each other's keys."""

from __future__ import annotations

import asyncio
import pickle
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from llama_index.core.llms import ChatMessage, MessageRole
from pydantic import SecretStr

from aof_index import build_memory
from aof_index.errors import BackendUnavailableError
from aof_index.memory import RedisChatStore
from aof_index.memory import redis as redis_module
from aof_index.memory.codec import DecodeError, MessageCodec
from aof_index.memory.edit import HeadEdit
from aof_index.memory.redis import EditConflictError
from aof_index.spec import Memory
from aof_index.testing import SharedChatStoreContract, store_factory

pytestmark = pytest.mark.integration

SHARED_PORT = 6379


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def texts(store: RedisChatStore, key: str) -> list[str | None]:
    return [m.content for m in store.get_messages(key)]


def index_key(prefix: str) -> bytes:
    return prefix.encode() + b"\xffindex"


def names_key(prefix: str) -> bytes:
    return prefix.encode() + b"\xffkeys"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def answers(**kwargs: Any) -> bool:
    try:
        return bool(redis.Redis(socket_connect_timeout=1, **kwargs).ping())
    except redis.RedisError:
        return False


def start_redis_server(workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(exe).exists():
        pytest.fail("redis-server not found: install Debian's redis-server package")
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [exe, "--save", "", "--appendonly", "no", "--dir", str(workdir), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# Servers and per-test prefixes.


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The shared server on 6379, or one started here when none answers."""
    if answers(port=SHARED_PORT):
        yield SHARED_PORT
        return
    port = free_port()
    proc = start_redis_server(
        tmp_path_factory.mktemp("redis"), "--bind", "127.0.0.1", "--port", str(port)
    )
    try:
        wait_for(lambda: answers(port=port), "redis-server to answer")
        yield port
    finally:
        stop(proc)


@pytest.fixture
def admin(redis_port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_port)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_port: int) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards, in every db used."""
    value = f"aof-test:{uuid.uuid4().hex}:"
    yield value
    for db in (0, 1, 2):
        client = redis.Redis(port=redis_port, db=db)
        keys = list(client.scan_iter(match=f"{value}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@dataclass(frozen=True)
class PrivateRedis:
    port: int
    tls_port: int
    password: str
    cert: Path

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A redis-server of this module: ``requirepass``, a plain port and a TLS port with a
    self-signed certificate for 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("private-redis")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    server = PrivateRedis(free_port(), free_port(), f"pw-{uuid.uuid4().hex}", cert)
    proc = start_redis_server(
        workdir,
        *("--bind", "127.0.0.1", "--port", str(server.port), "--tls-port", str(server.tls_port)),
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
        *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
        *("--requirepass", server.password),
    )
    try:
        wait_for(
            lambda: answers(port=server.port, password=server.password), "private redis-server"
        )
        yield server
    finally:
        stop(proc)


# --------------------------------------------------------------------------------------------
# The contract.


class TestRedisContract(SharedChatStoreContract):
    db = 0
    settings: dict[str, Any] = {}  # noqa: RUF012

    @pytest.fixture
    def make_store(self, redis_port: int, prefix: str) -> Iterator[Callable[..., RedisChatStore]]:
        url = f"redis://127.0.0.1:{redis_port}/{self.db}"
        yield from store_factory(
            lambda **options: RedisChatStore(url=url, prefix=prefix, **(self.settings | options))
        )

    @pytest.fixture
    def store(self, make_store: Callable[..., RedisChatStore]) -> RedisChatStore:
        return make_store()

    @pytest.fixture
    def stored_texts(
        self, redis_port: int, prefix: str
    ) -> Iterator[Callable[[Any, str], list[str]]]:
        client = redis.Redis(port=redis_port, db=self.db)
        yield lambda store, key: [raw.decode() for raw in client.lrange(f"{prefix}{key}", 0, -1)]
        client.close()


class TestRedisContractWithTTLAndSmallPool(TestRedisContract):
    """The TTL bookkeeping and a two-connection pool change nothing the contract sees."""

    db = 1
    settings = {"ttl": 3600, "pool_size": 2}  # noqa: RUF012


@pytest.fixture
def store(redis_port: int, prefix: str) -> Iterator[RedisChatStore]:
    store = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix)
    yield store
    store.close()


# --------------------------------------------------------------------------------------------
# Layout and the key index.


def test_layout_is_one_list_per_conversation_and_a_sorted_set_index(
    store: RedisChatStore, admin: redis.Redis, prefix: str
) -> None:
    messages = [msg("a"), msg("b", MessageRole.ASSISTANT)]
    store.set_messages("session-1", messages)
    assert admin.type(f"{prefix}session-1") == b"list"
    assert admin.lrange(f"{prefix}session-1", 0, -1) == [
        m.model_dump_json().encode() for m in messages
    ]
    assert admin.zrange(index_key(prefix), 0, -1, withscores=True) == [(b"session-1", float("inf"))]
    assert admin.zrange(names_key(prefix), 0, -1, withscores=True) == [(b"session-1", 0.0)]
    assert admin.pttl(f"{prefix}session-1") == -1  # no TTL configured: kept
    assert admin.pttl(index_key(prefix)) == -1
    assert admin.pttl(names_key(prefix)) == -1


def test_messages_are_stored_as_the_codec_encodes_them(
    redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    codec = MessageCodec("zstd", threshold=0)
    store = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, codec=codec)
    messages = [msg("short"), msg("a long line of kubectl output " * 40)]
    store.set_messages("k", messages)
    assert admin.lrange(f"{prefix}k", 0, -1) == [codec.encode(m).encode() for m in messages]
    assert admin.lindex(f"{prefix}k", 1).startswith(b"aof:zs:")  # type: ignore[union-attr]
    store.close()


def test_get_keys_reads_the_index_not_the_keyspace(
    redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    """10,000 keys the store did not write, some under its own prefix, are never listed, and
    the store works for an ACL user that may not run KEYS or SCAN at all: so get_keys uses
    neither (a global INFO commandstats counter would also count other clients' calls)."""
    other = f"aof-test-other:{uuid.uuid4().hex}:"
    user, password = f"aof-test-{uuid.uuid4().hex}", uuid.uuid4().hex
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        commands=["+@all", "-keys", "-scan"],
    )
    try:
        for start in range(0, 10_000, 1000):
            admin.mset({f"{other}{i}": "x" for i in range(start, start + 1000)})
        admin.set(f"{prefix}stray-string", "x")
        admin.rpush(f"{prefix}stray-list", "not written by the store")
        restricted = redis.Redis(port=redis_port, username=user, password=password)
        with pytest.raises(redis.exceptions.NoPermissionError):
            restricted.keys("*")
        with pytest.raises(redis.exceptions.NoPermissionError):
            restricted.scan(0)
        restricted.close()

        store = RedisChatStore(
            url=f"redis://{user}@127.0.0.1:{redis_port}", password=password, prefix=prefix
        )
        for key in ["user-2", "user-1", "fleet/ops"]:
            store.add_message(key, msg("hi"))
        assert store.get_keys() == ["fleet/ops", "user-1", "user-2"]
        assert asyncio.run(store.aget_keys()) == ["fleet/ops", "user-1", "user-2"]
        store.delete_messages("user-2")
        assert store.get_keys() == ["fleet/ops", "user-1"]
        store.close()
    finally:
        admin.acl_deluser(user)
        for start in range(0, 10_000, 1000):
            admin.delete(*(f"{other}{i}" for i in range(start, start + 1000)))


def test_index_entry_of_a_vanished_list_is_dropped(
    store: RedisChatStore, admin: redis.Redis, prefix: str
) -> None:
    store.set_messages("evicted", [msg("a")])
    store.set_messages("kept", [msg("b")])
    admin.delete(f"{prefix}evicted")  # as eviction or a person with redis-cli would
    assert store.get_keys() == ["kept"]
    assert admin.zscore(index_key(prefix), "evicted") is None
    assert admin.zscore(names_key(prefix), "evicted") is None


def test_prefix_listing_reads_only_the_prefix_range(
    store: RedisChatStore, admin: redis.Redis, prefix: str
) -> None:
    for key in ["a/1", "a/2", "b/1", "a", "ab"]:
        store.add_message(key, msg(key))
    admin.delete(f"{prefix}b/1")  # vanished: the listing that visits it drops its entries
    assert store.get_keys("a/") == ["a/1", "a/2"]
    assert asyncio.run(store.aget_keys("a")) == ["a", "a/1", "a/2", "ab"]
    assert admin.zscore(names_key(prefix), "b/1") == 0  # never visited
    assert store.get_keys() == ["a", "a/1", "a/2", "ab"]
    assert admin.zscore(names_key(prefix), "b/1") is None


def test_key_index_is_rebuilt_for_data_written_before_it(
    redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    store = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, ttl=600)
    for key in ["user-1/a", "user-1/b", "user-2/a"]:
        store.add_message(key, msg(key))
    admin.delete(names_key(prefix))  # as an older aof-index left the data
    store.add_message("user-3/a", msg("written since"))  # the key index: one member only
    assert store.get_keys("user-1/") == ["user-1/a", "user-1/b"]
    assert admin.zcard(names_key(prefix)) == 4
    assert admin.pexpiretime(names_key(prefix)) == admin.pexpiretime(index_key(prefix))  # type: ignore[arg-type]
    store.close()


def test_expired_entries_leave_both_indexes_when_purged(
    redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    store = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, ttl=60)
    short = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, ttl=0.3)
    store.add_message("kept", msg("a"))
    short.add_message("gone-1", msg("b"))
    asyncio.run(short.async_add_message("gone-2", msg("c")))
    time.sleep(0.5)
    assert admin.zcard(index_key(prefix)) == admin.zcard(names_key(prefix)) == 3
    assert store.purge_expired() == 2
    assert admin.zrange(index_key(prefix), 0, -1) == admin.zrange(names_key(prefix), 0, -1)
    assert admin.zrange(names_key(prefix), 0, -1) == [b"kept"]
    assert asyncio.run(store.apurge_expired()) == 0
    store.close()
    short.close()


def test_expired_entries_leave_the_indexes_when_a_conversation_enters_them(
    redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    store = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, ttl=60)
    short = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, ttl=0.3)
    store.add_message("kept", msg("a"))
    short.add_message("gone", msg("b"))
    time.sleep(0.5)
    store.add_message("kept", msg("c"))  # already indexed: no pruning on this write
    assert admin.zcard(index_key(prefix)) == admin.zcard(names_key(prefix)) == 2
    asyncio.run(store.async_add_message("new", msg("d")))  # enters the indexes: prunes
    assert admin.zrange(index_key(prefix), 0, -1) == [b"kept", b"new"]
    assert admin.zrange(names_key(prefix), 0, -1) == [b"kept", b"new"]
    assert store.get_keys() == ["kept", "new"]
    assert admin.pexpiretime(index_key(prefix)) == admin.zscore(index_key(prefix), "new")  # type: ignore[arg-type]
    store.close()
    short.close()


def test_unreadable_elements_raise_the_codecs_error(
    store: RedisChatStore, admin: redis.Redis, prefix: str
) -> None:
    store.add_message("k", msg("a"))
    admin.rpush(f"{prefix}k", "not a chat message")
    with pytest.raises(DecodeError, match="not a valid chat message"):
        store.get_messages("k")
    admin.rpush(f"{prefix}tagged", "aof:zz:AAAA")
    with pytest.raises(DecodeError, match="unknown format tag"):
        asyncio.run(store.aget_messages("tagged"))


def test_edit_head_redoes_its_plan_when_the_head_changed(
    store: RedisChatStore, admin: redis.Redis, prefix: str
) -> None:
    store.set_messages("k", [msg("a"), msg("b"), msg("c")])
    seen: list[list[str | None]] = []

    def plan(messages: list[ChatMessage]) -> HeadEdit:
        seen.append([m.content for m in messages])
        if len(seen) == 1:  # another writer drops the head between this read and the edit
            admin.lpop(f"{prefix}k")
        return HeadEdit(1, [msg("summary")])

    removed = store.edit_head("k", plan, archive_key="archive")
    assert seen == [["a", "b", "c"], ["b", "c"]]
    assert [m.content for m in removed] == ["b"]
    assert texts(store, "k") == ["summary", "c"]
    assert texts(store, "archive") == ["b"]


def test_edit_head_gives_up_when_the_head_keeps_changing(
    store: RedisChatStore, admin: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "_EDIT_ATTEMPTS", 5)
    store.set_messages("k", [msg("a"), msg("b")])
    calls = 0

    def plan(messages: list[ChatMessage]) -> HeadEdit:
        nonlocal calls
        calls += 1
        admin.lset(f"{prefix}k", 0, msg(f"changed {calls}").model_dump_json())
        return HeadEdit(1)

    with pytest.raises(EditConflictError, match="'k' changed under each of 5 attempts"):
        store.edit_head("k", plan, archive_key="archive")
    with pytest.raises(EditConflictError):
        asyncio.run(store.aedit_head("k", plan))
    assert calls == 10
    assert texts(store, "k") == ["changed 10", "b"]
    assert store.get_keys() == ["k"]  # nothing archived


def test_a_foreign_key_under_the_prefix_is_reported(
    store: RedisChatStore, admin: redis.Redis, prefix: str
) -> None:
    admin.set(f"{prefix}taken", "a string another application wrote")
    with pytest.raises(BackendUnavailableError) as info:
        store.add_message("taken", msg("hi"))
    text = str(info.value)
    assert "WRONGTYPE" in text and "rejected" in text and repr(prefix) in text
    assert admin.get(f"{prefix}taken") == b"a string another application wrote"
    assert store.get_keys() == []


def test_keys_that_look_like_the_index_stay_apart(
    store: RedisChatStore, admin: redis.Redis
) -> None:
    # The index is the prefix, byte 0xFF and "index"; a str key encodes to UTF-8, which never
    # holds that byte, so even keys made to look like it are conversations of their own.
    keys = ["", "index", "keys", "\xffindex", "\xffkeys", "\uffffindex"]
    for key in keys:
        store.add_message(key, msg(f"in {key!r}"))
    assert store.get_keys() == sorted(keys)
    assert admin.type(index_key(store.prefix)) == b"zset"
    assert texts(store, "\xffindex") == ["in 'ÿindex'"]
    store.delete_messages("index")
    store.delete_messages("")
    assert store.get_keys() == sorted(["keys", "\xffindex", "\xffkeys", "\uffffindex"])
    assert admin.type(names_key(store.prefix)) == b"zset"


# --------------------------------------------------------------------------------------------
# TTL.


def test_conversation_and_index_entry_expire_after_ttl(
    redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    store = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, ttl=1)
    store.set_messages("short", [msg("a"), msg("b")])
    list_key = f"{prefix}short"
    assert 0 < admin.pttl(list_key) <= 1000
    expiry = admin.pexpiretime(list_key)
    assert admin.zscore(index_key(prefix), "short") == expiry
    index_expiry = admin.pexpiretime(index_key(prefix))  # type: ignore[arg-type]
    assert index_expiry == expiry  # the indexes go with their last entry
    assert admin.pexpiretime(names_key(prefix)) == expiry  # type: ignore[arg-type]

    wait_for(lambda: admin.exists(list_key) == 0, "the conversation to expire", timeout=20)
    assert admin.exists(index_key(prefix)) == admin.exists(names_key(prefix)) == 0
    assert store.get_keys() == []
    assert store.get_messages("short") == []
    assert store.delete_last_message("short") is None
    store.close()


def test_every_write_refreshes_the_ttl(
    store: RedisChatStore, redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    timed = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, ttl=600)
    list_key = f"{prefix}k"

    def age() -> None:  # as if most of the TTL had passed since the last write
        admin.pexpire(list_key, 2000)
        admin.zadd(index_key(prefix), {"k": time.time() * 1000 + 2000})

    def assert_fresh() -> None:
        assert admin.pttl(list_key) > 500_000
        assert admin.zscore(index_key(prefix), "k") == admin.pexpiretime(list_key)

    timed.set_messages("k", [msg("a"), msg("b"), msg("c")])
    assert_fresh()
    writes = [
        lambda: timed.add_message("k", msg("d")),
        lambda: timed.add_message("k", msg("e"), idx=1),
        lambda: timed.delete_message("k", 1),
        lambda: timed.delete_last_message("k"),
        lambda: asyncio.run(timed.async_add_message("k", msg("f"))),
        lambda: timed.edit_head("k", lambda ms: HeadEdit(1, [msg("summary")])),
        lambda: timed.edit_head("k", lambda ms: HeadEdit(1)),
    ]
    for write in writes:
        age()
        write()
        assert_fresh()
    # Reads do not refresh.
    age()
    timed.get_messages("k")
    timed.get_keys()
    assert admin.pttl(list_key) <= 2000
    # A store without TTL makes the conversation (and the index) permanent again.
    store.add_message("k", msg("g"))
    assert admin.pttl(list_key) == -1
    assert admin.zscore(index_key(prefix), "k") == float("inf")
    assert admin.pttl(index_key(prefix)) == -1
    timed.close()


# --------------------------------------------------------------------------------------------
# Concurrency and the pool.


def test_2000_concurrent_async_appends_over_5_connections(
    redis_port: int, admin: redis.Redis, prefix: str
) -> None:
    name = f"aof-test-{uuid.uuid4().hex[:12]}"
    # The last of 2,000 queued callers waits for the other calls ahead of it: allow a slow,
    # busy machine plenty (the default is 10 s).
    store = RedisChatStore(
        url=f"redis://127.0.0.1:{redis_port}",
        prefix=prefix,
        pool_size=5,
        pool_timeout=120,
        client_name=name,
    )
    tasks, per_task = 2000, 2
    seen: list[int] = []

    def connections() -> int:
        return sum(1 for c in admin.client_list() if c.get("name") == name)

    async def writer(t: int) -> None:
        for i in range(per_task):
            await store.async_add_message("k", msg(f"{t}:{i}"))

    async def main() -> None:
        async def watch() -> None:
            while True:
                seen.append(await asyncio.to_thread(connections))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(writer(t) for t in range(tasks)))
        seen.append(await asyncio.to_thread(connections))
        watcher.cancel()

    asyncio.run(main())
    # asyncio.run shut the loop down, and the store's pool for that loop with it.
    wait_for(lambda: connections() == 0, "the loop's connections to close")
    got = [str(text) for text in texts(store, "k")]
    assert len(got) == tasks * per_task
    assert sorted(got) == sorted(f"{t}:{i}" for t in range(tasks) for i in range(per_task))
    position = {text: n for n, text in enumerate(got)}
    assert all(position[f"{t}:0"] < position[f"{t}:1"] for t in range(tasks))
    assert 1 <= max(seen) <= 5
    store.close()


def test_pool_exhaustion_waits_then_names_the_pool(redis_port: int, prefix: str) -> None:
    """With every pooled connection taken, a call waits pool_timeout, then says so."""
    store = RedisChatStore(
        url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, pool_size=1, pool_timeout=0.3
    )
    store.add_message("k", msg("warm"))
    assert store._client is not None
    pool = store._client.connection_pool
    taken = pool.get_connection()  # the only connection, held as a busy caller would
    try:
        with pytest.raises(BackendUnavailableError) as info:
            store.get_messages("k")
    finally:
        pool.release(taken)
    text = str(info.value)
    assert "no pooled connection became free" in text and "poolSize" in text
    assert f"127.0.0.1:{redis_port}" in text and "attempts" not in text
    assert texts(store, "k") == ["warm"]  # once released, the connection serves again

    async def exhausted_async() -> str:
        assert await store.aget_messages("k") == store.get_messages("k")
        (entry,) = store._aclients.values()
        async_pool = entry.client.connection_pool
        held = await async_pool.get_connection()
        try:
            with pytest.raises(BackendUnavailableError) as info:
                await store.async_add_message("k", msg("never"))
        finally:
            await async_pool.release(held)
        return str(info.value)

    assert "no pooled connection became free" in asyncio.run(exhausted_async())
    assert texts(store, "k") == ["warm"]
    store.close()


def test_sync_and_async_connections_close(redis_port: int, admin: redis.Redis, prefix: str) -> None:
    name = f"aof-test-{uuid.uuid4().hex[:12]}"
    store = RedisChatStore(url=f"redis://127.0.0.1:{redis_port}", prefix=prefix, client_name=name)

    def connections() -> int:
        return sum(1 for c in admin.client_list() if c.get("name") == name)

    store.add_message("k", msg("sync"))

    async def inside_one_loop() -> int:
        await store.async_add_message("k", msg("async"))
        open_now = connections()
        await store.aclose()
        return open_now

    assert asyncio.run(inside_one_loop()) == 2  # one sync, one async connection
    wait_for(lambda: connections() == 0, "aclose to close both")
    assert texts(store, "k") == ["sync", "async"]  # reconnects after close
    store.close()
    wait_for(lambda: connections() == 0, "close to close the sync one")


# --------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.timeout(60)
def test_unreachable_port_raises_backend_unavailable_naming_the_address() -> None:
    port = free_port()
    store = RedisChatStore(url=f"redis://127.0.0.1:{port}", password="not-shown", retries=2)
    with pytest.raises(BackendUnavailableError) as info:
        store.get_messages("k")
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text
    assert "cannot connect" in text and "3 attempts" in text and "spec.backend.redis.url" in text
    assert "not-shown" not in text
    with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{port}"):
        asyncio.run(store.aget_keys())
    store.close()


def test_password_is_secret_and_survives_pickling(private_redis: PrivateRedis) -> None:
    secret = private_redis.password
    store = RedisChatStore(url=f"redis://:{secret}@127.0.0.1:{private_redis.port}/2")
    assert store.url == f"redis://127.0.0.1:{private_redis.port}/2"
    assert isinstance(store.password, SecretStr)
    assert store.password.get_secret_value() == secret
    assert secret not in repr(store) and secret not in str(store)
    assert secret not in store.to_json() and "password" not in store.to_dict()
    store.set_messages("k", [msg("a")])
    copy = pickle.loads(pickle.dumps(store))  # with live clients: they stay behind
    assert texts(copy, "k") == ["a"]
    admin = private_redis.admin()
    assert admin.exists(f"{store.prefix}k") == 0  # db 0: it went to db 2
    admin.close()
    assert store.delete_messages("k") is not None
    copy.close()
    store.close()


def test_wrong_or_missing_password_is_backend_unavailable(private_redis: PrivateRedis) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}"
    wrong = RedisChatStore(url=url, password="wrong-secret")
    with pytest.raises(BackendUnavailableError) as info:
        wrong.get_keys()
    text = str(info.value)
    assert "authentication failed" in text and f"127.0.0.1:{private_redis.port}" in text
    assert "wrong-secret" not in text and "attempts" not in text  # not retried
    missing = RedisChatStore(url=url)
    with pytest.raises(BackendUnavailableError, match="authentication failed"):
        asyncio.run(missing.aget_messages("k"))
    wrong.close()
    missing.close()


def test_tls(private_redis: PrivateRedis) -> None:
    host = f"127.0.0.1:{private_redis.tls_port}"
    secret = private_redis.password
    untrusted = RedisChatStore(url=f"rediss://{host}", password=secret, retries=0)
    with pytest.raises(BackendUnavailableError, match="certificate verify failed"):
        untrusted.get_keys()
    for store in [
        RedisChatStore(url=f"rediss://{host}", password=secret, tls_insecure_skip_verify=True),
        RedisChatStore(
            url=f"redis://{host}", password=secret, tls=True, tls_ca_certs=str(private_redis.cert)
        ),
    ]:
        store.set_messages("tls", [msg("over TLS")])
        assert texts(store, "tls") == ["over TLS"]
        assert asyncio.run(store.adelete_messages("tls")) is not None
        store.close()
    plain = RedisChatStore(url=f"redis://{host}", password=secret, retries=0)
    with pytest.raises(BackendUnavailableError, match="TLS"):
        plain.get_keys()  # the message suggests TLS when the server speaks it
    untrusted.close()
    plain.close()


def test_script_flushed_on_the_server_is_loaded_again(private_redis: PrivateRedis) -> None:
    store = RedisChatStore(
        url=f"redis://127.0.0.1:{private_redis.port}", password=private_redis.password
    )
    store.add_message("k", msg("a"))
    admin = private_redis.admin()
    admin.script_flush()
    store.add_message("k", msg("b"))
    assert texts(store, "k") == ["a", "b"]
    assert store.delete_messages("k") is not None
    admin.close()
    store.close()


def test_constructor_checks_the_url_without_connecting() -> None:
    with pytest.raises(ValueError, match="redis://, rediss:// or unix://"):
        RedisChatStore(url="http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="unix"):
        RedisChatStore(url="unix:///tmp/redis.sock", tls=True)
    RedisChatStore(url="redis://no-such-host.invalid:6379")  # no I/O until the first call


def test_without_the_redis_extra_the_error_names_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # as if the redis extra were not installed
        from aof_index.errors import BackendUnavailableError
        from aof_index.memory import RedisChatStore
        store = RedisChatStore()
        try:
            store.get_keys()
        except BackendUnavailableError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "pip install 'aof-index[redis]'" in out.stdout


# --------------------------------------------------------------------------------------------
# Building from a Memory manifest.


def memory(spec: dict[str, Any], name: str = "ops") -> Memory:
    return Memory.model_validate(
        {
            "apiVersion": "aof.agenticops.org/v1alpha1",
            "kind": "Memory",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": spec,
        }
    )


def test_build_from_manifest(
    redis_port: int, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """secretRef resolves from AOF_SECRET_<NAME>_<KEY>.  This shared server has no password,
    and redis-py 8 authenticates with HELLO 3 AUTH: Redis accepts any password for a
    ``nopass`` user there, so the password-less server takes the connection (only the legacy
    AUTH command would refuse it); the private server below checks real passwords."""
    monkeypatch.setenv("AOF_SECRET_REDIS_CREDS_PASSWORD", "s3cret-value")
    name = f"m{uuid.uuid4().hex[:10]}"
    resource = memory(
        {
            "backend": {
                "type": "Redis",
                "redis": {
                    "url": f"redis://127.0.0.1:{redis_port}/0",
                    "db": 2,
                    "poolSize": 3,
                    "secretRef": {"name": "redis-creds", "key": "password"},
                },
            },
            "conversational": {"ttl": "24h"},
        },
        name=name,
    )
    store = build_memory(resource).chat_store
    assert isinstance(store, RedisChatStore)
    assert store.password is not None and store.password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(store)
    assert (store.db, store.pool_size, store.ttl) == (2, 3, 24 * 3600)
    assert store.prefix == f"aof:team-a:{name}:chat:"
    try:
        store.add_message("session", msg("hello"))
        assert texts(store, "session") == ["hello"]
        in_db2 = redis.Redis(port=redis_port, db=2)
        assert in_db2.llen(f"{store.prefix}session") == 1
        assert 0 < in_db2.pttl(f"{store.prefix}session") <= 24 * 3600 * 1000
        assert admin.exists(f"{store.prefix}session") == 0  # not in db 0
        in_db2.close()
    finally:
        store.delete_messages("session")
        store.close()


def test_build_ttl_and_db_defaults(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/1"
    cases = [
        ({"url": url}, None, 7 * 24 * 3600),  # conversational.ttl's default, 7d
        ({"url": url, "ttl": "30m"}, {"ttl": "24h"}, 1800),  # backend.redis.ttl wins
        ({"url": url}, {"ttl": "90s"}, 90),
        ({"url": url, "ttl": "0s"}, None, None),  # 0s: kept forever
    ]
    for redis_spec, conversational, ttl in cases:
        spec: dict[str, Any] = {"backend": {"type": "Redis", "redis": redis_spec}}
        if conversational is not None:
            spec["conversational"] = conversational
        built = build_memory(memory(spec, name=f"m{uuid.uuid4().hex[:10]}")).chat_store
        assert isinstance(built, RedisChatStore)
        assert built.ttl == ttl, redis_spec
        assert built.db is None  # the manifest did not set it: the URL's (1) applies
        assert (built.pool_size, built.tls) == (10, False)
        built.set_messages("k", [msg("a")])
        in_db1 = redis.Redis(port=redis_port, db=1)
        assert in_db1.llen(f"{built.prefix}k") == 1
        in_db1.close()
        assert built.delete_messages("k") is not None
        built.close()


def test_build_against_a_password_protected_server(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(secret: str | None, *, tls: dict[str, bool] | None = None) -> RedisChatStore:
        port = private_redis.tls_port if tls else private_redis.port
        cfg: dict[str, Any] = {"url": f"redis://127.0.0.1:{port}"}
        if secret is not None:
            monkeypatch.setenv("AOF_SECRET_PRIVATE_REDIS_PASSWORD", secret)
            cfg["secretRef"] = {"name": "private-redis", "key": "password"}
        if tls:
            cfg["tls"] = tls
        resource = memory(
            {"backend": {"type": "Redis", "redis": cfg}}, name=f"m{uuid.uuid4().hex[:10]}"
        )
        store = build_memory(resource).chat_store
        assert isinstance(store, RedisChatStore)
        return store

    good = build(private_redis.password)
    good.add_message("k", msg("authenticated"))
    assert texts(good, "k") == ["authenticated"]
    assert good.delete_messages("k") is not None
    good.close()

    secure = build(private_redis.password, tls={"enabled": True, "insecureSkipVerify": True})
    assert texts(secure, "nothing") == []
    secure.close()

    for secret in ["wrong", None]:
        bad = build(secret)
        with pytest.raises(BackendUnavailableError) as info:
            bad.get_messages("k")
        text = str(info.value)
        assert "authentication failed" in text and "secretRef" in text
        assert f"127.0.0.1:{private_redis.port}" in text
        bad.close()
