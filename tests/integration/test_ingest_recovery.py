"""A failed ingest leaves the stores consistent and the next run completes the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aof_index import build_memory, ingest_documents
from aof_index.errors import IngestError
from aof_index.spec import Memory
from aof_index_readers import LocalFilesReader


def _chunk_ids(memory) -> set[str]:
    return {nid for record in memory.ingest_state.records() for nid in record.node_ids}


def _stored_ids(memory) -> set[str]:
    return set(memory.vector_store.client.get(include=[])["ids"])


def test_crash_mid_embedding_then_rerun_equals_a_clean_run(runbooks: Path, tmp_path: Path) -> None:
    clean = build_memory(home=tmp_path / "clean")
    ingest_documents(clean, LocalFilesReader([runbooks]).lazy_load_data(), batch_size=8)

    crashed = build_memory(home=tmp_path / "crashed")
    real = crashed.embed_model.get_text_embedding_batch
    calls = {"n": 0}

    def flaky(texts: list[str], **kwargs: Any) -> list[list[float]]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash while embedding")
        return real(texts, **kwargs)

    object.__setattr__(crashed.embed_model, "get_text_embedding_batch", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest_documents(crashed, LocalFilesReader([runbooks]).lazy_load_data(), batch_size=8)
    assert crashed.ingest_state.records() == []  # nothing recorded as done
    assert _stored_ids(crashed)  # but some chunks reached the vector store

    object.__setattr__(crashed.embed_model, "get_text_embedding_batch", real)
    report = ingest_documents(crashed, LocalFilesReader([runbooks]).lazy_load_data())
    assert report.added == 6
    assert _chunk_ids(crashed) == _chunk_ids(clean) == _stored_ids(crashed) == _stored_ids(clean)
    assert set(crashed.keyword_index.node_ids()) == _chunk_ids(clean)


def test_crash_while_updating_a_document_is_redone_next_run(runbooks: Path) -> None:
    memory = build_memory()
    ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
    before = _chunk_ids(memory)
    (runbooks / "dns.md").write_text("# DNS\n\nRewritten runbook about ndots and CoreDNS.\n")
    store = memory.vector_store
    real_add = store.add

    def failing_add(nodes: Any, **kwargs: Any) -> Any:
        raise ConnectionError("vector store went away")

    object.__setattr__(store, "add", failing_add)
    with pytest.raises(ConnectionError):
        ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
    object.__setattr__(store, "add", real_add)
    report = ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
    assert (report.updated, report.unchanged) == (1, 5)
    after = _chunk_ids(memory)
    assert _stored_ids(memory) == after == set(memory.keyword_index.node_ids())
    assert len(after) < len(before)  # the shorter dns.md has fewer chunks, no leftovers


def test_empty_input_writes_nothing(tmp_path: Path) -> None:
    memory = build_memory()
    with pytest.raises(IngestError, match="nothing to ingest"):
        ingest_documents(memory, iter(()))
    assert not memory.data_dir.exists()


def test_changing_the_pipeline_redoes_every_document(runbooks: Path) -> None:
    """Chunks made by another chunker or embedding model are never kept as "unchanged"."""
    memory = build_memory()
    ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
    before = _chunk_ids(memory)
    again = ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
    assert again.unchanged == 6

    data = memory.resource.model_dump(by_alias=True, exclude_unset=True)
    data["spec"]["semantic"]["embedding"]["model"] = "sentence-transformers/all-MiniLM-L6-v2"
    other = build_memory(Memory.model_validate(data))
    report = ingest_documents(other, LocalFilesReader([runbooks]).lazy_load_data())
    assert (report.updated, report.unchanged) == (6, 0)  # same data folder, new pipeline
    assert _chunk_ids(other) == before == _stored_ids(other)
