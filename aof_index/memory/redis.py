"""Redis chat store: conversation history on a Redis server, sync and natively async.

:class:`RedisChatStore` implements LlamaIndex's ``BaseChatStore`` and aof-index's
``HistoryStore`` with synchronous methods on :class:`redis.Redis` and asynchronous ones on
:class:`redis.asyncio.Redis`.  Both clients are created on first use (the constructor does
no I/O) and draw from a *blocking* connection pool of ``pool_size`` connections: a call that
finds every connection busy waits up to ``pool_timeout`` seconds for one instead of failing
with "Too many connections".

Layout, for a store with ``prefix="aof:chat:"``:

- ``aof:chat:<key>``: one list per conversation, one message per element, in order, as the
  store's ``codec`` encodes it (``ChatMessage.model_dump_json()`` by default; compressed
  and/or encrypted under a prefix otherwise; elements of any codec stay readable);
- ``aof:chat:`` followed by the byte ``0xFF``, ``epoch:`` and ``<key>``: the conversation's
  *epoch*, a random token renewed by every write that may change what the list already
  holds (see :mod:`aof_index.memory.read_cache`), expiring and going with its list;
- ``aof:chat:`` followed by the byte ``0xFF`` and ``index``: the *expiry index*, a sorted set
  of the keys that hold messages, scored by the time (Unix ms) at which each conversation
  expires, ``+inf`` without a TTL;
- ``aof:chat:`` followed by the byte ``0xFF`` and ``keys``: the *key index*, a sorted set of
  the same keys, all scored 0, so that ``ZRANGEBYLEX`` lists those under a prefix in byte
  order (which for UTF-8 is code-point order) without reading the others.
  :meth:`RedisChatStore.get_keys` reads it, never ``KEYS`` or a ``SCAN`` of the keyspace.
  Data written before the key index existed gets it rebuilt from the expiry index on the
  first listing.

No UTF-8 string ends the prefix with byte ``0xFF``, so no conversation key can collide with
the indexes.

Every write, read and listing is one call of one Lua script (:data:`LUA_SCRIPT`, run with
``EVALSHA``), so each is atomic on the server; a read returns the conversation's epoch and
the elements after those the store's read cache holds (all of them when the epoch changed),
and an expired list is already gone (Redis never returns it).  The asyncio path pipelines:
the calls a loop's tasks make in one turn of the loop are sent as one pipeline on one
pooled connection (:class:`_Batcher`).  The
sync and async paths send the same commands with the same arguments: an operation is
described once (``_Call``) and each path only transports it.  Messages are encoded before
anything is sent (a message over the codec's ``max_bytes`` is refused before any write), and
elements of plain JSON are decoded from the reply's bytes as they are.  Every write refreshes
the conversation's expiry (``ttl`` seconds after its last write) and its index entries in
the same script; expired entries are dropped from both indexes on every listing and
whenever a conversation enters or leaves the indexes (:meth:`RedisChatStore.purge_expired`
drops them now and counts them; Redis itself deletes the expired lists, and a listing never
returns an expired key), and the indexes expire with their last conversation.  An append to
a conversation without TTL that already had none (the common case) only touches its list
and reads its index entry.

``edit_head`` is the one operation of several calls (described once too, as a ``_Flow``):
it reads the list (the raw elements), decodes it and runs the plan here, then sends one
script that applies the edit (``LTRIM``, ``LPUSH`` of the encoded inserts, ``RPUSH`` of the
removed raw elements to the archive list, both lists' expiry and index entries refreshed)
only if the first ``drop`` elements are still exactly those it read.  When another writer
changed the head in between, it reads and plans again, a bounded number of times
(:class:`EditConflictError` after that).  Appends at the tail never conflict.

Connections: ``redis://`` and ``unix://`` URLs, TLS with ``rediss://`` or ``tls=True``
(``tls_insecure_skip_verify`` turns certificate and host name checks off).  The password is a
``SecretStr`` field; a password written in the URL is moved there, so ``url`` and ``repr``
never show it, and serialisation (``to_dict``/``to_json``) leaves it out.  Connecting is
retried ``retries`` times with a short backoff; a command that may have reached the server
is never retried, so a lost reply cannot duplicate a message.  Failures raise
:class:`~aof_index.errors.BackendUnavailableError` naming the address and what to check.
Redis Cluster and Sentinel are not supported (the scripts touch several keys).

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

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "LUA_SCRIPT", "EditConflictError", "RedisChatStore"]

import asyncio
import random
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from llama_index.core.bridge.pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    model_validator,
)
from llama_index.core.llms import ChatMessage

from aof_index.errors import BackendUnavailableError
from aof_index.memory.codec import MessageCodec
from aof_index.memory.edit import EditConflictError, EditPlan
from aof_index.memory.lifecycle import (
    ClosableStore,
    HistoryChatStore,
    check_archive_key,
    head_drop,
)
from aof_index.memory.read_cache import CachedConversation, CachedReads, ReadCache, merge
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
_NAMES_SUFFIX = b"\xffkeys"
_EPOCH_INFIX = b"\xffepoch:"  # the epoch of a conversation: prefix, this, its key
_READS = frozenset({"get", "read", "keys", "purge"})  # operations that need no new epoch
# Every element a codec compresses or encrypts starts with this; plain JSON with "{".
_MAX_BATCH = 64  # calls one pipeline carries at most
_EDIT_ATTEMPTS = 50
_EDIT_BACKOFF_S = 0.002
_SCHEMES = ("redis", "rediss", "unix")
_RETRY_BASE_S = 0.05
_RETRY_CAP_S = 1.0
# redis-py's BlockingConnectionPool raises ConnectionError with this text when no connection
# frees up within its timeout (sync and asyncio alike).  Should the text change, exhaustion
# is merely retried like a failed connect: still bounded, only slower to report.
_POOL_EXHAUSTED = "No connection available"

LUA_SCRIPT = """
-- KEYS[1]: the expiry index, a sorted set: conversation key -> expiry (Unix ms), +inf
--          without TTL.
-- KEYS[2]: the key index, a sorted set of the same members, all scored 0, for ZRANGEBYLEX.
-- KEYS[3]: the conversation's list, KEYS[4]: its epoch (absent for 'keys' and 'purge').
-- KEYS[5]: the archive's list, KEYS[6]: its epoch ('edit' with an archive key only).
-- ARGV: operation, key prefix, conversation key, ttl in ms (0: none), a new epoch (a
--       random token the caller drew), operands...
-- The epoch of a list is renewed by every write that may change what the list already
-- holds, and set by an append that creates it; it expires and goes with its list (see
-- aof_index.memory.read_cache).
local index, names, list, epoch = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, prefix, member, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local token = ARGV[5]
-- Marks an element for LINSERT / LREM, which find elements by value; never a stored message
-- (a JSON object, or 'aof:' and a two-letter tag and a colon), and only ever present inside
-- this script.
local MARK = 'aof:mark'
local BATCH = 1000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ms(value)
  return string.format('%.0f', value)
