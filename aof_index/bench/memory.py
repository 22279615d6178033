"""Chat-store benchmark: many concurrent conversations appending and reading, on our store
and on LlamaIndex's own store for the same backend, in one run (``aof-index bench memory``).

Workload (identical for both stores)
------------------------------------
N conversations, each with a distinct key in a namespace of the run's own (a fresh Redis key
prefix, a fresh PostgreSQL schema, fresh SQLite files), run as N asyncio tasks started at
once.  Each task appends M messages in order and, after every ``read_every``-th append and
after the last one, reads its whole conversation back.  Message ``seq`` of conversation
``key`` says so in its content (``[key #seq]`` followed by filler up to ``message_bytes``;
roles alternate user / assistant), so any message read back can be traced to where it was
written.  Calls go through each store's native async methods, ``async_add_message`` and
``aget_messages``: ours are native on redis.asyncio, psycopg's async pool and aiosqlite, and
LlamaIndex's are native too (redis.asyncio; SQLAlchemy's async engine on asyncpg for
PostgreSQL and on aiosqlite for SQLite), so neither side runs sync code in threads.

What a latency figure means here
--------------------------------
One Python process runs one event loop.  With 1000 calls in flight at once, a call's wall
time is mostly its wait for the event loop to come back to it (and for a pooled
connection): it grows with N whatever the store does, and says nothing about the store.  So
the operations in flight are capped at ``concurrency`` (C) by a semaphore: all N
conversations stay active and interleave (each call takes a slot, and a conversation's next
call queues behind the other conversations'), and **a latency is timed from taking a slot to
the call's return**: the store's client code, its round trips and the event loop's turns
among at most C calls.  The wait for a slot is reported apart (``wait_p50_ms``,
``wait_p99_ms``): that is the queue, what an application with N-way concurrency in one
process adds on top.  ``concurrency=0`` lifts the cap (C = N) for that end-to-end view.

Against servers on loopback the client process is CPU-bound (decoding a conversation costs
more than its round trip), so a latency is roughly C times the client's CPU per call, plus
the pauses of CPython's cyclic garbage collector (a full collection of a process that has
imported LlamaIndex takes a few hundred milliseconds), which make most of the p99 and max.
``concurrency=1`` gives the per-call latency of the store alone; the throughput changes
little with C there.

Each store gets a pool of ``pool_size`` connections (default C), so no call inside the cap
waits for a connection; LlamaIndex's stores get the same size where they take one (the
Redis client's ``max_connections``, SQLAlchemy's ``pool_size`` with no overflow).  Beyond
its pool, LlamaIndex's Redis store fails calls with "Too many connections" (counted in
``errors``), while ours waits for a connection.  Our SQLite store has no pool (one
connection per process, writers take turns on the file's lock anyway); it runs in WAL mode,
LlamaIndex's in SQLite's default (rollback journal), each store as configured out of the box
apart from the pool size.

Latency percentiles (``p50_ms``, ``p99_ms``: appends and reads together; ``append_*``,
``read_*`` apart) are over successful calls.  A call that raised counts in ``errors`` (by
kind in ``error_kinds``), not in the throughput; a failed append is not acknowledged.
Throughput is successful calls per second of the workload's wall time; the warm-up before
it (C conversations' worth of calls, which opens the pool) and the verification after it
are not timed.

Verification
------------
After the workload, every conversation is read back through the same store and compared
with the appends that were acknowledged:

- ``lost``: acknowledged messages missing;
- ``reordered``: conversations whose messages (first copies) are not in the order written;
- ``duplicated``: extra copies of a message;
- ``foreign``: messages of another conversation, or not written by the benchmark;
- ``unacked_present``: messages whose append raised but that were stored all the same;
- ``unverified``: conversations whose read-back failed (also counted in ``errors``);
- ``stale_reads`` (during the workload): reads that did not show every append acknowledged
  so far (read-your-writes within a conversation): a different number of messages, or
  another message last.  Only that much is checked per read, since the benchmark's own
  work shares the event loop with the store's; the full comparison is the one above.

The two stores run one after the other (ours first) in the same process, each on a fresh
event loop.  Everything the run created is removed at the end: Redis keys (a ``SCAN`` of the
run's prefix), the PostgreSQL schema (``DROP SCHEMA ... CASCADE``), the SQLite files or the
temporary directory holding them.
"""

