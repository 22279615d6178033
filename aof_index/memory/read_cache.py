"""The read cache of the chat stores: decoded conversations, refreshed incrementally.

Reading a conversation is mostly decoding it (JSON to ``ChatMessage``), and an agent reads
its whole conversation after every turn, so the SQLite, PostgreSQL and Redis stores keep,
per store instance, the messages they last decoded for each conversation, with the
conversation's *epoch* and how far the copy reaches.  A read sends the cached epoch; the
server answers, in one round trip and from one snapshot, the current epoch and either the
messages after the cached ones (epoch unchanged) or the whole conversation (epoch changed,
or nothing cached).  Only new messages are decoded.

Why that is never stale: the stores keep one epoch per conversation, at rest, next to its
messages, and every write that can change what a conversation already holds (a delete of
one or all messages, an insert before the end, ``set_messages``, ``edit_head``, a TTL
expiry) gives it a new epoch, a random 63-bit number that the writer draws, or removes it
with the conversation.  An append keeps the epoch (it only adds after the end), and gives
a conversation without one (a new one, or data written before epochs existed) a new one.
So, as long as the epoch read equals the cached one, the conversation is the cached
messages followed by the new ones, whichever process or store instance wrote them.  A
conversation read without an epoch is not cached.

Bounds: at most ``conversations`` conversations and ``max_bytes`` bytes of stored text
(what the server holds, before decoding; the decoded objects take a few times that), least
recently read first out; a conversation larger than ``max_bytes`` alone is not cached.

Callers get copies: ``ChatMessage`` is a mutable pydantic model, so every read returns new
objects (:func:`copy_message`, about a third of what decoding costs), and the cached ones
are never handed out.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_CONVERSATIONS",
    "CachedConversation",
    "CachedReads",
    "ReadCache",
    "compact",
    "copy_message",
    "copy_messages",
    "expand",
    "merge",
    "new_epoch",
]

import copy
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel, Field, PrivateAttr
from llama_index.core.llms import ChatMessage, MessageRole, TextBlock

DEFAULT_CACHE_CONVERSATIONS = 4096
"""Conversations a store's read cache holds at most, by default."""

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""Bytes of stored text a store's read cache holds at most, by default."""

_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_new = object.__new__
_set = object.__setattr__
# The slots every pydantic model has, set through their descriptors: what object.__setattr__
# ends up calling, without looking each name up (expand runs once per message per read).
_SLOTS = vars(BaseModel)
_set_dict = _SLOTS["__dict__"].__set__
_set_fields = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__


def new_epoch() -> int:
    """A fresh epoch: a random positive 63-bit integer (fits SQL's BIGINT)."""
    return secrets.randbits(63) or 1


def _fresh(value: Any) -> Any:
    """A copy of ``value`` that shares nothing mutable with it (JSON-like data, enums and
    pydantic models; anything else through :func:`copy.deepcopy`)."""
    kind = type(value)
    if kind in _SCALARS or isinstance(value, Enum):
        return value
    if kind is list:
        return [_fresh(item) for item in value]
    if kind is dict:
        return {key: _fresh(item) for key, item in value.items()}
    if isinstance(value, BaseModel):
        return _copy_model(value)
    return copy.deepcopy(value)


