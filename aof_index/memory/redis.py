"""Redis chat store: conversation history on a Redis server, sync and natively async.

:class:`RedisChatStore` implements LlamaIndex's ``BaseChatStore`` with synchronous methods on
:class:`redis.Redis` and asynchronous ones on :class:`redis.asyncio.Redis`.  Both clients are
created on first use (the constructor does no I/O) and draw from a *blocking* connection pool
of ``pool_size`` connections: a call that finds every connection busy waits up to
``pool_timeout`` seconds for one instead of failing with "Too many connections".

Layout, for a store with ``prefix="aof:chat:"``:

- ``aof:chat:<key>``: one list per conversation, one ``ChatMessage.model_dump_json()`` per
  element, in order;
- ``aof:chat:`` followed by the byte ``0xFF`` and ``index``: a sorted set of the keys that hold
  messages, scored by the time (Unix ms) at which each conversation expires, ``+inf`` without
  a TTL.  No UTF-8 string ends the prefix with byte ``0xFF``, so no conversation key can
  collide with the index.  :meth:`RedisChatStore.get_keys` reads this set, never ``KEYS`` or a
  ``SCAN`` of the keyspace.

Every operation is one call of one Lua script (:data:`LUA_SCRIPT`, run with ``EVALSHA``), so
each is atomic on the server, and the sync and async paths send the same script with the
same arguments: an operation is described once (``_Call``) and each path only transports it.
Every write refreshes the conversation's expiry (``ttl`` seconds after its last write) and
its index entry in the same script; expired entries are dropped from the index on every
write and read, and the index itself expires with its last conversation.

Connections: ``redis://`` and ``unix://`` URLs, TLS with ``rediss://`` or ``tls=True``
(``tls_insecure_skip_verify`` turns certificate and host name checks off).  The password is a
``SecretStr`` field; a password written in the URL is moved there, so ``url`` and ``repr``
never show it, and serialisation (``to_dict``/``to_json``) leaves it out.  Connecting is
retried ``retries`` times with a short backoff; a command that may have reached the server
is never retried, so a lost reply cannot duplicate a message.  Failures raise
:class:`~aof_index.errors.BackendUnavailableError` naming the address and what to check.
Redis Cluster and Sentinel are not supported (the scripts touch two keys).

The asyncio client belongs to an event loop, so the store keeps one per running loop (each
with its own pool of ``pool_size`` connections) and closes it when the loop shuts down
(``asyncio.run`` does that on return).

Why LlamaIndex's ``RedisChatStore`` (``llama-index-storage-chat-store-redis``) is not the
base class: its constructor connects (it queries ``INFO cluster`` and builds both clients
eagerly), it keeps the password inside a plain ``redis_url`` field, its clients are not
picklable, and every method of the chat-store API has to change: ``delete_message``
re-pushes the list with ``LPUSH`` (reversing the order) and, like ``delete_last_message``,
returns bytes; inserting at an index and ``set_messages`` are several round trips that
concurrent writers interleave; ``delete_messages`` returns ``None``; ``get_keys`` runs
``KEYS *`` over the whole database and has no async twin; the TTL is a separate ``EXPIRE``
after each write; and its async pool fails with "Too many connections" beyond 100
concurrent calls.  Subclassing would keep only the constructor, the one part that must go.
``tests/integration/test_upstream_defects.py`` shows each defect and that this store fixes it.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "LUA_SCRIPT", "RedisChatStore"]

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from llama_index.core.bridge.pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.errors import BackendUnavailableError
from aof_index.memory.lifecycle import ClosableStore
from aof_index.registry import missing_extra

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from redis.commands.core import AsyncScript, Script

T = TypeVar("T")

DEFAULT_URL = "redis://127.0.0.1:6379"
"""Server used when no URL is given."""

DEFAULT_PREFIX = "aof:chat:"
"""Prefix of every key the store writes."""

_INDEX_SUFFIX = b"\xffindex"
_SCHEMES = ("redis", "rediss", "unix")
_RETRY_BASE_S = 0.05
_RETRY_CAP_S = 1.0
# redis-py's BlockingConnectionPool raises ConnectionError with this text when no connection
# frees up within its timeout (sync and asyncio alike).  Should the text change, exhaustion
# is merely retried like a failed connect: still bounded, only slower to report.
_POOL_EXHAUSTED = "No connection available"

LUA_SCRIPT = """
-- KEYS[1]: the index, a sorted set: conversation key -> expiry (Unix ms), +inf without TTL.
-- KEYS[2]: the conversation's list (absent for 'keys').
-- ARGV: operation, key prefix, conversation key, ttl in ms (0: none), operands...
local index, list = KEYS[1], KEYS[2]
local op, prefix, member, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
-- Marks an element for LINSERT / LREM, which find elements by value; never a message,
-- since messages are JSON objects, and only ever present inside this script.
local MARK = 'aof:mark'
local BATCH = 1000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ms(value)
  return string.format('%.0f', value)
