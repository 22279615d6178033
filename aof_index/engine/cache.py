"""Query-time caches: query embeddings and retrieval results.

Agents ask the same questions again (a retry, a loop step, several agents of a fleet
sharing a knowledge base). :class:`CachedEmbedding` keeps query vectors and
:class:`CachedRetriever` keeps whole result lists; both sit on :class:`TTLCache`, which is

- bounded: at most ``max_size`` entries, least recently used evicted first;
- timed: an entry older than ``ttl_s`` seconds is a miss;
- versioned: ``version`` is called on every access (make it cheap: an ingest counter, a
  sync-state fingerprint, the vector store's row count) and when its value changes the
  whole cache is dropped, so a result never outlives the index it came from;
- thread-safe: one lock guards the entries; values are computed outside it, so a slow
  retrieval never blocks other readers (two threads missing the same key may both
  compute; the second write wins, which is harmless for pure functions of the key).

Written by hand rather than with ``cachetools.TTLCache``: that one is not thread-safe,
has no invalidation hook, and is not a dependency of the project.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle

__all__ = ["CacheStats", "CachedEmbedding", "CachedRetriever", "TTLCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING: Any = object()


@dataclass
class CacheStats:
    """Counters of a :class:`TTLCache` since it was created."""

    hits: int = 0
    misses: int = 0
    expired: int = 0
    evicted: int = 0
    invalidations: int = 0
    """How many times a new ``version`` dropped the cache."""


class TTLCache(Generic[K, V]):
    """A bounded, thread-safe LRU cache with a time to live and a version check.

    Args:
        max_size: Entries kept; the least recently used is evicted beyond it (0: none).
        ttl_s: Seconds an entry stays valid (``None``: until evicted or invalidated).
        version: Called on every access; when its value differs from the last one seen
            the cache is cleared (the index changed).
        clock: Seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        max_size: int = 1024,
        ttl_s: float | None = 300.0,
        *,
        version: Callable[[], Hashable] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be 0 or more (got {max_size})")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive or None (got {ttl_s})")
        self.max_size = max_size
        self.ttl_s = ttl_s
        self.version = version
        self.clock = clock
        self.stats = CacheStats()
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._version: Hashable = _MISSING
        self._lock = threading.Lock()

    def _check_version(self) -> Hashable:
        """Clear the entries if the version changed (call with the lock held)."""
        if self.version is None:
            return None
        current = self.version()
        if current != self._version:
            if self._version is not _MISSING and self._entries:
                self.stats.invalidations += 1
            self._entries.clear()
            self._version = current
        return current

    def get(self, key: K, default: V | None = None) -> V | None:
        """The cached value of ``key``, or ``default`` when missing, expired or invalidated."""
        value = self._lookup(key)
        return default if value is _MISSING else value

    def _lookup(self, key: K) -> Any:
        with self._lock:
            self._check_version()
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return _MISSING
            stored_at, value = entry
            if self.ttl_s is not None and self.clock() - stored_at >= self.ttl_s:
                del self._entries[key]
                self.stats.expired += 1
                self.stats.misses += 1
                return _MISSING
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return value

    def put(self, key: K, value: V, *, version: Hashable = _MISSING) -> None:
        """Store ``value`` under ``key``.

        ``version``: the index version the value was computed at; when it is no longer the
        current one the value is not stored (it is already stale).
        """
        if self.max_size == 0:
            return
        with self._lock:
            current = self._check_version()
            if version is not _MISSING and version != current:
                return
            self._entries[key] = (self.clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
                self.stats.evicted += 1

    def current_version(self) -> Hashable:
        """The index version now (``None`` without a ``version`` callable)."""
        with self._lock:
            return self._check_version()

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The cached value of ``key``, computing and storing it on a miss."""
        value = self._lookup(key)
        if value is not _MISSING:
            return value  # type: ignore[no-any-return]
        version = self.current_version()
        fresh = compute()
        self.put(key, fresh, version=version)
        return fresh

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class CachedEmbedding(BaseEmbedding):
    """An embedding model whose query vectors are cached (document vectors are not).

    A drop-in LlamaIndex embedding: pass it wherever the wrapped model went (a vector
    index's retriever, the hybrid retriever). Query vectors are keyed by the query text.

    Args:
        inner: The embedding model to wrap.
        max_size: Query vectors kept.
        ttl_s: Seconds a vector stays valid (``None``: no expiry).
        version: Index version callable (see :class:`TTLCache`).
    """

    inner: BaseEmbedding = Field(exclude=True)

    _cache: TTLCache[str, Embedding] = PrivateAttr()

    def __init__(
        self,
        inner: BaseEmbedding,
        *,
        max_size: int = 4096,
        ttl_s: float | None = 3600.0,
        version: Callable[[], Hashable] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("model_name", inner.model_name)
        kwargs.setdefault("embed_batch_size", inner.embed_batch_size)
        super().__init__(inner=inner, **kwargs)
        self._cache = TTLCache(max_size, ttl_s, version=version, clock=clock)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "CachedEmbedding"

    @property
    def cache(self) -> TTLCache[str, Embedding]:
        """The query-vector cache (stats, clear)."""
        return self._cache

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._cache.get_or_compute(query, lambda: self.inner.get_query_embedding(query))

    async def _aget_query_embedding(self, query: str) -> Embedding:
        cached = self._cache.get(query)
        if cached is not None:
            return cached
        version = self._cache.current_version()
        vector = await self.inner.aget_query_embedding(query)
        self._cache.put(query, vector, version=version)
        return vector

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.inner.get_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.inner.get_text_embedding_batch(texts)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await self.inner.aget_text_embedding(text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self.inner.aget_text_embedding_batch(texts)


def _result_key(query_bundle: QueryBundle) -> Hashable:
    return (query_bundle.query_str, tuple(query_bundle.embedding_strs))


class CachedRetriever(BaseRetriever):
    """A retriever whose result lists are cached per query, with a TTL and invalidated
    when the index version changes.

    Args:
        retriever: The retriever to wrap.
        max_size: Result lists kept.
        ttl_s: Seconds a result list stays valid (``None``: no expiry).
        version: Index version callable (see :class:`TTLCache`); without it results live
            until they expire, so pass one whenever the index can change.
        clock: Seconds, monotonic.
        callback_manager: LlamaIndex callback manager.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        max_size: int = 512,
        ttl_s: float | None = 300.0,
        version: Callable[[], Hashable] | None = None,
        clock: Callable[[], float] = time.monotonic,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        self.retriever = retriever
        self.cache: TTLCache[Hashable, list[NodeWithScore]] = TTLCache(
            max_size, ttl_s, version=version, clock=clock
        )
        super().__init__(callback_manager=callback_manager)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.cache.get_or_compute(
            _result_key(query_bundle), lambda: list(self.retriever.retrieve(query_bundle))
        )
        return list(hits)  # callers may reorder the list; the cached one stays intact

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        key = _result_key(query_bundle)
        cached = self.cache.get(key)
        if cached is not None:
            return list(cached)
        version = self.cache.current_version()
        hits = list(await self.retriever.aretrieve(query_bundle))
        self.cache.put(key, hits, version=version)
        return list(hits)