def _copy_model(model: BaseModel) -> Any:
    # What BaseModel.__copy__ does, without its generality: a new instance with a new
    # __dict__ whose mutable values are copied in turn (fields set, extra and private too).
    copied = _new(type(model))
    state = {key: _fresh(value) for key, value in model.__dict__.items()}
    _set(copied, "__dict__", state)
    _set(copied, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    extra = model.__pydantic_extra__
    _set(copied, "__pydantic_extra__", None if extra is None else _fresh(extra))
    private = model.__pydantic_private__
    _set(copied, "__pydantic_private__", None if private is None else copy.deepcopy(private))
    return copied


# The fast path below knows these fields (and that a text block holds only strings); with
# other fields (another llama-index version) every message takes the general one.
_FAST = set(ChatMessage.model_fields) == {"role", "additional_kwargs", "blocks"} and set(
    TextBlock.model_fields
) == {"block_type", "text"}


def _bare(model: BaseModel, kind: type[BaseModel]) -> bool:
    return type(model) is kind and not model.__pydantic_extra__ and not model.__pydantic_private__


def copy_message(message: ChatMessage) -> ChatMessage:
    """A deep copy of ``message``: a caller may change it without touching the original.

    Several times cheaper than ``model_copy(deep=True)`` (and than decoding the message
    again): a message of text blocks (the common case) is copied field by field, anything
    else through a copy of its JSON-like data, enums and models (and :func:`copy.deepcopy`
    for other values).
    """
    if not (_FAST and _bare(message, ChatMessage)):
        copied: ChatMessage = _copy_model(message)
        return copied
    state = message.__dict__
    blocks = []
    for block in state["blocks"]:
        if _bare(block, TextBlock):
            new_block = _new(TextBlock)
            _set(new_block, "__dict__", block.__dict__.copy())  # two strings
            _set(new_block, "__pydantic_fields_set__", set(block.__pydantic_fields_set__))
            _set(new_block, "__pydantic_extra__", None)
            _set(new_block, "__pydantic_private__", None)
            blocks.append(new_block)
        else:
            blocks.append(_copy_model(block))
    kwargs = state["additional_kwargs"]
    new_message = _new(ChatMessage)
    _set(
        new_message,
        "__dict__",
        {
            "role": state["role"],  # an enum member
            "additional_kwargs": _fresh(kwargs) if kwargs else {},
            "blocks": blocks,
        },
    )
    _set(new_message, "__pydantic_fields_set__", set(message.__pydantic_fields_set__))
    _set(new_message, "__pydantic_extra__", None)
    _set(new_message, "__pydantic_private__", None)
    return new_message


def copy_messages(messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    """:func:`copy_message` of each message, in a new list."""
    return [copy_message(message) for message in messages]


# A cached message is kept as a tuple of strings where it can be (a message of text blocks
# without additional_kwargs: what most turns are), else as a private ChatMessage.  A tuple
# of strings is not tracked by CPython's cyclic garbage collector, and thousands of cached
# conversations of pydantic objects would be: every full collection would walk them all
# (measured: 40% of a benchmark's time went to collections with cached objects).
Compact = tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
"""(role, the text of each block, the message's fields set, each block's fields set joined
by commas)."""

Cached = Compact | ChatMessage
"""A cached message: compact, or a ChatMessage no caller ever sees."""

_ROLES = {role.value: role for role in MessageRole}


def compact(message: ChatMessage) -> Cached:
    """What the cache keeps of ``message``, sharing nothing mutable with it."""
    if _FAST and _bare(message, ChatMessage) and not message.additional_kwargs:
        blocks = message.blocks
        if all(_bare(block, TextBlock) for block in blocks):
            role = message.role
            if _ROLES.get(role.value) is role:
                return (
                    role.value,
                    tuple(block.text for block in blocks),  # type: ignore[union-attr]
                    tuple(message.__pydantic_fields_set__),
                    tuple(",".join(block.__pydantic_fields_set__) for block in blocks),
                )
    return copy_message(message)


def expand(cached: Cached) -> ChatMessage:
    """A new ChatMessage equal to the one :func:`compact` was given."""
    if not isinstance(cached, tuple):
        return copy_message(cached)
    role, texts, fields, block_fields = cached
    blocks = []
    for text, block_set in zip(texts, block_fields, strict=True):
        block = _new(TextBlock)
        _set_dict(block, {"block_type": "text", "text": text})
        _set_fields(block, set(_fields(block_set)))
        _set_extra(block, None)
        _set_private(block, None)
        blocks.append(block)
    message = _new(ChatMessage)
    _set_dict(message, {"role": _ROLES[role], "additional_kwargs": {}, "blocks": blocks})
    _set_fields(message, set(fields))
    _set_extra(message, None)
    _set_private(message, None)
    return message


_BLOCK_FIELDS: dict[str, frozenset[str]] = {}


def _fields(joined: str) -> frozenset[str]:
    """The field names that ``compact`` joined by commas (a handful of distinct values)."""
    found = _BLOCK_FIELDS.get(joined)
    if found is None:
        found = frozenset(joined.split(",")) if joined else frozenset()
        if len(_BLOCK_FIELDS) < 64:
            _BLOCK_FIELDS[joined] = found
    return found


@dataclass(frozen=True)
class CachedConversation:
    """What a store last read of one conversation: its epoch, its messages (never handed
    out), where they end (the backend's marker: a count or a position) and their size."""

    epoch: int | str
    messages: tuple[Cached, ...]
    end: int
    size: int


class ReadCache:
    """A bounded, thread-safe LRU map from conversation key to :class:`CachedConversation`.

    Args:
        conversations: most conversations held; 0 turns the cache off.
        max_bytes: most bytes of stored text held; a larger conversation is not cached.
    """

    def __init__(self, conversations: int, max_bytes: int) -> None:
        self.conversations = conversations
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CachedConversation] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether anything can be cached."""
        return self.conversations > 0 and self.max_bytes > 0

    @property
    def size(self) -> int:
        """Bytes of stored text held."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedConversation | None:
        """The cached conversation of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: CachedConversation) -> None:
        """Cache ``entry`` for ``key`` (replacing what was there), then evict down to the
        bounds.  An entry larger than ``max_bytes`` is not kept (nor is the old one)."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old.size
                if (
                    old.epoch == entry.epoch
                    and old.end > entry.end
                    and len(old.messages) > len(entry.messages)
                ):
                    entry = old  # a concurrent read got further: keep the longer copy
            if not self.enabled or entry.size > self.max_bytes:
                return
            self._entries[key] = entry
            self._size += entry.size
            while len(self._entries) > self.conversations or self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= evicted.size

    def drop(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old.size

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()
            self._size = 0


def merge(
    cache: ReadCache,
    key: str,
    cached: CachedConversation | None,
    epoch: int | str | None,
    incremental: bool,
    new: Sequence[ChatMessage],
    end: int,
    size: int,
) -> list[ChatMessage]:
    """Combine a read's answer with what was cached, update the cache, return the whole
    conversation: new ChatMessage objects for the cached messages, and ``new`` themselves
    (freshly decoded, and never cached as they are).

    ``incremental``: the answer holds only the messages after ``cached`` (same epoch);
    otherwise it holds the whole conversation.  ``epoch`` ``None``: the conversation has
    none (absent, expired, or written before epochs): nothing is cached.  ``end`` and
    ``size`` describe the whole conversation after the merge (``size``: bytes of the new
    messages' stored text only when incremental).
    """
    older: tuple[Cached, ...] = ()
    if incremental and cached is not None:
        older = cached.messages
        size += cached.size
    if epoch is None or not (older or new):
        cache.drop(key)
    else:
        entry = CachedConversation(epoch, older + tuple(map(compact, new)), end, size)
        cache.put(key, entry)
    result = [expand(message) for message in older]
    result += new
    return result


class CachedReads(BaseModel):
    """The read-cache settings of a store (a pydantic mixin) and the cache they size."""

    read_cache_conversations: int = Field(
        default=DEFAULT_CACHE_CONVERSATIONS,
        ge=0,
        description="Conversations whose decoded messages the store keeps to read only "
        "what was appended since (0: no read cache).",
    )
    read_cache_bytes: int = Field(
        default=DEFAULT_CACHE_BYTES,
        ge=0,
        description="Most bytes of stored text the read cache holds (0: no read cache).",
    )

    _read_cache: ReadCache | None = PrivateAttr(default=None)

    @property
    def read_cache(self) -> ReadCache:
        """This store's read cache (created on first use; a pickled copy starts empty)."""
        cache = self._read_cache
        if cache is None:
            cache = ReadCache(self.read_cache_conversations, self.read_cache_bytes)
            self._read_cache = cache
        return cache
