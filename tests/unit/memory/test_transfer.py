"""Export and import of conversations (``aof_index.memory.transfer``) on the in-memory and
SQLite (file) chat stores: the exact round trip, the file format, every conflict mode and
every validation error, each of which must leave the target store untouched."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.errors import AofIndexError
from aof_index.memory import InMemoryChatStore, SQLiteChatStore
from aof_index.memory.codec import MessageCodec, generate_key, parse_keys
from aof_index.memory.transfer import (
    FORMAT,
    MAX_ISSUES,
    VERSION,
    ImportConflictError,
    ImportFormatError,
    ImportReport,
    ImportWriteError,
    TransferError,
    export_conversations,
    import_conversations,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
MEGABYTE = "0123456789abcdef" * (1024 * 1024 // 16)


def conversations() -> dict[str, list[ChatMessage]]:
    """Conversations with everything an export must carry exactly."""
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "kubectl_get", "arguments": '{"kind": "pods", "ns": "prod"}'},
    }
    return {
        "incident-42": [
            ChatMessage(role=MessageRole.SYSTEM, content="You are an SRE agent."),
            ChatMessage(role=MessageRole.USER, content="Pods pending in prod?"),
            ChatMessage(
                role=MessageRole.ASSISTANT,
                content="",
                additional_kwargs={"tool_calls": [tool_call]},
            ),
            ChatMessage(
                role=MessageRole.TOOL,
                content='{"pending": 3}',
                additional_kwargs={"tool_call_id": "call_1", "name": "kubectl_get"},
            ),
            ChatMessage(role=MessageRole.ASSISTANT, content="3 pods wait for a node."),
        ],
        "blocks": [
            ChatMessage(
                role=MessageRole.USER,
                blocks=[
                    TextBlock(text="What does this dashboard show?"),
                    ImageBlock(image=PNG, image_mimetype="image/png", detail="high"),
                    ImageBlock(url="https://example.invalid/graph.png"),
                    TextBlock(text="and this one"),
                ],
            ),
            ChatMessage(role=MessageRole.ASSISTANT, content=None),
        ],
        "unicode ✓ ключ 鍵": [
            ChatMessage(
                role=MessageRole.USER,
                content="héllo wörld — 日本語 🚀 مرحبا e\u0301 \u2028 \u2029 \x85 \x00 \t\r\n end",
                additional_kwargs={"ünïcode": ["☃", {"nested": "\U0001f600"}], "n": 1.5},
            ),
        ],
        "empty": [ChatMessage(role=MessageRole.USER, content="")],
        "large": [ChatMessage(role=MessageRole.USER, content=MEGABYTE)],
        # Code-point order differs from a database collation's ("B" < "a" < "ä").
        "B": [ChatMessage(content="capital")],
        "a": [ChatMessage(content="small")],
        "ä": [ChatMessage(content="umlaut")],
    }


# --------------------------------------------------------------------------------------------
# Stores.

StoreFactory = Callable[[], BaseChatStore]


@pytest.fixture(params=["in-memory", "sqlite-file"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Builds fresh, empty stores of one kind (each SQLite store in its own file)."""
    made: list[BaseChatStore] = []

    def make() -> BaseChatStore:
        store: BaseChatStore
        if request.param == "in-memory":
            store = InMemoryChatStore()
        else:
            store = SQLiteChatStore(path=str(tmp_path / f"chat-{len(made)}.db"))
        made.append(store)
        return store

    yield make
    for store in made:
        if isinstance(store, SQLiteChatStore):
            store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> BaseChatStore:
    return make_store()


def fill(store: BaseChatStore, data: dict[str, list[ChatMessage]]) -> None:
    for key, messages in data.items():
        store.set_messages(key, messages)


def snapshot(store: BaseChatStore) -> dict[str, list[dict[str, Any]]]:
    return {key: [m.model_dump() for m in store.get_messages(key)] for key in store.get_keys()}


def export_text(store: BaseChatStore, **kwargs: Any) -> str:
    out = io.StringIO(newline="\n")
    export_conversations(store, out, **kwargs)
    return out.getvalue()


def lines_of(text: str) -> list[str]:
    """JSON Lines split the way the format is defined: on "\\n" only."""
    assert text.endswith("\n")
    return text[:-1].split("\n")


