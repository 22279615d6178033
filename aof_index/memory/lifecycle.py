"""What every chat store of aof-index shares.

- :class:`HistoryChatStore`: the ``BaseChatStore`` base of all four stores, with the fields
  history management needs (``codec``, ``ttl``), the abstract :class:`~aof_index.memory.edit.
  HistoryStore` methods, and the clock that paces opportunistic purges;
- :func:`head_drop`: how every store reads a :class:`~aof_index.memory.edit.HeadEdit`;
- :class:`ClosableStore`: context managers and pickling for the stores whose connections
  open lazily.

The codec holds key material: it is left out of ``to_dict``/``to_json`` and ``repr``, but a
pickled store keeps it (a worker process needs it to read and write).
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from types import TracebackType
from typing import Any, Self

from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr
from llama_index.core.llms import ChatMessage
from llama_index.core.storage.chat_store.base import BaseChatStore
from pydantic import InstanceOf
from pydantic.json_schema import SkipJsonSchema

from aof_index.memory.codec import PLAIN, MessageCodec
from aof_index.memory.edit import EditPlan, HeadEdit

__all__ = [
    "PURGE_INTERVAL_S",
    "ClosableStore",
    "HistoryChatStore",
    "check_archive_key",
    "head_drop",
]

PURGE_INTERVAL_S = 60.0
"""Longest time between two opportunistic purges of one store (shorter when ``ttl`` is)."""


def head_drop(edit: HeadEdit, length: int) -> int:
    """How many messages ``edit`` removes from a conversation of ``length`` (clamped)."""
    if edit.drop < 0:
        raise ValueError(f"HeadEdit.drop must be 0 or more, got {edit.drop}")
    return min(edit.drop, length)


def check_archive_key(key: str, archive_key: str | None) -> None:
    """Refuse an archive that is the conversation itself (the edit would feed on itself)."""
    if archive_key == key:
        raise ValueError(f"archive_key must differ from the key it archives ({key!r})")


class HistoryChatStore(BaseChatStore):
    """A ``BaseChatStore`` that history management can run on (implements ``HistoryStore``).

    Semantics shared by every subclass: a conversation expires ``ttl`` seconds after its last
    write (any write: append, insert, delete, replace, edit); once expired, reads give ``[]``
    or ``None``, :meth:`get_keys` omits it, and the next write starts a fresh conversation.
    :meth:`get_keys` lists keys under a prefix in code-point order; :meth:`edit_head` replaces
    a conversation's head atomically w.r.t. every other writer.
    """

    codec: SkipJsonSchema[InstanceOf[MessageCodec]] = Field(
        default=PLAIN,
        exclude=True,
        repr=False,
        description="How messages are stored (compression, encryption); never serialised.",
    )
    ttl: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after its last write at which a conversation expires; None: never.",
    )

    _purge_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _next_purge: float = PrivateAttr(default=0.0)

    # HistoryStore ------------------------------------------------------------------------------

    @abstractmethod
    def get_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` that hold messages, in code-point order."""

    @abstractmethod
    async def aget_keys(self, prefix: str = "") -> list[str]:
        """Async :meth:`get_keys`."""

    @abstractmethod
    def edit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Atomically apply ``plan`` to the head of ``key``; returns the removed messages.

        ``plan`` gets the messages of ``key`` and returns ``None`` (nothing happens) or a
        ``HeadEdit(drop, insert)``: the first ``drop`` messages (clamped to the length) are
        removed and ``insert`` put, in order, before the remaining ones.  A key without
        messages (unknown, or expired) is left alone: ``plan`` is not called.  With
        ``archive_key``, the removed messages are appended to it, in order, in the same
        atomic step.  Both keys' TTL refreshes like on any write.  ``plan`` may run more
        than once (it should be a pure function of the messages).
        """

    @abstractmethod
    async def aedit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Async :meth:`edit_head`."""

    @abstractmethod
    def purge_expired(self) -> int:
        """Delete conversations past their TTL now; returns how many went."""

    @abstractmethod
    async def apurge_expired(self) -> int:
        """Async :meth:`purge_expired`."""

    # Pacing ------------------------------------------------------------------------------------

    def _purge_due(self) -> bool:
        """Whether a write should purge first: at most once per ``min(ttl, 60 s)``."""
        if self.ttl is None:
            return False
        now = time.monotonic()
        with self._purge_lock:
            if now < self._next_purge:
                return False
            self._next_purge = now + min(self.ttl, PURGE_INTERVAL_S)
            return True


class ClosableStore:
    """Mixin for a pydantic store whose connections open lazily.

    ``with store:`` / ``async with store:`` close the connections on exit; a pickled copy
    (e.g. sent to a worker process) keeps the settings (the codec included) only and opens
    its own connections on first use.
    """

    @abstractmethod
    def close(self) -> None:
        """Release the connections; the next call reopens them."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the connections from async code; the next call reopens them."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __getstate__(self) -> dict[Any, Any]:
        # Connections, pools and locks (private attributes) stay behind.
        assert isinstance(self, BaseModel)
        state = dict(BaseModel.__getstate__(self))
        state["__pydantic_private__"] = None
        return state
