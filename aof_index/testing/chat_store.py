"""Contract that every chat store of aof-index passes, and that third-party ones can run.

Subclass :class:`ChatStoreContract` in a test module, name the subclass ``Test...`` and give
it a ``store`` fixture that returns a fresh, empty store (and closes it afterwards)::

        from aof_index.testing import ChatStoreContract

    class TestMyChatStore(ChatStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            store = MyChatStore(path=tmp_path / "chat.db")
            yield store
            store.close()

The contract is LlamaIndex's ``BaseChatStore`` made precise:

- indices are Python list indices: ``add_message(key, m, idx=i)`` behaves like
  ``list.insert(i, m)``; ``delete_message(key, i)`` removes the ``i``-th message in order
  (``-1`` is the last) and returns it, or returns ``None`` when ``i`` is out of range;
- unknown keys give ``[]`` from ``get_messages`` and ``None`` from every delete;
- a key without messages does not exist (``get_keys`` omits it);
- messages round-trip exactly (``model_dump()`` equal), tool calls included;
- each async method (``aset_messages``, ``aget_messages``, ``async_add_message``,
  ``adelete_messages``, ``adelete_message``, ``adelete_last_message``, ``aget_keys``) gives
  what its sync twin gives, and concurrent writers never lose or duplicate a message;
- :class:`SharedChatStoreContract` adds the cross-process case for stores whose data
  outlives the process (a file, a server): two processes appending to one key (each with a
  pickled copy of the store, started with ``multiprocessing``'s spawn method) lose nothing
  and keep each one's messages in its order.  Process-local stores (in-memory ones)
  subclass :class:`ChatStoreContract` only.

The tests are synchronous and drive the async methods with ``asyncio.run``, so the suite
needs no asyncio plugin.  It is written for pytest (a development dependency of aof-index:
collection by name, the ``store`` fixture) but imports nothing from it, so importing this
module is safe in a production install.
"""

from __future__ import annotations

__all__ = ["ChatStore", "ChatStoreContract", "SharedChatStoreContract"]

import asyncio
import multiprocessing
import pickle
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock

T = TypeVar("T")


class ChatStore(Protocol):
    """The chat-store surface the contract exercises (``BaseChatStore`` plus ``idx``)."""

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None: ...
    def get_messages(self, key: str) -> list[ChatMessage]: ...
    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None: ...
    def delete_messages(self, key: str) -> list[ChatMessage] | None: ...
    def delete_message(self, key: str, idx: int) -> ChatMessage | None: ...
    def delete_last_message(self, key: str) -> ChatMessage | None: ...
    def get_keys(self) -> list[str]: ...
    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None: ...
    async def aget_messages(self, key: str) -> list[ChatMessage]: ...
    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None: ...
    async def adelete_messages(self, key: str) -> list[ChatMessage] | None: ...
    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None: ...
    async def adelete_last_message(self, key: str) -> ChatMessage | None: ...
    async def aget_keys(self) -> list[str]: ...


def _msg(text: str, role: MessageRole = MessageRole.USER, **kwargs: Any) -> ChatMessage:
    return ChatMessage(role=role, content=text, additional_kwargs=kwargs)


def _msgs(*texts: str) -> list[ChatMessage]:
    roles = (MessageRole.USER, MessageRole.ASSISTANT)
    return [_msg(text, roles[i % 2]) for i, text in enumerate(texts)]


def _dumps(messages: Sequence[ChatMessage] | None) -> list[dict[str, Any]] | None:
    return None if messages is None else [m.model_dump() for m in messages]


def _dump(message: ChatMessage | None) -> dict[str, Any] | None:
    return None if message is None else message.model_dump()


def _texts(store: ChatStore, key: str) -> list[str | None]:
    return [m.content for m in store.get_messages(key)]


def _run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


