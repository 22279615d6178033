"""The read cache's own parts: bounds, copies, the compact form (the stores' use of it is
checked by the contract suite, aof_index.testing)."""

from __future__ import annotations

from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock

from aof_index.memory import SQLiteChatStore
from aof_index.memory.read_cache import (
    CachedConversation,
    ReadCache,
    compact,
    copy_message,
    expand,
    merge,
)


def entry(epoch: int, size: int, count: int = 1) -> CachedConversation:
    messages = tuple(compact(ChatMessage(content=f"m{i}")) for i in range(count))
    return CachedConversation(epoch, messages, count, size)


def test_least_recently_read_goes_first_within_both_bounds() -> None:
    cache = ReadCache(conversations=2, max_bytes=100)
    cache.put("a", entry(1, 10))
    cache.put("b", entry(1, 10))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", entry(1, 10))
    assert cache.get("b") is None and cache.get("a") is not None
    cache.put("d", entry(1, 85))  # 10 + 85 fits; "c" or "a" had to go for the count
    assert len(cache) == 2 and cache.size <= 100
    cache.put("e", entry(1, 101))  # larger than the whole cache: not kept
    assert cache.get("e") is None and cache.size <= 100
    cache.drop("d")
    cache.clear()
    assert len(cache) == 0 and cache.size == 0


def test_a_longer_copy_of_the_same_epoch_is_kept() -> None:
    cache = ReadCache(conversations=4, max_bytes=1000)
    cache.put("k", entry(7, 30, count=3))
    cache.put("k", entry(7, 20, count=2))  # a concurrent read that got less far
    found = cache.get("k")
    assert found is not None and len(found.messages) == 3
    cache.put("k", entry(8, 20, count=2))  # a new epoch replaces it
    found = cache.get("k")
    assert found is not None and found.epoch == 8


def test_disabled_cache_keeps_nothing() -> None:
    for cache in (ReadCache(0, 1000), ReadCache(10, 0)):
        assert not cache.enabled
        cache.put("k", entry(1, 1))
        assert cache.get("k") is None


def test_merge_hands_out_new_objects_and_drops_conversations_without_epoch() -> None:
    cache = ReadCache(10, 10_000)
    first = [ChatMessage(content="a"), ChatMessage(role=MessageRole.ASSISTANT, content="b")]
    got = merge(cache, "k", None, 5, False, first, 2, 2)
    assert got == first and all(x is y for x, y in zip(got, first, strict=True))
    cached = cache.get("k")
    assert cached is not None and cached.end == 2
    more = [ChatMessage(content="c")]
    again = merge(cache, "k", cached, 5, True, more, 3, 1)
    assert [m.content for m in again] == ["a", "b", "c"]
    assert again[0] is not got[0]
    assert merge(cache, "k", cache.get("k"), None, False, [], 0, 0) == []
    assert cache.get("k") is None


def test_copies_and_compact_forms_equal_the_original_and_share_nothing() -> None:
    messages = [
        ChatMessage(content="plain"),
        ChatMessage(role=MessageRole.ASSISTANT, content=""),
        ChatMessage(role=MessageRole.USER, blocks=[]),
        ChatMessage(role=MessageRole.TOOL, content="out", additional_kwargs={"a": [1, {"b": 2}]}),
        ChatMessage(blocks=[TextBlock(text="t"), ImageBlock(image=b"\x89PNG", image_mimetype="x")]),
    ]
    for message in messages:
        for copy in (copy_message(message), expand(compact(message))):
            assert copy == message and copy.model_dump() == message.model_dump()
            assert copy.model_fields_set == message.model_fields_set
            assert copy is not message and copy.additional_kwargs is not message.additional_kwargs
            for mine, theirs in zip(copy.blocks, message.blocks, strict=True):
                assert mine is not theirs
    assert isinstance(compact(messages[0]), tuple)  # not walked by the garbage collector
    assert isinstance(compact(messages[3]), ChatMessage)  # kwargs: a private copy


def test_stores_size_their_cache_from_their_fields() -> None:
    store = SQLiteChatStore(inmemory=True, read_cache_conversations=3, read_cache_bytes=500)
    assert (store.read_cache.conversations, store.read_cache.max_bytes) == (3, 500)
    for i in range(5):
        store.add_message(f"k{i}", ChatMessage(content=f"m{i}"))
        assert [m.content for m in store.get_messages(f"k{i}")] == [f"m{i}"]
    assert len(store.read_cache) == 3
    off = SQLiteChatStore(inmemory=True, read_cache_conversations=0)
    off.add_message("k", ChatMessage(content="x"))
    assert [m.content for m in off.get_messages("k")] == ["x"] and len(off.read_cache) == 0
    store.close()
    off.close()
