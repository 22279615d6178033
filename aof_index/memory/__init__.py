"""Chat stores for conversation history, as LlamaIndex ``BaseChatStore`` components.

- :class:`SQLiteChatStore`: the embedded default, a SQLite file (or in-memory database),
  sync on :mod:`sqlite3` and async on :mod:`aiosqlite`, safe across threads, tasks and
  processes.
- :class:`PostgresChatStore`: a PostgreSQL table, sync and async on psycopg pools (the
  ``postgres`` extra), safe across threads, tasks, processes and hosts.
- :class:`RedisChatStore`: one Redis list per conversation, every operation one atomic Lua
  script, sync on ``redis`` and async on ``redis.asyncio`` (the ``redis`` extra).
- :class:`InMemoryChatStore`: a locked dict for tests and ephemeral agents.

History management: :class:`ConversationHistory` (``MemoryComponents.conversations()``)
keeps conversations per isolation scope (:class:`ConversationScope`), trims them to
``maxMessages``/``maxTokens`` and folds older turns into rolling summaries
(:class:`HistoryPolicy`), on any store implementing :class:`HistoryStore`; every store
encodes messages with a :class:`MessageCodec` (compression, encryption at rest) and
expires conversations ``ttl`` seconds after their last write.

Semantic memory: :class:`ConversationRecall` indexes past conversation turns (speaker,
session date, neighbouring turns) into a Memory's vector store and keyword index and
recalls the turns that answer a question within one conversation.

The chat stores follow one contract, checked by
:class:`aof_index.testing.ChatStoreContract`: indices behave like Python list indices
(``delete_message(key, idx)`` removes the ``idx``-th message in order and returns it),
out-of-range indices and unknown keys give ``None`` or ``[]``, and a key without messages
does not exist.
"""

from aof_index.memory.codec import DecodeError, MessageCodec, MessageTooLargeError
from aof_index.memory.edit import EditConflictError, HeadEdit, HistoryStore
from aof_index.memory.history import (
    ConversationHistory,
    ConversationScope,
    HistoryPolicy,
    SummaryPolicy,
)
from aof_index.memory.in_memory import InMemoryChatStore
from aof_index.memory.postgres import PostgresChatStore
from aof_index.memory.recall import ConversationRecall, RecallHit, RecallOptions, Turn
from aof_index.memory.redis import RedisChatStore
from aof_index.memory.sqlite import SQLiteChatStore

__all__ = [
    "ConversationHistory",
    "ConversationRecall",
    "ConversationScope",
    "DecodeError",
    "EditConflictError",
    "HeadEdit",
    "HistoryPolicy",
    "HistoryStore",
    "InMemoryChatStore",
    "MessageCodec",
    "MessageTooLargeError",
    "PostgresChatStore",
    "RecallHit",
    "RecallOptions",
    "RedisChatStore",
    "SQLiteChatStore",
    "SummaryPolicy",
    "Turn",
]
