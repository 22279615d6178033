"""Conversation history as agents use it: scoped, trimmed and summarized.

:class:`ConversationHistory` is a LlamaIndex ``BaseChatStore`` whose keys are conversation
ids.  It sits on one of the chat stores (:class:`~aof_index.memory.edit.HistoryStore`) and
adds what ``spec.conversational`` and ``spec.access.isolation`` ask for:

- **Isolation** (:class:`ConversationScope`): every key lives under a partition chosen by
  ``spec.access.isolation`` (``global``, ``namespace``, ``fleet``, ``agent``), with the
  agent-side ``conversational.shared`` (one partition per fleet) and ``scope: flow`` (one
  conversation per flow run).  Partitions are key prefixes, so one tenant cannot name
  another's conversation and listing reads only its own prefix.
- **Retention** (:class:`HistoryPolicy`): after every write, ``maxMessages`` and
  ``maxTokens`` trim the oldest messages, never separating an assistant's tool call from
  its tool results (a conversation is cut only before a message that is not a tool result).
  Trimmed messages are deleted: they are what the limits say not to keep.
- **Summarization** (:class:`SummaryPolicy`): once ``triggerThreshold`` messages follow the
  last summary, a background task asks the LLM to fold all but the ``preserveRecent``
  newest into a rolling summary, kept as the conversation's first message (a system
  message marked ``aof_summary``).  The originals move to the conversation's archive in the
  same atomic step that inserts the summary (:meth:`HistoryStore.edit_head`), and only if
  no other writer changed them meanwhile, so a crash or a failed LLM call at any moment
  loses nothing: the conversation is either as before or summarized with its originals
  archived.
- **The agent's view**: ``get_messages`` returns the summary and at most ``window`` recent
  messages (the agent's ``maxMessages``), without system prompts when
  ``includeSystemPrompts`` is false.

TTL, compression and encryption belong to the store underneath (they are how messages are
kept, not which ones); see :mod:`aof_index.memory.codec`.

Example:
    >>> from aof_index import build_memory
    >>> history = build_memory().conversations(agent="sre-bot")          # doctest: +SKIP
    >>> message = ChatMessage(role="user", content="disk full")
    >>> history.add_message("incident-42", message)                       # doctest: +SKIP
    >>> history.get_messages("incident-42")                               # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "ISOLATIONS",
    "SUMMARY_KEY",
    "ConversationHistory",
    "ConversationScope",
    "HistoryPolicy",
    "Isolation",
    "SummaryPolicy",
    "is_summary",
    "safe_cut",
]

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, cast, get_args
from urllib.parse import quote, unquote

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.llms import LLM, ChatMessage, MessageRole
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.memory.edit import EditPlan, HeadEdit, HistoryStore

if TYPE_CHECKING:
    from aof_index.memory.recall import ConversationRecall, RecallHit, Turn
    from aof_index.spec.agent import AgentConversational
    from aof_index.spec.memory import ConversationalMemory

logger = logging.getLogger(__name__)

Isolation = Literal["namespace", "agent", "fleet", "global"]
"""Values of ``spec.access.isolation``."""
ISOLATIONS: tuple[Isolation, ...] = get_args(Isolation)

SUMMARY_KEY = "aof_summary"
"""``additional_kwargs`` key marking a summary message (its value describes what it covers)."""

DEFAULT_PRESERVE_RECENT = 10
"""Messages kept verbatim after a summary when ``preserveRecent`` is not set."""

_RESULT_ROLES = frozenset({MessageRole.TOOL, MessageRole.FUNCTION})

SUMMARY_PROMPT = (
    "You keep the running summary of a conversation between a user and an AI agent that "
    "operates infrastructure. Rewrite the summary so it also covers the new messages. Keep "
    "every decision, fact, name, number, command, error, open question and commitment, with "
    "who said it; drop pleasantries. Write plain sentences, at most 300 words."
)


# --------------------------------------------------------------------------------------------
# Scopes.


def _part(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True)
class ConversationScope:
    """Who is talking: decides which partition of the key space conversations live in.

    Attributes:
        namespace: the caller's Kubernetes namespace.
        agent: the agent's name (needed by ``isolation: agent`` outside a flow).
        fleet: the fleet the agent belongs to, if any (needed by ``isolation: fleet``).
        flow: the flow being run, with ``run`` its run id (``conversational.scope: flow``).
        run: the flow run; with ``flow`` it is also the one conversation of the run.
        shared: the agent-side ``conversational.shared``: fleet members share a partition.
    """

    namespace: str = "default"
    agent: str | None = None
    fleet: str | None = None
    flow: str | None = None
    run: str | None = None
    shared: bool = False

    def partition(self, isolation: Isolation) -> str:
        """The key prefix of this scope under ``isolation`` (ends with ``/``).

        ``global`` shares everything; ``namespace`` separates namespaces; ``fleet``
        separates fleets (an agent outside a fleet is a fleet of one); ``agent`` separates
        agents, except that a flow run is one partition shared by its steps and a fleet
        with ``shared`` is one partition shared by its members.

        Raises:
            ValueError: the scope lacks what ``isolation`` needs (names the field).
        """
        if isolation not in ISOLATIONS:
            raise ValueError(
                f"spec.access.isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}"
            )
        if isolation == "global":
            return "global/"
        ns = f"ns/{_part(self.namespace)}/"
        if isolation == "namespace":
            return ns
        if self.flow is not None:
            if self.run is None:
                raise ValueError("a flow scope needs its run id: pass run= with flow=")
            return f"{ns}flow/{_part(self.flow)}/run/{_part(self.run)}/"
        if self.fleet is not None and (isolation == "fleet" or self.shared):
            return f"{ns}fleet/{_part(self.fleet)}/"
        if self.agent is not None:
            return f"{ns}agent/{_part(self.agent)}/"
        needs = "fleet= (or agent=)" if isolation == "fleet" else "agent="
        raise ValueError(
            f"spec.access.isolation is {isolation!r}, so conversations belong to an "
            f"{isolation}: pass {needs} to say whose conversations these are"
        )


# --------------------------------------------------------------------------------------------
# Policies.


@dataclass(frozen=True)
class SummaryPolicy:
    """``conversational.summarization`` (rolling): when to fold older messages, what to keep.

    Attributes:
        trigger_threshold: messages after the last summary that start a new one.
        preserve_recent: newest messages that stay verbatim.
        model: the LLM's model name (``None``: the configured default).
    """

    trigger_threshold: int = 100
    preserve_recent: int = DEFAULT_PRESERVE_RECENT
    model: str | None = None


@dataclass(frozen=True)
class HistoryPolicy:
    """What to keep of a conversation and what to hand to the agent.

    Attributes:
        max_messages: messages kept after the summary (``None`` or 0: no limit).
        max_tokens: tokens kept after the summary (``None``: no limit); the newest message
            is kept even when it alone is larger.
        window: messages returned by ``get_messages`` after the summary (the agent's
            ``maxMessages``; ``None``: all).
        include_system_prompts: store and return system messages (summaries are always
            returned).
        summary: rolling summarization, or ``None``.
    """

    max_messages: int | None = 1000
    max_tokens: int | None = None
    window: int | None = None
    include_system_prompts: bool = True
    summary: SummaryPolicy | None = None

    @classmethod
    def from_spec(
        cls,
        conversational: ConversationalMemory | None,
        agent: AgentConversational | None = None,
    ) -> HistoryPolicy:
        """The policy of a Memory's ``spec.conversational``, with an agent's overrides.

        Raises:
            ValueError: a summarization strategy other than ``rolling``, or a
                ``triggerThreshold`` above ``maxMessages`` (older messages would be trimmed
                before they could be summarized).
        """
        from aof_index.spec.memory import ConversationalMemory

        spec = conversational or ConversationalMemory()
        policy = cls(max_messages=spec.max_messages or None, max_tokens=spec.max_tokens)
        summary: SummaryPolicy | None = None
        strategy = "rolling"
        if spec.summarization is not None and spec.summarization.enabled:
            summary = SummaryPolicy(
                trigger_threshold=spec.summarization.trigger_threshold,
                model=spec.summarization.model,
            )
            strategy = spec.summarization.strategy
        if agent is not None:
            policy = replace(
                policy,
                window=agent.max_messages or None,
                include_system_prompts=(
                    True if agent.include_system_prompts is None else agent.include_system_prompts
                ),
            )
            over = agent.summarization
            if over is not None and over.enabled is False:
                summary = None
            elif over is not None and (over.enabled or summary is not None):
                base = summary or SummaryPolicy()
                summary = SummaryPolicy(
                    trigger_threshold=over.trigger_threshold or base.trigger_threshold,
                    preserve_recent=(
                        base.preserve_recent
                        if over.preserve_recent is None
                        else over.preserve_recent
                    ),
                    model=over.model or base.model,
                )
                strategy = over.strategy or strategy
        if summary is not None:
            if strategy != "rolling":
                raise ValueError(
                    f"conversational.summarization.strategy {strategy!r} is not supported; "
                    "use rolling (summarize every triggerThreshold messages, keep "
                    "preserveRecent verbatim)"
                )
            if policy.max_messages is not None and summary.trigger_threshold > policy.max_messages:
                raise ValueError(
                    "conversational.summarization.triggerThreshold "
                    f"({summary.trigger_threshold}) is above conversational.maxMessages "
                    f"({policy.max_messages}): messages would be trimmed before they are "
                    "summarized; lower triggerThreshold or raise maxMessages"
                )
        return replace(policy, summary=summary)


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


# --------------------------------------------------------------------------------------------
# Pure helpers on message lists.


def is_summary(message: ChatMessage) -> bool:
    """Whether ``message`` is a rolling summary written by :class:`ConversationHistory`."""
    return SUMMARY_KEY in message.additional_kwargs


def safe_cut(messages: Sequence[ChatMessage], cut: int) -> bool:
    """Whether keeping ``messages[cut:]`` keeps every tool result with its tool call.

    A tool result follows the assistant message that called the tool, so a cut is safe
    unless the first kept message is a tool (or function) result.
    """
    return cut >= len(messages) or messages[cut].role not in _RESULT_ROLES


def _head(messages: Sequence[ChatMessage]) -> int:
    """1 when the conversation starts with a summary, else 0."""
    return 1 if messages and is_summary(messages[0]) else 0


def _message_text(message: ChatMessage) -> str:
    text = message.content or ""
    calls = message.additional_kwargs.get("tool_calls")
    if calls:
        text += " " + json.dumps(calls, default=str, ensure_ascii=False)
    return text


def _trim_plan(policy: HistoryPolicy, count: Callable[[ChatMessage], int]) -> EditPlan:
    """The edit that brings a conversation within ``max_messages`` and ``max_tokens``."""

    def plan(messages: list[ChatMessage]) -> HeadEdit | None:
        start = _head(messages)
        body = messages[start:]
        drop = 0
        if policy.max_messages and len(body) > policy.max_messages:
            drop = len(body) - policy.max_messages
        if policy.max_tokens is not None and body:
            sizes = [count(m) for m in body]
            total = sum(sizes)
            while total > policy.max_tokens and drop < len(body) - 1:
                total -= sizes[drop]
                drop += 1
        while drop and not safe_cut(body, drop):
            drop += 1
        if drop == 0:
            return None
        return HeadEdit(drop=start + drop, insert=messages[:start])

    return plan


def _trimmed(removed: Sequence[ChatMessage]) -> int:
    """Messages a trim deleted: what it removed, less the summary it put back."""
    return len(removed) - (1 if removed and is_summary(removed[0]) else 0)


def _window(messages: list[ChatMessage], policy: HistoryPolicy) -> list[ChatMessage]:
    """The agent's view: the summary, then at most ``window`` recent messages."""
    start = _head(messages)
    head, body = messages[:start], messages[start:]
    if not policy.include_system_prompts:
        body = [m for m in body if m.role != MessageRole.SYSTEM]
    if policy.window is not None and len(body) > policy.window:
        cut = len(body) - policy.window
        while not safe_cut(body, cut):
            cut += 1
        body = body[cut:]
    return head + body