end

-- A conversation expires when the clock passes its expiry, so an entry scored below now
-- belongs to a conversation that is gone.
local function prune(now)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ms(now))
end

-- After a change to the list: refresh its expiry and index entry (or drop the entry when
-- the list is gone), prune the index, and let the index expire with its last conversation.
local function changed()
  local now = now_ms()
  if redis.call('EXISTS', list) == 0 then
    redis.call('ZREM', index, member)
  elseif ttl > 0 then
    local at = ms(now + ttl)
    redis.call('PEXPIREAT', list, at)
    redis.call('ZADD', index, at, member)
  else
    redis.call('PERSIST', list)
    redis.call('ZADD', index, '+inf', member)
  end
  prune(now)
  local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if last[2] == 'inf' then
    redis.call('PERSIST', index)
  elseif last[2] then
    redis.call('PEXPIREAT', index, last[2])
  end
end

if op == 'get' then
  return redis.call('LRANGE', list, 0, -1)
elseif op == 'keys' then
  prune(now_ms())
  local live = {}
  for _, key in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    -- An entry whose list vanished without this store (evicted, deleted by hand) goes too.
    if redis.call('EXISTS', prefix .. key) == 1 then
      live[#live + 1] = key
    else
      redis.call('ZREM', index, key)
    end
  end
  return live
elseif op == 'append' then
  redis.call('RPUSH', list, ARGV[5])
  changed()
  return false
elseif op == 'insert' then
  local n = redis.call('LLEN', list)
  local i = tonumber(ARGV[6])
  if i < 0 then i = math.max(0, i + n) end
  if i >= n then
    redis.call('RPUSH', list, ARGV[5])
  elseif i == 0 then
    redis.call('LPUSH', list, ARGV[5])
  else
    local old = redis.call('LINDEX', list, i)
    redis.call('LSET', list, i, MARK)
    redis.call('LINSERT', list, 'BEFORE', MARK, ARGV[5])
    redis.call('LSET', list, i + 1, old)
  end
  changed()
  return false
elseif op == 'set' then
  redis.call('DEL', list)
  for first = 5, #ARGV, BATCH do
    redis.call('RPUSH', list, unpack(ARGV, first, math.min(first + BATCH - 1, #ARGV)))
  end
  changed()
  return false
elseif op == 'delete_at' then
  local n = redis.call('LLEN', list)
  local i = tonumber(ARGV[5])
  if i < 0 then i = i + n end
  if i < 0 or i >= n then return false end
  local removed
  if i == 0 then
    removed = redis.call('LPOP', list)
  elseif i == n - 1 then
    removed = redis.call('RPOP', list)
  else
    removed = redis.call('LINDEX', list, i)
    redis.call('LSET', list, i, MARK)
    redis.call('LREM', list, 1, MARK)
  end
  changed()
  return removed
elseif op == 'delete_last' then
  local removed = redis.call('RPOP', list)
  if removed then changed() end
  return removed
elseif op == 'delete_all' then
  local removed = redis.call('LRANGE', list, 0, -1)
  if #removed == 0 then return false end
  redis.call('DEL', list)
  changed()
  return removed
end
return redis.error_reply('aof-index chat store script: unknown operation ' .. tostring(op))
"""
"""The one Lua script behind every operation (``EVALSHA``; loaded again after a flush)."""


# --------------------------------------------------------------------------------------------
# Operations: what to send and how to read the reply, shared by the sync and async paths.


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One run of :data:`LUA_SCRIPT`: the operation, its key and operands, the reply parser."""

    op: str
    key: str
    operands: Sequence[str | int]
    parse: Callable[[Any], T]


def _dump(message: ChatMessage) -> str:
    return message.model_dump_json()


def _load(raw: bytes) -> ChatMessage:
    return ChatMessage.model_validate_json(raw)


def _no_reply(raw: Any) -> None:
    return None


def _message(raw: bytes | None) -> ChatMessage | None:
    return None if raw is None else _load(raw)


def _messages(raw: list[bytes] | None) -> list[ChatMessage]:
    return [_load(item) for item in raw or ()]


def _removed(raw: list[bytes] | None) -> list[ChatMessage] | None:
    return None if raw is None else _messages(raw)


def _keys(raw: list[bytes] | None) -> list[str]:
    return sorted(item.decode("utf-8") for item in raw or ())


def _get(key: str) -> _Call[list[ChatMessage]]:
    return _Call("get", key, (), _messages)


def _set(key: str, messages: Sequence[ChatMessage]) -> _Call[None]:
    return _Call("set", key, [_dump(m) for m in messages], _no_reply)


def _add(key: str, message: ChatMessage, idx: int | None) -> _Call[None]:
    if idx is None:
        return _Call("append", key, (_dump(message),), _no_reply)
    return _Call("insert", key, (_dump(message), int(idx)), _no_reply)


def _delete_all(key: str) -> _Call[list[ChatMessage] | None]:
    return _Call("delete_all", key, (), _removed)


def _delete_at(key: str, idx: int) -> _Call[ChatMessage | None]:
    return _Call("delete_at", key, (int(idx),), _message)


def _delete_last(key: str) -> _Call[ChatMessage | None]:
    return _Call("delete_last", key, (), _message)


def _list_keys() -> _Call[list[str]]:
    return _Call("keys", "", (), _keys)


# --------------------------------------------------------------------------------------------
# Connection pools that tell a failure before sending apart from one after.


class _NotSent(Exception):
    """Getting a connection failed (connect, handshake, pool wait): no command was sent."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@cache
def _redis() -> Any:
    """The redis package, or the error naming the extra that installs it."""
    try:
        import redis
        import redis.asyncio
    except ImportError as exc:
        raise missing_extra("Redis chat store", "redis") from exc
    return redis


@cache
def _pool_classes() -> tuple[
    type[redis.BlockingConnectionPool], type[redis.asyncio.BlockingConnectionPool]
]:
    _redis()  # the missing-extra error, if it is missing
    from redis import BlockingConnectionPool
    from redis.asyncio import BlockingConnectionPool as AsyncBlockingConnectionPool
    from redis.exceptions import ConnectionError, TimeoutError

    class SyncPool(BlockingConnectionPool):
        def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().get_connection(*args, **kwargs)
            except (ConnectionError, TimeoutError) as exc:
                raise _NotSent(exc) from exc

    class AsyncPool(AsyncBlockingConnectionPool):
        async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().get_connection(*args, **kwargs)
            except (ConnectionError, TimeoutError) as exc:
                raise _NotSent(exc) from exc

    return SyncPool, AsyncPool


@dataclass
class _LoopClient:
    """The asyncio client of one event loop, and the generator that closes it with the loop."""

    client: redis.asyncio.Redis
    script: AsyncScript
    closer: AsyncGenerator[None, None]


async def _close_with_loop(
    client: redis.asyncio.Redis, forget: Callable[[], None]
) -> AsyncGenerator[None, None]:
    # Started once and left suspended: the loop finalises open async generators when it
    # shuts down (loop.shutdown_asyncgens, which asyncio.run calls), and that runs this
    # `finally` while the loop still runs, so the connections close cleanly.
    try:
        yield
    finally:
        forget()
        await client.aclose()


# --------------------------------------------------------------------------------------------
# URL handling (no redis import: validation happens at construction, without I/O).


def _split_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password (userinfo or ``?password=``), and the password."""
    parts = urlsplit(url)
    password: str | None = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostinfo = netloc.rsplit("@", 1)
        user, sep, secret = userinfo.partition(":")
        if sep:
            password = unquote(secret)
        netloc = f"{user}@{hostinfo}" if user else hostinfo
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, value) for name, value in query if name != "password"]
    if len(kept) != len(query):
        password = password or next(value for name, value in query if name == "password")
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(kept))), password