from __future__ import annotations

__all__ = [
    "BACKENDS",
    "Backend",
    "BenchConfig",
    "BenchResult",
    "PostgresTarget",
    "StoreFigures",
    "Verification",
    "bench_store",
    "make_message",
    "parse_message",
    "run_memory_bench",
    "verify_conversations",
    "warm_up",
]

import asyncio
import contextlib
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import numpy as np
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.errors import AofIndexError, BackendUnavailableError
from aof_index.registry import missing_extra

if TYPE_CHECKING:
    from numpy.typing import NDArray

T = TypeVar("T")

Backend = Literal["sqlite", "postgres", "redis"]
"""Backends the benchmark runs on."""

BACKENDS: tuple[str, ...] = get_args(Backend)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, as :func:`aof_index.cli.common.progress_bar` takes it."""

_HEAD = re.compile(r"^\[(?P<key>.+) #(?P<seq>\d+)\]")
_FILLER = (
    "The pod restarted after the liveness probe failed; check the readiness gate, the "
    "container's memory limit and the node's disk pressure before scaling the deployment. "
)
_TICK_S = 0.2
_ERROR_TEXT = 160


# --------------------------------------------------------------------------------------------
# Messages.


def make_message(key: str, seq: int, size: int = 256) -> ChatMessage:
    """Message ``seq`` of conversation ``key``: ``[key #seq]`` then filler up to ``size``
    characters; even ``seq`` from the user, odd from the assistant."""
    head = f"[{key} #{seq}] "
    filler = _FILLER * (size // len(_FILLER) + 1)
    role = MessageRole.USER if seq % 2 == 0 else MessageRole.ASSISTANT
    return ChatMessage(role=role, content=head + filler[: max(0, size - len(head))])


def parse_message(message: ChatMessage) -> tuple[str, int] | None:
    """The ``(key, seq)`` that :func:`make_message` wrote into ``message``, or ``None``."""
    found = _HEAD.match(message.content or "")
    return None if found is None else (found["key"], int(found["seq"]))


def _sequence(key: str, messages: Sequence[ChatMessage]) -> tuple[list[int], int]:
    """The seq numbers of ``key``'s messages in order, and how many were someone else's."""
    seqs: list[int] = []
    foreign = 0
    for message in messages:
        parsed = parse_message(message)
        if parsed is None or parsed[0] != key:
            foreign += 1
        else:
            seqs.append(parsed[1])
    return seqs, foreign


# --------------------------------------------------------------------------------------------
# Verification.


@dataclass(frozen=True)
class Verification:
    """What reading every conversation back found (see the module docstring)."""

    conversations: int = 0
    messages: int = 0
    lost: int = 0
    reordered: int = 0
    duplicated: int = 0
    foreign: int = 0
    unacked_present: int = 0
    unverified: int = 0

    @property
    def intact(self) -> bool:
        """Nothing lost, reordered, duplicated, foreign or unverified."""
        return not (
            self.lost or self.reordered or self.duplicated or self.foreign or self.unverified
        )


def verify_conversations(
    acknowledged: Mapping[str, Sequence[int]],
    stored: Mapping[str, Sequence[ChatMessage] | None],
) -> Verification:
    """Compare what each conversation holds with the appends acknowledged to it.

    ``acknowledged`` maps each key to the seq numbers whose append returned, in the order
    written; ``stored`` maps it to the messages read back (``None``: the read failed).
    """
    messages = lost = reordered = duplicated = foreign = unacked = unverified = 0
    for key, acked in acknowledged.items():
        got = stored.get(key)
        if got is None:
            unverified += 1
            continue
        seqs, strangers = _sequence(key, got)
        messages += len(got)
        foreign += strangers
        counts = Counter(seqs)
        lost += sum(1 for seq in acked if counts[seq] == 0)
        duplicated += sum(n - 1 for n in counts.values())
        firsts = list(counts)  # first copies, in the order stored
        if firsts != sorted(firsts):
            reordered += 1
        unacked += len(counts.keys() - set(acked))
    return Verification(
        conversations=len(acknowledged),
        messages=messages,
        lost=lost,
        reordered=reordered,
        duplicated=duplicated,
        foreign=foreign,
        unacked_present=unacked,
        unverified=unverified,
    )


# --------------------------------------------------------------------------------------------
# Figures.


@dataclass(frozen=True)
class StoreFigures:
    """One store's run: throughput, latency percentiles, integrity, errors."""

    store: str
    implementation: str
    seconds: float
    appends: int
    reads: int
    throughput_ops_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    append_p50_ms: float
    append_p99_ms: float
    read_p50_ms: float
    read_p99_ms: float
    wait_p50_ms: float
    wait_p99_ms: float
    stale_reads: int
    errors: int
    error_kinds: dict[str, int]
    verification: Verification

    @property
    def ops(self) -> int:
        """Successful calls in the workload."""
        return self.appends + self.reads

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form (milliseconds to the microsecond)."""
        v = self.verification
        return {
            "store": self.store,
            "implementation": self.implementation,
            "throughput_ops_s": round(self.throughput_ops_s, 1),
            "p50_ms": _ms(self.p50_ms),
            "p99_ms": _ms(self.p99_ms),
            "max_ms": _ms(self.max_ms),
            "append_p50_ms": _ms(self.append_p50_ms),
            "append_p99_ms": _ms(self.append_p99_ms),
            "read_p50_ms": _ms(self.read_p50_ms),
            "read_p99_ms": _ms(self.read_p99_ms),
            "wait_p50_ms": _ms(self.wait_p50_ms),
            "wait_p99_ms": _ms(self.wait_p99_ms),
            "ops": self.ops,
            "appends": self.appends,
            "reads": self.reads,
            "lost": v.lost,
            "reordered": v.reordered,
            "duplicated": v.duplicated,
            "foreign": v.foreign,
            "unacked_present": v.unacked_present,
            "unverified": v.unverified,
            "stale_reads": self.stale_reads,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "seconds": round(self.seconds, 3),
        }


def _ms(value: float) -> float:
    return round(value, 3)


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of ``samples`` (seconds) in milliseconds; zeros when empty."""
    if not samples:
        return 0.0, 0.0, 0.0
    values: NDArray[np.float64] = np.asarray(samples, dtype=np.float64) * 1000.0
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99), float(values.max())


