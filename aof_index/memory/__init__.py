"""Chat stores for conversation history, as LlamaIndex ``BaseChatStore`` components.

- :class:`SQLiteChatStore`: the embedded default, a SQLite file (or in-memory database),
  sync on :mod:`sqlite3` and async on :mod:`aiosqlite`, safe across threads, tasks and
  processes.
- :class:`InMemoryChatStore`: a locked dict for tests and ephemeral agents.

Both follow one contract, checked by :class:`aof_index.testing.ChatStoreContract`: indices
behave like Python list indices (``delete_message(key, idx)`` removes the ``idx``-th
message in order and returns it), out-of-range indices and unknown keys give ``None`` or
``[]``, and a key without messages does not exist.
"""

from aof_index.memory.in_memory import InMemoryChatStore
from aof_index.memory.sqlite import SQLiteChatStore

__all__ = ["InMemoryChatStore", "SQLiteChatStore"]
