"""A Memory manifest's conversational and access sections drive the history it builds."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from llama_index.core.llms import ChatMessage, MessageRole

from aof_index import build_memory
from aof_index.errors import ManifestError
from aof_index.memory.codec import generate_key
from aof_index.memory.history import is_summary
from aof_index.spec.agent import AgentConversational

HEADER = {"apiVersion": "aof.agenticops.org/v1alpha1", "kind": "Memory"}


def memory_file(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "memory.yaml"
    document = {**HEADER, "metadata": {"name": "ops", "namespace": "prod"}, "spec": spec}
    path.write_text(yaml.safe_dump(document))
    return path


def sqlite_spec(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    backend = {"type": "SQLite", "sqlite": {"path": str(tmp_path / "chat.db")}}
    return {"backend": backend, **sections}


def user(text: str) -> ChatMessage:
    return ChatMessage(role=MessageRole.USER, content=text)


def test_compression_and_encryption_apply_at_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOF_SECRET_CHAT_KEY_KEY", generate_key())
    spec = sqlite_spec(
        tmp_path,
        conversational={"compression": {"enabled": True, "algorithm": "lz4"}},
        access={"encryption": {"keySecretRef": {"name": "chat-key", "key": "key"}}},
    )
    memory = build_memory(memory_file(tmp_path, spec), home=tmp_path)
    history = memory.conversations()
    history.add_message("c", user("the root password is in vault " * 40))
    assert history.get_messages("c")[0].content.startswith("the root password")  # type: ignore[union-attr]
    (raw,) = sqlite3.connect(tmp_path / "chat.db").execute("SELECT message FROM aof_chat_messages")
    assert raw[0].startswith("aof:fe:") and "password" not in raw[0]


def test_at_rest_without_a_key_is_a_manifest_error(tmp_path: Path) -> None:
    spec = sqlite_spec(tmp_path, access={"encryption": {"atRest": True}})
    with pytest.raises(ManifestError, match=r"spec\.access\.encryption\.keySecretRef"):
        build_memory(memory_file(tmp_path, spec), home=tmp_path)


def test_a_bad_key_names_the_field_not_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AOF_SECRET_CHAT_KEY_KEY", "hunter2")
    spec = sqlite_spec(
        tmp_path, access={"encryption": {"keySecretRef": {"name": "chat-key", "key": "key"}}}
    )
    memory = build_memory(memory_file(tmp_path, spec), home=tmp_path)
    with pytest.raises(ValueError, match=r"spec\.access\.encryption\.keySecretRef") as info:
        memory.conversations()
    assert "hunter2" not in str(info.value)


def test_isolation_and_agent_settings_shape_the_history(tmp_path: Path) -> None:
    spec = sqlite_spec(tmp_path, conversational={"maxMessages": 50}, access={"isolation": "agent"})
    memory = build_memory(memory_file(tmp_path, spec), home=tmp_path)
    with pytest.raises(ValueError, match="agent="):
        memory.conversations()
    settings = AgentConversational(maxMessages=3, includeSystemPrompts=False)
    alice = memory.conversations(agent="alice", settings=settings)
    assert alice.partition == "ns/prod/agent/alice/"
    assert alice.policy.max_messages == 50 and alice.policy.window == 3
    for i in range(5):
        alice.add_message("c", user(f"m{i}"))
    assert [m.content for m in alice.get_messages("c")] == ["m2", "m3", "m4"]
    assert memory.conversations(agent="bob").get_keys() == []
    fleet = AgentConversational(shared=True)
    a = memory.conversations(agent="a", fleet="oncall", settings=fleet)
    b = memory.conversations(agent="b", fleet="oncall", settings=fleet)
    a.add_message("shared", user("from a"))
    assert [m.content for m in b.get_messages("shared")] == ["from a"]


def test_the_ttl_of_the_manifest_reaches_the_store(tmp_path: Path) -> None:
    spec = sqlite_spec(tmp_path, conversational={"ttl": "30m"})
    memory = build_memory(memory_file(tmp_path, spec), home=tmp_path)
    assert memory.chat_store.ttl == 1800  # type: ignore[attr-defined]
    agent = memory.conversations(settings=AgentConversational(ttl="1h"))
    assert agent.store.ttl == 3600  # type: ignore[attr-defined]
    forever = build_memory(
        memory_file(tmp_path, sqlite_spec(tmp_path, conversational={"ttl": "0s"})), home=tmp_path
    )
    assert forever.chat_store.ttl is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("conversational", "match"),
    [
        ({"summarization": {"enabled": True, "strategy": "adaptive"}}, "rolling"),
        (
            {"maxMessages": 20, "summarization": {"enabled": True, "triggerThreshold": 40}},
            "triggerThreshold",
        ),
        ({"summarization": {"enabled": True}}, "AOF_INDEX_LLM_BASE_URL"),
        ({"enabled": False}, r"spec\.conversational\.enabled"),
    ],
)
def test_settings_that_cannot_work_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conversational: dict[str, Any], match: str
) -> None:
    for name in ("AOF_INDEX_LLM_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    memory = build_memory(
        memory_file(tmp_path, sqlite_spec(tmp_path, conversational=conversational)),
        home=tmp_path,
    )
    with pytest.raises(ValueError, match=match):
        memory.conversations()


def test_agent_summarization_overrides_the_memory(tmp_path: Path) -> None:
    from test_history import ListingLLM

    spec = sqlite_spec(tmp_path, conversational={"summarization": {"enabled": True}})
    memory = build_memory(memory_file(tmp_path, spec), home=tmp_path)
    settings = AgentConversational.model_validate(
        {"summarization": {"triggerThreshold": 4, "preserveRecent": 1}}
    )
    history = memory.conversations(settings=settings, llm=ListingLLM())
    assert history.policy.summary is not None
    assert history.policy.summary.trigger_threshold == 4
    for i in range(4):
        history.add_message("c", user(f"w{i}"))
    history.close()
    kept = history.get_messages("c")
    assert is_summary(kept[0]) and [m.content for m in kept[1:]] == ["w3"]
    off = AgentConversational.model_validate({"summarization": {"enabled": False}})
    assert memory.conversations(settings=off).policy.summary is None