# --------------------------------------------------------------------------------------------
# The workload, on any BaseChatStore.


class _Failed:
    """A call that raised (the exception is counted where it was caught)."""


_FAILED = _Failed()


@dataclass
class _Recorder:
    """Slots, timings, error counts and progress of one store's workload."""

    slots: asyncio.Semaphore
    append_s: list[float] = field(default_factory=list)
    read_s: list[float] = field(default_factory=list)
    wait_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0
    stale_reads: int = 0

    async def call(self, kind: str, make: Callable[[], Awaitable[T]]) -> T | _Failed:
        """Run one call in a slot; time it from taking the slot to its return."""
        queued = time.perf_counter()
        async with self.slots:
            started = time.perf_counter()
            try:
                result = await make()
            except Exception as exc:
                self.errors[_error_kind(exc)] += 1
                return _FAILED
            finally:
                self.done += 1
            ended = time.perf_counter()
        self.wait_s.append(started - queued)
        (self.append_s if kind == "append" else self.read_s).append(ended - started)
        return result


def _error_kind(exc: BaseException) -> str:
    """``Type: message`` on one line, without the statement and parameters that SQLAlchemy
    appends (they differ per call, and the count is per kind)."""
    text = " ".join(str(exc).split()).split(" [SQL: ")[0]
    return f"{type(exc).__name__}: {text}"[:_ERROR_TEXT]


