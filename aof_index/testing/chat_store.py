"""Contract that every chat store of aof-index passes, and that third-party ones can run.

Subclass :class:`ChatStoreContract` in a test module, name the subclass ``Test...`` and give
it three fixtures::

    from aof_index.testing import ChatStoreContract, store_factory

    class TestMyChatStore(ChatStoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):  # store_factory closes the stores afterwards
            yield from store_factory(lambda **options: MyChatStore(path=..., **options))

        @pytest.fixture
        def store(self, make_store):
            return make_store()

        @pytest.fixture
        def stored_texts(self, tmp_path):
            def read(store, key):  # what the backend holds, read around the store
                conn = sqlite3.connect(tmp_path / "chat.db")
                rows = conn.execute("SELECT message FROM ... WHERE key = ?", (key,)).fetchall()
                conn.close()
                return [text for (text,) in rows]

            return read

- ``make_store(**options)`` returns a store with the given options (``codec=``, ``ttl=``)
  over this test's data: every call of one test opens the same file, table, schema or
  key prefix (a process-local store, such as an in-memory one, is fresh on every call);
  the fixture closes them afterwards;
- ``store`` is a fresh, empty store (``make_store()``);
- ``stored_texts(store, key)`` gives the texts the backend holds for ``key``, in order, read
  without the store where the backend allows (sqlite3, psycopg, redis-py), so a test can
  see what is at rest.

The contract is LlamaIndex's ``BaseChatStore`` made precise, plus
:class:`~aof_index.memory.edit.HistoryStore`:

- indices are Python list indices: ``add_message(key, m, idx=i)`` behaves like
  ``list.insert(i, m)``; ``delete_message(key, i)`` removes the ``i``-th message in order
  (``-1`` is the last) and returns it, or returns ``None`` when ``i`` is out of range;
- unknown keys give ``[]`` from ``get_messages`` and ``None`` from every delete;
- a key without messages does not exist (``get_keys`` omits it);
- messages round-trip exactly (``model_dump()`` equal), tool calls included, under every
  codec (each compression algorithm, encryption), and are compressed and encrypted at rest
  as the codec says; a row encrypted with another key raises ``DecodeError``; a message
  over the codec's ``max_bytes`` raises ``MessageTooLargeError`` and writes nothing;
- with ``ttl``, a conversation expires ``ttl`` seconds after its last write (any write):
  reads give ``[]``, ``get_keys`` omits it, ``purge_expired`` deletes it and counts it, and
  a write starts it afresh (the old messages never come back);
- ``get_keys(prefix)`` gives the keys starting with ``prefix`` in code-point order;
- ``edit_head(key, plan, archive_key=...)`` removes the first ``drop`` messages (clamped),
  puts ``insert`` before the rest and appends the removed ones to the archive (a key
  without messages is left alone, ``plan`` is not called), atomically:
  with tasks and threads appending while others edit, archive + remaining hold every
  message exactly once, each writer's in its order;
- each async method (``aset_messages``, ``aget_messages``, ``async_add_message``,
  ``adelete_messages``, ``adelete_message``, ``adelete_last_message``, ``aget_keys``,
  ``aedit_head``, ``apurge_expired``) gives what its sync twin gives, and concurrent
  writers never lose or duplicate a message;
- reads see every write made since the last read, whoever made it (read caches must not
  go stale): deletes, inserts, ``set_messages``, ``edit_head`` and expiry, each leaving the
  conversation as long or longer with earlier messages changed, made by the reader itself
  or (:class:`SharedChatStoreContract`) another store instance and another process; and a
  caller changing the messages or list it got changes nothing the next read returns;
- the codec stays out of ``repr``, ``to_dict`` and ``to_json`` and survives pickling;
- :class:`SharedChatStoreContract` adds the cases for stores whose data outlives the process
  (a file, a server): two processes appending to one key (each with a pickled copy of the
  store, started with ``multiprocessing``'s spawn method) lose nothing and keep each one's
  messages in its order; a process editing heads while another appends loses nothing; and
  stores opened on the same data with other codecs read what the others wrote (plain rows
  after compression or encryption is turned on, compressed rows without it, old keys after
  a rotation).  Process-local stores (in-memory ones) subclass :class:`ChatStoreContract`
  only.

The tests are synchronous and drive the async methods with ``asyncio.run``, so the suite
needs no asyncio plugin; each TTL test sleeps for up to about two seconds.  It is written for
pytest (a development dependency of aof-index: collection by name, the fixtures) but
imports nothing from it, so importing this module is safe in a production install.
"""

from __future__ import annotations

__all__ = [
    "NEEDLE",
    "ChatStore",
    "ChatStoreContract",
    "MakeStore",
    "SharedChatStoreContract",
    "StoredTexts",
    "store_factory",
]

