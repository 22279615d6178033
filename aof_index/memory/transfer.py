"""Export conversations from a chat store to a file, and import them into any chat store.

The file is JSON Lines, UTF-8, one ``\\n`` after every line:

- line 1, the header: ``{"conversations": 2, "exported_at": "2025-06-01T12:00:00Z",
  "format": "aof-index/conversations", "version": 1}``;
- then one line per conversation, sorted by key:
  ``{"key": "incident-42", "messages": [ChatMessage.model_dump(mode="json"), ...]}``.

Every line is ``json.dumps(..., sort_keys=True, ensure_ascii=False)`` with compact
separators, so exporting the same conversations always gives the same bytes (only
``exported_at`` differs), whatever backend they come from.  The three characters that some
line splitters treat as line breaks although JSON does not (U+0085, U+2028, U+2029) are
written as ``\\u`` escapes, so a line is always a line.

**The file is plaintext.**  Compression and encryption (``spec.conversational.compression``,
``spec.access.encryption``) protect messages *at rest in the store*: export decodes them, so
the file holds every message in the clear.  Keep it private (the CLI creates it readable by
its owner only), encrypt it if it leaves the machine, delete it when done.  Import encodes
every message with the *target* store's settings, which makes export + import the way to
move conversations between backends (SQLite → PostgreSQL or Redis) or to change
compression or encryption settings of existing conversations.  What a store keeps beside
the messages (write times, hence TTL clocks) is not exported: imported conversations count
as written at import time.

Import checks the whole file before it writes anything: the header, every line's JSON,
every key and every message (against ``ChatMessage``), and the conflicts with conversations
the store already holds.  A problem raises :class:`ImportFormatError` or
:class:`ImportConflictError`, naming the line, the field and the fix, and the store is left
as it was.  Each conversation is then written in one call of the store (``set_messages``,
atomic on every aof-index store), so a failure while writing (:class:`ImportWriteError`)
leaves whole conversations only; running the import again with ``on_conflict="skip"``
finishes it.

Example:
    >>> import io
    >>> from llama_index.core.llms import ChatMessage
    >>> from aof_index.memory import InMemoryChatStore
    >>> source, target = InMemoryChatStore(), InMemoryChatStore()
    >>> source.set_messages("incident-42", [ChatMessage(role="user", content="pods pending")])
    >>> buffer = io.StringIO()
    >>> export_conversations(source, buffer)
    1
    >>> _ = buffer.seek(0)
    >>> import_conversations(target, buffer).conversations
    1
    >>> target.get_messages("incident-42")[0].content
    'pods pending'
"""

from __future__ import annotations

__all__ = [
    "FORMAT",
    "VERSION",
    "ConflictMode",
    "ImportConflictError",
    "ImportFormatError",
    "ImportReport",
    "ImportWriteError",
    "Progress",
    "TransferError",
    "TransferIssue",
    "export_conversations",
    "import_conversations",
]

import inspect
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from json import JSONDecodeError
from typing import Any, Literal, TextIO, get_args

from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore
from pydantic import ValidationError

from aof_index.errors import AofIndexError

FORMAT = "aof-index/conversations"
"""The ``format`` of the header line."""

VERSION = 1
"""The ``version`` of the header line this module writes and reads."""

ConflictMode = Literal["error", "replace", "skip", "append"]
"""What import does with a key the store already holds: ``error`` (write nothing),
``replace`` its messages, ``skip`` it, or ``append`` the imported messages after its own."""

