"""Upstream defects the design works around (DESIGN.md), each shown to be gone."""

from __future__ import annotations

from pathlib import Path

from llama_index.core.schema import MetadataMode

from aof_index import build_memory
from aof_index_readers import LocalFilesReader

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_minilm_never_truncates_a_chunk_of_the_k8s_docs() -> None:
    """MiniLM reads 256 word pieces; LlamaIndex's default chunk is 1024 tokens."""
    memory = build_memory()
    window = memory.window
    assert window.max_tokens == 254  # 256 positions minus [CLS] and [SEP]
    docs = list(LocalFilesReader([SHARED_DATA / "k8s-docs"], exclude=["*.sha256"]).load_data())
    nodes = memory.node_parser().get_nodes_from_documents(docs)
    sizes = [window.count(n.get_content(metadata_mode=MetadataMode.EMBED)) for n in nodes]
    assert len(docs) >= 155 and len(nodes) > 2000
    assert max(sizes) <= 254
    from llama_index.core.node_parser import SentenceSplitter

    default = SentenceSplitter().get_nodes_from_documents(docs[:20])
    truncated = [n for n in default if window.count(n.get_content()) > 254]
    assert truncated  # what the default splitter would have lost


def test_tiktoken_works_offline_from_the_bundled_cache(monkeypatch) -> None:
    import socket

    def refuse(*args, **kwargs):  # any download attempt fails the test
        raise AssertionError("tiktoken tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    import tiktoken

    assert Path(__import__("os").environ["TIKTOKEN_CACHE_DIR"]).is_dir()
    assert len(tiktoken.get_encoding("cl100k_base").encode("kubectl get pods")) > 0


# --- Redis: LlamaIndex's RedisChatStore (its constructor already connects) and ours, both
# against the real server on 127.0.0.1:6379.  Each test writes under keys of its own.


def test_upstream_redis_delete_message_reverses_order_and_returns_bytes() -> None:
    from uuid import uuid4

    import redis
    from llama_index.core.llms import ChatMessage
    from llama_index.storage.chat_store.redis import RedisChatStore as UpstreamRedisChatStore

    from aof_index.memory import RedisChatStore

    key = f"aof-test-upstream:{uuid4().hex}"
    upstream = UpstreamRedisChatStore(redis_url="redis://127.0.0.1:6379")
    ours = RedisChatStore(url="redis://127.0.0.1:6379", prefix=f"{key}:")
    messages = [ChatMessage(role="user", content=text) for text in "abcd"]
    admin = redis.Redis()
    try:
        upstream.set_messages(key, messages)
        removed = upstream.delete_message(key, 1)
        assert isinstance(removed, bytes)  # not a ChatMessage
        assert [m.content for m in upstream.get_messages(key)] == ["d", "c", "a"]  # reversed

        ours.set_messages("k", messages)
        removed = ours.delete_message("k", 1)
        assert isinstance(removed, ChatMessage) and removed.content == "b"
        assert [m.content for m in ours.get_messages("k")] == ["a", "c", "d"]
    finally:
        admin.delete(key, *admin.scan_iter(match=f"{key}:*"))
        ours.close()


def test_upstream_redis_get_keys_runs_keys_over_the_whole_database() -> None:
    from uuid import uuid4

    import redis
    from llama_index.core.llms import ChatMessage
    from llama_index.storage.chat_store.redis import RedisChatStore as UpstreamRedisChatStore

    from aof_index.memory import RedisChatStore

    key = f"aof-test-upstream:{uuid4().hex}"
    upstream = UpstreamRedisChatStore(redis_url="redis://127.0.0.1:6379")
    ours = RedisChatStore(url="redis://127.0.0.1:6379", prefix=f"{key}:")
    admin = redis.Redis()
    unrelated = f"{key}-unrelated"
    try:
        admin.set(unrelated, "not a conversation")
        upstream.add_message(key, ChatMessage(role="user", content="hi"))
        before = admin.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)
        listed = upstream.get_keys()
        after = admin.info("commandstats")["cmdstat_keys"]["calls"]
        assert after > before  # KEYS *: walks every key of the database, blocking the server
        assert key in listed and unrelated in listed  # any key at all counts as a chat

        ours.add_message("k", ChatMessage(role="user", content="hi"))
        assert ours.get_keys() == ["k"]  # from its index; never KEYS or SCAN (an ACL user
        # without either runs it: test_redis_chat_store.py)
    finally:
        admin.delete(key, unrelated, *admin.scan_iter(match=f"{key}:*"))
        ours.close()


def test_upstream_redis_async_calls_fail_beyond_its_pool() -> None:
    import asyncio
    from uuid import uuid4

    import redis
    from llama_index.core.llms import ChatMessage
    from llama_index.core.storage.chat_store.base import BaseChatStore
    from llama_index.storage.chat_store.redis import RedisChatStore as UpstreamRedisChatStore

    from aof_index.memory import RedisChatStore

    key = f"aof-test-upstream:{uuid4().hex}"
    upstream = UpstreamRedisChatStore(redis_url="redis://127.0.0.1:6379")
    ours = RedisChatStore(
        url="redis://127.0.0.1:6379", prefix=f"{key}:", pool_size=5, pool_timeout=120
    )
    admin = redis.Redis()

    async def flood(store: BaseChatStore, target: str) -> list[BaseException]:
        calls = [
            store.async_add_message(target, ChatMessage(role="user", content=str(i)))
            for i in range(2000)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    async def flood_upstream() -> list[BaseException]:
        client = upstream._aredis_client
        assert client is not None
        try:
            return await flood(upstream, key)
        finally:
            await client.aclose()

    try:
        errors = asyncio.run(flood_upstream())
        assert errors and {str(e) for e in errors} == {"Too many connections"}
        assert admin.llen(key) == 2000 - len(errors)  # those messages are lost

        assert asyncio.run(flood(ours, "k")) == []  # a blocking pool of 5: callers wait
        assert len(ours.get_messages("k")) == 2000
    finally:
        admin.delete(key, *admin.scan_iter(match=f"{key}:*"))
        ours.close()
