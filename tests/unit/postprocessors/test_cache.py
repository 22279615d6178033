"""Query-embedding and result caches: TTL, size bound, index-version invalidation, threads."""

from __future__ import annotations

import threading

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from aof_index.engine.cache import CachedEmbedding, CachedRetriever, TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingEmbedding(BaseEmbedding):
    calls: int = 0

    def _get_query_embedding(self, query: str) -> list[float]:
        self.calls += 1
        return [float(len(query)), 1.0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        self.calls += 1
        return [0.0, 1.0]


class CountingRetriever(BaseRetriever):
    def __init__(self) -> None:
        self.calls = 0
        self.corpus = "v1"
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls += 1
        return [NodeWithScore(node=TextNode(text=f"{self.corpus}:{query_bundle.query_str}"))]


def test_ttl_expires_entries() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(10, ttl_s=5, clock=clock)
    cache.put("a", 1)
    clock.now = 4.9
    assert cache.get("a") == 1
    clock.now = 5.0
    assert cache.get("a") is None
    assert cache.stats.expired == 1


def test_size_bound_evicts_least_recently_used() -> None:
    cache: TTLCache[str, int] = TTLCache(2, ttl_s=None)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2 and cache.stats.evicted == 1


def test_version_change_invalidates() -> None:
    version = {"v": 1}
    cache: TTLCache[str, int] = TTLCache(10, ttl_s=None, version=lambda: version["v"])
    cache.put("a", 1)
    assert cache.get("a") == 1
    version["v"] = 2
    assert cache.get("a") is None
    assert cache.stats.invalidations == 1


def test_value_computed_before_a_version_change_is_not_stored() -> None:
    version = {"v": 1}
    cache: TTLCache[str, str] = TTLCache(10, ttl_s=None, version=lambda: version["v"])

    def compute() -> str:
        version["v"] = 2  # the index changes while the value is being computed
        return "stale"

    assert cache.get_or_compute("a", compute) == "stale"
    assert cache.get("a") is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        TTLCache(10, ttl_s=0)
    with pytest.raises(ValueError, match="max_size"):
        TTLCache(-1)


def test_threads_share_one_consistent_cache() -> None:
    cache: TTLCache[int, int] = TTLCache(50, ttl_s=None)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(2000):
                key = (seed * 7 + i) % 100
                value = cache.get_or_compute(key, lambda k=key: k * k)  # type: ignore[misc]
                assert value == key * key
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) <= 50


def test_cached_embedding_caches_queries_only() -> None:
    inner = CountingEmbedding()
    version = {"v": "a"}
    model = CachedEmbedding(inner, version=lambda: version["v"])
    assert model.get_query_embedding("dns") == model.get_query_embedding("dns")
    assert inner.calls == 1
    model.get_text_embedding("doc")
    model.get_text_embedding("doc")
    assert inner.calls == 3
    version["v"] = "b"
    model.get_query_embedding("dns")
    assert inner.calls == 4


async def test_cached_embedding_async() -> None:
    inner = CountingEmbedding()
    model = CachedEmbedding(inner)
    await model.aget_query_embedding("x")
    await model.aget_query_embedding("x")
    assert inner.calls == 1


def test_cached_retriever_ttl_and_index_change() -> None:
    inner = CountingRetriever()
    clock = Clock()
    retriever = CachedRetriever(inner, ttl_s=60, version=lambda: inner.corpus, clock=clock)
    first = retriever.retrieve("dns")
    first.clear()  # a caller mutating its list does not corrupt the cache
    assert retriever.retrieve("dns")[0].node.get_content() == "v1:dns"
    assert inner.calls == 1
    inner.corpus = "v2"  # re-ingested: the fingerprint changes
    assert retriever.retrieve("dns")[0].node.get_content() == "v2:dns"
    assert inner.calls == 2
    clock.now = 61
    retriever.retrieve("dns")
    assert inner.calls == 3
    retriever.retrieve("other")
    assert inner.calls == 4


async def test_cached_retriever_async() -> None:
    inner = CountingRetriever()
    retriever = CachedRetriever(inner, max_size=1)
    await retriever.aretrieve("a")
    await retriever.aretrieve("a")
    assert inner.calls == 1
    await retriever.aretrieve("b")
    await retriever.aretrieve("a")  # evicted by b (max_size 1)
    assert inner.calls == 3