async def _conversation(
    store: BaseChatStore,
    key: str,
    messages: int,
    read_every: int,
    message_bytes: int,
    recorder: _Recorder,
) -> list[int]:
    """Append ``messages`` messages to ``key`` in order, reading back as configured; return
    the seq numbers whose append was acknowledged."""
    acked: list[int] = []
    for seq in range(messages):
        message = make_message(key, seq, message_bytes)
        added = await recorder.call("append", partial(store.async_add_message, key, message))
        if not isinstance(added, _Failed):
            acked.append(seq)
        if (seq + 1) % read_every == 0 or seq == messages - 1:
            got = await recorder.call("read", partial(store.aget_messages, key))
            if not isinstance(got, _Failed) and not _current(key, got, acked):
                recorder.stale_reads += 1
    return acked


def _current(key: str, got: Sequence[ChatMessage], acked: Sequence[int]) -> bool:
    """Whether a read shows every acknowledged append: as many messages, the last one last.

    A cheap check, made on every read (the bench's own work shares the event loop with the
    store's); the full comparison is the verification at the end.
    """
    if len(got) != len(acked):
        return False
    return not acked or parse_message(got[-1]) == (key, acked[-1])


def _reads_per_conversation(messages: int, read_every: int) -> int:
    """How many reads one conversation makes: every ``read_every``-th append and the last."""
    return messages // read_every + (1 if messages % read_every else 0)


async def _tick(recorder: _Recorder, total: int, report: Callable[[int, int], None]) -> None:
    while True:
        report(recorder.done, total)
        await asyncio.sleep(_TICK_S)


