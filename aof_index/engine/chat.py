"""A retrieval-grounded conversation whose history lives in the Memory's chat store.

Each user turn is stored, passages are retrieved for it, and the reply (the LLM's answer
with citations, or the passages themselves when no LLM is configured) is stored too, so a
conversation survives restarts and is shared by every process using the same store.
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import LLM, ChatMessage, MessageRole
from llama_index.core.schema import NodeWithScore
from llama_index.core.storage.chat_store.base import BaseChatStore

from aof_index.engine.query_engine import format_passages, llm_error, passage_label

__all__ = ["ChatSession", "ChatTurn"]

SYSTEM_PROMPT = (
    "You are an SRE assistant. Use the numbered passages when they are relevant and cite "
    "them like [1]; say so when they do not answer the question.\n\n{passages}"
)


@dataclass(frozen=True)
class ChatTurn:
    """One exchange: the reply and the passages it was grounded on."""

    reply: str
    passages: list[NodeWithScore]
    answered_by_llm: bool


class ChatSession:
    """A conversation ``key`` in ``chat_store``, grounded by ``retriever``.

    Args:
        chat_store: where the history lives.
        key: the conversation id.
        retriever: retrieves passages for each user message.
        llm: answers; ``None`` replies with the passages.
        history_window: past messages sent to the LLM with each turn.
    """

    def __init__(
        self,
        chat_store: BaseChatStore,
        key: str,
        retriever: BaseRetriever,
        llm: LLM | None = None,
        history_window: int = 20,
    ) -> None:
        self.chat_store = chat_store
        self.key = key
        self.retriever = retriever
        self.llm = llm
        self.history_window = history_window

    def history(self) -> list[ChatMessage]:
        """Every stored message of this conversation, oldest first."""
        return self.chat_store.get_messages(self.key)

    def clear(self) -> None:
        """Delete the conversation."""
        self.chat_store.delete_messages(self.key)

    def send(self, text: str) -> ChatTurn:
        """Store ``text``, retrieve, reply, store the reply, and return the turn."""
        past = self.history()[-self.history_window :]
        self.chat_store.add_message(self.key, ChatMessage(role=MessageRole.USER, content=text))
        passages = self.retriever.retrieve(text)
        if self.llm is None:
            reply, answered = _passages_reply(passages), False
        else:
            system = ChatMessage(
                role=MessageRole.SYSTEM,
                content=SYSTEM_PROMPT.format(passages=format_passages(passages)),
            )
            user = ChatMessage(role=MessageRole.USER, content=text)
            try:
                reply = self.llm.chat([system, *past, user]).message.content or ""
            except Exception as exc:
                raise llm_error(self.llm, exc) from exc
            answered = True
        self.chat_store.add_message(
            self.key, ChatMessage(role=MessageRole.ASSISTANT, content=reply)
        )
        return ChatTurn(reply, passages, answered)


def _passages_reply(passages: list[NodeWithScore]) -> str:
    if not passages:
        return "I found nothing relevant in memory."
    lines = ["Relevant passages (no LLM configured):"]
    for i, hit in enumerate(passages, 1):
        snippet = " ".join(hit.node.get_content().split())[:200]
        lines.append(f"[{i}] {passage_label(hit)}: {snippet}")
    return "\n".join(lines)