def _tool_call_conversation() -> list[ChatMessage]:
    """A user turn, an assistant turn calling two tools, the tools' answers, a reply."""
    tool_calls = [
        {
            "id": "call_pods",
            "type": "function",
            "function": {
                "name": "kubectl_get",
                "arguments": '{"resource": "pods", "namespace": "prod", "selector": "app=web"}',
            },
        },
        {
            "id": "call_logs",
            "type": "function",
            "function": {"name": "kubectl_logs", "arguments": '{"pod": "web-7d9f", "tail": 50}'},
        },
    ]
    return [
        ChatMessage(role=MessageRole.USER, content="Why is web crash-looping in prod?"),
        ChatMessage(
            role=MessageRole.ASSISTANT, content=None, additional_kwargs={"tool_calls": tool_calls}
        ),
        ChatMessage(
            role=MessageRole.TOOL,
            content="NAME READY STATUS RESTARTS\nweb-7d9f 0/1 CrashLoopBackOff 12",
            additional_kwargs={"tool_call_id": "call_pods", "name": "kubectl_get"},
        ),
        ChatMessage(
            role=MessageRole.TOOL,
            content='panic: open /etc/web/config.yaml: no such file or directory\n\t"quoted"',
            additional_kwargs={"tool_call_id": "call_logs", "name": "kubectl_logs"},
        ),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            content="The pod cannot read /etc/web/config.yaml: the ConfigMap mount is missing.",
            additional_kwargs={"usage": {"prompt_tokens": 812, "completion_tokens": 31}},
        ),
    ]


def _append_in_child(store: ChatStore, worker: int, count: int, barrier: Any) -> None:
    """Body of one process of the cross-process test: append ``count`` messages to "shared"."""
    barrier.wait(timeout=120)  # both processes start (and open the store) at once
    if worker == 0:
        for i in range(count):
            store.add_message("shared", _msg(f"{worker}:{i}"))
            time.sleep(0.001 * (i % 3))  # give the other process a turn
    else:

        async def main() -> None:
            for i in range(count):
                await store.async_add_message("shared", _msg(f"{worker}:{i}"))
                await asyncio.sleep(0.001 * (i % 3))

        asyncio.run(main())
    close = getattr(store, "close", None)
    if callable(close):
        close()