end

-- Calls cmd(key, items[first..last]) in batches (unpack has a limit on its results).
local function batched(cmd, key, items, first, last)
  for from = first, last, BATCH do
    redis.call(cmd, key, unpack(items, from, math.min(from + BATCH - 1, last)))
  end
end

-- Both indexes expire with their last conversation.
local function expire_indexes()
  local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  for _, key in ipairs({index, names}) do
    if last[2] == 'inf' then
      redis.call('PERSIST', key)
    elseif last[2] then
      redis.call('PEXPIREAT', key, last[2])
    end
  end
end

-- A conversation expires when the clock passes its expiry, so an entry scored below now
-- belongs to a conversation that is gone: it leaves both indexes.  Returns how many went.
local function prune(now)
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. ms(now))
  batched('ZREM', index, gone, 1, #gone)
  batched('ZREM', names, gone, 1, #gone)
  return #gone
end

-- Conversations written before the key index existed: rebuild it from the expiry index
-- (both always hold the same members once a script ends).
local function sync_names()
  if redis.call('ZCARD', names) == redis.call('ZCARD', index) then return end
  redis.call('DEL', names)
  local scored = {}
  for _, key in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    scored[#scored + 1] = 0
    scored[#scored + 1] = key
  end
  batched('ZADD', names, scored, 1, #scored)  -- BATCH is even: no pair is split
  expire_indexes()
end

-- The list holds messages after a write: refresh its expiry (and its epoch's) and index
-- entries, and let the indexes expire with their last conversation.  They are pruned when
-- a conversation enters them (so they hold the live conversations and those expired since
-- the last one entered; listings prune too).  A conversation kept without TTL (scored +inf
-- already) changes neither index nor their expiry: nothing more to do for it.
local function refreshed(list, epoch, member)
  local old = redis.call('ZSCORE', index, member)
  local score = '+inf'
  if ttl > 0 then
    score = ms(now_ms() + ttl)
    redis.call('PEXPIREAT', list, score)
    redis.call('PEXPIREAT', epoch, score)
  else
    redis.call('PERSIST', list)
    redis.call('PERSIST', epoch)
    if old == 'inf' then return end
  end
  redis.call('ZADD', index, score, member)
  if not old then
    redis.call('ZADD', names, 0, member)
    prune(now_ms())
  end
  expire_indexes()
end

-- After a change to a list: give it a new epoch and refresh it as above, or drop its epoch
-- and index entries when the list is gone (then prune the indexes and let them expire with
-- their last conversation).
local function changed(list, epoch, member)
  if redis.call('EXISTS', list) == 1 then
    redis.call('SET', epoch, token)
    return refreshed(list, epoch, member)
  end
  redis.call('DEL', epoch)
  redis.call('ZREM', index, member)
  redis.call('ZREM', names, member)
  prune(now_ms())
  expire_indexes()
end

-- After an append: a list the append created gets a new epoch, one without an epoch (data
-- written before epochs existed) gets one; an existing epoch stays (an append changes
-- nothing the list held).
local function appended(list, epoch, member, length)
  if length == 1 then
    redis.call('SET', epoch, token)
  else
    redis.call('SET', epoch, token, 'NX')
  end
  refreshed(list, epoch, member)
end

if op == 'read' then
  -- ARGV[6]: the epoch the caller has cached ('' for none), ARGV[7]: how many messages it
  -- has.  Returns {epoch or false, 1 and the elements after those if the epoch is that
  -- one, else 0 and every element}.
  local current = redis.call('GET', epoch)
  local from = tonumber(ARGV[7])
  if current and current == ARGV[6] and redis.call('LLEN', list) >= from then
    return {current, 1, redis.call('LRANGE', list, from, -1)}
  end
  return {current, 0, redis.call('LRANGE', list, 0, -1)}
elseif op == 'keys' then
  -- ARGV[6], ARGV[7]: the ZRANGEBYLEX bounds of the prefix.
  prune(now_ms())
  sync_names()
  local live = {}
  for _, key in ipairs(redis.call('ZRANGEBYLEX', names, ARGV[6], ARGV[7])) do
    -- An entry whose list vanished without this store (evicted, deleted by hand) goes too.
    if redis.call('EXISTS', prefix .. key) == 1 then
      live[#live + 1] = key
    else
      redis.call('ZREM', index, key)
      redis.call('ZREM', names, key)
    end
  end
  return live
elseif op == 'purge' then
  return prune(now_ms())
elseif op == 'append' then
  appended(list, epoch, member, redis.call('RPUSH', list, ARGV[6]))
  return false
elseif op == 'insert' then
  local n = redis.call('LLEN', list)
  local i = tonumber(ARGV[7])
  if i < 0 then i = math.max(0, i + n) end
  if i >= n then
    redis.call('RPUSH', list, ARGV[6])
  elseif i == 0 then
    redis.call('LPUSH', list, ARGV[6])
  else
    local old = redis.call('LINDEX', list, i)
    redis.call('LSET', list, i, MARK)
    redis.call('LINSERT', list, 'BEFORE', MARK, ARGV[6])
    redis.call('LSET', list, i + 1, old)
  end
  changed(list, epoch, member)
  return false
elseif op == 'set' then
  redis.call('DEL', list)
  batched('RPUSH', list, ARGV, 6, #ARGV)
  changed(list, epoch, member)
  return false
elseif op == 'delete_at' then
  local n = redis.call('LLEN', list)
  local i = tonumber(ARGV[6])
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
  changed(list, epoch, member)
  return removed
elseif op == 'delete_last' then
  local removed = redis.call('RPOP', list)
  if removed then changed(list, epoch, member) end
  return removed
elseif op == 'delete_all' then
  local removed = redis.call('LRANGE', list, 0, -1)
  if #removed == 0 then return false end
  redis.call('DEL', list)
  changed(list, epoch, member)
  return removed
elseif op == 'edit' then
  -- ARGV[6]: the archive key ('' for none); ARGV[7]: how many elements to drop, which the
  -- caller read as ARGV[9...]; ARGV[8]: how many to insert, which follow them.  Applied only
  -- if the head is still what the caller read (compare and swap): returns 1, else 0.
  local drop, count = tonumber(ARGV[7]), tonumber(ARGV[8])
  local head = {}
  if drop > 0 then
    head = redis.call('LRANGE', list, 0, drop - 1)
    if #head ~= drop then return 0 end
    for i = 1, drop do
      if head[i] ~= ARGV[8 + i] then return 0 end
    end
    redis.call('LTRIM', list, drop, -1)
  end
  for i = 8 + drop + count, 9 + drop, -1 do
    redis.call('LPUSH', list, ARGV[i])
  end
  changed(list, epoch, member)
  if ARGV[6] ~= '' and drop > 0 then
    -- Appended to: the archive keeps its epoch (a new archive gets one).
    for from = 1, drop, BATCH do
      local last = math.min(from + BATCH - 1, drop)
      local length = redis.call('RPUSH', KEYS[5], unpack(head, from, last))
      if from == 1 then
        if length == last then
          redis.call('SET', KEYS[6], token)
        else
          redis.call('SET', KEYS[6], token, 'NX')
        end
      end
    end
    refreshed(KEYS[5], KEYS[6], ARGV[6])
  end
  return 1
end
return redis.error_reply('aof-index chat store script: unknown operation ' .. tostring(op))
"""
"""The one Lua script behind every write and listing (``EVALSHA``; loaded again after a
flush); reads are a plain ``LRANGE``."""


# --------------------------------------------------------------------------------------------
# Operations: what to send and how to read the reply, shared by the sync and async paths.


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One operation: the operation, its keys and operands, the reply parser.

    Each is one run of :data:`LUA_SCRIPT`, except ``get``: a plain ``LRANGE`` of the list,
    atomic by itself (and an expired list is already gone from Redis).
    """

    op: str
    key: str | None
    operands: Sequence[str | bytes | int]
    parse: Callable[[Any], T]
    archive: str | None = None


_Flow = Generator["_Call[Any] | float", Any, T]
"""Several calls in a row (``edit_head``): yields calls (and seconds to wait between
attempts), receives each call's parsed reply, returns the result."""


def _no_reply(raw: Any) -> None:
    return None


def _raw(raw: list[bytes] | None) -> list[bytes]:
    return list(raw or ())


def _message(codec: MessageCodec, raw: bytes | None) -> ChatMessage | None:
    return None if raw is None else codec.decode(raw)


def _messages(codec: MessageCodec, raw: list[bytes] | None) -> list[ChatMessage]:
    return [codec.decode(item) for item in raw or ()]


def _removed(codec: MessageCodec, raw: list[bytes] | None) -> list[ChatMessage] | None:
    return None if raw is None else _messages(codec, raw)


def _keys(raw: list[bytes] | None) -> list[str]:
    return sorted(item.decode("utf-8") for item in raw or ())


def _get(codec: MessageCodec, key: str) -> _Call[list[ChatMessage]]:
    return _Call("get", key, (), partial(_messages, codec))


@dataclass(frozen=True)
class _Fetched:
    """A 'read' reply: the list's epoch (``None``: none), whether ``messages`` are only
    those after the cached ones, the messages, and the size of their stored text."""

    epoch: str | None
    incremental: bool
    messages: list[ChatMessage]
    size: int


def _fetched(codec: MessageCodec, raw: list[Any]) -> _Fetched:
    epoch, incremental, items = raw
    return _Fetched(
        None if epoch is None else epoch.decode("ascii"),
        bool(incremental),
        [codec.decode(item) for item in items],
        sum(len(item) for item in items),
    )


def _merged(
    cache: ReadCache, key: str, cached: CachedConversation | None, fetched: _Fetched
) -> list[ChatMessage]:
    count = len(fetched.messages)
    if fetched.incremental and cached is not None:
        count += cached.end
    return merge(
        cache,
        key,
        cached,
        fetched.epoch,
        fetched.incremental,
        fetched.messages,
        count,
        fetched.size,
    )


def _read(codec: MessageCodec, key: str, cached: CachedConversation | None) -> _Call[_Fetched]:
    """The messages after the ``cached`` ones if the list's epoch is still the cached one,
    else all of them (one script run)."""
    operands = ("", 0) if cached is None else (str(cached.epoch), cached.end)
    return _Call("read", key, operands, partial(_fetched, codec))


def _set(codec: MessageCodec, key: str, messages: Sequence[ChatMessage]) -> _Call[None]:
    return _Call("set", key, [codec.encode(m) for m in messages], _no_reply)


def _add(codec: MessageCodec, key: str, message: ChatMessage, idx: int | None) -> _Call[None]:
    if idx is None:
        return _Call("append", key, (codec.encode(message),), _no_reply)
    return _Call("insert", key, (codec.encode(message), int(idx)), _no_reply)


def _delete_all(codec: MessageCodec, key: str) -> _Call[list[ChatMessage] | None]:
    return _Call("delete_all", key, (), partial(_removed, codec))


def _delete_at(codec: MessageCodec, key: str, idx: int) -> _Call[ChatMessage | None]:
    return _Call("delete_at", key, (int(idx),), partial(_message, codec))


def _delete_last(codec: MessageCodec, key: str) -> _Call[ChatMessage | None]:
    return _Call("delete_last", key, (), partial(_message, codec))


def _list_keys(prefix: str) -> _Call[list[str]]:
    if not prefix:
        return _Call("keys", None, (b"-", b"+"), _keys)
    low = prefix.encode("utf-8")
    # Keys are UTF-8, which never holds byte 0xFF: the last byte can always go up by one.
    high = low[:-1] + bytes([low[-1] + 1])
    return _Call("keys", None, (b"[" + low, b"(" + high), _keys)


def _purge() -> _Call[int]:
    return _Call("purge", None, (), int)


def _edit_head(
    codec: MessageCodec, key: str, plan: EditPlan, archive_key: str | None
) -> _Flow[list[ChatMessage]]:
    """Read the list, plan, and apply the edit if the head is still what was read."""
    check_archive_key(key, archive_key)
    for attempt in range(_EDIT_ATTEMPTS):
        raw: list[bytes] = yield _Call("get", key, (), _raw)
        if not raw:
            return []
        messages = [codec.decode(item) for item in raw]
        edit = plan(list(messages))
        if edit is None:
            return []
        drop = head_drop(edit, len(raw))
        inserts = [codec.encode(message) for message in edit.insert]
        if not drop and not inserts:
            return []
        operands: list[str | bytes | int] = [archive_key or "", drop, len(inserts)]
        operands += [*raw[:drop], *inserts]
        if (yield _Call("edit", key, operands, bool, archive=archive_key)):
            return messages[:drop]
        # Another edit changed the head first: wait a little (longer each time), then redo.
        yield random.uniform(0, _EDIT_BACKOFF_S * 2 ** min(attempt, 5))
    raise EditConflictError(
        f"Redis chat store: the head of conversation {key!r} changed under each of "
        f"{_EDIT_ATTEMPTS} attempts of edit_head (other processes edit it at the same time); "
        f"try again later"
    )


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


class _Batcher:
    """Client-side pipelining of one event loop's calls.

    The calls that the loop's tasks make in one turn of the loop go to the server together,
    as one pipeline on one pooled connection (one write, one read), instead of one round
    trip each: at 16 calls in flight, the system calls of sending and receiving were most
    of a call's cost.  Each call is still one command (a script run, atomic by itself),
    run in the order sent; a pipeline is not a transaction.  A call's reply, or its error,
    goes to its caller only; a failure of the connection fails every call of the batch
    (each may or may not have been applied, as a single call's failure), and a failure to
    get a connection (nothing sent) lets each caller retry on its own.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, *command: Any) -> Any:
        """Send ``command`` with the others of this turn of the loop; returns its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if len(self._queue) >= _MAX_BATCH:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # after the tasks ready now have queued theirs
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        try:
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            await pipe.reset()  # the connection goes back to the pool
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller stopped waiting
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


@dataclass
class _LoopClient:
    """The asyncio client of one event loop, its pipelining, and the generator that closes
    it with the loop."""

    client: redis.asyncio.Redis
    script: AsyncScript
    closer: AsyncGenerator[None, None]
    batcher: _Batcher


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


class RedisChatStore(ClosableStore, CachedReads, HistoryChatStore):
    """Chat history on a Redis server: one list per conversation, every operation atomic.

    Implements the whole ``BaseChatStore`` contract and ``HistoryStore`` (``codec``, ``ttl``,
    ``get_keys(prefix)``, ``edit_head``, ``purge_expired``), sync and async, with the semantics of
    :class:`~aof_index.memory.SQLiteChatStore`: indices behave like Python list indices
    (``delete_message(key, 1)`` removes the second message in order and returns it, ``-1`` is
    the last, out of range gives ``None``; ``add_message(key, m, idx=i)`` is
    ``list.insert(i, m)``), a key without messages does not exist, messages round-trip
    exactly.  With ``ttl``, a conversation expires ``ttl`` seconds after its last write and
    leaves :meth:`get_keys` with it.

    Any number of threads, tasks and processes may share one server: each operation is one
    atomic script or command (``edit_head`` a compare-and-swap script).  Pickling keeps the
    settings (password and codec included, for a child process) and drops the clients, which
    the copy recreates on first use.  ``close()`` or
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
        self._run(_set(self.codec, key, messages))

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Messages of ``key`` in order; ``[]`` for an unknown or expired key."""
        cache = self.read_cache
        if not cache.enabled:
            return self._run(_get(self.codec, key))
        cached = cache.get(key)
        return _merged(cache, key, cached, self._run(_read(self.codec, key, cached)))

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message`` to ``key``, or insert it at ``idx`` like ``list.insert``."""
        self._run(_add(self.codec, key, message, idx))

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete every message of ``key``; returns them, or ``None`` for an unknown key."""
        return self._run(_delete_all(self.codec, key))

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th message of ``key`` in order and return it (``None`` if absent)."""
        return self._run(_delete_at(self.codec, key, idx))

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key`` and return it (``None`` if there is none)."""
        return self._run(_delete_last(self.codec, key))

    def get_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` that hold messages, in code-point order (read from
        the key index, never ``KEYS``)."""
        return self._run(_list_keys(prefix))

    def edit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Apply ``plan`` to the head of ``key`` atomically (see ``HistoryStore``): a
        compare-and-swap script, redone when another writer changed the head first.

        Raises:
            EditConflictError: the head changed under every one of 50 attempts.
        """
        return self._run_flow(_edit_head(self.codec, key, plan, archive_key))

    def purge_expired(self) -> int:
        """Drop the index entries of expired conversations now; returns how many went
        (Redis deletes the expired lists itself)."""
        return self._run(_purge())

    # ----------------------------------------------------------------------------------------
    # Chat-store API, async (redis.asyncio).

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        await self._arun(_set(self.codec, key, messages))

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        cache = self.read_cache
        if not cache.enabled:
            return await self._arun(_get(self.codec, key))
        cached = cache.get(key)
        return _merged(cache, key, cached, await self._arun(_read(self.codec, key, cached)))

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        """Async :meth:`add_message` (LlamaIndex names it ``async_add_message``)."""
        await self._arun(_add(self.codec, key, message, idx))

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        return await self._arun(_delete_all(self.codec, key))

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        return await self._arun(_delete_at(self.codec, key, idx))

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return await self._arun(_delete_last(self.codec, key))

    async def aget_keys(self, prefix: str = "") -> list[str]:
        """Async :meth:`get_keys`."""
        return await self._arun(_list_keys(prefix))

    async def aedit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Async :meth:`edit_head`."""
        return await self._arun_flow(_edit_head(self.codec, key, plan, archive_key))

    async def apurge_expired(self) -> int:
        """Async :meth:`purge_expired`."""
        return await self._arun(_purge())

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

    def _script_args(self, call: _Call[Any]) -> tuple[list[bytes | str], list[bytes | str | int]]:
        prefix = self.prefix.encode("utf-8")
        keys: list[bytes | str] = [prefix + _INDEX_SUFFIX, prefix + _NAMES_SUFFIX]
        for key in (call.key, call.archive):
            if key is not None:
                keys += [self.prefix + key, prefix + _EPOCH_INFIX + key.encode("utf-8")]
        ttl_ms = 0 if self.ttl is None else max(1, round(self.ttl * 1000))
        member = "" if call.key is None else call.key
        token = "" if call.op in _READS else secrets.token_hex(8)
        return keys, [call.op, self.prefix, member, ttl_ms, token, *call.operands]

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
                if call.op == "get":
                    raw = script.registered_client.lrange(keys[2], 0, -1)
                else:
                    raw = script(keys=keys, args=args)
            except errors as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._error(exc, attempt + 1) from exc
            else:
                return call.parse(raw)
            attempt += 1
            time.sleep(delay)

    def _run_flow(self, flow: _Flow[T]) -> T:
        reply: Any = None
        try:
            while True:
                step = flow.send(reply)
                if isinstance(step, float):
                    time.sleep(step)
                    reply = None
                else:
                    reply = self._run(step)
        except StopIteration as stop:
            result: T = stop.value
            return result

    # async path ------------------------------------------------------------------------------

    async def _async_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is not None:
            return entry
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
            client,
            client.register_script(LUA_SCRIPT),
            _close_with_loop(client, forget),
            _Batcher(client),
        )
        with self._lock:
            for old in [other for other in self._aclients if other.is_closed()]:
                del self._aclients[old]
            self._aclients[loop] = created
        # Runs to the generator's `yield` without suspending, so no other task of this loop
        # sees the entry before the loop knows the generator.
        await anext(created.closer)
        return created

    async def _arun(self, call: _Call[T]) -> T:
        entry = await self._async_client()
        script, batcher = entry.script, entry.batcher
        keys, args = self._script_args(call)
        lib = _redis()
        errors = lib.exceptions.RedisError, _NotSent
        attempt = 0
        while True:
            try:
                if call.op == "get":
                    raw = await batcher.call("LRANGE", keys[2], 0, -1)
                else:
                    try:
                        raw = await batcher.call("EVALSHA", script.sha, len(keys), *keys, *args)
                    except lib.exceptions.NoScriptError:  # not run: load it, and run it
                        raw = await script(keys=keys, args=args)
            except errors as exc:
                delay = self._retry_delay(exc, attempt)
                if delay is None:
                    raise self._error(exc, attempt + 1) from exc
            else:
                return call.parse(raw)
            attempt += 1
            await asyncio.sleep(delay)

    async def _arun_flow(self, flow: _Flow[T]) -> T:
        reply: Any = None
        try:
            while True:
                step = flow.send(reply)
                if isinstance(step, float):
                    await asyncio.sleep(step)
                    reply = None
                else:
                    reply = await self._arun(step)
        except StopIteration as stop:
            result: T = stop.value
            return result

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
