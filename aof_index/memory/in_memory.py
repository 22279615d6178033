"""In-memory chat store for tests and ephemeral agents.

LlamaIndex's ``SimpleChatStore`` is not used as a base: it shares the caller's lists with
the store (``set_messages`` keeps the list it is given, ``get_messages`` returns its own),
raises ``IndexError`` from ``delete_last_message`` on an empty key, keeps keys whose
messages were all deleted, and has no lock.  This store copies messages in and out, holds
one lock per call, and follows the same semantics as :class:`~aof_index.memory.SQLiteChatStore`.
"""

from __future__ import annotations

__all__ = ["InMemoryChatStore"]

import threading
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, PrivateAttr
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore


def _copy(message: ChatMessage) -> ChatMessage:
    return message.model_copy(deep=True)


class InMemoryChatStore(BaseChatStore):
    """Chat history in a dict, safe to share between threads and asyncio tasks.

    Semantics match :class:`~aof_index.memory.SQLiteChatStore`: indices behave like Python
    list indices, an index out of range gives ``None``, a key whose last message is deleted
    disappears from :meth:`get_keys`.  Messages are deep-copied on the way in and out, so
    callers never share state with the store.  Every call holds a lock only for the work on
    the dict, with no await inside, so the async methods are plain and never block the loop
    for long.  Pickling keeps the messages.
    """

    _data: dict[str, list[ChatMessage]] = PrivateAttr(default_factory=dict)
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofInMemoryChatStore"

    # ----------------------------------------------------------------------------------------
    # Sync.

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the messages of ``key`` (an empty list removes the key)."""
        copies = [_copy(m) for m in messages]
        with self._lock:
            if copies:
                self._data[key] = copies
            else:
                self._data.pop(key, None)

    def get_messages(self, key: str) -> list[ChatMessage]:
        """Messages of ``key`` in order; ``[]`` for an unknown key."""
        with self._lock:
            messages = list(self._data.get(key, ()))
        return [_copy(m) for m in messages]

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Append ``message`` to ``key``, or insert it at ``idx`` like ``list.insert``."""
        copy = _copy(message)
        with self._lock:
            messages = self._data.setdefault(key, [])
            if idx is None:
                messages.append(copy)
            else:
                messages.insert(idx, copy)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete every message of ``key``; returns them, or ``None`` for an unknown key."""
        with self._lock:
            return self._data.pop(key, None)

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th message of ``key`` in order and return it (``None`` if absent)."""
        with self._lock:
            messages = self._data.get(key)
            if not messages or not -len(messages) <= idx < len(messages):
                return None
            return self._pop(key, messages, idx)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the last message of ``key`` and return it (``None`` if there is none)."""
        with self._lock:
            messages = self._data.get(key)
            return self._pop(key, messages, -1) if messages else None

    def get_keys(self) -> list[str]:
        """Keys holding at least one message, sorted."""
        with self._lock:
            return sorted(self._data)

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

    async def aget_keys(self) -> list[str]:
        """Async :meth:`get_keys`."""
        return self.get_keys()

    # ----------------------------------------------------------------------------------------
    # Internals.

    def _pop(self, key: str, messages: list[ChatMessage], idx: int) -> ChatMessage:
        message = messages.pop(idx)
        if not messages:
            del self._data[key]
        return message

    def __getstate__(self) -> dict[Any, Any]:
        state = dict(BaseModel.__getstate__(self))
        with self._lock:
            state["__pydantic_private__"] = {"_data": {k: list(v) for k, v in self._data.items()}}
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        private = state.get("__pydantic_private__") or {}
        super().__setstate__({**state, "__pydantic_private__": None})
        self._data = private.get("_data", {})