import asyncio
import multiprocessing
import pickle
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from llama_index.core.llms import ChatMessage, ImageBlock, MessageRole, TextBlock

from aof_index.memory.codec import (
    DecodeError,
    MessageCodec,
    MessageTooLargeError,
    generate_key,
    parse_keys,
)
from aof_index.memory.edit import EditPlan, HeadEdit, HistoryStore

T = TypeVar("T")
S = TypeVar("S")


class ChatStore(Protocol):
    """The chat-store surface the contract exercises (``BaseChatStore`` with ``idx``, and
    ``HistoryStore``)."""

    codec: MessageCodec

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None: ...
    def get_messages(self, key: str) -> list[ChatMessage]: ...
    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None: ...
    def delete_messages(self, key: str) -> list[ChatMessage] | None: ...
    def delete_message(self, key: str, idx: int) -> ChatMessage | None: ...
    def delete_last_message(self, key: str) -> ChatMessage | None: ...
    def get_keys(self, prefix: str = "") -> list[str]: ...
    def edit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]: ...
    def purge_expired(self) -> int: ...
    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None: ...
    async def aget_messages(self, key: str) -> list[ChatMessage]: ...
    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None: ...
    async def adelete_messages(self, key: str) -> list[ChatMessage] | None: ...
    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None: ...
    async def adelete_last_message(self, key: str) -> ChatMessage | None: ...
    async def aget_keys(self, prefix: str = "") -> list[str]: ...
    async def aedit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]: ...
    async def apurge_expired(self) -> int: ...


MakeStore = Callable[..., ChatStore]
"""The ``make_store`` fixture: ``make_store(codec=..., ttl=...)``."""

StoredTexts = Callable[[ChatStore, str], list[str]]
"""The ``stored_texts`` fixture: ``stored_texts(store, key)``, the texts at rest."""

NEEDLE = "web-7d9f CrashLoopBackOff"
"""Text that must not be readable at rest once a codec compresses or encrypts (it has a
space, which neither base64 alphabet has)."""