class ChatStoreContract:
    """Tests every chat store passes; subclasses provide a ``store`` fixture (fresh, empty)."""

    # round trip and order -------------------------------------------------------------------

    def test_round_trip(self, store: ChatStore) -> None:
        messages = [
            _msg("You are an SRE assistant.", MessageRole.SYSTEM),
            _msg("hello", MessageRole.USER, user_id="u-1", trace={"span": 3, "ok": True}),
            _msg("hi, how can I help?", MessageRole.ASSISTANT),
        ]
        store.set_messages("k", messages)
        assert _dumps(store.get_messages("k")) == _dumps(messages)

    def test_every_role_round_trips(self, store: ChatStore) -> None:
        messages = [_msg(f"as {role.value}", role) for role in MessageRole]
        store.set_messages("k", messages)
        assert _dumps(store.get_messages("k")) == _dumps(messages)

    def test_set_messages_replaces(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b"))
        store.set_messages("k", _msgs("c"))
        assert _texts(store, "k") == ["c"]

    def test_set_empty_list_removes_key(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a"))
        store.set_messages("k", [])
        assert store.get_messages("k") == []
        assert "k" not in store.get_keys()

    def test_appends_keep_order(self, store: ChatStore) -> None:
        texts = [f"message {i}" for i in range(40)]
        for message in _msgs(*texts):
            store.add_message("k", message)
        assert _texts(store, "k") == texts

    def test_store_does_not_share_message_objects(self, store: ChatStore) -> None:
        message = _msg("a", tags=["x"])
        store.set_messages("k", [message])
        message.additional_kwargs["tags"].append("changed by caller")
        got = store.get_messages("k")[0]
        assert got.additional_kwargs == {"tags": ["x"]}
        got.additional_kwargs["tags"].append("changed by reader")
        assert store.get_messages("k")[0].additional_kwargs == {"tags": ["x"]}

    # insert at index ------------------------------------------------------------------------

    def test_add_message_at_index(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "c"))
        store.add_message("k", _msg("b"), idx=1)
        store.add_message("k", _msg("start"), idx=0)
        store.add_message("k", _msg("end"), idx=4)
        assert _texts(store, "k") == ["start", "a", "b", "c", "end"]

    def test_add_message_index_follows_list_insert(self, store: ChatStore) -> None:
        model = ["a", "b", "c"]
        store.set_messages("k", _msgs(*model))
        for idx, text in [(-1, "x"), (-100, "y"), (100, "z"), (2, "w"), (-3, "v")]:
            model.insert(idx, text)
            store.add_message("k", _msg(text), idx=idx)
            assert _texts(store, "k") == model, f"after insert({idx}, {text!r})"

    def test_add_message_at_index_on_unknown_key(self, store: ChatStore) -> None:
        store.add_message("new", _msg("only"), idx=3)
        assert _texts(store, "new") == ["only"]

    def test_many_inserts_at_one_place_keep_order(self, store: ChatStore) -> None:
        # Inserting again and again between the same neighbours exhausts any gap scheme.
        model = ["first", "last"]
        store.set_messages("k", _msgs(*model))
        for i in range(60):
            model.insert(1, f"m{i}")
            store.add_message("k", _msg(f"m{i}"), idx=1)
        for i in range(30):
            model.insert(len(model) - 1 - i, f"n{i}")
            store.add_message("k", _msg(f"n{i}"), idx=len(model) - 2 - i)
        assert _texts(store, "k") == model

    # delete_message --------------------------------------------------------------------------

    def test_delete_message_removes_idx_th_in_order(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b", "c"))
        removed = store.delete_message("k", 1)
        assert removed is not None and removed.content == "b"
        assert _texts(store, "k") == ["a", "c"]
        # The index is a rank within the key, not a row id or a global counter.
        store.set_messages("other", _msgs("x", "y", "z"))
        store.set_messages("k2", _msgs("p", "q", "r", "s"))
        store.delete_message("k2", 0)
        removed = store.delete_message("k2", 1)
        assert removed is not None and removed.content == "r"
        assert _texts(store, "k2") == ["q", "s"]
        assert _texts(store, "other") == ["x", "y", "z"]

    def test_delete_message_keeps_order_and_returns_exact_message(self, store: ChatStore) -> None:
        messages = _msgs("a", "b", "c", "d", "e")
        messages[3].additional_kwargs = {"note": "exact"}
        store.set_messages("k", messages)
        assert _dump(store.delete_message("k", 3)) == messages[3].model_dump()
        assert _dump(store.delete_message("k", 0)) == messages[0].model_dump()
        store.add_message("k", _msg("f"))
        store.add_message("k", _msg("x"), idx=1)
        assert _texts(store, "k") == ["b", "x", "c", "e", "f"]
        assert _dump(store.delete_message("k", 2)) == messages[2].model_dump()
        assert _texts(store, "k") == ["b", "x", "e", "f"]

    def test_delete_message_negative_index(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b", "c"))
        last = store.delete_message("k", -1)
        assert last is not None and last.content == "c"
        first = store.delete_message("k", -2)
        assert first is not None and first.content == "a"
        assert _texts(store, "k") == ["b"]

    def test_delete_message_out_of_range_returns_none(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b", "c"))
        assert store.delete_message("k", 3) is None
        assert store.delete_message("k", 1000) is None
        assert store.delete_message("k", -4) is None
        assert store.delete_message("unknown", 0) is None
        assert _texts(store, "k") == ["a", "b", "c"]

    def test_deleting_every_message_removes_key(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b"))
        store.set_messages("other", _msgs("o"))
        store.delete_message("k", 0)
        store.delete_message("k", 0)
        assert store.get_messages("k") == []
        assert store.get_keys() == ["other"]
        assert store.delete_message("k", 0) is None

    # delete_last_message / delete_messages -----------------------------------------------------

    def test_delete_last_message(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b", "c"))
        last = store.delete_last_message("k")
        assert last is not None and last.content == "c"
        assert _texts(store, "k") == ["a", "b"]
        store.add_message("k", _msg("d"))
        last = store.delete_last_message("k")
        assert last is not None and last.content == "d"

    def test_delete_last_message_until_empty(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b"))
        assert [getattr(store.delete_last_message("k"), "content", None) for _ in range(3)] == [
            "b",
            "a",
            None,
        ]
        assert store.get_keys() == []

    def test_delete_messages_returns_removed_list(self, store: ChatStore) -> None:
        messages = _msgs("a", "b", "c")
        store.set_messages("k", messages)
        store.set_messages("other", _msgs("o"))
        assert _dumps(store.delete_messages("k")) == _dumps(messages)
        assert store.get_messages("k") == []
        assert store.delete_messages("k") is None
        assert store.get_keys() == ["other"]

    # keys -------------------------------------------------------------------------------------

    def test_get_keys(self, store: ChatStore) -> None:
        assert store.get_keys() == []
        for key in ["user-2", "user-1", "fleet/ops", "user-1"]:
            store.add_message(key, _msg("hi"))
        assert sorted(store.get_keys()) == ["fleet/ops", "user-1", "user-2"]
        assert len(store.get_keys()) == 3

    def test_unknown_key(self, store: ChatStore) -> None:
        store.set_messages("known", _msgs("a"))
        assert store.get_messages("unknown") == []
        assert store.delete_messages("unknown") is None
        assert store.delete_message("unknown", 0) is None
        assert store.delete_last_message("unknown") is None
        assert store.get_keys() == ["known"]

    def test_many_keys_isolated(self, store: ChatStore) -> None:
        # Keys that a careless LIKE, prefix match or case fold would mix up.
        keys = ["a", "A", "a%", "a_", "ab", "a b", "a'b", 'a"b', "a\\b", "a:1", "a:10"]
        keys += [f"session-{i}" for i in range(40)]
        for key in keys:
            store.set_messages(key, _msgs(f"{key}/0", f"{key}/1"))
        store.delete_message("a", 0)
        store.delete_last_message("a%")
        store.delete_messages("a_")
        store.add_message("A", _msg("A/2"), idx=0)
        for key in keys:
            expected = {
                "a": ["a/1"],
                "a%": ["a%/0"],
                "a_": [],
                "A": ["A/2", "A/0", "A/1"],
            }.get(key, [f"{key}/0", f"{key}/1"])
            assert _texts(store, key) == expected, key
        assert sorted(store.get_keys()) == sorted(set(keys) - {"a_"})

    # content ----------------------------------------------------------------------------------

    def test_unicode(self, store: ChatStore) -> None:
        texts = [
            "emoji 🚀🔥👩‍💻 and flags 🇯🇵🇧🇷",
            "中文 日本語 한국어",
            "עברית ‏RTL‏ and العربية",
            "combining e\u0301 and zero\u200bwidth, NUL \x00 and tab\t",
            "quotes ' \" ` and backslash \\ and SQL '); DROP TABLE x; --",
        ]
        key = "сессия/会话/🚀"
        store.set_messages(key, _msgs(*texts))
        store.add_message(key, _msg("ünïcödé", note="注意 ✓"))
        assert _texts(store, key) == [*texts, "ünïcödé"]
        assert store.get_messages(key)[-1].additional_kwargs == {"note": "注意 ✓"}
        assert key in store.get_keys()

    def test_one_megabyte_message(self, store: ChatStore) -> None:
        big = ("kubectl logs line ✓ " * 60_000)[:1_000_000]
        message = _msg(big, MessageRole.TOOL, tool_call_id="call_big")
        store.add_message("k", _msg("before"))
        store.add_message("k", message)
        got = store.get_messages("k")
        assert len(got) == 2
        assert got[1].model_dump() == message.model_dump()
        assert _dump(store.delete_last_message("k")) == message.model_dump()

    def test_content_blocks_round_trip(self, store: ChatStore) -> None:
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        message = ChatMessage(
            role=MessageRole.USER,
            blocks=[
                TextBlock(text="what does this dashboard show?"),
                ImageBlock(image=png, image_mimetype="image/png"),
            ],
        )
        store.add_message("k", message)
        assert _dumps(store.get_messages("k")) == _dumps([message])

    def test_tool_call_messages_round_trip(self, store: ChatStore) -> None:
        conversation = _tool_call_conversation()
        store.set_messages("set", conversation)
        for message in conversation:
            store.add_message("added", message)
        assert _dumps(store.get_messages("set")) == _dumps(conversation)
        assert _dumps(store.get_messages("added")) == _dumps(conversation)
        got = store.get_messages("set")
        assert got[1].additional_kwargs["tool_calls"][1]["function"]["name"] == "kubectl_logs"
        assert [m.role for m in got[2:4]] == [MessageRole.TOOL, MessageRole.TOOL]
        assert _dump(store.delete_message("set", 2)) == conversation[2].model_dump()

    # concurrency ------------------------------------------------------------------------------

    def test_concurrent_async_appends(self, store: ChatStore) -> None:
        tasks, per_task = 50, 4

        async def writer(t: int) -> None:
            for i in range(per_task):
                await store.async_add_message("k", _msg(f"{t}:{i}"))

        async def main() -> None:
            await asyncio.gather(*(writer(t) for t in range(tasks)))

        asyncio.run(main())
        texts = [str(text) for text in _texts(store, "k")]
        assert len(texts) == tasks * per_task
        assert sorted(texts) == sorted(f"{t}:{i}" for t in range(tasks) for i in range(per_task))
        for t in range(tasks):  # each writer's own messages stay in its order
            assert [x for x in texts if x.split(":")[0] == str(t)] == [
                f"{t}:{i}" for i in range(per_task)
            ]

    def test_concurrent_thread_appends(self, store: ChatStore) -> None:
        threads, per_thread = 8, 25
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            try:
                for i in range(per_thread):
                    store.add_message("k", _msg(f"{t}:{i}"))
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        texts = sorted(str(text) for text in _texts(store, "k"))
        assert texts == sorted(f"{t}:{i}" for t in range(threads) for i in range(per_thread))

    # async twins ------------------------------------------------------------------------------

    def test_async_methods_equal_sync_twins(self, store: ChatStore) -> None:
        start = _tool_call_conversation()

        def sync_script(key: str) -> list[Any]:
            s = store
            s.set_messages(key, start)
            out: list[Any] = [_dumps(s.get_messages(key))]
            s.add_message(key, _msg("appended"))
            s.add_message(key, _msg("inserted"), idx=1)
            s.add_message(key, _msg("negative"), idx=-2)
            out.append(_dumps(s.get_messages(key)))
            out.append(_dump(s.delete_message(key, 2)))
            out.append(_dump(s.delete_message(key, -1)))
            out.append(_dump(s.delete_message(key, 99)))
            out.append(_dump(s.delete_last_message(key)))
            out.append(_dumps(s.get_messages(key)))
            out.append(key in s.get_keys())
            out.append(_dumps(s.delete_messages(key)))
            out.append(_dumps(s.delete_messages(key)))
            out.append(_dump(s.delete_last_message(key)))
            out.append(_dump(s.delete_message(key, 0)))
            out.append(_dumps(s.get_messages(key)))
            out.append(key in s.get_keys())
            return out

        async def async_script(key: str) -> list[Any]:
            s = store
            await s.aset_messages(key, start)
            out: list[Any] = [_dumps(await s.aget_messages(key))]
            await s.async_add_message(key, _msg("appended"))
            await s.async_add_message(key, _msg("inserted"), idx=1)
            await s.async_add_message(key, _msg("negative"), idx=-2)
            out.append(_dumps(await s.aget_messages(key)))
            out.append(_dump(await s.adelete_message(key, 2)))
            out.append(_dump(await s.adelete_message(key, -1)))
            out.append(_dump(await s.adelete_message(key, 99)))
            out.append(_dump(await s.adelete_last_message(key)))
            out.append(_dumps(await s.aget_messages(key)))
            out.append(key in await s.aget_keys())
            out.append(_dumps(await s.adelete_messages(key)))
            out.append(_dumps(await s.adelete_messages(key)))
            out.append(_dump(await s.adelete_last_message(key)))
            out.append(_dump(await s.adelete_message(key, 0)))
            out.append(_dumps(await s.aget_messages(key)))
            out.append(key in await s.aget_keys())
            return out

        sync_results = sync_script("sync")
        async_results = _run(lambda: async_script("async"))
        assert async_results == sync_results
        # The script did exercise the store: it read, inserted, deleted and listed.
        assert sync_results[0] == _dumps(start)
        assert len(sync_results[1]) == len(start) + 3
        assert sync_results[7] is True
        assert sync_results[8] is not None and sync_results[9] is None

    def test_async_and_sync_see_the_same_data(self, store: ChatStore) -> None:
        conversation = _tool_call_conversation()
        store.set_messages("written-sync", conversation)
        assert _dumps(_run(lambda: store.aget_messages("written-sync"))) == _dumps(conversation)
        _run(lambda: store.aset_messages("written-async", conversation[:2]))
        _run(lambda: store.async_add_message("written-async", conversation[2]))
        assert _dumps(store.get_messages("written-async")) == _dumps(conversation[:3])
        assert sorted(_run(store.aget_keys)) == sorted(store.get_keys())
        assert sorted(store.get_keys()) == ["written-async", "written-sync"]
        removed = _run(lambda: store.adelete_message("written-sync", 1))
        assert _dump(removed) == conversation[1].model_dump()
        assert len(store.get_messages("written-sync")) == len(conversation) - 1

    def test_async_unknown_key(self, store: ChatStore) -> None:
        async def main() -> list[Any]:
            return [
                await store.aget_messages("unknown"),
                await store.adelete_messages("unknown"),
                await store.adelete_message("unknown", 0),
                await store.adelete_last_message("unknown"),
                await store.aget_keys(),
            ]

        assert _run(main) == [[], None, None, None, []]


class SharedChatStoreContract(ChatStoreContract):
    """:class:`ChatStoreContract` plus the cross-process test, for stores whose data is
    shared by every process that opens them (a SQLite file, PostgreSQL, Redis)."""

    def test_concurrent_appends_from_two_processes(self, store: ChatStore) -> None:
        count = 100
        pickle.dumps(store)  # a store that cannot be pickled fails here, clearly
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        workers = [  # worker 0 appends with the sync methods, worker 1 with the async ones
            ctx.Process(target=_append_in_child, args=(store, worker, count, barrier))
            for worker in (0, 1)
        ]
        for process in workers:
            process.start()
        for process in workers:
            process.join(timeout=300)
            if process.is_alive():  # hung: end it, and fail below
                process.kill()
                process.join()
        assert [process.exitcode for process in workers] == [0, 0]
        texts = [str(text) for text in _texts(store, "shared")]
        assert len(texts) == 2 * count
        assert sorted(texts) == sorted(f"{w}:{i}" for w in (0, 1) for i in range(count))
        for worker in (0, 1):
            assert [x for x in texts if x.startswith(f"{worker}:")] == [
                f"{worker}:{i}" for i in range(count)
            ]