async def bench_store(
    store: BaseChatStore,
    keys: Sequence[str],
    messages: int,
    *,
    concurrency: int,
    read_every: int = 1,
    message_bytes: int = 256,
    label: str = "store",
    implementation: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> StoreFigures:
    """Run the workload on ``store`` (one conversation per key, all at once, at most
    ``concurrency`` calls in flight), then read every conversation back and verify it.

    The keys should be empty when the run starts.  Nothing is deleted afterwards.
    """
    if concurrency < 1 or messages < 1 or read_every < 1:
        raise ValueError("concurrency, messages and read_every must be at least 1")
    recorder = _Recorder(asyncio.Semaphore(concurrency))
    total = len(keys) * (messages + _reads_per_conversation(messages, read_every))
    ticker = (
        asyncio.get_running_loop().create_task(_tick(recorder, total, on_progress))
        if on_progress is not None
        else None
    )
    started = time.perf_counter()
    try:
        acked = await asyncio.gather(
            *(
                _conversation(store, key, messages, read_every, message_bytes, recorder)
                for key in keys
            )
        )
    finally:
        seconds = time.perf_counter() - started
        if ticker is not None:
            ticker.cancel()
    if on_progress is not None:
        on_progress(recorder.done, total)

    # Verification: read every conversation back, at the same concurrency.
    verify = _Recorder(asyncio.Semaphore(concurrency), errors=recorder.errors)
    stored = await asyncio.gather(
        *(verify.call("read", partial(store.aget_messages, key)) for key in keys)
    )
    verification = verify_conversations(
        dict(zip(keys, acked, strict=True)),
        {
            key: None if isinstance(got, _Failed) else got
            for key, got in zip(keys, stored, strict=True)
        },
    )
    p50, p99, worst = _percentiles(recorder.append_s + recorder.read_s)
    a50, a99, _ = _percentiles(recorder.append_s)
    r50, r99, _ = _percentiles(recorder.read_s)
    w50, w99, _ = _percentiles(recorder.wait_s)
    ops = len(recorder.append_s) + len(recorder.read_s)
    return StoreFigures(
        store=label,
        implementation=implementation or _qualified_name(store),
        seconds=seconds,
        appends=len(recorder.append_s),
        reads=len(recorder.read_s),
        throughput_ops_s=ops / seconds if seconds > 0 else 0.0,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        append_p50_ms=a50,
        append_p99_ms=a99,
        read_p50_ms=r50,
        read_p99_ms=r99,
        wait_p50_ms=w50,
        wait_p99_ms=w99,
        stale_reads=recorder.stale_reads,
        errors=sum(recorder.errors.values()),
        error_kinds=dict(recorder.errors.most_common(5)),
        verification=verification,
    )


async def warm_up(store: BaseChatStore, prefix: str, concurrency: int) -> None:
    """Open the store's pool: ``concurrency`` conversations at once append, read and delete
    one message each (keys ``prefix + "warmup-<i>"``)."""

    async def one(i: int) -> None:
        key = f"{prefix}warmup-{i}"
        await store.async_add_message(key, make_message(key, 0))
        await store.aget_messages(key)
        await store.adelete_messages(key)

    await asyncio.gather(*(one(i) for i in range(concurrency)))


def _qualified_name(obj: object) -> str:
    cls = type(obj)
    module = cls.__module__
    if module.startswith("aof_index.memory."):
        module = "aof_index.memory"  # the public path
    return f"{module}.{cls.__qualname__}"


# --------------------------------------------------------------------------------------------
# Configuration.


@dataclass(frozen=True)
class PostgresTarget:
    """Where the PostgreSQL benchmark connects (the password is never printed)."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str | None = "postgres"
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"

    @classmethod
    def from_dsn(cls, dsn: str) -> PostgresTarget:
        """Parse a libpq connection string (URL or ``key=value`` form)."""
        try:
            from psycopg.conninfo import conninfo_to_dict
        except ImportError as exc:
            raise missing_extra("The PostgreSQL memory benchmark", "bench") from exc
        try:
            params = conninfo_to_dict(dsn)
        except Exception as exc:
            raise AofIndexError(f"--postgres-dsn is not a valid connection string: {exc}") from exc
        return cls(
            host=str(params.get("host") or "127.0.0.1"),
            port=int(params.get("port") or 5432),
            database=str(params.get("dbname") or "postgres"),
            user=None if params.get("user") is None else str(params["user"]),
            password=None if params.get("password") is None else str(params["password"]),
            sslmode=str(params.get("sslmode") or "prefer"),
        )

    @property
    def where(self) -> str:
        """``host:port/database``."""
        return f"{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class BenchConfig:
    """One ``bench memory`` run (see the module docstring for what each knob means)."""

    backend: Backend
    conversations: int = 1000
    messages: int = 50
    concurrency: int = 16
    """Calls in flight at most; 0: no cap (one per conversation)."""
    pool_size: int | None = None
    """Connections in each store's pool; default: the concurrency cap."""
    read_every: int = 1
    message_bytes: int = 256
    baseline: bool = True
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres: PostgresTarget = field(default_factory=PostgresTarget)
    sqlite_dir: Path | None = None
    """Directory for the SQLite files; default: a temporary directory, removed at the end."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("conversations", "messages", "read_every", "message_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.concurrency < 0:
            raise ValueError("concurrency must be 0 (no cap) or more")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")

    @property
    def cap(self) -> int:
        """The in-flight cap in effect."""
        return min(self.concurrency or self.conversations, self.conversations)

    @property
    def pool(self) -> int:
        """Connections per pool in effect."""
        return self.pool_size or self.cap


@dataclass(frozen=True)
class BenchResult:
    """Both stores' figures from one run."""

    config: BenchConfig
    where: str
    ours: StoreFigures
    baseline: StoreFigures | None
    date: str
    machine: dict[str, Any]
    ceiling: StoreFigures | None = None
    """The workload on aof-index's in-memory store (no I/O; each read still hands out new
    ``ChatMessage`` objects, as every store must): what the harness and Python cost."""

    @property
    def baseline_ratio(self) -> float | None:
        """Our throughput over LlamaIndex's (``None`` without a baseline)."""
        return _ratio(self.ours, self.baseline)

    @property
    def ceiling_ratio(self) -> float | None:
        """The in-memory store's throughput over LlamaIndex's: the highest
        ``baseline_ratio`` a store of this backend could reach in this run."""
        return None if self.ceiling is None else _ratio(self.ceiling, self.baseline)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` object: settings, ``ours``, ``baseline``, ``baseline_ratio``, and
        ours' headline figures at the top level."""
        c = self.config
        ratio, ceiling = self.baseline_ratio, self.ceiling_ratio
        return {
            "backend": c.backend,
            "where": self.where,
            "conversations": c.conversations,
            "messages": c.messages,
            "concurrency": c.cap,
            "pool_size": c.pool,
            "read_every": c.read_every,
            "message_bytes": c.message_bytes,
            "latency": (
                f"per call, from taking one of {c.cap} in-flight slots to the call's return "
                f"(successful calls; the wait for a slot is wait_*_ms)"
            ),
            "throughput_ops_s": round(self.ours.throughput_ops_s, 1),
            "p50_ms": _ms(self.ours.p50_ms),
            "p99_ms": _ms(self.ours.p99_ms),
            "lost": self.ours.verification.lost,
            "reordered": self.ours.verification.reordered,
            "baseline_ratio": None if ratio is None else round(ratio, 2),
            "ceiling_ratio": None if ceiling is None else round(ceiling, 2),
            "ours": self.ours.as_json(),
            "baseline": None if self.baseline is None else self.baseline.as_json(),
            "ceiling": None if self.ceiling is None else self.ceiling.as_json(),
            "date": self.date,
            "machine": self.machine,
        }


def _ratio(figures: StoreFigures, baseline: StoreFigures | None) -> float | None:
    if baseline is None or baseline.throughput_ops_s <= 0:
        return None
    return figures.throughput_ops_s / baseline.throughput_ops_s


# --------------------------------------------------------------------------------------------
# Backends: where each store lives for one run, and how to remove it.


@dataclass
class _Opened:
    """A store ready for the workload: its keys' prefix and how to close it."""

    store: BaseChatStore
    implementation: str
    key_prefix: str
    aclose: Callable[[], Awaitable[None]]


class _Target:
    """One backend for one run: opens both stores in a namespace of its own."""

    where: str
    leftovers: str
    """What the run creates, as the message about a failed cleanup names it."""

    async def open_ours(self, pool: int) -> _Opened:
        raise NotImplementedError

    async def open_baseline(self, pool: int) -> _Opened:
        raise NotImplementedError

    def check_baseline(self) -> None:
        """Raise the missing-extra error if LlamaIndex's store is not installed."""

    def cleanup(self) -> None:
        """Remove everything the run created."""


def _need(module: str, what: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(what, "bench") from exc


class _RedisTarget(_Target):
    def __init__(self, url: str) -> None:
        self.url = url
        self.namespace = f"aof-bench:{uuid.uuid4().hex[:12]}:"
        self.leftovers = f"the keys matching {self.namespace}*"
        parts = urlsplit(url)
        self.where = (
            f"unix socket {parts.path}"
            if parts.scheme == "unix"
            else f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
        )

    def check_baseline(self) -> None:
        _need("llama_index.storage.chat_store.redis", "LlamaIndex's Redis chat store")

    async def open_ours(self, pool: int) -> _Opened:
        from aof_index.memory import RedisChatStore

        store = RedisChatStore(url=self.url, prefix=self.namespace + "ours:", pool_size=pool)
        return _Opened(store, _qualified_name(store), "", store.aclose)

    async def open_baseline(self, pool: int) -> _Opened:
        import redis
        import redis.asyncio
        from llama_index.storage.chat_store.redis import RedisChatStore as LlamaRedisChatStore

        # The clients its constructor would make from redis_url (Redis.from_url), built
        # here so that they can be closed; max_connections is its pool size.
        aclient = redis.asyncio.Redis.from_url(self.url, max_connections=pool)
        client = redis.Redis.from_url(self.url)
        store = LlamaRedisChatStore(redis_client=client, aredis_client=aclient)

        async def aclose() -> None:
            await aclient.aclose()
            client.close()

        return _Opened(store, _qualified_name(store), self.namespace + "llama:", aclose)

    def cleanup(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=self.namespace + "*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)
        finally:
            client.close()


class _PostgresTarget(_Target):
    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self.schema = f"aof_bench_{uuid.uuid4().hex[:12]}"
        self.leftovers = f"schema {self.schema}"
        self.where = target.where

    def check_baseline(self) -> None:
        _need("llama_index.storage.chat_store.postgres", "LlamaIndex's PostgreSQL chat store")
        _need("asyncpg", "LlamaIndex's PostgreSQL chat store")

    async def open_ours(self, pool: int) -> _Opened:
        from pydantic import SecretStr

        from aof_index.memory import PostgresChatStore

        t = self.target
        store = PostgresChatStore(
            host=t.host,
            port=t.port,
            database=t.database,
            user=t.user,
            password=None if t.password is None else SecretStr(t.password),
            sslmode=t.sslmode,  # type: ignore[arg-type]  # libpq checks it
            db_schema=self.schema,
            table="aof_messages",
            max_connections=pool,
        )
        return _Opened(store, _qualified_name(store), "", store.aclose)

    async def open_baseline(self, pool: int) -> _Opened:
        from llama_index.storage.chat_store.postgres import (
            PostgresChatStore as LlamaPostgresChatStore,
        )
        from sqlalchemy import URL, create_engine
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
        from sqlalchemy.orm import sessionmaker

        t = self.target
        # What its from_params builds (psycopg for the schema, asyncpg for async calls),
        # with the pool sized like ours.
        url = URL.create(
            "postgresql+psycopg",
            username=t.user,
            password=t.password,
            host=t.host,
            port=t.port,
            database=t.database,
            query={"sslmode": t.sslmode},
        )
        engine = create_engine(url)
        aengine = create_async_engine(
            url.set(drivername="postgresql+asyncpg", query={}),
            connect_args={"ssl": t.sslmode},
            pool_size=pool,
            max_overflow=0,
        )
        return await _on_engines(
            lambda: LlamaPostgresChatStore(
                session=sessionmaker(engine),
                async_session=sessionmaker(aengine, class_=AsyncSession),  # type: ignore[call-overload]
                table_name="llama_messages",
                schema_name=self.schema,
            ),
            engine,
            aengine,
        )

    def cleanup(self) -> None:
        import psycopg

        t = self.target
        with psycopg.connect(
            host=t.host,
            port=t.port,
            dbname=t.database,
            user=t.user,
            password=t.password,
            sslmode=t.sslmode,
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


async def _on_engines(build: Callable[[], Any], engine: Any, aengine: Any) -> _Opened:
    """Open a LlamaIndex SQL store built on SQLAlchemy engines; closing disposes them."""

    async def aclose() -> None:
        await aengine.dispose()
        engine.dispose()

    try:
        store = build()
    except BaseException:
        await aclose()
        raise
    return _Opened(store, _qualified_name(store), "", aclose)


class _SQLiteTarget(_Target):
    def __init__(self, directory: Path | None) -> None:
        self.owned = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="aof-bench-")) if directory is None else directory
        )
        run = uuid.uuid4().hex[:12]
        self.ours_path = self.directory / f"aof-bench-{run}-ours.db"
        self.llama_path = self.directory / f"aof-bench-{run}-llama.db"
        self.where = str(self.directory)
        self.leftovers = (
            str(self.directory) if self.owned else f"{self.ours_path} and {self.llama_path}"
        )

    def check_baseline(self) -> None:
        _need("llama_index.storage.chat_store.sqlite", "LlamaIndex's SQLite chat store")

    async def open_ours(self, pool: int) -> _Opened:
        from aof_index.memory import SQLiteChatStore

        self.directory.mkdir(parents=True, exist_ok=True)
        # One connection per process and task kind by design (writers take turns on the
        # file's lock anyway), so there is no pool to size.
        store = SQLiteChatStore(path=self.ours_path, journal_mode="WAL")
        return _Opened(store, _qualified_name(store), "", store.aclose)

    async def open_baseline(self, pool: int) -> _Opened:
        from llama_index.storage.chat_store.sqlite import SQLiteChatStore as LlamaSQLiteChatStore
        from sqlalchemy import create_engine
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
        from sqlalchemy.orm import sessionmaker

        self.directory.mkdir(parents=True, exist_ok=True)
        # What its from_params builds, with the async pool sized like the others.
        engine = create_engine(f"sqlite:///{self.llama_path}")
        aengine = create_async_engine(
            f"sqlite+aiosqlite:///{self.llama_path}", pool_size=pool, max_overflow=0
        )
        return await _on_engines(
            lambda: LlamaSQLiteChatStore(
                session=sessionmaker(engine),
                async_session=async_sessionmaker(aengine, class_=AsyncSession),  # type: ignore[arg-type]
                table_name="llama_messages",
            ),
            engine,
            aengine,
        )

    def cleanup(self) -> None:
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        for path in (self.ours_path, self.llama_path):
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def _target(config: BenchConfig) -> _Target:
    if config.backend == "redis":
        _need("redis", "The Redis memory benchmark")
        return _RedisTarget(config.redis_url)
    if config.backend == "postgres":
        _need("psycopg", "The PostgreSQL memory benchmark")
        _need("psycopg_pool", "The PostgreSQL memory benchmark")
        return _PostgresTarget(config.postgres)
    return _SQLiteTarget(config.sqlite_dir)


# --------------------------------------------------------------------------------------------
# The run.


async def _open_in_memory(pool: int) -> _Opened:
    """aof-index's in-memory store, for the ceiling: the workload without any I/O."""
    from aof_index.memory import InMemoryChatStore

    store = InMemoryChatStore()

    async def aclose() -> None:
        return None

    return _Opened(store, _qualified_name(store), "", aclose)


def _phase(
    open_store: Callable[[int], Awaitable[_Opened]],
    config: BenchConfig,
    label: str,
    where: str,
    progress: Progress | None,
) -> StoreFigures:
    """One store on a fresh event loop: open, warm up, run the workload, close."""

    async def run() -> StoreFigures:
        try:
            opened = await open_store(config.pool)
        except AofIndexError:
            raise
        except Exception as exc:
            raise _setup_error(config, label, where, exc) from exc
        try:
            try:
                await warm_up(opened.store, opened.key_prefix, config.pool)
            except AofIndexError:
                raise
            except Exception as exc:
                raise _setup_error(config, label, where, exc) from exc
            keys = [f"{opened.key_prefix}conv-{i:05d}" for i in range(config.conversations)]
            report = None if progress is None else _stage(progress, label)
            return await bench_store(
                opened.store,
                keys,
                config.messages,
                concurrency=config.cap,
                read_every=config.read_every,
                message_bytes=config.message_bytes,
                label=label,
                implementation=opened.implementation,
                on_progress=report,
            )
        finally:
            await opened.aclose()

    return asyncio.run(run())


def _setup_error(
    config: BenchConfig, label: str, where: str, exc: Exception
) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"memory benchmark: the {label} store on {config.backend} at {where} failed to "
        f"start: {_error_kind(exc)}. Check that the server runs and accepts this connection."
    )


def _stage(progress: Progress, label: str) -> Callable[[int, int], None]:
    return lambda done, total: progress(label, done, total)


def run_memory_bench(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run the workload on our store, then on LlamaIndex's and on the in-memory store
    (the ceiling; both unless ``config.baseline`` is off), and remove what the run
    created.  ``progress(stage, done, total)`` is called a few times a second.

    Raises :class:`~aof_index.errors.BackendUnavailableError` when the backend cannot be
    reached or a package is missing (naming the extra).
    """
    target = _target(config)
    if config.baseline:
        target.check_baseline()  # before spending minutes on ours
    try:
        ours = _phase(target.open_ours, config, "aof-index", target.where, progress)
        baseline = (
            _phase(target.open_baseline, config, "llama-index", target.where, progress)
            if config.baseline
            else None
        )
        ceiling = (
            _phase(_open_in_memory, config, "in-memory", "this process", progress)
            if config.baseline
            else None
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            target.cleanup()
        raise
    try:
        target.cleanup()
    except Exception as exc:
        raise BackendUnavailableError(
            f"memory benchmark on {config.backend} at {target.where}: the run finished but "
            f"removing what it created failed ({_error_kind(exc)}); remove "
            f"{target.leftovers} by hand."
        ) from exc
    return BenchResult(
        config=config,
        where=target.where,
        ours=ours,
        baseline=baseline,
        ceiling=ceiling,
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        machine={
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
    )
