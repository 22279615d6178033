"""A KnowledgeBase manifest's chunking and processing drive ingestion (Python API and CLI).

Real stores under a temporary ``AOF_INDEX_HOME``, the real local MiniLM model and window.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aof_index import ManifestError, build_knowledge_base
from aof_index.cli.main import app
from aof_index.knowledge.pipeline import KnowledgeBasePipeline
from aof_index_readers import LocalFilesReader
from aof_index_retrievers import BM25Index

pytestmark = pytest.mark.slow

runner = CliRunner()

MEMORY = """\
apiVersion: aof.agenticops.org/v1alpha1
kind: Memory
metadata:
  name: team
spec:
  semantic:
    retrieval:
      hybridSearch: {enabled: true}
"""


def kb_manifest(chunking: str, memory_ref: str | None = "team", processing: str = "") -> str:
    indexing = f"  indexing:\n    memoryRef: {memory_ref}\n" if memory_ref else ""
    return (
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\nmetadata:\n"
        "  name: runbooks\nspec:\n  sources:\n    - name: local\n      type: LocalFiles\n"
        '      localFiles: {paths: ["*.md"]}\n'
        f"  chunking:\n{chunking}{indexing}{processing}"
    )


FIXED = "    strategy: fixed\n    fixed: {chunkSize: 64, overlap: 8}\n"
RECURSIVE = (
    "    strategy: recursive\n"
    '    recursive: {chunkSize: 120, overlap: 0, separators: ["\\n\\n", "\\n"]}\n'
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "home"
    monkeypatch.setenv("AOF_INDEX_HOME", str(target))
    return target


def write(folder: Path, *documents: str) -> Path:
    path = folder / "kb.yaml"
    path.write_text("---\n".join(documents))
    return path


def ingest(kb: KnowledgeBasePipeline, folder: Path) -> tuple[int, int, int, int]:
    report = kb.ingest(LocalFilesReader([folder]).lazy_load_data())
    return report.added, report.updated, report.unchanged, report.chunks


def stored_chunks(kb: KnowledgeBasePipeline) -> dict[str, str]:
    """``node id → strategy`` of every chunk in the keyword index (the vector store's twin)."""
    index = kb.memory.keyword_index
    out = {}
    for node_id in index.node_ids():
        node = index.get(node_id)
        assert node is not None
        out[node_id] = str(node.metadata["strategy"])
    return out


def test_manifest_chunking_is_what_ingestion_uses(tmp_path: Path, runbooks: Path) -> None:
    kb = build_knowledge_base(write(tmp_path, MEMORY, kb_manifest(FIXED)))
    assert kb.memory.name == "team"
    assert kb.chunker.strategy == "fixed"
    assert (kb.chunker.chunk_size, kb.chunker.chunk_overlap) == (64, 8)
    added, _, _, chunks = ingest(kb, runbooks)
    assert added == 6
    stored = stored_chunks(kb)
    assert len(stored) == chunks and set(stored.values()) == {"fixed"}
    window = kb.memory.window
    index = kb.memory.keyword_index
    for node_id in stored:
        node = index.get(node_id)
        assert node is not None
        assert window.count(node.get_content(metadata_mode="embed")) <= 64  # type: ignore[arg-type]


def test_a_new_chunking_redoes_every_document_and_replaces_its_chunks(
    tmp_path: Path, runbooks: Path
) -> None:
    fixed = build_knowledge_base(write(tmp_path, MEMORY, kb_manifest(FIXED)))
    ingest(fixed, runbooks)
    before = stored_chunks(fixed)

    recursive = build_knowledge_base(write(tmp_path, MEMORY, kb_manifest(RECURSIVE)))
    assert recursive.chunker.settings()["separator_list"] == ["\n\n", "\n"]
    added, updated, unchanged, chunks = ingest(recursive, runbooks)
    assert (added, updated, unchanged) == (0, 6, 0)
    after = stored_chunks(recursive)
    assert len(after) == chunks < len(before)  # 120-token chunks: fewer than 64-token ones
    assert set(after.values()) == {"recursive"}  # the fixed chunks are gone, not kept beside

    assert ingest(recursive, runbooks)[:3] == (0, 0, 6)  # same settings: nothing to redo


def test_processing_runs_before_chunking(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page = "# Restart\n\nRun `kubectl rollout restart deploy/web` and watch the pods.\n"
    (docs / "a.md").write_text(page)
    (docs / "copy.md").write_text(page)  # an exact duplicate: deduplication drops it
    (docs / "b.html").write_text(
        "<html><body><h1>Drain</h1><p>Cordon the <b>node</b> first.</p></body></html>"
    )
    processing = "  processing:\n    deduplication: {enabled: true, method: hash}\n"
    kb = build_knowledge_base(
        write(tmp_path, MEMORY, kb_manifest(RECURSIVE, processing=processing))
    )
    added, _, _, _ = ingest(kb, docs)
    assert added == 3
    records = {Path(r.source).name: r.node_ids for r in kb.memory.ingest_state.records()}
    assert sorted(records) == ["a.md", "b.html", "copy.md"]
    assert bool(records["a.md"]) != bool(records["copy.md"])  # one of the twins has chunks
    html_chunk = kb.memory.keyword_index.get(records["b.html"][0])
    assert html_chunk is not None
    assert "<b>" not in html_chunk.get_content() and "Cordon the node first" in (
        html_chunk.get_content()
    )
    assert ingest(kb, docs)[:3] == (0, 0, 3)  # the dropped twin counts as ingested


def test_memory_ref_resolution(tmp_path: Path) -> None:
    assert build_knowledge_base(write(tmp_path, kb_manifest(FIXED, None))).memory.name == (
        "default"
    )
    assert build_knowledge_base(write(tmp_path, kb_manifest(FIXED, "default"))).memory.name == (
        "default"
    )
    with pytest.raises(ManifestError) as err:
        build_knowledge_base(write(tmp_path, MEMORY, kb_manifest(FIXED, "missing")))
    message = str(err.value)
    assert "spec.indexing.memoryRef" in message and "missing" in message and "team" in message


def test_cli_ingest_and_chunk_follow_the_knowledge_base(tmp_path: Path, runbooks: Path) -> None:
    manifest = write(tmp_path, MEMORY, kb_manifest(FIXED))
    result = runner.invoke(app, ["ingest", str(runbooks), "-k", str(manifest), "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["added"] == 6 and summary["chunks_written"] == summary["total_chunks"] > 0

    page = runbooks / "dns.md"
    result = runner.invoke(app, ["chunk", str(page), "-k", str(manifest), "--json"])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["strategy"] for r in rows} == {"fixed"} and max(r["tokens"] for r in rows) <= 64

    result = runner.invoke(app, ["chunk", str(page), "-k", str(manifest), "-s", "markdown"])
    assert result.exit_code == 0, result.stderr
    assert "markdown" in result.stdout

    bad = write(tmp_path, MEMORY, kb_manifest("    strategy: custom\n"))
    result = runner.invoke(app, ["ingest", str(runbooks), "-k", str(bad)])
    assert result.exit_code == 1 and "spec.chunking.strategy" in result.stderr


def test_keyword_search_scores_each_chunk_with_its_neighbours(tmp_path: Path) -> None:
    # Small fixed chunks cut this runbook so that "etcd" and "snapshot" never share one.
    docs = tmp_path / "docs"
    docs.mkdir()
    filler = " ".join(f"step{i} checks the dashboards again." for i in range(6))
    (docs / "etcd.md").write_text(
        f"The etcd members lost quorum during the upgrade. {filler} "
        "Restore the latest snapshot and restart the control plane."
    )
    (docs / "volumes.md").write_text("Take a snapshot of the volume before resizing it.")
    kb = build_knowledge_base(write(tmp_path, MEMORY, kb_manifest(FIXED, processing="")))
    ingest(kb, docs)
    index = kb.memory.keyword_index
    assert index.params["window"] == 1
    texts = {node_id: str(index.get(node_id).get_content()) for node_id in index.node_ids()}  # type: ignore[union-attr]
    assert not any("etcd" in t and "snapshot" in t for t in texts.values())
    etcd = {i for i, t in texts.items() if "quorum" in t or "control plane" in t}
    volume = next(i for i, t in texts.items() if t.startswith("Take a snapshot"))
    assert len(etcd) == 2
    # Both halves of the etcd runbook hold both words within their window: they come first.
    windowed = [hit.node.node_id for hit in index.query("etcd snapshot", top_k=10)]
    assert set(windowed[:2]) == etcd and windowed[2] == volume, windowed
    # Scored one chunk at a time, the volume runbook beats the half that names etcd.
    single = BM25Index(window=0)
    single.add([index.get(node_id) for node_id in index.node_ids()])  # type: ignore[misc]
    ranked = [hit.node.node_id for hit in single.query("etcd snapshot", top_k=10)]
    assert ranked.index(volume) < max(ranked.index(i) for i in etcd), ranked
