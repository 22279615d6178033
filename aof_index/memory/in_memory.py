"""In-memory chat store for tests and ephemeral agents.

LlamaIndex's ``SimpleChatStore`` is not used as a base: it shares the caller's lists with
the store (``set_messages`` keeps the list it is given, ``get_messages`` returns its own),
raises ``IndexError`` from ``delete_last_message`` on an empty key, keeps keys whose
messages were all deleted, and has no lock.  This store keeps each message as the text its
``codec`` makes of it (as the other stores do, so limits, compression and encryption behave
alike, and no caller ever shares an object with the store), holds one lock per call, and
follows the same semantics as :class:`~aof_index.memory.SQLiteChatStore`, TTL and
``HistoryStore`` included.
"""

from __future__ import annotations

__all__ = ["InMemoryChatStore"]

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, PrivateAttr
from llama_index.core.llms import ChatMessage

from aof_index.memory.edit import EditPlan
from aof_index.memory.lifecycle import HistoryChatStore, check_archive_key, head_drop


@dataclass
class _Conversation:
    """The encoded messages of one key, and when it was last written (``time.monotonic``)."""

    texts: list[str] = field(default_factory=list)
    written: float = 0.0


class InMemoryChatStore(HistoryChatStore):
    """Chat history in a dict, safe to share between threads and asyncio tasks.

    Semantics match :class:`~aof_index.memory.SQLiteChatStore`: indices behave like Python
    list indices, an index out of range gives ``None``, a key whose last message is deleted
    disappears from :meth:`get_keys`, and with ``ttl`` a conversation expires ``ttl``
    seconds after its last write (a write first purges, at most once per
    ``min(ttl, 60 s)``).  Every call holds a lock only for the work on the dict (and the
    encoding or decoding of its messages), with no await inside, so the async methods are
    plain and never block the loop for long.  Pickling keeps the messages and the codec.
    """

    _data: dict[str, _Conversation] = PrivateAttr(default_factory=dict)
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofInMemoryChatStore"

    # ----------------------------------------------------------------------------------------
    # Sync.

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the messages of ``key`` (an empty list removes the key)."""
        texts = [self.codec.encode(m) for m in messages]
        with self._writing():
            self._data[key] = _Conversation(texts)
            self._written(key)

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Messages of ``key`` in order; ``[]`` for an unknown or expired key."""
        with self._lock:
            conversation = self._live(key)
            texts = list(conversation.texts) if conversation else []
        return [self.codec.decode(text) for text in texts]

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message`` to ``key``, or insert it at ``idx`` like ``list.insert``."""
        text = self.codec.encode(message)
        with self._writing():
            texts = self._conversation(key).texts
            if idx is None:
                texts.append(text)
            else:
                texts.insert(idx, text)
            self._written(key)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete every message of ``key``; returns them, or ``None`` for an unknown key."""
        with self._writing():
            conversation = self._live(key)
            if conversation is None:
                return None
            messages = [self.codec.decode(text) for text in conversation.texts]
            del self._data[key]
            return messages

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th message of ``key`` in order and return it (``None`` if absent)."""
        with self._writing():
            size = len(conversation.texts) if (conversation := self._live(key)) else 0
            return self._pop(key, idx) if -size <= idx < size else None

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key`` and return it (``None`` if there is none)."""
        with self._writing():
            return self._pop(key, -1) if self._live(key) else None

    def get_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` that hold messages, in code-point order."""
        with self._lock:
            now = time.monotonic()
            return sorted(
                key
                for key, conversation in self._data.items()
                if key.startswith(prefix) and not self._expired(conversation, now)
            )

    def edit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Apply ``plan`` to the head of ``key`` under the store's lock (see ``HistoryStore``)."""
        check_archive_key(key, archive_key)
        with self._writing():
            conversation = self._live(key)
            if conversation is None:
                return []
            texts = conversation.texts
            messages = [self.codec.decode(text) for text in texts]
            edit = plan(list(messages))
            if edit is None:
                return []
            drop = head_drop(edit, len(texts))
            inserts = [self.codec.encode(message) for message in edit.insert]
            if not drop and not inserts:
                return []
            removed = texts[:drop]
            self._conversation(key).texts[:drop] = inserts
            self._written(key)
            if archive_key is not None and removed:
                self._conversation(archive_key).texts.extend(removed)
                self._written(archive_key)
            return messages[:drop]

    def purge_expired(self) -> int:
        """Delete the conversations past their TTL now; returns how many went."""
        with self._lock:
            now = time.monotonic()
            expired = [k for k, c in self._data.items() if self._expired(c, now)]
            for key in expired:
                del self._data[key]
            return len(expired)

    # ----------------------------------------------------------------------------------------
    # Async: the work is a few dict operations under a lock, so they run inline.

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        self.set_messages(key, messages)

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        return self.get_messages(key)

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        """Async :meth:`add_message` (LlamaIndex names it ``async_add_message``)."""
        self.add_message(key, message, idx)

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        return self.delete_messages(key)

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        return self.delete_message(key, idx)

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return self.delete_last_message(key)

    async def aget_keys(self, prefix: str = "") -> list[str]:
        """Async :meth:`get_keys`."""
        return self.get_keys(prefix)

    async def aedit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Async :meth:`edit_head`."""
        return self.edit_head(key, plan, archive_key=archive_key)

    async def apurge_expired(self) -> int:
        """Async :meth:`purge_expired`."""
        return self.purge_expired()

    # ----------------------------------------------------------------------------------------
    # Internals (the caller holds the lock).

    def _writing(self) -> threading.RLock:
        """The lock, once expired conversations are purged if one is due."""
        if self._purge_due():
            self.purge_expired()
        return self._lock

    def _expired(self, conversation: _Conversation, now: float) -> bool:
        return self.ttl is not None and conversation.written < now - self.ttl

    def _live(self, key: str) -> _Conversation | None:
        """The conversation of ``key``, or ``None`` when there is none or it expired."""
        conversation = self._data.get(key)
        if conversation is not None and self._expired(conversation, time.monotonic()):
            del self._data[key]
            return None
        return conversation

    def _conversation(self, key: str) -> _Conversation:
        """The live conversation of ``key``, a fresh one when it has none."""
        conversation = self._live(key)
        if conversation is None:
            conversation = self._data[key] = _Conversation()
        return conversation

    def _written(self, key: str) -> None:
        """Record a write to ``key``: stamp the time, or forget a key left empty."""
        conversation = self._data[key]
        if conversation.texts:
            conversation.written = time.monotonic()
        else:
            del self._data[key]

    def _pop(self, key: str, idx: int) -> ChatMessage:
        texts = self._data[key].texts
        message = self.codec.decode(texts[idx])
        del texts[idx]
        self._written(key)
        return message

    def __getstate__(self) -> dict[Any, Any]:
        state = dict(BaseModel.__getstate__(self))
        with self._lock:
            data = {k: _Conversation(list(c.texts), c.written) for k, c in self._data.items()}
        state["__pydantic_private__"] = {"_data": data}
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        private = state.get("__pydantic_private__") or {}
        super().__setstate__({**state, "__pydantic_private__": None})
        self._data = private.get("_data", {})