def header_of(text: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(lines_of(text)[0])
    return header


def without_time(text: str) -> list[str]:
    header, *rest = lines_of(text)
    fields = json.loads(header)
    fields.pop("exported_at")
    return [json.dumps(fields, sort_keys=True), *rest]


def valid_export(data: dict[str, list[ChatMessage]] | None = None) -> str:
    source = InMemoryChatStore()
    fill(source, data if data is not None else {"k1": [ChatMessage(content="one")]})
    return export_text(source)


def msg(text: str, role: MessageRole = MessageRole.USER) -> ChatMessage:
    return ChatMessage(role=role, content=text)


# --------------------------------------------------------------------------------------------
# The round trip.


def test_round_trip_is_exact(make_store: StoreFactory) -> None:
    source, target = make_store(), make_store()
    data = conversations()
    fill(source, data)
    first = export_text(source)

    report = import_conversations(target, io.StringIO(first, newline="\n"))
    assert report == ImportReport(conversations=len(data), messages=13)
    second = export_text(target)

    assert without_time(second) == without_time(first)
    assert header_of(first)["exported_at"].endswith("Z")
    for key, messages in data.items():
        stored = target.get_messages(key)
        assert [m.model_dump() for m in stored] == [m.model_dump() for m in messages], key
    assert snapshot(target) == snapshot(source)
    large = target.get_messages("large")[0]
    assert large.content == MEGABYTE and len(MEGABYTE) == 1024 * 1024
    image = target.get_messages("blocks")[0].blocks[1]
    assert isinstance(image, ImageBlock) and image.resolve_image().read() == PNG


def test_round_trip_across_store_kinds(tmp_path: Path) -> None:
    """In-memory → SQLite → in-memory: the same bytes every time."""
    memory_store = InMemoryChatStore()
    fill(memory_store, conversations())
    first = export_text(memory_store)
    with SQLiteChatStore(path=str(tmp_path / "chat.db")) as sqlite_store:
        import_conversations(sqlite_store, first)
        second = export_text(sqlite_store)
    again = InMemoryChatStore()
    import_conversations(again, second.split("\n"))
    assert without_time(second) == without_time(first)
    assert without_time(export_text(again)) == without_time(first)


def test_import_re_encodes_with_the_target_codec(tmp_path: Path) -> None:
    """Plain SQLite → SQLite with compression and encryption: the rows are encrypted at rest,
    the export of either is the same plaintext."""
    key = generate_key()
    with (
        SQLiteChatStore(path=str(tmp_path / "plain.db")) as plain,
        SQLiteChatStore(
            path=str(tmp_path / "sealed.db"),
            codec=MessageCodec("zstd", threshold=0, keys=parse_keys(key)),
        ) as sealed,
    ):
        fill(plain, conversations())
        first = export_text(plain)
        import_conversations(sealed, first)
        second = export_text(sealed)
    assert without_time(second) == without_time(first)
    assert "3 pods wait for a node." in second  # the export is plaintext
    with sqlite3.connect(tmp_path / "sealed.db") as conn:
        rows = [row[0] for row in conn.execute("SELECT message FROM aof_chat_messages")]
    assert len(rows) == 13 and all(row.startswith("aof:fe:") for row in rows)
    assert not any("3 pods" in row for row in rows)


def test_export_format(store: BaseChatStore) -> None:
    fill(store, conversations())
    text = export_text(store)
    lines = lines_of(text)
    header = json.loads(lines[0])
    assert list(header) == ["conversations", "exported_at", "format", "version"]
    assert (header["format"], header["version"], header["conversations"]) == (FORMAT, 1, 8)
    keys = [json.loads(line)["key"] for line in lines[1:]]
    assert keys == ["B", "a", "blocks", "empty", "incident-42", "large", "unicode ✓ ключ 鍵", "ä"]
    for line in lines[1:]:
        record = json.loads(line)
        assert list(record) == ["key", "messages"]
        assert line == json.dumps(
            record, sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")
        for message in record["messages"]:
            assert message == ChatMessage.model_validate(message).model_dump(mode="json")
    # Non-ASCII is written as is; the characters that split lines elsewhere are escaped.
    assert "日本語 🚀" in text and "ключ" in text
    assert "\u2028" not in text and "\u2029" not in text and "\x85" not in text
    assert text.splitlines() == lines
    assert header_of(export_text(store))["exported_at"] >= header["exported_at"]


def test_export_of_an_empty_store(store: BaseChatStore) -> None:
    text = export_text(store)
    assert len(lines_of(text)) == 1 and header_of(text)["conversations"] == 0
    target = InMemoryChatStore()
    assert import_conversations(target, text) == ImportReport()
    assert target.get_keys() == []


def test_export_prefix_filters_keys(store: BaseChatStore) -> None:
    fill(store, {"team-a/1": [msg("1")], "team-a/2": [msg("2")], "team-b/1": [msg("3")]})
    text = export_text(store, prefix="team-a/")
    assert [json.loads(line)["key"] for line in lines_of(text)[1:]] == ["team-a/1", "team-a/2"]
    assert header_of(text)["conversations"] == 2
    assert header_of(export_text(store, prefix="none"))["conversations"] == 0


class Wrapper:
    """A chat store by delegation, to watch or break one method (duck-typed on purpose:
    transfer uses only the BaseChatStore methods)."""

    def __init__(self, inner: BaseChatStore) -> None:
        self.inner = inner

    def get_keys(self) -> list[str]:
        return self.inner.get_keys()

    def get_messages(self, key: str) -> list[ChatMessage]:
        return self.inner.get_messages(key)

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        self.inner.set_messages(key, messages)

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        self.inner.add_message(key, message, idx)


class PrefixStore(Wrapper):
    """A store whose get_keys takes a prefix (as the aof-index stores do)."""

    def __init__(self, inner: BaseChatStore) -> None:
        super().__init__(inner)
        self.asked: list[str] = []

    def get_keys(self, prefix: str = "") -> list[str]:  # type: ignore[override]
        self.asked.append(prefix)
        return [k for k in self.inner.get_keys() if k.startswith(prefix)]


def test_export_asks_the_store_for_the_prefix_when_it_can(store: BaseChatStore) -> None:
    fill(store, {"x:1": [msg("1")], "y:1": [msg("2")]})
    wrapped = PrefixStore(store)
    text = export_text(wrapped, prefix="x:")  # type: ignore[arg-type]
    assert wrapped.asked == ["x:"]
    assert [json.loads(line)["key"] for line in lines_of(text)[1:]] == ["x:1"]


def test_export_sorts_keys_by_code_point_whatever_the_store_returns(store: BaseChatStore) -> None:
    """A server's collation may order keys differently ("a" < "B" < "ä" in many locales):
    the export sorts them itself, so every backend gives the same bytes."""
    fill(store, {"a": [msg("1")], "B": [msg("2")], "ä": [msg("3")], "10": [msg("4")]})

    class Collating(Wrapper):
        def get_keys(self) -> list[str]:
            return ["a", "ä", "B", "10"]

    text = export_text(Collating(store))  # type: ignore[arg-type]
    assert [json.loads(line)["key"] for line in lines_of(text)[1:]] == ["10", "B", "a", "ä"]
    assert text == export_text(store).replace(
        header_of(export_text(store))["exported_at"], header_of(text)["exported_at"]
    )


def test_conversation_gone_during_export_is_left_out_and_counted_right(
    store: BaseChatStore,
) -> None:
    fill(store, {"a": [msg("1")], "b": [msg("2")], "c": [msg("3")]})

    class Expiring(Wrapper):
        def get_messages(self, key: str) -> list[ChatMessage]:
            if key == "b":  # expired by a TTL between get_keys and get_messages
                self.inner.delete_messages(key)
            return self.inner.get_messages(key)

    calls: list[tuple[str, int, int]] = []
    out = io.StringIO()
    count = export_conversations(
        Expiring(store),  # type: ignore[arg-type]
        out,
        progress=lambda *args: calls.append(args),
    )
    assert count == 2 and header_of(out.getvalue())["conversations"] == 2
    assert calls == [("export", 0, 3), ("export", 1, 3), ("export", 2, 3), ("export", 3, 3)]
    target = InMemoryChatStore()
    assert import_conversations(target, out.getvalue()).conversations == 2
    assert target.get_keys() == ["a", "c"]


def test_import_accepts_files_lists_and_text(tmp_path: Path) -> None:
    text = valid_export({"k1": [msg("one")], "k2": [msg("two"), msg("three")]})
    path = tmp_path / "export.jsonl"
    path.write_text(text, encoding="utf-8")
    for source in (text, text.split("\n"), lines_of(text), io.StringIO(text)):
        target = InMemoryChatStore()
        assert import_conversations(target, source).messages == 3
    with path.open(encoding="utf-8", newline="\n") as handle:
        target = InMemoryChatStore()
        assert import_conversations(target, handle) == ImportReport(conversations=2, messages=3)
    # CRLF line ends and a byte-order mark (an editor's doing) are harmless.
    crlf = "\ufeff" + text.replace("\n", "\r\n")
    target = InMemoryChatStore()
    assert import_conversations(target, crlf.split("\n")).conversations == 2


def test_import_reports_progress(store: BaseChatStore) -> None:
    calls: list[tuple[str, int, int]] = []
    text = valid_export({"k1": [msg("1")], "k2": [msg("2")]})
    import_conversations(store, text, progress=lambda *args: calls.append(args))
    assert calls == [
        ("read", 1, 0),
        ("read", 2, 0),
        ("import", 0, 2),
        ("import", 1, 2),
        ("import", 2, 2),
    ]


# --------------------------------------------------------------------------------------------
# Conflicts.

EXISTING = {"shared": [msg("old 1"), msg("old 2", MessageRole.ASSISTANT)], "mine": [msg("m")]}
INCOMING = {"new": [msg("n")], "shared": [msg("new 1"), msg("new 2", MessageRole.ASSISTANT)]}


def test_conflict_error_is_the_default_and_writes_nothing(store: BaseChatStore) -> None:
    fill(store, EXISTING)
    before = snapshot(store)
    with pytest.raises(ImportConflictError) as caught:
        import_conversations(store, valid_export(INCOMING))
    assert caught.value.keys == ["shared"]
    text = str(caught.value)
    assert "'shared'" in text and "Nothing was imported" in text
    assert "replace" in text and "skip" in text and "append" in text
    assert isinstance(caught.value, AofIndexError)
    assert snapshot(store) == before  # "new" was not written either


def test_conflict_error_lists_many_keys_briefly(store: BaseChatStore) -> None:
    data = {f"key-{i:02d}": [msg(str(i))] for i in range(15)}
    fill(store, data)
    with pytest.raises(ImportConflictError) as caught:
        import_conversations(store, valid_export(data))
    assert len(caught.value.keys) == 15
    assert "15 conversation(s)" in str(caught.value) and "and 5 more" in str(caught.value)


def test_conflict_replace(store: BaseChatStore) -> None:
    fill(store, EXISTING)
    report = import_conversations(store, valid_export(INCOMING), on_conflict="replace")
    assert report == ImportReport(conversations=2, messages=3, replaced=1)
    assert report.created == 1
    assert [m.content for m in store.get_messages("shared")] == ["new 1", "new 2"]
    assert [m.content for m in store.get_messages("new")] == ["n"]
    assert [m.content for m in store.get_messages("mine")] == ["m"]


def test_conflict_skip(store: BaseChatStore) -> None:
    fill(store, EXISTING)
    report = import_conversations(store, valid_export(INCOMING), on_conflict="skip")
    assert report == ImportReport(conversations=1, messages=1, skipped=1)
    assert [m.content for m in store.get_messages("shared")] == ["old 1", "old 2"]
    assert [m.content for m in store.get_messages("new")] == ["n"]


def test_conflict_append(store: BaseChatStore) -> None:
    fill(store, EXISTING)
    report = import_conversations(store, valid_export(INCOMING), on_conflict="append")
    assert report == ImportReport(conversations=2, messages=3, appended=1)
    assert report.as_dict() == {
        "conversations": 2,
        "messages": 3,
        "created": 1,
        "replaced": 0,
        "appended": 1,
        "skipped": 0,
    }
    assert [m.content for m in store.get_messages("shared")] == ["old 1", "old 2", "new 1", "new 2"]
    assert [m.content for m in store.get_messages("new")] == ["n"]


def test_importing_twice_with_skip_changes_nothing(store: BaseChatStore) -> None:
    text = valid_export(conversations())
    import_conversations(store, text)
    before = snapshot(store)
    report = import_conversations(store, text, on_conflict="skip")
    assert report == ImportReport(skipped=8)
    assert snapshot(store) == before


def test_unknown_conflict_mode(store: BaseChatStore) -> None:
    with pytest.raises(ValueError, match="on_conflict must be one of error, replace, skip"):
        import_conversations(store, valid_export(), on_conflict="merge")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Validation: every problem names the line, the field and the fix, and nothing is written.

GOOD = json.dumps({"key": "good", "messages": [{"role": "user", "content": "fine"}]})


def header(**fields: Any) -> str:
    value: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": "2025-01-01T00:00:00Z",
        "conversations": 2,
    }
    value.update(fields)
    return json.dumps({k: v for k, v in value.items() if v is not None})


def conversation(key: Any = "second", messages: Any = None, **extra: Any) -> str:
    value = {
        "key": key,
        "messages": [{"role": "user", "content": "x"}] if messages is None else messages,
    }
    return json.dumps(value | extra)


BAD_FILES: dict[str, tuple[list[str], int, str, str, str]] = {
    # name: (lines, line number, field, what is wrong, part of the fix)
    "empty file": ([], 1, "", "the file is empty", "header line"),
    "only blank lines": (["", "  "], 2, "", "the file is empty", "header line"),
    "header not JSON": (["{format: aof"], 1, "", "not JSON", "one JSON object"),
    "header of another format": (
        [json.dumps({"format": "csv", "version": 1})],
        1,
        "format",
        "not an aof-index conversation export header",
        "aof-index memory export",
    ),
    "conversation line first": ([GOOD], 1, "format", "not an aof-index", "memory export"),
    "newer version": (
        [header(version=2), GOOD],
        1,
        "version",
        "unsupported export version 2",
        "upgrade aof-index",
    ),
    "version as text": ([header(version="1"), GOOD], 1, "version", "'1'", '"version": 1'),
    "version missing": ([header(version=None), GOOD], 1, "version", "None", "export"),
    "count missing": ([header(conversations=None), GOOD], 1, "conversations", "None", "header"),
    "count negative": ([header(conversations=-1), GOOD], 1, "conversations", "-1", "header"),
    "file cut short": (
        [header(conversations=3), GOOD, conversation()],
        1,
        "conversations",
        "announces 3 conversation(s) but the file holds 2",
        "cut short",
    ),
    "line not JSON": (
        [header(), GOOD, '{"key": "second", "messages": ['],
        3,
        "",
        "not JSON",
        "cut",
    ),
    "NaN is not JSON": (
        [header(), GOOD, conversation(messages=[{"role": "user", "content": float("nan")}])],
        3,
        "",
        "NaN is not valid JSON",
        "one JSON object",
    ),
    "line is a list": ([header(), GOOD, "[1, 2]"], 3, "", "expected a JSON object", "export"),
    "unknown line field": (
        [header(), GOOD, conversation(created="yesterday")],
        3,
        "created",
        "unknown field(s) created",
        "only `key` and `messages`",
    ),
    "key missing": ([header(), GOOD, conversation(key=None)], 3, "key", "non-empty string", "id"),
    "key not text": ([header(), GOOD, conversation(key=42)], 3, "key", "got 42", "string"),
    "key empty": ([header(), GOOD, conversation(key="")], 3, "key", "non-empty", "string"),
    "key with NUL": ([header(), GOOD, conversation(key="a\x00b")], 3, "key", "NUL", "rename"),
    "duplicate key": (
        [header(), GOOD, conversation(key="good")],
        3,
        "key",
        "'good' already appears on line 2",
        "one line per conversation",
    ),
    "messages not a list": (
        [header(), GOOD, conversation(messages={"role": "user"})],
        3,
        "messages",
        "non-empty list",
        "at least one message",
    ),
    "messages empty": ([header(), GOOD, conversation(messages=[])], 3, "messages", "got []", "add"),
    "message not an object": (
        [header(), GOOD, conversation(messages=[{"role": "user"}, "hello"])],
        3,
        "messages[1]",
        "valid dictionary",
        "ChatMessage",
    ),
    "bad role": (
        [header(), GOOD, conversation(messages=[{"role": "wizard", "content": "x"}])],
        3,
        "messages[0].role",
        "'wizard'",
        "ChatMessage accepts",
    ),
    "misspelt field": (
        [header(), GOOD, conversation(messages=[{"rol": "assistant", "content": "x"}])],
        3,
        "messages[0].rol",
        "unknown field(s) rol",
        "drop it silently",
    ),
    "unknown block type": (
        [
            header(),
            GOOD,
            conversation(messages=[{"role": "user", "blocks": [{"block_type": "x"}]}]),
        ],
        3,
        "messages[0].blocks[0]",
        "does not match any of the expected tags",
        "ChatMessage accepts",
    ),
    "bad image": (
        [
            header(),
            GOOD,
            conversation(
                messages=[{"role": "user", "blocks": [{"block_type": "image", "image": 7}]}]
            ),
        ],
        3,
        "messages[0].blocks[0].image",
        "got 7",
        "ChatMessage accepts",
    ),
    "block without its text": (
        [
            header(),
            GOOD,
            conversation(messages=[{"role": "user", "blocks": [{"block_type": "text"}]}]),
        ],
        3,
        "messages[0].blocks[0].text",
        "Field required",
        "ChatMessage accepts",
    ),
    "additional_kwargs not an object": (
        [header(), GOOD, conversation(messages=[{"role": "tool", "additional_kwargs": []}])],
        3,
        "messages[0].additional_kwargs",
        "valid dictionary",
        "export",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_invalid_file_names_line_field_and_fix_and_writes_nothing(
    case: str, store: BaseChatStore
) -> None:
    lines, line, field, problem, fix = BAD_FILES[case]
    fill(store, EXISTING)
    before = snapshot(store)
    with pytest.raises(ImportFormatError) as caught:
        import_conversations(store, [f"{text}\n" for text in lines], on_conflict="replace")
    error = caught.value
    assert isinstance(error, TransferError) and isinstance(error, AofIndexError)
    assert len(error.issues) == 1, error.issues
    issue = error.issues[0]
    assert (issue.line, issue.field) == (line, field)
    assert problem in issue.message, issue.message
    assert fix in issue.fix, issue.fix
    assert str(issue) in str(error) and f"line {line}" in str(error)
    assert "Nothing was imported" in str(error)
    assert snapshot(store) == before
    assert "good" not in store.get_keys()


def test_every_problem_is_listed(store: BaseChatStore) -> None:
    lines = [
        header(conversations=4),
        "oops",
        conversation(key="one", messages=[{"role": "nobody"}]),
        GOOD,
        conversation(key=""),
    ]
    with pytest.raises(ImportFormatError) as caught:
        import_conversations(store, lines)
    assert [(i.line, i.field) for i in caught.value.issues] == [
        (2, ""),
        (3, "messages[0].role"),
        (5, "key"),
    ]
    assert store.get_keys() == []


def test_reading_stops_after_max_issues(store: BaseChatStore) -> None:
    lines = [header(conversations=100), *(["not json"] * 100)]
    with pytest.raises(ImportFormatError) as caught:
        import_conversations(store, lines)
    assert len(caught.value.issues) == MAX_ISSUES
    assert "stopped reading there" in str(caught.value)


def test_file_that_is_not_utf8(store: BaseChatStore, tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = valid_export({"k": [msg("x")]})
    path.write_bytes(good.encode() + b'{"key": "caf\xe9", "messages": []}\n')
    with path.open(encoding="utf-8", newline="\n") as handle, pytest.raises(ImportFormatError) as e:
        import_conversations(store, handle)
    assert "not UTF-8" in str(e.value)
    assert store.get_keys() == []


def test_message_too_large_for_the_target_codec_writes_nothing(store: BaseChatStore) -> None:
    class Limited(Wrapper):
        codec = MessageCodec(max_bytes=4096)

    text = valid_export({"small": [msg("x")], "big": [msg("y" * 5000)]})
    with pytest.raises(ImportFormatError) as caught:
        import_conversations(Limited(store), text)  # type: ignore[arg-type]
    issue = caught.value.issues[0]
    assert (issue.line, issue.field) == (2, "messages[0]")
    assert "larger than the limit of 4,096 bytes" in issue.message
    assert store.get_keys() == []


# --------------------------------------------------------------------------------------------
# A store failing while writing.


def test_store_failure_while_writing_then_resume_with_skip(store: BaseChatStore) -> None:
    class Failing(Wrapper):
        fail_on = "b"

        def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
            if key == self.fail_on:
                raise ConnectionError("server went away")
            super().set_messages(key, messages)

    text = valid_export({"a": [msg("1")], "b": [msg("2")], "c": [msg("3")]})
    failing = Failing(store)
    with pytest.raises(ImportWriteError) as caught:
        import_conversations(failing, text)  # type: ignore[arg-type]
    assert (caught.value.written, caught.value.key) == (1, "b")
    assert "server went away" in str(caught.value) and "skip" in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert store.get_keys() == ["a"]  # whole conversations only

    failing.fail_on = ""
    report = import_conversations(failing, text, on_conflict="skip")  # type: ignore[arg-type]
    assert report == ImportReport(conversations=2, messages=2, skipped=1)
    assert store.get_keys() == ["a", "b", "c"]
