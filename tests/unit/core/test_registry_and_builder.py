"""The registry resolves manifest names through entry points and explains failures."""

from __future__ import annotations

import pytest

from aof_index.build.memory import as_strategy, build_memory
from aof_index.engine.filters import filters_from_mapping
from aof_index.errors import BackendUnavailableError, UnknownBackendError
from aof_index.registry import available, get_factory
from aof_index.spec import load_resources

MEMORY = """
apiVersion: aof.agenticops.org/v1alpha1
kind: Memory
metadata: {{name: m}}
spec:
  semantic:
    enabled: true
    vectorStore:
      type: {store}
      {extra}
"""


def _memory(store: str, extra: str = ""):
    (resource,) = load_resources(MEMORY.format(store=store, extra=extra), source="test.yaml")
    return build_memory(resource)


def test_built_ins_are_registered_through_entry_points() -> None:
    assert {"Chroma", "Qdrant"} <= set(available("vector_stores"))
    assert {"SQLite", "InMemory"} <= set(available("chat_stores"))
    assert {"Local", "OpenAI", "Cohere", "HuggingFace"} <= set(available("embeddings"))


def test_unknown_backend_names_field_known_names_and_reason() -> None:
    with pytest.raises(UnknownBackendError) as err:
        _memory("Pinecone").vector_store
    message = str(err.value)
    assert "spec.semantic.vectorStore.type" in message
    assert "'Pinecone'" in message and "Chroma" in message and "Qdrant" in message


def test_near_miss_gets_a_suggestion() -> None:
    with pytest.raises(UnknownBackendError, match="Did you mean 'SQLite'"):
        get_factory("chat_stores", "SQlite", field="spec.backend.type")


def test_unreachable_chroma_server_names_the_address() -> None:
    memory = _memory("Chroma", "chroma: {host: 127.0.0.1, port: 9}")
    with pytest.raises(BackendUnavailableError, match=r"http://127\.0\.0\.1:9"):
        memory.vector_store


def test_hosted_embedding_without_key_says_where_to_put_it() -> None:
    (resource,) = load_resources(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: Memory\nmetadata: {name: m}\n"
        "spec:\n  semantic:\n    embedding: {provider: OpenAI}\n"
    )
    with pytest.raises(BackendUnavailableError, match="OPENAI_API_KEY"):
        build_memory(resource).embed_model


def test_building_does_no_io(tmp_path) -> None:
    memory = build_memory(home=tmp_path / "home")
    memory.retrieval  # reading settings is fine
    assert not (tmp_path / "home").exists()


def test_strategy_names_are_checked() -> None:
    assert as_strategy("keyword") == "keyword"
    assert as_strategy(None) is None
    with pytest.raises(ValueError, match="hybrid, semantic, keyword"):
        as_strategy("fuzzy")


def test_filter_mapping_accepts_prefix_scalars_and_lists() -> None:
    filters = filters_from_mapping({"metadata.type": "runbook", "team": ["sre", "platform"]})
    assert filters is not None
    (eq, any_of) = filters.filters
    assert (eq.key, eq.operator.value, eq.value) == ("type", "==", "runbook")
    assert (any_of.key, any_of.operator.value, any_of.value) == ("team", "in", ["sre", "platform"])
    assert filters_from_mapping({}) is None