CONFLICT_MODES: tuple[ConflictMode, ...] = get_args(ConflictMode)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages ``export``, ``read`` (total 0: unknown) and
``import``."""

MAX_ISSUES = 20
"""Import stops reading after this many problems; the error lists them all."""

_SPOOL_BYTES = 32 * 1024 * 1024
_MESSAGE_FIELDS = frozenset(ChatMessage.model_fields) | {"content"}  # content: the legacy form
_LINE_FIELDS = frozenset({"key", "messages"})
# Characters json.dumps leaves raw that str.splitlines() and some tools take as line breaks.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_REEXPORT = "export the conversations again with `aof-index memory export`"


# --------------------------------------------------------------------------------------------
# Errors and the report.


class TransferError(AofIndexError, ValueError):
    """Conversations could not be exported or imported."""


@dataclass(frozen=True)
class TransferIssue:
    """One problem in an import file: where, which field, what is wrong, how to fix it."""

    line: int
    """1-based line number (the header is line 1)."""
    field: str
    """Field path within the line, e.g. ``messages[3].role``; empty for the whole line."""
    message: str
    """What is wrong."""
    fix: str
    """What to do about it."""

    def __str__(self) -> str:
        where = f"line {self.line}" + (f": {self.field}" if self.field else "")
        return f"{where}: {self.message}; {self.fix}"


class ImportFormatError(TransferError):
    """The import file is not a valid export; nothing was written.

    Attributes:
        issues: every problem found (reading stops after :data:`MAX_ISSUES`).
    """

    def __init__(self, issues: list[TransferIssue]) -> None:
        self.issues = issues
        more = " (stopped reading there)" if len(issues) >= MAX_ISSUES else ""
        lines = [f"not a valid conversation export: {len(issues)} problem(s){more}"]
        lines += [f"  - {issue}" for issue in issues]
        lines.append("Nothing was imported.")
        super().__init__("\n".join(lines))


class ImportConflictError(TransferError):
    """Conversations of the file already exist in the store and ``on_conflict`` is
    ``error``; nothing was written.

    Attributes:
        keys: the keys that exist in both, in file order.
    """

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        shown = ", ".join(repr(k) for k in keys[:10])
        if len(keys) > 10:
            shown += f" and {len(keys) - 10} more"
        super().__init__(
            f"{len(keys)} conversation(s) of the file already exist in the store: {shown}. "
            "Nothing was imported. Choose what to do with them: on_conflict (CLI: "
            "--on-conflict) `replace` overwrites them, `skip` keeps them as they are, "
            "`append` adds the imported messages after theirs"
        )


class ImportWriteError(TransferError):
    """The store failed while conversations were being written.

    Attributes:
        written: conversations written completely before the failure (file order).
        key: the conversation being written when the store failed.
    """

    def __init__(self, written: int, total: int, key: str, cause: BaseException) -> None:
        self.written = written
        self.key = key
        super().__init__(
            f"the store failed while writing conversation {key!r} ({written} of {total} "
            f"written before it): {cause}. Fix the store, then run the same import again "
            "with on_conflict (CLI: --on-conflict) `skip` to write the rest"
        )


@dataclass
class ImportReport:
    """What :func:`import_conversations` wrote."""

    conversations: int = 0
    """Conversations written: created, replaced or appended to."""
    messages: int = 0
    """Messages written."""
    skipped: int = 0
    """Conversations left alone because the store held them (``on_conflict="skip"``)."""
    replaced: int = 0
    """Conversations whose messages were replaced (``on_conflict="replace"``)."""
    appended: int = 0
    """Conversations the messages were appended to (``on_conflict="append"``)."""

    @property
    def created(self) -> int:
        """Conversations that did not exist before."""
        return self.conversations - self.replaced - self.appended

    def as_dict(self) -> dict[str, int]:
        """The counts as a JSON-ready dict (the CLI's ``--json``)."""
        return {
            "conversations": self.conversations,
            "messages": self.messages,
            "created": self.created,
            "replaced": self.replaced,
            "appended": self.appended,
            "skipped": self.skipped,
        }


# --------------------------------------------------------------------------------------------
# Export.


def _dump_line(value: dict[str, Any]) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in _LINE_BREAKS.items():
        if char in text:  # only inside strings, where the escape means the same character
            text = text.replace(char, escaped)
    return text + "\n"


def _keys(store: BaseChatStore, prefix: str) -> list[str]:
    """The store's keys under ``prefix``, sorted by code point (never by a server collation)."""
    get_keys: Callable[..., list[str]] = store.get_keys
    try:
        takes_prefix = "prefix" in inspect.signature(get_keys).parameters
    except (TypeError, ValueError):
        takes_prefix = False
    keys = get_keys(prefix=prefix) if takes_prefix and prefix else get_keys()
    return sorted(key for key in keys if key.startswith(prefix))


def export_conversations(
    store: BaseChatStore,
    out: TextIO,
    *,
    prefix: str = "",
    progress: Progress | None = None,
) -> int:
    """Write the conversations of ``store`` to ``out`` as JSON Lines (see the module doc).

    Messages are written decoded, in plaintext, whatever compression or encryption the
    store applies at rest: protect the file.  Conversations are read one at a time; a
    conversation that disappears while the export runs (deleted, or expired by a TTL) is
    left out, and the header counts the conversations actually written (the lines are
    spooled, in memory up to 32 MiB and then in a private temporary file, until the count
    is known).

    Args:
        store: any LlamaIndex chat store.
        out: a text stream; it should be UTF-8 and must not translate ``\\n``.
        prefix: export only keys starting with this (a scope, a tenant, an agent).
        progress: called as ``progress("export", done, total)`` after each conversation.

    Returns:
        The number of conversations written.
    """
    keys = _keys(store, prefix)
    written = 0
    with tempfile.SpooledTemporaryFile(
        max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8", newline="\n"
    ) as spool:
        if progress is not None:
            progress("export", 0, len(keys))
        for done, key in enumerate(keys, 1):
            messages = store.get_messages(key)
            if messages:
                dumped = [message.model_dump(mode="json") for message in messages]
                spool.write(_dump_line({"key": key, "messages": dumped}))
                written += 1
            if progress is not None:
                progress("export", done, len(keys))
        exported_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        header = {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": exported_at,
            "conversations": written,
        }
        out.write(_dump_line(header))
        spool.seek(0)
        shutil.copyfileobj(spool, out)
    out.flush()
    return written


# --------------------------------------------------------------------------------------------
# Import: read and check everything, then write.


@dataclass
class _Conversation:
    line: int
    key: str
    messages: list[ChatMessage]


def _field_path(base: str, loc: tuple[int | str, ...], value: Any, missing: bool) -> str:
    """The path of a pydantic error within the input, without the union tags and member
    names pydantic puts in ``loc`` (``blocks.0.image.image.bytes`` → ``blocks[0].image``)."""
    path = base
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(part, int) and isinstance(value, list) and -len(value) <= part < len(value):
            path, value = f"{path}[{part}]", value[part]
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            path, value = f"{path}.{part}", value[part]
        elif last and missing and isinstance(part, str):
            path += f".{part}"
    return path


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Reader:
    """Parses and checks an export, collecting problems instead of stopping at the first."""

    def __init__(self, store: BaseChatStore, progress: Progress | None) -> None:
        self.issues: list[TransferIssue] = []
        self.conversations: list[_Conversation] = []
        self._seen: dict[str, int] = {}
        self._codec = getattr(store, "codec", None)
        self._progress = progress
        self._line_chars = 0

    def issue(self, line: int, field: str, message: str, fix: str) -> None:
        self.issues.append(TransferIssue(line, field, message, fix))

    @property
    def full(self) -> bool:
        return len(self.issues) >= MAX_ISSUES

    def read(self, lines: Iterable[str]) -> None:
        numbered = self._numbered(lines)
        header: dict[str, Any] | None = None
        last = 0
        for number, text in numbered:
            last = number
            if not text.strip():
                continue  # blank lines carry nothing; tolerate them (an editor's last newline)
            value = self._parse(number, text)
            if header is None:
                header = self._header(number, value)
                if header is None:
                    return  # not an export (or a newer one): the rest would only add noise
                continue
            if value is not None:
                self._line_chars = len(text)
                self._conversation(number, value)
            if self.full:
                return
        if header is None:
            self.issue(
                max(last, 1),
                "",
                "the file is empty",
                f'expected a header line {{"format": "{FORMAT}", "version": {VERSION}, ...}}; '
                + _REEXPORT,
            )
            return
        announced = header["conversations"]
        found = len(self.conversations) + len({i.line for i in self.issues if i.line > 1})
        if announced != found:
            self.issue(
                1,
                "conversations",
                f"the header announces {announced} conversation(s) but the file holds {found}",
                "the file was cut short or lines were added or removed; "
                + _REEXPORT
                + " (or correct the header's count if you edited the file on purpose)",
            )

    def _numbered(self, lines: Iterable[str]) -> Iterator[tuple[int, str]]:
        number = 0
        iterator = iter(lines)
        while True:
            try:
                text = next(iterator)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                self.issue(
                    number + 1,
                    "",
                    f"the file is not UTF-8 text ({exc.reason} at byte {exc.start} of a block)",
                    "exports are UTF-8; " + _REEXPORT,
                )
                return
            number += 1
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark added by an editor
            yield number, text

    def _parse(self, number: int, text: str) -> Any:
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            reason = f"{exc.msg} at column {exc.colno}" if isinstance(exc, JSONDecodeError) else exc
            self.issue(
                number,
                "",
                f"not JSON ({reason})",
                "every line must be one JSON object; was the file edited or cut? " + _REEXPORT,
            )
            return None

    def _header(self, number: int, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None  # already reported as not JSON
        if not isinstance(value, dict) or value.get("format") != FORMAT:
            got = value.get("format") if isinstance(value, dict) else value
            self.issue(
                number,
                "format",
                f"the first line is not an aof-index conversation export header (format "
                f"{_shown(got)}, expected {FORMAT!r})",
                "import only files written by `aof-index memory export`",
            )
            return None
        version = value.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > 1
            self.issue(
                number,
                "version",
                f"unsupported export version {_shown(version)}; this aof-index reads "
                f"version {VERSION}",
                "upgrade aof-index to import it"
                if newer
                else f'the header must say "version": {VERSION}; ' + _REEXPORT,
            )
            return None
        count = value.get("conversations")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.issue(
                number,
                "conversations",
                f"must be the number of conversation lines, got {_shown(count)}",
                "correct the header or " + _REEXPORT,
            )
            return None
        return value

    def _conversation(self, number: int, value: Any) -> None:
        if not isinstance(value, dict):
            self.issue(
                number,
                "",
                f"expected a JSON object with `key` and `messages`, got {_shown(value)}",
                _REEXPORT,
            )
            return
        unknown = sorted(set(value) - _LINE_FIELDS)
        if unknown:
            self.issue(
                number,
                unknown[0],
                f"unknown field(s) {', '.join(unknown)}",
                "a conversation line has only `key` and `messages`; remove the others",
            )
            return
        key = value.get("key")
        if not isinstance(key, str) or not key:
            self.issue(
                number,
                "key",
                f"must be a non-empty string, got {_shown(key)}",
                "give the conversation its id as a string",
            )
            return
        if "\x00" in key:
            self.issue(
                number,
                "key",
                f"{_shown(key)} contains a NUL character, which PostgreSQL cannot store",
                "rename the conversation",
            )
            return
        if key in self._seen:
            self.issue(
                number,
                "key",
                f"{key!r} already appears on line {self._seen[key]}",
                "keep one line per conversation: merge their messages into one line, or drop one",
            )
            return
        self._seen[key] = number
        raw = value.get("messages")
        if not isinstance(raw, list) or not raw:
            self.issue(
                number,
                "messages",
                f"must be a non-empty list of messages, got {_shown(raw)}",
                "a conversation holds at least one message; remove the line or add messages",
            )
            return
        messages: list[ChatMessage] = []
        for index, item in enumerate(raw):
            message = self._message(number, index, item)
            if message is None:
                return
            messages.append(message)
        self.conversations.append(_Conversation(number, key, messages))
        if self._progress is not None:
            self._progress("read", len(self.conversations), 0)

    def _message(self, number: int, index: int, item: Any) -> ChatMessage | None:
        base = f"messages[{index}]"
        fix = "correct the value to what LlamaIndex's ChatMessage accepts, or " + _REEXPORT
        if isinstance(item, dict):
            unknown = sorted(set(item) - _MESSAGE_FIELDS)
            if unknown:
                allowed = ", ".join(sorted(_MESSAGE_FIELDS))
                self.issue(
                    number,
                    f"{base}.{unknown[0]}",
                    f"unknown field(s) {', '.join(unknown)} (a message has {allowed})",
                    "rename or remove it: ChatMessage would drop it silently",
                )
                return None
        try:
            message = ChatMessage.model_validate(item)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            missing = error["type"] == "missing"
            self.issue(
                number,
                _field_path(base, tuple(error["loc"]), item, missing),
                f"{error['msg']} (got {_shown(error.get('input'))})",
                fix,
            )
            return None
        if self._codec is not None and not self._fits(number, base, message):
            return None
        return message

    def _fits(self, number: int, field: str, message: ChatMessage) -> bool:
        """Whether the target store can hold ``message``, asked of its codec when the
        message is large enough to be in doubt (encoding twice would cost time)."""
        max_bytes = getattr(self._codec, "max_bytes", None)
        encode = getattr(self._codec, "encode", None)
        if not isinstance(max_bytes, int) or encode is None:
            return True
        # A UTF-8 character takes at most 4 bytes; encryption adds about a third (base64).
        if self._line_chars * 4 * 2 < max_bytes or len(message.model_dump_json()) * 2 < max_bytes:
            return True
        try:
            encode(message)
        except ValueError as exc:  # MessageTooLargeError is a ValueError
            self.issue(number, field, str(exc), "split the message, or raise the store's limit")
            return False
        return True


def _as_lines(lines: Iterable[str] | TextIO | str) -> Iterable[str]:
    if isinstance(lines, str):  # a whole document; split on "\n" only, as JSON Lines does
        return lines.split("\n")
    return lines


def import_conversations(
    store: BaseChatStore,
    lines: Iterable[str] | TextIO,
    *,
    on_conflict: ConflictMode = "error",
    progress: Progress | None = None,
) -> ImportReport:
    """Write the conversations of an export (see the module doc) into ``store``.

    The whole input is read and checked first; nothing is written unless every line is
    valid and, with ``on_conflict="error"``, no key of the file exists in the store.  Each
    message is encoded with the store's own settings (compression, encryption).

    Args:
        store: any LlamaIndex chat store.
        lines: the lines of the export: an open text file, a list of lines, or the whole
            text as one string.  Lines must be split on ``\\n`` only.
        on_conflict: what to do with a key the store already holds: ``error`` raise
            :class:`ImportConflictError`, ``replace`` its messages (``set_messages``),
            ``skip`` it, ``append`` the imported messages after its own (``add_message``).
        progress: called as ``progress("read", n, 0)`` while reading and
            ``progress("import", done, total)`` while writing.

    Raises:
        ImportFormatError: a line is not valid; nothing written.
        ImportConflictError: keys exist and ``on_conflict`` is ``error``; nothing written.
        ImportWriteError: the store failed while writing; whole conversations only were
            written before it.
        ValueError: ``on_conflict`` is not one of the four modes.
    """
    if on_conflict not in CONFLICT_MODES:
        raise ValueError(
            f"on_conflict must be one of {', '.join(CONFLICT_MODES)}, got {on_conflict!r}"
        )
    reader = _Reader(store, progress)
    reader.read(_as_lines(lines))
    if reader.issues:
        raise ImportFormatError(reader.issues)
    conversations = reader.conversations
    existing = set(store.get_keys()) if conversations else set()
    clashes = [c.key for c in conversations if c.key in existing]
    if clashes and on_conflict == "error":
        raise ImportConflictError(clashes)

    report = ImportReport()
    total = len(conversations)
    if progress is not None:
        progress("import", 0, total)
    for done, conversation in enumerate(conversations, 1):
        key, messages = conversation.key, conversation.messages
        try:
            if key not in existing:
                store.set_messages(key, messages)
            elif on_conflict == "skip":
                report.skipped += 1
            elif on_conflict == "replace":
                store.set_messages(key, messages)
                report.replaced += 1
            else:  # append, one message at a time: concurrent writers keep their messages
                for message in messages:
                    store.add_message(key, message)
                report.appended += 1
        except Exception as exc:
            raise ImportWriteError(report.conversations, total, key, exc) from exc
        if key not in existing or on_conflict != "skip":
            report.conversations += 1
            report.messages += len(messages)
        if progress is not None:
            progress("import", done, total)
    return report