def _summary_cut(messages: Sequence[ChatMessage], preserve_recent: int) -> int:
    """How many head messages (summary included) to fold, keeping tool groups whole."""
    start = _head(messages)
    cut = len(messages) - preserve_recent
    while cut > start and not safe_cut(messages, cut):
        cut -= 1
    return cut if cut > start else 0


def _transcript(messages: Sequence[ChatMessage]) -> str:
    lines = []
    for message in messages:
        role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
        lines.append(f"{role}: {_message_text(message)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The managed store.


class ConversationHistory(BaseChatStore):
    """Scoped, trimmed, summarized conversations on a chat store (keys are conversation ids).

    Args:
        store: the chat store underneath (any of aof-index's four).
        partition: key prefix of the scope (:meth:`ConversationScope.partition`).
        policy: what to keep and return.
        llm: the LLM that writes summaries (needed when ``policy.summary`` is set).

    Writes return once the message is stored (acknowledged); summaries run in the
    background (an asyncio task after ``async_add_message``, a worker thread after
    ``add_message``).  :meth:`drain` / :meth:`adrain` wait for them; :meth:`close` stops the
    worker.  Background failures are logged and retried after the next write.
    """

    _store: Any = PrivateAttr()
    _partition: str = PrivateAttr()
    _policy: HistoryPolicy = PrivateAttr()
    _llm: LLM | None = PrivateAttr(default=None)
    _pending: set[str] = PrivateAttr(default_factory=set)
    _tasks: set[asyncio.Task[bool]] = PrivateAttr(default_factory=set)
    _futures: set[Future[bool]] = PrivateAttr(default_factory=set)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _executor: ThreadPoolExecutor | None = PrivateAttr(default=None)

    def __init__(
        self,
        store: BaseChatStore,
        *,
        partition: str = "",
        policy: HistoryPolicy | None = None,
        llm: LLM | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(store, HistoryStore):
            raise TypeError(
                f"{type(store).__name__} cannot manage history (no edit_head); use one of "
                "aof-index's chat stores (SQLite, PostgreSQL, Redis, in-memory)"
            )
        self._store = store
        self._partition = partition
        self._policy = policy or HistoryPolicy()
        self._llm = llm
        if self._policy.summary is not None and llm is None:
            raise ValueError(
                "conversational.summarization is enabled but no LLM is configured: pass llm=, "
                "or set AOF_INDEX_LLM_BASE_URL and AOF_INDEX_LLM_MODEL (any OpenAI-compatible "
                "server) or OPENAI_API_KEY"
            )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofConversationHistory"

    @property
    def store(self) -> BaseChatStore:
        """The chat store underneath."""
        return cast(BaseChatStore, self._store)

    @property
    def policy(self) -> HistoryPolicy:
        """What is kept and returned."""
        return self._policy

    @property
    def partition(self) -> str:
        """The key prefix of this scope."""
        return self._partition

    # -- keys ---------------------------------------------------------------------------
    def key(self, conversation: str) -> str:
        """The store key of ``conversation``."""
        return f"{self._partition}c/{_part(conversation)}"

    def archive_key(self, conversation: str) -> str:
        """The store key of ``conversation``'s archive (messages folded into summaries)."""
        return f"{self._partition}a/{_part(conversation)}"

    def _ids(self, keys: Sequence[str], kind: str) -> list[str]:
        cut = len(self._partition) + len(kind)
        return sorted(unquote(k[cut:]) for k in keys)

    # -- reading ------------------------------------------------------------------------
    def get_messages(self, key: str) -> list[ChatMessage]:
        """The agent's view of conversation ``key``: summary, then the recent messages."""
        return _window(self.store.get_messages(self.key(key)), self._policy)

    async def aget_messages(self, key: str) -> list[ChatMessage]:
        """Async :meth:`get_messages`."""
        return _window(await self.store.aget_messages(self.key(key)), self._policy)

    def get_keys(self) -> list[str]:
        """Conversation ids of this scope, sorted."""
        return self._ids(self._store.get_keys(f"{self._partition}c/"), "c/")

    async def aget_keys(self) -> list[str]:
        """Async :meth:`get_keys`."""
        return self._ids(await self._store.aget_keys(f"{self._partition}c/"), "c/")

    def archived(self, conversation: str) -> list[ChatMessage]:
        """The originals folded into ``conversation``'s summaries, oldest first."""
        return self.store.get_messages(self.archive_key(conversation))

    async def aarchived(self, conversation: str) -> list[ChatMessage]:
        """Async :meth:`archived`."""
        return await self.store.aget_messages(self.archive_key(conversation))

    # -- writing ------------------------------------------------------------------------
    def _kept(self, message: ChatMessage) -> bool:
        return self._policy.include_system_prompts or message.role != MessageRole.SYSTEM

    def add_message(self, key: str, message: ChatMessage, idx: int | None = None) -> None:
        """Store ``message`` in conversation ``key``, then trim and maybe start a summary."""
        if not self._kept(message):
            return
        self._store.add_message(self.key(key), message, idx)
        self.trim(key)

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        """Async :meth:`add_message` (the summary runs as an asyncio task)."""
        if not self._kept(message):
            return
        await self._store.async_add_message(self.key(key), message, idx)
        await self.atrim(key)

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace conversation ``key`` (its archive stays), then trim."""
        self.store.set_messages(self.key(key), [m for m in messages if self._kept(m)])
        self.trim(key)

    async def aset_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Async :meth:`set_messages`."""
        await self.store.aset_messages(self.key(key), [m for m in messages if self._kept(m)])
        await self.atrim(key)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete conversation ``key`` and its archive; returns its messages."""
        self.store.delete_messages(self.archive_key(key))
        return self.store.delete_messages(self.key(key))

    async def adelete_messages(self, key: str) -> list[ChatMessage] | None:
        """Async :meth:`delete_messages`."""
        await self.store.adelete_messages(self.archive_key(key))
        return await self.store.adelete_messages(self.key(key))

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Delete the ``idx``-th stored message of ``key`` (the summary counts as one)."""
        return self.store.delete_message(self.key(key), idx)

    async def adelete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Async :meth:`delete_message`."""
        return await self.store.adelete_message(self.key(key), idx)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Delete the newest message of ``key``."""
        return self.store.delete_last_message(self.key(key))

    async def adelete_last_message(self, key: str) -> ChatMessage | None:
        """Async :meth:`delete_last_message`."""
        return await self.store.adelete_last_message(self.key(key))

    # -- retention ----------------------------------------------------------------------
    @cached_property
    def _tokenizer(self) -> Callable[[str], list[Any]]:
        from llama_index.core.utils import get_tokenizer

        tokenizer: Callable[[str], list[Any]] = get_tokenizer()
        return tokenizer

    def count_tokens(self, message: ChatMessage) -> int:
        """Tokens ``maxTokens`` counts for ``message`` (content and tool calls, cl100k)."""
        return len(self._tokenizer(_message_text(message))) + 4

    def _plan(self, seen: list[int]) -> EditPlan:
        trim = _trim_plan(self._policy, self.count_tokens)

        def plan(messages: list[ChatMessage]) -> HeadEdit | None:
            edit = trim(messages)
            kept = messages if edit is None else [*edit.insert, *messages[edit.drop :]]
            seen[:] = [len(kept) - _head(kept)]
            return edit

        return plan

    def trim(self, conversation: str) -> int | None:
        """Apply ``maxMessages``/``maxTokens`` now; returns how many messages went.

        Also starts a background summary when one is due.  ``None`` when the conversation
        does not exist.
        """
        seen: list[int] = []
        removed = self._store.edit_head(self.key(conversation), self._plan(seen))
        if not seen:
            return None
        if self._summary_due(seen[0]):
            self._start_thread(conversation)
        return _trimmed(removed)

    async def atrim(self, conversation: str) -> int | None:
        """Async :meth:`trim` (a due summary starts as an asyncio task)."""
        seen: list[int] = []
        removed = await self._store.aedit_head(self.key(conversation), self._plan(seen))
        if not seen:
            return None
        if self._summary_due(seen[0]):
            self._start_task(conversation)
        return _trimmed(removed)

    # -- summaries ----------------------------------------------------------------------
    def _summary_due(self, unsummarized: int) -> bool:
        summary = self._policy.summary
        return summary is not None and unsummarized >= summary.trigger_threshold

    def _claim(self, conversation: str) -> bool:
        with self._lock:
            if conversation in self._pending:
                return False
            self._pending.add(conversation)
            return True

    def _release(self, conversation: str) -> None:
        with self._lock:
            self._pending.discard(conversation)

    def _start_task(self, conversation: str) -> None:
        if not self._claim(conversation):
            return
        task = asyncio.get_running_loop().create_task(self._background(conversation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, conversation: str) -> bool:
        try:
            return await self.asummarize(conversation)
        except Exception:
            logger.warning("summarizing conversation %r failed", conversation, exc_info=True)
            return False
        finally:
            self._release(conversation)

    def _background_sync(self, conversation: str) -> bool:
        try:
            return self.summarize(conversation)
        except Exception:
            logger.warning("summarizing conversation %r failed", conversation, exc_info=True)
            return False
        finally:
            self._release(conversation)

    def _start_thread(self, conversation: str) -> None:
        if not self._claim(conversation):
            return
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="aof-summary")
            future = self._executor.submit(self._background_sync, conversation)
            self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def _due_head(self, messages: list[ChatMessage], force: bool) -> list[ChatMessage]:
        """The head to fold into a new summary, or ``[]`` when none is due."""
        summary = self._policy.summary or SummaryPolicy()
        if self._llm is None:
            raise ValueError("no LLM to summarize with: pass llm= to ConversationHistory")
        start = _head(messages)
        if not force and len(messages) - start < summary.trigger_threshold:
            return []
        cut = _summary_cut(messages, summary.preserve_recent)
        return messages[:cut] if cut > start else []

    def summarize(self, conversation: str, *, force: bool = False) -> bool:
        """Fold older messages of ``conversation`` into its summary now (blocking).

        Returns whether a summary was written.  Without ``force`` it is written only when
        ``triggerThreshold`` messages follow the last summary.  The originals and the new
        summary are swapped in one atomic edit that checks the originals are still the
        conversation's head; if a writer changed them while the LLM was writing, nothing is
        written and ``False`` is returned.
        """
        key = self.key(conversation)
        head = self._due_head(self.store.get_messages(key), force)
        if not head:
            return False
        assert self._llm is not None
        response = self._llm.chat(_summary_request(head))
        swap = _swap(head, _summary_message(head, response.message.content))
        return bool(self._store.edit_head(key, swap, archive_key=self.archive_key(conversation)))

    async def asummarize(self, conversation: str, *, force: bool = False) -> bool:
        """Async :meth:`summarize`: writers go on while the LLM writes."""
        key = self.key(conversation)
        head = self._due_head(await self.store.aget_messages(key), force)
        if not head:
            return False
        assert self._llm is not None
        response = await self._llm.achat(_summary_request(head))
        swap = _swap(head, _summary_message(head, response.message.content))
        archive = self.archive_key(conversation)
        return bool(await self._store.aedit_head(key, swap, archive_key=archive))

    def drain(self, timeout: float | None = None) -> None:
        """Wait for summaries started by sync writes."""
        for future in list(self._futures):
            future.result(timeout)

    async def adrain(self) -> None:
        """Wait for summaries started by async writes (and sync ones)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._futures:
            await asyncio.get_running_loop().run_in_executor(None, self.drain)

    def close(self) -> None:
        """Wait for background summaries and stop the worker thread."""
        self.drain()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    # -- semantic recall ----------------------------------------------------------------
    def turns(self, conversation: str) -> list[Turn]:
        """``conversation`` as turns for semantic recall: archived originals, then live ones.

        Summaries, tool calls and tool results are left out (they are not what was said).
        A message's speaker is its ``additional_kwargs["name"]`` or its role; its date is
        ``additional_kwargs["date"]`` when the caller recorded one.  Turn ids depend on the
        text and its occurrence, so indexing the same conversation again is an upsert.
        """
        from aof_index.memory.recall import Turn

        key = self.key(conversation)
        seen: dict[str, int] = {}
        turns: list[Turn] = []
        for message in [*self.archived(conversation), *self.store.get_messages(key)]:
            text = (message.content or "").strip()
            if not text or is_summary(message) or message.role in _RESULT_ROLES:
                continue
            role = message.role.value if isinstance(message.role, MessageRole) else message.role
            speaker = str(message.additional_kwargs.get("name") or role)
            digest = hashlib.sha1(f"{speaker}\0{text}".encode(), usedforsecurity=False)
            base = digest.hexdigest()[:16]
            seen[base] = seen.get(base, 0) + 1
            date = message.additional_kwargs.get("date")
            turns.append(
                Turn(
                    key,
                    f"{base}-{seen[base]}",
                    speaker,
                    text,
                    date=None if date is None else str(date),
                    index=len(turns),
                )
            )
        return turns

    def remember(self, conversation: str, recall: ConversationRecall) -> int:
        """Index ``conversation`` for :meth:`recall` (an upsert); returns nodes (re)indexed.

        Call it when a session ends, or after summaries: archived originals are indexed too,
        so what was folded into a summary can still be recalled word for word.
        """
        return recall.add_turns(self.turns(conversation))

    def recall(
        self, query: str, conversation: str, recall: ConversationRecall, top_k: int = 10
    ) -> list[RecallHit]:
        """The remembered turns of ``conversation`` that best answer ``query``.

        The recall index is keyed by the scoped key, so a scope recalls only its own turns.
        """
        return recall.recall(query, self.key(conversation), top_k)

    # -- re-encoding --------------------------------------------------------------------
    def reencode(self) -> int:
        """Rewrite every conversation and archive of this scope with the store's codec.

        After a key rotation (new key first in the secret, old ones after it) or a change
        of compression, this moves old rows to the new settings; each conversation is
        rewritten atomically, so concurrent writers lose nothing.  Returns messages rewritten.
        """
        total = 0
        for key in self._store.get_keys(self._partition):
            total += len(self._store.edit_head(key, _rewrite_all))
        return total

    async def areencode(self) -> int:
        """Async :meth:`reencode`."""
        total = 0
        for key in await self._store.aget_keys(self._partition):
            total += len(await self._store.aedit_head(key, _rewrite_all))
        return total


def _summary_request(head: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The chat that asks the LLM for a summary covering ``head``."""
    previous = [m for m in head if is_summary(m)]
    prior = previous[-1].content if previous else "(none yet)"
    fresh = [m for m in head if not is_summary(m)]
    prompt = f"Current summary:\n{prior}\n\nNew messages:\n{_transcript(fresh)}"
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=SUMMARY_PROMPT),
        ChatMessage(role=MessageRole.USER, content=prompt),
    ]


def _summary_message(head: Sequence[ChatMessage], text: str | None) -> ChatMessage:
    """The summary message replacing ``head``; it records how many originals it covers."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the LLM returned an empty summary; the conversation is unchanged")
    folded = sum(
        int(m.additional_kwargs[SUMMARY_KEY].get("messages", 0)) if is_summary(m) else 1
        for m in head
    )
    note = {"messages": folded, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    return ChatMessage(
        role=MessageRole.SYSTEM,
        content=f"Summary of the earlier conversation:\n{text}",
        additional_kwargs={SUMMARY_KEY: note},
    )


def _swap(head: list[ChatMessage], summary: ChatMessage) -> EditPlan:
    """Replace ``head`` by ``summary``, only while ``head`` is still the conversation's head."""
    cut = len(head)

    def plan(current: list[ChatMessage]) -> HeadEdit | None:
        return HeadEdit(drop=cut, insert=[summary]) if current[:cut] == head else None

    return plan


def _rewrite_all(messages: list[ChatMessage]) -> HeadEdit | None:
    return HeadEdit(drop=len(messages), insert=messages) if messages else None
