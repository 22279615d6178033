"""What history management asks of a chat store beyond ``BaseChatStore``.

Trimming a conversation and folding its older turns into a summary both replace the *head*
of a conversation (its oldest messages) while other writers may be appending to its tail.
Every chat store of aof-index does that atomically with :meth:`HistoryStore.edit_head`: it
reads the conversation, asks a *plan* what to change, and applies the change only if no
other writer touched the head in between (otherwise it reads again and asks again).  The
plan is a pure function of the messages, so running it twice is harmless.

The stores also list keys under a prefix without scanning the rest (isolation scopes are
key prefixes) and expire conversations ``ttl`` seconds after their last write.
"""

from __future__ import annotations

__all__ = ["EditConflictError", "EditPlan", "HeadEdit", "HistoryStore"]

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llama_index.core.llms import ChatMessage

from aof_index.errors import AofIndexError

if TYPE_CHECKING:
    from aof_index.memory.codec import MessageCodec


class EditConflictError(AofIndexError):
    """Other writers changed a conversation's head under every attempt of an edit."""


@dataclass(frozen=True)
class HeadEdit:
    """Remove the first ``drop`` messages of a conversation and put ``insert`` in their place."""

    drop: int
    insert: Sequence[ChatMessage] = field(default=())


EditPlan = Callable[[list[ChatMessage]], HeadEdit | None]
"""Given a conversation's messages, the edit to make, or ``None`` to leave it alone."""


@runtime_checkable
class HistoryStore(Protocol):
    """A chat store that history management can run on (all four stores of aof-index)."""

    codec: MessageCodec
    """How messages are encoded at rest (compression, encryption)."""
    ttl: float | None
    """Seconds after its last write at which a conversation expires (``None``: never)."""

    def get_keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` that hold messages, sorted."""
        ...

    async def aget_keys(self, prefix: str = "") -> list[str]:
        """Async :meth:`get_keys`."""
        ...

    def edit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Atomically apply ``plan`` to the head of ``key``; returns the removed messages.

        The removed messages are appended, in order, to ``archive_key`` when one is given,
        in the same atomic step, so a crash never loses them.  A key without messages
        (unknown or expired) is left alone: ``plan`` is not called and ``[]`` is returned.
        ``drop`` beyond the length is clamped.

        Raises:
            ValueError: ``drop`` is negative, or ``archive_key`` is ``key``.
            EditConflictError: (stores that retry optimistically) the head kept changing.
        """
        ...

    async def aedit_head(
        self, key: str, plan: EditPlan, *, archive_key: str | None = None
    ) -> list[ChatMessage]:
        """Async :meth:`edit_head`."""
        ...

    def purge_expired(self) -> int:
        """Delete conversations past their TTL now; returns how many went."""
        ...

    async def apurge_expired(self) -> int:
        """Async :meth:`purge_expired`."""
        ...