def store_factory(make: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """Body of a ``make_store`` fixture (``yield from store_factory(...)``): yields ``make``,
    and closes every store it made once the test is over."""
    made: list[S] = []

    def factory(**options: Any) -> S:
        made.append(make(**options))
        return made[-1]

    yield factory
    for store in made:
        close = getattr(store, "close", None)
        if callable(close):
            close()


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


def _drop_first(messages: list[ChatMessage]) -> HeadEdit | None:
    """Plan: move the oldest message out (to the archive, when the edit names one)."""
    return HeadEdit(1) if messages else None


def _fixed(drop: int, *texts: str) -> EditPlan:
    """Plan: whatever the messages, drop ``drop`` and insert messages with ``texts``."""
    return lambda messages: HeadEdit(drop, _msgs(*texts))


async def _append_all(store: ChatStore, key: str, messages: Sequence[ChatMessage]) -> None:
    for message in messages:
        await store.async_add_message(key, message)


def _codec(compression: Any = None, *, encrypt: bool = False, **kwargs: Any) -> MessageCodec:
    """A codec compressing every message that shrinks, encrypting with a new key if asked."""
    keys = parse_keys(generate_key()) if encrypt else ()
    return MessageCodec(compression, threshold=0, keys=keys, **kwargs)


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


def _long_output(label: str = "") -> ChatMessage:
    """A tool output long enough that every algorithm compresses it."""
    text = "".join(f"{label}{NEEDLE} restart {i} ✓ 日本語\n" for i in range(200))
    return _msg(text, MessageRole.TOOL, tool_call_id="call_logs")


def _rich_conversation() -> list[ChatMessage]:
    """Tool calls, unicode, and a long tool output (long enough to compress)."""
    return [
        *_tool_call_conversation(),
        _msg("emoji 🚀🔥👩‍💻, 中文 日本語 한국어, עברית, e\u0301", note="注意 ✓"),
        _long_output(),
    ]


def _check_edits(
    archive: list[str], remaining: list[str], removed: list[str], expected: list[str]
) -> None:
    """Archive + remaining hold every appended message once, each writer's (``w:i``) in
    order, and the archive holds exactly what the edits returned."""
    everything = archive + remaining
    assert sorted(everything) == sorted(expected), "a message was lost or duplicated"
    for writer in {text.split(":")[0] for text in expected}:
        mine = [text for text in expected if text.split(":")[0] == writer]
        assert [text for text in everything if text.split(":")[0] == writer] == mine
    assert sorted(archive) == sorted(removed)
    assert archive, "no edit removed anything: the test did not exercise edit_head"


# Reads between other writers' changes (the read caches' hard cases) ------------------------

Step = tuple[Any, ...]
"""One write of :data:`_CHANGES`: an operation name and its operands (picklable)."""

_KEY, _ARCHIVE = "cached", "cached/archive"

_CHANGES: tuple[tuple[Step, ...], ...] = (
    # Each group is written (by another writer) between two reads.  Many leave the
    # conversation as long as it was, or longer, with earlier messages changed: a cache that
    # trusted the length alone would return the old messages.
    (("set", ("a", "b", "c")), ("add", "d")),
    (("delete_last",), ("add", "e")),
    (("delete_at", 0), ("add", "f")),
    (("delete_at", 1), ("insert", 1, "g")),
    (("add", "h"),),
    (("insert", 0, "i"),),
    (("edit", 1, ("summary 1",)),),
    (("edit", 2, ()), ("add", "j"), ("add", "k")),
    (("add", "l"), ("add", "m")),
    (("delete_all",), *(("add", text) for text in ("n", "o", "p", "q", "r", "s", "t"))),
    (("set", ("u", "v", "w", "x", "y", "z", "t", "t2")),),
    (("set", ("U", "v", "w", "x", "y", "z", "t", "t2")),),
    (("edit", 0, ("summary 2",)),),
    (("delete_at", -2), ("add", "t3")),
    (("edit", 3, ("summary 3", "note")), ("delete_last",), ("add", "t4")),
    (("delete_all",),),
    (("add", "again"),),
)


def _change(store: ChatStore, step: Step) -> None:
    """Apply one step of :data:`_CHANGES` to ``store``."""
    op, *args = step
    if op == "set":
        store.set_messages(_KEY, [_msg(text) for text in args[0]])
    elif op == "add":
        store.add_message(_KEY, _msg(args[0]))
    elif op == "insert":
        store.add_message(_KEY, _msg(args[1]), idx=args[0])
    elif op == "delete_last":
        store.delete_last_message(_KEY)
    elif op == "delete_at":
        store.delete_message(_KEY, args[0])
    elif op == "delete_all":
        store.delete_messages(_KEY)
    elif op == "edit":
        store.edit_head(_KEY, _fixed(args[0], *args[1]), archive_key=_ARCHIVE)
    else:
        raise ValueError(f"unknown step {step!r}")


def _model_change(model: list[str], archive: list[str], step: Step) -> None:
    """What :func:`_change` does, on lists of texts."""
    op, *args = step
    if op == "set":
        model[:] = args[0]
    elif op == "add":
        model.append(args[0])
    elif op == "insert":
        model.insert(args[0], args[1])
    elif op == "delete_last":
        del model[-1:]
    elif op == "delete_at":
        del model[args[0]]
    elif op == "delete_all":
        model.clear()
    elif op == "edit":
        archive.extend(model[: args[0]])
        model[: args[0]] = args[1]


def _check_reads_between_changes(reader: ChatStore, write: Callable[[Step], None]) -> None:
    """Read ``reader``'s conversation and archive after each group of :data:`_CHANGES`,
    which ``write`` makes (through another store, process, or the reader itself), and
    compare with what they must hold; every third read is async."""
    model: list[str] = []
    archive: list[str] = []
    for number, group in enumerate(_CHANGES):
        for step in group:
            write(step)
            _model_change(model, archive, step)
        if number % 3 == 2:
            got = _run(lambda: reader.aget_messages(_KEY))
        else:
            got = reader.get_messages(_KEY)
        assert [m.content for m in got] == model, f"after group {number}: {group}"
        assert _texts(reader, _ARCHIVE) == archive, f"archive after group {number}"


def _write_in_child(store: ChatStore, conn: Any) -> None:
    """Body of the writer process of the read tests: apply each step it receives (``None``
    ends), answering ``None`` when done or the error's text."""
    while (step := conn.recv()) is not None:
        try:
            _change(store, step)
        except BaseException as exc:  # reported to the parent, which fails the test
            conn.send(repr(exc))
        else:
            conn.send(None)
    close = getattr(store, "close", None)
    if callable(close):
        close()


def _append_in_child(store: ChatStore, worker: int, count: int, barrier: Any) -> None:
    """Body of one process of the cross-process tests: append ``count`` messages to "shared"."""
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
    """Tests every chat store passes; subclasses provide the ``make_store``, ``store`` and
    ``stored_texts`` fixtures (see the module docstring)."""

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

    # reads between changes (read caches) -------------------------------------------------

    def writer_for(self, reader: ChatStore, make_store: MakeStore, **options: Any) -> ChatStore:
        """The store another writer of ``reader``'s data uses: ``reader`` itself here (a
        process-local store's data is its own); another store on the same data in
        :class:`SharedChatStoreContract`."""
        return reader

    def test_reads_see_every_change_made_between_them(self, make_store: MakeStore) -> None:
        reader = make_store()
        writer = self.writer_for(reader, make_store)
        _check_reads_between_changes(reader, lambda step: _change(writer, step))

    def test_reads_after_expiry_see_the_new_conversation(self, make_store: MakeStore) -> None:
        reader = make_store(ttl=1)
        writer = self.writer_for(reader, make_store, ttl=1)
        started = time.monotonic()
        writer.add_message("other", _msg("o"))  # the writer's opportunistic purge runs now
        time.sleep(0.3)
        writer.set_messages("k", _msgs("a", "b", "c"))
        written = time.monotonic()  # "k" expires 1 s after its write, which came before this
        assert _texts(reader, "k") == ["a", "b", "c"]
        time.sleep(max(0.0, started + 1.05 - time.monotonic()))
        writer.add_message("other", _msg("o"))  # purges again, while "k" is still live
        # Past both marks whatever the machine's load made of the steps above.
        time.sleep(max(0.0, max(started + 1.5, written + 1.1) - time.monotonic()))
        # "k" expired; written again, longer, before the reader looks (and before the
        # writer's next purge: the write itself finds "k" expired)
        for text in ("w", "x", "y", "z"):
            writer.add_message("k", _msg(text))
        assert _texts(reader, "k") == ["w", "x", "y", "z"]
        time.sleep(1.3)  # expired, and seen expired by the reader
        assert reader.get_messages("k") == []
        for text in ("p", "q", "r", "s", "t"):
            writer.add_message("k", _msg(text))
        assert [m.content for m in _run(lambda: reader.aget_messages("k"))] == [*"pqrst"]
        time.sleep(1.3)  # expired, purged, then written again
        writer.purge_expired()  # (what it counts depends on the store: Redis expires too)
        writer.set_messages("k", _msgs("1", "2", "3", "4", "5", "6"))
        assert _texts(reader, "k") == ["1", "2", "3", "4", "5", "6"]

    def test_returned_messages_are_the_callers_own(self, make_store: MakeStore) -> None:
        store = make_store()
        first = [_msg("a", tags=["x"]), _msg("b", MessageRole.ASSISTANT)]
        store.set_messages("k", first)
        expected = _dumps(first)

        def spoil(messages: list[ChatMessage]) -> None:
            messages[0].additional_kwargs["tags"].append("changed by caller")
            messages[0].additional_kwargs["new"] = 1
            messages[-1].blocks[0].text = "changed"  # type: ignore[union-attr]
            messages[-1].role = MessageRole.SYSTEM
            messages.append(_msg("added by caller"))
            del messages[0]

        for read in range(4):
            got = store.get_messages("k") if read % 2 else _run(lambda: store.aget_messages("k"))
            assert _dumps(got) == expected, f"read {read}"
            spoil(got)
            if read == 1:  # the next reads add to what was read before
                store.add_message("k", _msg("c"))
                expected = [*(expected or []), _msg("c").model_dump()]
        assert _dumps(store.get_messages("k")) == expected

    # HistoryStore: the codec -------------------------------------------------------------------

    def test_is_a_history_store_that_keeps_its_codec_secret(self, make_store: MakeStore) -> None:
        key = generate_key()
        codec = MessageCodec("zstd", keys=parse_keys(key))
        store = make_store(codec=codec)
        assert isinstance(store, HistoryStore)
        assert store.codec == codec
        for shown in (repr(store), str(store), str(getattr(store, "to_json", str)())):
            assert key not in shown and "MessageCodec" not in shown and "zstd" not in shown
        to_dict = getattr(store, "to_dict", None)
        assert to_dict is None or "codec" not in to_dict()
        assert pickle.loads(pickle.dumps(store)).codec == codec  # a worker process needs it

    def test_round_trip_under_each_compression(
        self, make_store: MakeStore, stored_texts: StoredTexts
    ) -> None:
        conversation = _rich_conversation()
        for algorithm, tag in [("zstd", "zs"), ("gzip", "gz"), ("lz4", "lz")]:
            store, key = make_store(codec=_codec(algorithm)), f"compressed/{algorithm}"
            store.set_messages(key, conversation[:-1])
            store.add_message(key, conversation[-1])
            assert _dumps(store.get_messages(key)) == _dumps(conversation), algorithm
            assert _dumps(asyncio.run(store.aget_messages(key))) == _dumps(conversation)
            at_rest = stored_texts(store, key)
            assert len(at_rest) == len(conversation)
            assert at_rest[-1].startswith(f"aof:{tag}:"), at_rest[-1][:20]
            assert NEEDLE not in at_rest[-1]
            assert len(at_rest[-1]) < len(conversation[-1].model_dump_json()) / 3

    def test_round_trip_encrypted(self, make_store: MakeStore, stored_texts: StoredTexts) -> None:
        conversation = _rich_conversation()
        for name, codec in [("plain", _codec(encrypt=True)), ("lz4", _codec("lz4", encrypt=True))]:
            store, key = make_store(codec=codec), f"encrypted/{name}"
            store.set_messages(key, conversation[:3])
            asyncio.run(_append_all(store, key, conversation[3:]))
            store.edit_head(key, lambda ms: HeadEdit(1, [_msg(f"summary: {NEEDLE}")]))
            expected = [_msg(f"summary: {NEEDLE}"), *conversation[1:]]
            assert _dumps(store.get_messages(key)) == _dumps(expected), name
            at_rest = stored_texts(store, key)
            assert len(at_rest) == len(expected)
            assert all(text.startswith("aof:fe:") for text in at_rest)
            assert not any(NEEDLE in text or "kubectl" in text for text in at_rest)

    def test_encrypted_rows_need_their_key(self, store: ChatStore) -> None:
        writer = _codec(encrypt=True)
        store.codec = writer
        store.set_messages("k", _msgs("secret runbook"))
        store.codec = _codec(encrypt=True)  # another key
        for read in (
            lambda: store.get_messages("k"),
            lambda: _run(lambda: store.aget_messages("k")),
        ):
            try:
                read()
            except DecodeError:
                pass
            else:
                raise AssertionError("read an encrypted row with the wrong key")
        store.codec = MessageCodec()  # no key at all
        try:
            store.get_messages("k")
        except DecodeError as exc:
            assert "no key is configured" in str(exc)
        else:
            raise AssertionError("read an encrypted row without a key")
        store.codec = writer
        assert _texts(store, "k") == ["secret runbook"]

    def test_oversized_message_raises_and_writes_nothing(self, make_store: MakeStore) -> None:
        store = make_store(codec=MessageCodec(max_bytes=2_000))
        store.set_messages("k", _msgs("small", "also small"))
        big = _msg("x" * 5_000)
        writes: list[Callable[[], object]] = [
            lambda: store.set_messages("k", [_msg("c"), big]),
            lambda: store.add_message("k", big),
            lambda: store.add_message("k", big, idx=0),
            lambda: store.add_message("new", big),
            lambda: store.edit_head("k", lambda ms: HeadEdit(1, [big]), archive_key="archive"),
            lambda: _run(lambda: store.aset_messages("new", [big])),
            lambda: _run(lambda: store.async_add_message("k", big)),
            lambda: _run(lambda: store.aedit_head("k", lambda ms: HeadEdit(0, [big]))),
        ]
        for number, write in enumerate(writes):
            try:
                write()
            except MessageTooLargeError:
                pass
            else:
                raise AssertionError(f"write {number} accepted a message over max_bytes")
            assert _texts(store, "k") == ["small", "also small"], f"after write {number}"
        assert store.get_keys() == ["k"]

    # HistoryStore: TTL -------------------------------------------------------------------------

    def test_conversation_expires_after_ttl_and_starts_afresh(self, make_store: MakeStore) -> None:
        store = make_store(ttl=0.3)
        store.set_messages("a", _msgs("a0", "a1"))
        store.add_message("b", _msg("b0"))
        assert store.get_keys() == ["a", "b"]
        time.sleep(0.5)
        assert store.get_messages("a") == []
        assert _run(lambda: store.aget_messages("b")) == []
        assert store.get_keys() == [] and _run(store.aget_keys) == []
        assert store.delete_last_message("a") is None
        assert store.delete_messages("b") is None
        assert store.edit_head("b", lambda ms: HeadEdit(0, [_msg(str(len(ms)))])) == []
        store.add_message("a", _msg("fresh"), idx=5)
        assert _texts(store, "a") == ["fresh"]  # the expired messages never come back
        assert store.get_keys() == ["a"]
        assert store.edit_head("a", lambda ms: HeadEdit(0, [_msg(str(len(ms)))])) == []
        assert _texts(store, "a") == ["1", "fresh"]

    def test_every_write_refreshes_the_ttl(self, make_store: MakeStore) -> None:
        store = make_store(ttl=1.2)
        store.set_messages("k", _msgs("a", "b", "c", "d"))
        store.set_messages("archive", _msgs("old"))
        time.sleep(0.7)
        store.delete_last_message("k")  # a write that adds nothing refreshes too
        time.sleep(0.7)  # 1.4 s after the first writes: only "k" was written since
        assert store.get_keys() == ["k"]
        assert _texts(store, "archive") == []
        removed = store.edit_head("k", _drop_first, archive_key="archive")
        assert [m.content for m in removed] == ["a"]
        time.sleep(0.7)  # 2.1 s after the first writes, 0.7 s after the edit
        assert _texts(store, "k") == ["b", "c"]
        assert _texts(store, "archive") == ["a"]  # started afresh: "old" stays gone

    def test_purge_expired_deletes_and_counts(self, make_store: MakeStore) -> None:
        store = make_store(ttl=1.0)
        store.set_messages("old-1", _msgs("a"))
        _run(lambda: store.aset_messages("old-2", _msgs("b")))
        time.sleep(0.6)
        store.add_message("live", _msg("c"))
        time.sleep(0.6)  # "old-*" expired 0.2 s ago, "live" has 0.4 s left
        assert store.purge_expired() == 2
        assert store.purge_expired() == 0
        assert _run(store.apurge_expired) == 0
        assert store.get_keys() == ["live"]
        assert _texts(store, "live") == ["c"]

    def test_without_ttl_nothing_expires(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a"))
        assert store.purge_expired() == 0
        assert _run(store.apurge_expired) == 0
        assert _texts(store, "k") == ["a"]

    # HistoryStore: keys under a prefix -----------------------------------------------------------

    def test_get_keys_under_a_prefix(self, store: ChatStore) -> None:
        keys = ["a", "a/1", "a/10", "a/2", "ab", "abc", "abd", "b", "A", "a%", "a_x", "e"]
        keys += ["é", "é/1", "🚀", "🚀/x", "\ud7ff", "\ud7ff/1", "\ue000", "\U0010ffff/1"]
        for key in keys:
            store.add_message(key, _msg(key))
        assert store.get_keys() == sorted(keys)  # code-point order
        assert store.get_keys("") == sorted(keys)
        prefixes = ["a", "a/", "a/1", "ab", "abc", "a%", "A", "é", "🚀", "\ud7ff", "\U0010ffff"]
        for prefix in [*prefixes, "zzz", "a/3", "\x01"]:
            expected = sorted(key for key in keys if key.startswith(prefix))
            assert store.get_keys(prefix) == expected, prefix
            assert asyncio.run(store.aget_keys(prefix)) == expected, prefix
        store.delete_messages("a/10")
        assert store.get_keys("a/1") == ["a/1"]

    # HistoryStore: edit_head ---------------------------------------------------------------------

    def test_edit_head_drops_inserts_and_archives(self, store: ChatStore) -> None:
        messages = _msgs("m0", "m1", "m2", "m3", "m4")
        store.set_messages("k", messages)
        store.set_messages("k/archive", _msgs("archived before"))
        seen: list[list[ChatMessage]] = []

        def plan(current: list[ChatMessage]) -> HeadEdit:
            seen.append(current)
            return HeadEdit(2, [_msg("summary of m0 and m1", MessageRole.SYSTEM), _msg("note")])

        removed = store.edit_head("k", plan, archive_key="k/archive")
        assert _dumps(removed) == _dumps(messages[:2])
        assert _dumps(seen[-1]) == _dumps(messages)
        assert _texts(store, "k") == ["summary of m0 and m1", "note", "m2", "m3", "m4"]
        assert store.get_messages("k")[0].role == MessageRole.SYSTEM
        assert _texts(store, "k/archive") == ["archived before", "m0", "m1"]
        assert store.get_keys() == ["k", "k/archive"]
        removed = store.edit_head("k", lambda ms: HeadEdit(1), archive_key="new archive")
        assert [m.content for m in removed] == ["summary of m0 and m1"]
        assert _texts(store, "new archive") == ["summary of m0 and m1"]
        assert _texts(store, "k") == ["note", "m2", "m3", "m4"]

    def test_edit_head_that_changes_nothing(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b"))
        assert store.edit_head("k", lambda ms: None, archive_key="archive") == []
        assert store.edit_head("k", lambda ms: HeadEdit(0), archive_key="archive") == []
        assert _texts(store, "k") == ["a", "b"]
        assert store.get_keys() == ["k"]  # no archive appeared
        assert store.edit_head("k", lambda ms: HeadEdit(0, _msgs("x", "y"))) == []
        assert _texts(store, "k") == ["x", "y", "a", "b"]

    def test_edit_head_clamps_drop_and_handles_unknown_keys(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b", "c"))
        removed = store.edit_head("k", lambda ms: HeadEdit(10, _msgs("s1", "s2")), archive_key="ar")
        assert [m.content for m in removed] == ["a", "b", "c"]
        assert _texts(store, "k") == ["s1", "s2"]
        assert [m.content for m in store.edit_head("k", lambda ms: HeadEdit(99))] == ["s1", "s2"]
        assert store.get_messages("k") == [] and store.get_keys() == ["ar"]
        seen: list[int] = []

        def plan(messages: list[ChatMessage]) -> HeadEdit:
            seen.append(len(messages))
            return HeadEdit(1, _msgs("first"))

        for key in ("none", "k"):  # unknown, and emptied: no messages, nothing to plan
            assert store.edit_head(key, plan, archive_key="ar") == []
            assert asyncio.run(store.aedit_head(key, plan)) == []
        assert seen == [] and store.get_keys() == ["ar"]
        assert _texts(store, "ar") == ["a", "b", "c"]

    def test_edit_head_refuses_bad_edits_and_keeps_the_key(self, store: ChatStore) -> None:
        store.set_messages("k", _msgs("a", "b"))

        def failing(messages: list[ChatMessage]) -> HeadEdit:
            raise RuntimeError("plan failed")

        bad: list[tuple[type[Exception], Callable[[], object]]] = [
            (RuntimeError, lambda: store.edit_head("k", failing, archive_key="ar")),
            (ValueError, lambda: store.edit_head("k", lambda ms: HeadEdit(-1))),
            (ValueError, lambda: store.edit_head("k", _drop_first, archive_key="k")),
            (RuntimeError, lambda: _run(lambda: store.aedit_head("k", failing))),
        ]
        for error, call in bad:
            try:
                call()
            except error:
                pass
            else:
                raise AssertionError(f"expected {error.__name__}")
        assert _texts(store, "k") == ["a", "b"]
        assert store.get_keys() == ["k"]

    def test_repeated_edits_inserts_and_appends_keep_order(self, store: ChatStore) -> None:
        model = [f"m{i}" for i in range(6)]
        store.set_messages("k", _msgs(*model))
        archived: list[str] = []
        for i in range(40):
            drop, inserts = i % 3, [f"s{i}.{j}" for j in range(i % 4)]
            removed = store.edit_head("k", _fixed(drop, *inserts), archive_key="ar")
            archived += model[:drop]
            assert [m.content for m in removed] == model[:drop]
            model[:drop] = inserts
            if i % 2:
                model.insert(1, f"x{i}")
                store.add_message("k", _msg(f"x{i}"), idx=1)
            model.append(f"t{i}")
            store.add_message("k", _msg(f"t{i}"))
            assert _texts(store, "k") == model, f"after step {i}"
        assert _texts(store, "ar") == archived

    def test_aedit_head_equals_edit_head(self, store: ChatStore) -> None:
        def script(edit: Callable[..., Any], key: str) -> list[Any]:
            store.set_messages(key, _tool_call_conversation())
            plans: list[EditPlan] = [
                lambda ms: HeadEdit(2, [_msg("summary")]),
                lambda ms: None,
                lambda ms: HeadEdit(0, [_msg("first")]),
                lambda ms: HeadEdit(len(ms) + 5),
            ]
            out: list[Any] = []
            for plan in plans:
                out.append(_dumps(edit(key, plan, archive_key=f"{key}/archive")))
                out.append(_dumps(store.get_messages(key)))
            out.append(_dumps(store.get_messages(f"{key}/archive")))
            return out

        def aedit(key: str, plan: EditPlan, archive_key: str) -> list[ChatMessage]:
            return _run(lambda: store.aedit_head(key, plan, archive_key=archive_key))

        assert script(aedit, "async") == script(store.edit_head, "sync")

    def test_concurrent_async_edits_and_appends(self, store: ChatStore) -> None:
        writers, per_writer, editors, edits = 8, 12, 3, 15
        removed: list[str] = []

        async def writer(w: int) -> None:
            for i in range(per_writer):
                await store.async_add_message("k", _msg(f"{w}:{i}"))
                await asyncio.sleep(0)

        async def editor() -> None:
            for _ in range(edits):
                out = await store.aedit_head("k", _drop_first, archive_key="archive")
                removed.extend(str(m.content) for m in out)
                await asyncio.sleep(0.001)

        async def main() -> None:
            await asyncio.gather(
                *(writer(w) for w in range(writers)), *(editor() for _ in range(editors))
            )

        asyncio.run(main())
        archive = [str(text) for text in _texts(store, "archive")]
        remaining = [str(text) for text in _texts(store, "k")]
        expected = [f"{w}:{i}" for w in range(writers) for i in range(per_writer)]
        _check_edits(archive, remaining, removed, expected)

    def test_concurrent_thread_edits_and_appends(self, store: ChatStore) -> None:
        writers, per_writer, editors, edits = 4, 15, 2, 15
        removed: list[str] = []
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                for i in range(per_writer):
                    store.add_message("k", _msg(f"{w}:{i}"))
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        def editor() -> None:
            try:
                for _ in range(edits):
                    out = store.edit_head("k", _drop_first, archive_key="archive")
                    removed.extend(str(m.content) for m in out)
                    time.sleep(0.001)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        threads += [threading.Thread(target=editor) for _ in range(editors)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        archive = [str(text) for text in _texts(store, "archive")]
        remaining = [str(text) for text in _texts(store, "k")]
        expected = [f"{w}:{i}" for w in range(writers) for i in range(per_writer)]
        _check_edits(archive, remaining, removed, expected)


class SharedChatStoreContract(ChatStoreContract):
    """:class:`ChatStoreContract` plus the cross-process and reopening tests, for stores whose
    data is shared by every process that opens them (a SQLite file, PostgreSQL, Redis)."""

    def writer_for(self, reader: ChatStore, make_store: MakeStore, **options: Any) -> ChatStore:
        """Another store on ``reader``'s data (see :meth:`ChatStoreContract.writer_for`)."""
        return make_store(**options)

    def test_reads_see_every_change_another_process_makes(self, make_store: MakeStore) -> None:
        reader = make_store()
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=_write_in_child, args=(make_store(), theirs))
        child.start()

        def write(step: Step) -> None:
            ours.send(step)
            if not ours.poll(120):
                raise AssertionError(f"the writer process did not answer {step!r}")
            error = ours.recv()
            assert error is None, f"the writer process failed {step!r}: {error}"

        try:
            _check_reads_between_changes(reader, write)
        finally:
            ours.send(None)
            child.join(timeout=120)
            if child.is_alive():  # hung: end it, and fail below
                child.kill()
                child.join()
        assert child.exitcode == 0

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

    def test_edits_while_another_process_appends(
        self, make_store: MakeStore, stored_texts: StoredTexts
    ) -> None:
        # The child gets a pickled store with an encrypting codec: its rows are encrypted
        # only if pickling kept the codec.
        store = make_store(codec=_codec("lz4", encrypt=True))
        count, removed = 80, list[str]()
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        child = ctx.Process(target=_append_in_child, args=(store, 0, count, barrier))
        child.start()
        try:
            barrier.wait(timeout=120)
            deadline = time.monotonic() + 300
            while child.is_alive() and time.monotonic() < deadline:
                out = store.edit_head("shared", _drop_first, archive_key="shared/archive")
                removed.extend(str(m.content) for m in out)
                time.sleep(0.002)
        finally:
            child.join(timeout=300)
            if child.is_alive():  # hung: end it, and fail below
                child.kill()
                child.join()
        assert child.exitcode == 0
        archive = [str(text) for text in _texts(store, "shared/archive")]
        remaining = [str(text) for text in _texts(store, "shared")]
        assert archive + remaining == [f"0:{i}" for i in range(count)]  # one writer: one order
        _check_edits(archive, remaining, removed, [f"0:{i}" for i in range(count)])
        at_rest = stored_texts(store, "shared") + stored_texts(store, "shared/archive")
        assert all(text.startswith("aof:fe:") for text in at_rest)

    def test_stores_with_other_codecs_read_the_same_data(
        self, make_store: MakeStore, stored_texts: StoredTexts
    ) -> None:
        conversation = _rich_conversation()
        plain = make_store()
        plain.set_messages("k", conversation[:2])
        expected = list(conversation[:2])
        # Compression turned on: plain rows stay readable; each algorithm adds one row.
        for algorithm in ["zstd", "gzip", "lz4"]:
            compressing = make_store(codec=_codec(algorithm))
            assert _dumps(compressing.get_messages("k")) == _dumps(expected)
            compressing.add_message("k", _long_output(algorithm))
            expected.append(_long_output(algorithm))
        assert _dumps(plain.get_messages("k")) == _dumps(expected)  # read without compression
        # Encryption turned on: every earlier row stays readable.
        key = generate_key()
        encrypting = make_store(codec=MessageCodec("zstd", keys=parse_keys(key)))
        assert _dumps(encrypting.get_messages("k")) == _dumps(expected)
        encrypting.add_message("k", conversation[-1])
        expected.append(conversation[-1])
        at_rest = stored_texts(plain, "k")
        assert [text[:7] for text in at_rest[2:]] == [
            "aof:zs:",
            "aof:gz:",
            "aof:lz:",
            "aof:fe:",
        ]
        assert at_rest[0].startswith("{") and "crash-looping" in at_rest[0]
        assert NEEDLE not in at_rest[-1]
        # A store without the key, or with another one, cannot read it; after a rotation
        # (new key first, old one kept) it can.
        new_key = generate_key()
        for reader in (plain, make_store(codec=MessageCodec(keys=parse_keys(new_key)))):
            try:
                reader.get_messages("k")
            except DecodeError:
                pass
            else:
                raise AssertionError("read an encrypted row without its key")
        rotated = make_store(codec=MessageCodec(keys=parse_keys(f"{new_key},{key}")))
        assert _dumps(rotated.get_messages("k")) == _dumps(expected)