# --------------------------------------------------------------------------------------------
# The store.


class RedisChatStore(ClosableStore, BaseChatStore):
    """Chat history on a Redis server: one list per conversation, every operation atomic.

    Implements the whole ``BaseChatStore`` contract, sync and async, with the semantics of
    :class:`~aof_index.memory.SQLiteChatStore`: indices behave like Python list indices
    (``delete_message(key, 1)`` removes the second message in order and returns it, ``-1`` is
    the last, out of range gives ``None``; ``add_message(key, m, idx=i)`` is
    ``list.insert(i, m)``), a key without messages does not exist, messages round-trip
    exactly.  With ``ttl``, a conversation expires ``ttl`` seconds after its last write and
    leaves :meth:`get_keys` with it.

    Any number of threads, tasks and processes may share one server: each operation is one
    atomic script.  Pickling keeps the settings (password included, for a child process)
    and drops the clients, which the copy recreates on first use.  ``close()`` or
    ``aclose()`` releases the connections; the next call reconnects.

    Example::

        store = RedisChatStore(url="redis://redis.internal:6379/0", password=pw, ttl=86400)
        store.add_message("session-1", ChatMessage(role="user", content="hi"))
    """

    url: str = Field(
        default=DEFAULT_URL,
        description=(
            "redis://host:port/db, rediss:// for TLS, or unix:///path.sock; a password in it "
            "is moved to `password`."
        ),
    )
    password: SecretStr | None = Field(
        default=None, exclude=True, description="Password (AUTH); never serialised."
    )
    username: str | None = Field(
        default=None, description="ACL user name; default: the URL's, else Redis' default user."
    )
    db: int | None = Field(
        default=None, ge=0, description="Database number; default: the URL's, else 0."
    )
    prefix: str = Field(default=DEFAULT_PREFIX, description="Prefix of every key written.")
    ttl: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after its last write at which a conversation expires; None: never.",
    )
    pool_size: int = Field(
        default=10, ge=1, description="Connections per pool (one sync pool, one per event loop)."
    )
    pool_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a call waits for a free pooled connection."
    )
    socket_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a reply before giving up."
    )
    connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds one connection attempt may take."
    )
    retries: int = Field(
        default=2, ge=0, description="Further attempts when connecting fails (never after send)."
    )
    tls: bool = Field(default=False, description="Use TLS (implied by a rediss:// URL).")
    tls_insecure_skip_verify: bool = Field(
        default=False, description="With TLS, skip certificate and host name verification."
    )
    tls_ca_certs: str | None = Field(
        default=None, description="CA bundle that verifies the server (default: system CAs)."
    )
    client_name: str | None = Field(
        default="aof-index", description="Name shown by CLIENT LIST for these connections."
    )

    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _client: redis.Redis | None = PrivateAttr(default=None)
    _script: Script | None = PrivateAttr(default=None)
    _aclients: dict[asyncio.AbstractEventLoop, _LoopClient] = PrivateAttr(default_factory=dict)
    _closing: set[Any] = PrivateAttr(default_factory=set)

    @model_validator(mode="after")
    def _check_url(self) -> RedisChatStore:
        scheme = urlsplit(self.url).scheme
        if scheme not in _SCHEMES:
            raise ValueError(
                f"url must start with redis://, rediss:// or unix://, got scheme {scheme!r}"
            )
        if scheme == "unix" and self.tls:
            raise ValueError("tls cannot be used with a unix:// socket")
        url, password = _split_password(self.url)
        if password is not None:
            self.url = url
            if self.password is None:
                self.password = SecretStr(password)
        return self

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofRedisChatStore"

    # ----------------------------------------------------------------------------------------
    # Chat-store API, sync.

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the messages of ``key`` (an empty list removes the key)."""
        self._run(_set(key, messages))

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Messages of ``key`` in order; ``[]`` for an unknown key."""
        return self._run(_get(key))

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message`` to ``key``, or insert it at ``idx`` like ``list.insert``."""
        self._run(_add(key, message, idx))

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete every message of ``key``; returns them, or ``None`` for an unknown key."""
        return self._run(_delete_all(key))

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th message of ``key`` in order and return it (``None`` if absent)."""
        return self._run(_delete_at(key, idx))

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key`` and return it (``None`` if there is none)."""
        return self._run(_delete_last(key))

    def get_keys(self) -> list[str]:
        """Keys holding at least one message, sorted (read from the index, never ``KEYS``)."""
        return self._run(_list_keys())

    # ----------------------------------------------------------------------------------------
    # Chat-store API, async (redis.asyncio).

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        await self._arun(_set(key, messages))

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        return await self._arun(_get(key))

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        """Async :meth:`add_message` (LlamaIndex names it ``async_add_message``)."""
        await self._arun(_add(key, message, idx))

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        return await self._arun(_delete_all(key))

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        return await self._arun(_delete_at(key, idx))

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return await self._arun(_delete_last(key))

    async def aget_keys(self) -> list[str]:
        """Async :meth:`get_keys`."""
        return await self._arun(_list_keys())

    # ----------------------------------------------------------------------------------------
    # Lifecycle.

    def close(self) -> None:
        """Close every connection; the next call reconnects.

        The asyncio clients are closed on their own loops: at once when their loop is not
        running, by a task when it runs in this thread (prefer :meth:`aclose` there), and by
        a callback when it runs in another thread.
        """
        with self._lock:
            client, self._client, self._script = self._client, None, None
            loops, self._aclients = self._aclients, {}
        if client is not None:
            client.close()
        for loop, entry in loops.items():
            self._close_on(loop, entry)

    async def aclose(self) -> None:
        """Close every connection from async code; the next call reconnects."""
        with self._lock:
            entry = self._aclients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.closer.aclose()
        self.close()

    # ----------------------------------------------------------------------------------------
    # Internals: addressing and errors.

    @property
    def _index_key(self) -> bytes:
        return self.prefix.encode("utf-8") + _INDEX_SUFFIX

    def _script_args(self, call: _Call[Any]) -> tuple[list[bytes | str], list[str | int]]:
        keys: list[bytes | str] = [self._index_key]
        if call.op != "keys":
            keys.append(self.prefix + call.key)
        ttl_ms = 0 if self.ttl is None else max(1, round(self.ttl * 1000))
        return keys, [call.op, self.prefix, call.key, ttl_ms, *call.operands]

    @property
    def _scheme(self) -> str:
        return urlsplit(self.url).scheme

    def _url_options(self) -> dict[str, Any]:
        options: dict[str, Any] = _redis().connection.parse_url(self.url)
        options.pop("connection_class", None)
        return options

    @property
    def _address(self) -> str:
        """Where the server is, as the messages name it (never with a password)."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix socket {parts.path}"
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"

    def _db_number(self, options: dict[str, Any] | None = None) -> int:
        if self.db is not None:
            return self.db
        try:
            found = (options if options is not None else self._url_options()).get("db")
        except Exception:
            return 0
        return int(found or 0)

    def _connection_kwargs(self, *, asynchronous: bool) -> dict[str, Any]:
        lib = _redis()
        options = self._url_options()
        module = lib.asyncio.connection if asynchronous else lib.connection
        retry = lib.asyncio.retry.Retry if asynchronous else lib.retry.Retry
        if self._scheme == "unix":
            connection_class = module.UnixDomainSocketConnection
        elif self._scheme == "rediss" or self.tls:
            connection_class = module.SSLConnection
            insecure = self.tls_insecure_skip_verify
            options["ssl_cert_reqs"] = "none" if insecure else "required"
            options["ssl_check_hostname"] = not insecure
            if self.tls_ca_certs:
                options["ssl_ca_certs"] = self.tls_ca_certs
        else:
            connection_class = module.Connection
        options.update(
            connection_class=connection_class,
            db=self._db_number(options),
            password=self.password.get_secret_value() if self.password else None,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.connect_timeout,
            client_name=self.client_name,
            # No retries inside redis-py: it would resend a script whose reply was lost (a
            # duplicate message).  Connecting is retried by _retry_delay, before any send.
            retry=retry(lib.backoff.NoBackoff(), 0),
        )
        if self.username is not None:
            options["username"] = self.username
        return options

    def _retry_delay(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to wait before trying ``exc``'s call again, or ``None`` to give up."""
        if not isinstance(exc, _NotSent) or attempt >= self.retries:
            return None
        auth = _redis().exceptions.AuthenticationError
        if isinstance(exc.cause, auth) or _POOL_EXHAUSTED in str(exc.cause):
            return None
        return float(min(_RETRY_BASE_S * 2**attempt, _RETRY_CAP_S))

    def _error(self, exc: Exception, attempts: int) -> BackendUnavailableError:
        errors = _redis().exceptions
        cause = exc.cause if isinstance(exc, _NotSent) else exc
        text = str(cause) or type(cause).__name__
        if self.password is not None:
            text = text.replace(self.password.get_secret_value(), "**********")
        where = f"Redis chat store at {self._address} (db {self._db_number()})"
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        if isinstance(cause, errors.AuthenticationError):
            problem = "authentication failed"
            fix = (
                "Check the password (spec.backend.redis.secretRef) and the user name in the "
                "URL against the server's requirepass / ACL users."
            )
        elif isinstance(cause, errors.NoPermissionError):
            problem = "the Redis user lacks a permission"
            fix = (
                f"Allow this ACL user EVALSHA, SCRIPT LOAD, CLIENT SETNAME (or set "
                f"client_name=None) and the list and sorted-set commands on keys starting "
                f"with {self.prefix!r}."
            )
        elif _POOL_EXHAUSTED in text:
            problem = "no pooled connection became free"
            fix = (
                f"All {self.pool_size} connections stayed busy for {self.pool_timeout} s: raise "
                f"spec.backend.redis.poolSize (or pool_timeout) or lower the concurrency."
            )
        elif isinstance(exc, _NotSent):
            problem = "cannot connect"
            fix = (
                f"Check that Redis is running and reachable at {self._address} "
                f"(spec.backend.redis.url), and that TLS matches the server (rediss:// or "
                f"spec.backend.redis.tls.enabled)."
            )
        elif isinstance(cause, errors.ConnectionError | errors.TimeoutError):
            problem = "the connection failed during a call"
            fix = (
                f"Check the server's health and the network (socket timeout "
                f"{self.socket_timeout} s). A write may or may not have been applied."
            )
        else:
            problem = "the server rejected a command"
            fix = (
                f"Check that no other application writes keys starting with {self.prefix!r} "
                f"in this database, and that the server is Redis 5 or newer."
            )
        return BackendUnavailableError(f"{where}: {problem}{tries}: {text}. {fix}")

    # sync path -------------------------------------------------------------------------------

    def _sync_script(self) -> Script:
        with self._lock:
            if self._script is None:
                lib = _redis()
                pool = _pool_classes()[0](
                    max_connections=self.pool_size,
                    timeout=self.pool_timeout,
                    **self._connection_kwargs(asynchronous=False),
                )
                self._client = lib.Redis.from_pool(pool)
                self._script = self._client.register_script(LUA_SCRIPT)
            return self._script

    def _run(self, call: _Call[T]) -> T:
        script = self._sync_script()
        keys, args = self._script_args(call)
        errors = _redis().exceptions.RedisError, _NotSent
        attempt = 0
        while True:
            try:
                raw = script(keys=keys, args=args)
            except errors as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._error(exc, attempt + 1) from exc
            else:
                return call.parse(raw)
            attempt += 1
            time.sleep(delay)

    # async path ------------------------------------------------------------------------------

    async def _async_script(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is not None:
            return entry.script
        lib = _redis()
        pool = _pool_classes()[1](
            max_connections=self.pool_size,
            timeout=self.pool_timeout,
            **self._connection_kwargs(asynchronous=True),
        )
        client = lib.asyncio.Redis.from_pool(pool)

        def forget() -> None:
            with self._lock:
                if self._aclients.get(loop) is created:
                    del self._aclients[loop]

        created = _LoopClient(
            client, client.register_script(LUA_SCRIPT), _close_with_loop(client, forget)
        )
        with self._lock:
            for old in [other for other in self._aclients if other.is_closed()]:
                del self._aclients[old]
            self._aclients[loop] = created
        # Runs to the generator's `yield` without suspending, so no other task of this loop
        # sees the entry before the loop knows the generator.
        await anext(created.closer)
        return created.script

    async def _arun(self, call: _Call[T]) -> T:
        script = await self._async_script()
        keys, args = self._script_args(call)
        errors = _redis().exceptions.RedisError, _NotSent
        attempt = 0
        while True:
            try:
                raw = await script(keys=keys, args=args)
            except errors as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._error(exc, attempt + 1) from exc
            else:
                return call.parse(raw)
            attempt += 1
            await asyncio.sleep(delay)

    def _close_on(self, loop: asyncio.AbstractEventLoop, entry: _LoopClient) -> None:
        """Close an asyncio client on its own loop, however that loop is doing."""
        if loop.is_closed():
            return  # closed with the loop (shutdown_asyncgens), or lost with it
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(entry.closer.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(entry.closer.aclose(), loop)
        elif running is None:
            loop.run_until_complete(entry.closer.aclose())
