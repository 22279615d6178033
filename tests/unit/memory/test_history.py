"""Conversation history: scopes, retention, the agent's view, rolling summaries, re-encoding.

Everything runs on real stores (in-memory and a SQLite file).  Summaries need an LLM's
text, so a deterministic local LLM stand-in writes them (:class:`ListingLLM`); its output
names the messages it was given, which lets the tests check what was summarized.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.llms import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    CustomLLM,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.memory import ChatMemoryBuffer

from aof_index.memory import InMemoryChatStore, SQLiteChatStore
from aof_index.memory.codec import DecodeError, MessageCodec, generate_key
from aof_index.memory.history import (
    ConversationHistory,
    ConversationScope,
    HistoryPolicy,
    SummaryPolicy,
    is_summary,
    safe_cut,
)


class ListingLLM(CustomLLM):
    """Writes "summary of: <first word of each new message>"; can fail or block on demand."""

    fail: bool = False
    gate: Any = None  # a threading.Event the summary waits for
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="listing")

    def _summary(self, prompt: str) -> str:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise RuntimeError("LLM is down")
        new = prompt.split("New messages:\n", 1)[1]
        words = [line.split(": ", 1)[1].split()[0] for line in new.splitlines() if ": " in line]
        return "summary of: " + " ".join(words)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._summary(prompt))

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        raise NotImplementedError

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = self._summary(messages[-1].content or "")
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self.chat, messages)


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.ASSISTANT, content=text)


def tool_call(call_id: str) -> ChatMessage:
    calls = [
        {"id": call_id, "type": "function", "function": {"name": "kubectl", "arguments": "{}"}}
    ]
    return ChatMessage(
        role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": calls}
    )


def tool_result(call_id: str, text: str) -> ChatMessage:
    return ChatMessage(
        role=MessageRole.TOOL, content=text, additional_kwargs={"tool_call_id": call_id}
    )


def contents(messages: Sequence[ChatMessage]) -> list[str | None]:
    return [m.content for m in messages]


@pytest.fixture
def store() -> InMemoryChatStore:
    return InMemoryChatStore()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteChatStore]:
    with SQLiteChatStore(path=str(tmp_path / "chat.db")) as store:
        yield store


def history(store: Any, **policy: Any) -> ConversationHistory:
    llm = policy.pop("llm", None)
    return ConversationHistory(
        store, partition="ns/default/agent/bot/", policy=HistoryPolicy(**policy), llm=llm
    )


# --------------------------------------------------------------------------------------------
# Scopes.


def test_each_isolation_partitions_keys_by_its_owner() -> None:
    scope = ConversationScope(namespace="prod", agent="sre", fleet="oncall")
    assert scope.partition("global") == "global/"
    assert scope.partition("namespace") == "ns/prod/"
    assert scope.partition("fleet") == "ns/prod/fleet/oncall/"
    assert scope.partition("agent") == "ns/prod/agent/sre/"
    shared = ConversationScope(namespace="prod", agent="sre", fleet="oncall", shared=True)
    assert shared.partition("agent") == "ns/prod/fleet/oncall/"
    flow = ConversationScope(namespace="prod", agent="step", flow="deploy", run="r1")
    assert flow.partition("agent") == "ns/prod/flow/deploy/run/r1/"


def test_names_with_separators_cannot_reach_another_partition() -> None:
    tricky = ConversationScope(namespace="a/agent/b", agent="c")
    plain = ConversationScope(namespace="a", agent="b/agent/c")
    assert tricky.partition("agent") != plain.partition("agent")
    assert "/" not in tricky.partition("agent").split("/")[1]


@pytest.mark.parametrize(
    ("scope", "isolation", "needs"),
    [
        (ConversationScope(), "agent", "agent="),
        (ConversationScope(), "fleet", "fleet="),
        (ConversationScope(flow="deploy"), "agent", "run="),
    ],
)
def test_a_scope_missing_its_owner_is_refused(
    scope: ConversationScope, isolation: Any, needs: str
) -> None:
    with pytest.raises(ValueError, match=needs):
        scope.partition(isolation)


def test_agents_do_not_see_each_others_conversations(store: InMemoryChatStore) -> None:
    def for_agent(name: str, isolation: Any = "agent") -> ConversationHistory:
        partition = ConversationScope(namespace="prod", agent=name).partition(isolation)
        return ConversationHistory(store, partition=partition)

    alice, bob = for_agent("alice"), for_agent("bob")
    alice.add_message("c1", user("alice's secret"))
    bob.add_message("c1", user("bob's note"))
    assert contents(alice.get_messages("c1")) == ["alice's secret"]
    assert contents(bob.get_messages("c1")) == ["bob's note"]
    assert alice.get_keys() == ["c1"] and bob.get_keys() == ["c1"]
    # Under namespace isolation both agents share one partition, which holds neither.
    assert for_agent("alice", "namespace").get_keys() == []
    assert sorted(store.get_keys()) == ["ns/prod/agent/alice/c/c1", "ns/prod/agent/bob/c/c1"]


def test_conversation_ids_round_trip_through_keys(store: InMemoryChatStore) -> None:
    h = history(store)
    for conversation in ["incident/42", "ünïcode 💬", "a%2Fb"]:
        h.add_message(conversation, user("x"))
    assert h.get_keys() == sorted(["incident/42", "ünïcode 💬", "a%2Fb"])


# --------------------------------------------------------------------------------------------
# Retention.


def test_max_messages_drops_the_oldest(store: InMemoryChatStore) -> None:
    h = history(store, max_messages=5)
    for i in range(8):
        h.add_message("c", user(f"m{i}"))
    assert contents(h.get_messages("c")) == ["m3", "m4", "m5", "m6", "m7"]


def test_trimming_never_separates_a_tool_call_from_its_results(store: InMemoryChatStore) -> None:
    h = history(store, max_messages=4)
    for message in [
        user("check pods"),
        tool_call("t1"),
        tool_result("t1", "pod a OOMKilled"),
        tool_result("t1", "pod b Running"),
        assistant("pod a ran out of memory"),
    ]:
        h.add_message("c", message)
    # Five messages, limit four: dropping only the first would keep the call; fine.
    assert contents(h.get_messages("c"))[0] == ""
    h.add_message("c", user("why?"))
    # Dropping two would start at a tool result: the whole call group goes instead.
    kept = h.get_messages("c")
    assert contents(kept) == ["pod a ran out of memory", "why?"]
    assert all(m.role != MessageRole.TOOL for m in kept)


def test_safe_cut_only_before_non_tool_messages() -> None:
    messages = [user("q"), tool_call("t"), tool_result("t", "r"), assistant("a")]
    assert [safe_cut(messages, i) for i in range(5)] == [True, True, False, True, True]


def test_max_tokens_keeps_the_newest_messages_within_budget(store: InMemoryChatStore) -> None:
    h = history(store, max_messages=None, max_tokens=40)
    for i in range(10):
        h.add_message("c", user(f"message {i} " + "word " * 5))
    kept = h.get_messages("c")
    assert 0 < len(kept) < 10
    assert contents(kept)[-1].startswith("message 9")  # type: ignore[union-attr]
    assert sum(h.count_tokens(m) for m in kept) <= 40
    one_more = store.get_messages(h.key("c"))
    assert len(one_more) == len(kept)


def test_a_single_message_over_the_token_budget_is_kept(store: InMemoryChatStore) -> None:
    h = history(store, max_messages=None, max_tokens=5)
    h.add_message("c", user("far too long for five tokens " * 3))
    assert len(h.get_messages("c")) == 1


def test_trim_reports_what_went_and_unknown_conversations(store: InMemoryChatStore) -> None:
    h = history(store, max_messages=None)
    for i in range(6):
        h.add_message("c", user(f"m{i}"))
    assert h.trim("missing") is None
    h._policy = HistoryPolicy(max_messages=2)
    assert h.trim("c") == 4


def test_window_and_system_prompts_shape_the_agents_view(store: InMemoryChatStore) -> None:
    full = history(store)
    full.add_message("c", ChatMessage(role=MessageRole.SYSTEM, content="you are an SRE"))
    for i in range(5):
        full.add_message("c", user(f"m{i}"))
    windowed = history(store, window=2, include_system_prompts=False)
    assert contents(windowed.get_messages("c")) == ["m3", "m4"]
    windowed.add_message("c", ChatMessage(role=MessageRole.SYSTEM, content="not stored"))
    assert "not stored" not in contents(full.get_messages("c"))
    assert len(full.get_messages("c")) == 6


async def test_async_writes_trim_the_same_way(store: InMemoryChatStore) -> None:
    h = history(store, max_messages=3)
    for i in range(6):
        await h.async_add_message("c", user(f"m{i}"))
    assert contents(await h.aget_messages("c")) == ["m3", "m4", "m5"]


def test_llamaindex_chat_memory_runs_on_a_history(store: InMemoryChatStore) -> None:
    h = history(store, max_messages=4)
    memory = ChatMemoryBuffer.from_defaults(chat_store=h, chat_store_key="incident-7")
    for i in range(6):
        memory.put(user(f"m{i}"))
    assert contents(memory.get_all()) == ["m2", "m3", "m4", "m5"]
    assert store.get_keys() == [h.key("incident-7")]


# --------------------------------------------------------------------------------------------
# Summaries.


def summarizing(
    store: Any, llm: ListingLLM, threshold: int = 6, recent: int = 2
) -> ConversationHistory:
    summary = SummaryPolicy(trigger_threshold=threshold, preserve_recent=recent)
    return history(store, summary=summary, llm=llm)


async def test_rolling_summary_folds_older_turns_and_archives_them(
    sqlite_store: SQLiteChatStore,
) -> None:
    h = summarizing(sqlite_store, ListingLLM())
    sent = [user(f"w{i} text") for i in range(6)]
    for message in sent:
        await h.async_add_message("c", message)
    await h.adrain()
    kept = await h.aget_messages("c")
    assert is_summary(kept[0])
    assert kept[0].content.endswith("summary of: w0 w1 w2 w3")  # type: ignore[union-attr]
    assert kept[0].additional_kwargs["aof_summary"]["messages"] == 4
    assert kept[1:] == sent[4:]
    assert await h.aarchived("c") == sent[:4]
    # Later summaries roll the earlier one in (when depends on the background task's
    # timing); whatever the timing, every message is in the archive or kept, once, in order.
    more = [user(f"x{i} text") for i in range(6)]
    for message in more:
        await h.async_add_message("c", message)
    await h.adrain()
    kept = await h.aget_messages("c")
    archived = await h.aarchived("c")
    originals = [m for m in archived if not is_summary(m)]
    assert originals + kept[1:] == sent + more
    assert kept[0].additional_kwargs["aof_summary"]["messages"] == len(originals)
    assert kept[0].content != (await h.aarchived("c"))[4].content  # a newer summary
    assert is_summary(archived[4])  # the first summary went to the archive with them


def test_sync_writes_summarize_in_a_background_thread(store: InMemoryChatStore) -> None:
    h = summarizing(store, ListingLLM())
    for i in range(6):
        h.add_message("c", user(f"w{i}"))
    h.drain(10)
    assert is_summary(h.get_messages("c")[0])
    h.close()


def test_summaries_never_separate_tool_calls_from_results(store: InMemoryChatStore) -> None:
    h = summarizing(store, ListingLLM(), threshold=5, recent=2)
    for message in [
        user("a"),
        user("b"),
        tool_call("t"),
        tool_result("t", "r1"),
        tool_result("t", "r2"),
    ]:
        h.add_message("c", message)
    h.drain(10)
    kept = h.get_messages("c")
    # Keeping the last two would start at a tool result: the call stays with its results.
    assert contents(kept[1:]) == ["", "r1", "r2"]
    h.close()


async def test_a_failing_llm_leaves_the_conversation_as_it_was(store: InMemoryChatStore) -> None:
    llm = ListingLLM(fail=True)
    h = summarizing(store, llm)
    sent = [user(f"w{i}") for i in range(6)]
    for message in sent:
        await h.async_add_message("c", message)
    await h.adrain()
    assert await h.aget_messages("c") == sent
    assert await h.aarchived("c") == []
    llm.fail = False
    await h.async_add_message("c", user("w6"))  # the next write tries again
    await h.adrain()
    assert is_summary((await h.aget_messages("c"))[0])


async def test_a_head_changed_during_the_llm_call_is_not_overwritten(
    store: InMemoryChatStore,
) -> None:
    gate = threading.Event()
    h = summarizing(store, ListingLLM(gate=gate))
    for i in range(6):
        await h.async_add_message("c", user(f"w{i}"))
    await asyncio.sleep(0.05)  # the summary is waiting for the LLM
    removed = await h.adelete_message("c", 0)  # another writer edits the head meanwhile
    gate.set()
    await h.adrain()
    assert removed is not None and removed.content == "w0"
    assert contents(await h.aget_messages("c")) == [f"w{i}" for i in range(1, 6)]
    assert await h.aarchived("c") == []


def test_summarize_on_demand_and_below_threshold(store: InMemoryChatStore) -> None:
    h = summarizing(store, ListingLLM(), threshold=50)
    for i in range(5):
        h.add_message("c", user(f"w{i}"))
    assert h.summarize("c") is False
    assert h.summarize("c", force=True) is True
    assert contents(h.get_messages("c"))[1:] == ["w3", "w4"]


def test_a_crash_during_summarization_loses_nothing(tmp_path: Path) -> None:
    """A process killed (SIGKILL) while its LLM writes a summary leaves every message."""
    db = tmp_path / "chat.db"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_history import ListingLLM, summarizing, user
        from aof_index.memory import SQLiteChatStore
        import threading
        gate = threading.Event()  # never set: the LLM hangs until the process is killed
        h = summarizing(SQLiteChatStore(path={str(db)!r}), ListingLLM(gate=gate), threshold=100)
        for i in range(8):
            h.add_message("c", user(f"w{{i}}"))
        print("ready", flush=True)
        h.summarize("c", force=True)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    with SQLiteChatStore(path=str(db)) as store:
        h = summarizing(store, ListingLLM())
        assert contents(h.get_messages("c")) == [f"w{i}" for i in range(8)]
        assert h.summarize("c", force=True)
        assert contents(h.archived("c")) == [f"w{i}" for i in range(6)]


def test_summarization_needs_an_llm(store: InMemoryChatStore) -> None:
    with pytest.raises(ValueError, match="AOF_INDEX_LLM_BASE_URL"):
        history(store, summary=SummaryPolicy())


# --------------------------------------------------------------------------------------------
# Re-encoding (key rotation).


def test_reencode_moves_every_row_to_the_newest_key(tmp_path: Path) -> None:
    old, new = generate_key().encode(), generate_key().encode()
    path = str(tmp_path / "chat.db")
    with SQLiteChatStore(path=path, codec=MessageCodec(keys=[old])) as store:
        h = history(store)
        for i in range(3):
            h.add_message("c", user(f"secret {i}"))
    with SQLiteChatStore(path=path, codec=MessageCodec("zstd", keys=[new, old])) as store:
        assert history(store).reencode() == 3
    with SQLiteChatStore(path=path, codec=MessageCodec(keys=[new])) as store:
        assert contents(history(store).get_messages("c")) == [f"secret {i}" for i in range(3)]
    with (
        SQLiteChatStore(path=path, codec=MessageCodec(keys=[old])) as store,
        pytest.raises(DecodeError),
    ):
        history(store).get_messages("c")
    rows = sqlite3.connect(path).execute("SELECT message FROM aof_chat_messages").fetchall()
    assert rows and all(row[0].startswith("aof:fe:") for row in rows)


# --------------------------------------------------------------------------------------------
# Semantic recall of past turns.


@pytest.mark.slow  # loads the local embedding model
def test_remembered_turns_are_recalled_within_their_scope(tmp_path: Path) -> None:
    from aof_index import build_memory
    from aof_index.memory.recall import ConversationRecall

    memory = build_memory(home=tmp_path)
    recall = ConversationRecall.from_memory(memory)
    team_a = memory.conversations(namespace="team-a")
    team_b = memory.conversations(namespace="team-b")
    for text in [
        "Morning, the checkout pods restarted twice overnight.",
        "We decided to raise the ingress timeout to sixty seconds on Monday.",
        "I'll update the Helm chart after lunch.",
    ]:
        team_a.add_message(
            "ops", ChatMessage(role="user", content=text, additional_kwargs={"name": "ana"})
        )
    team_b.add_message("ops", user("Our ingress timeout decision: keep it at thirty seconds."))
    assert team_a.remember("ops", recall) > 0
    team_b.remember("ops", recall)
    assert team_a.remember("ops", recall) == 0  # nothing changed: nothing re-embedded
    hits = team_a.recall("what did we decide about the ingress timeout?", "ops", recall, 3)
    assert "sixty seconds" in hits[0].text
    assert all("thirty" not in hit.text for hit in hits)
    assert {hit.conversation for hit in hits} == {team_a.key("ops")}
