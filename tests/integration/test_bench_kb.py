"""``aof-index bench kb`` on a small folder: every figure it prints is there and consistent.

Real: the embedded default Memory, the local MiniLM model, LlamaIndex's
``VectorStoreIndex.from_documents`` as the baseline, ``aof-index kb sync`` subprocesses
killed with SIGKILL. Timings are printed, never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aof_index.cli.main import app

pytestmark = pytest.mark.slow


def test_bench_kb_reports_every_case(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        paragraphs = "\n\n".join(
            f"Step {j} of runbook {i}: check the pods. Then check the nodes." for j in range(60)
        )
        (corpus / f"runbook{i}.md").write_text(f"# Runbook {i}\n\n{paragraphs}\n")
    result = CliRunner().invoke(
        app,
        ["bench", "kb", "--corpus", str(corpus), "--kills", "2", "--kill-files", "3", "--json"],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    ours = figures["ours"]
    assert figures["documents"] == 4
    assert ours["chunks"] == ours["embedded"] == figures["ceiling"]["chunks"] > 4
    assert ours["chunks_per_s"] > 0 and ours["of_ceiling"] > 0
    assert figures["llamaindex"]["chunks"] >= 4 and figures["llamaindex_256"]["chunks"] >= 4
    assert figures["no_change"]["embedded"] == 0
    assert figures["one_edit"] == {**figures["one_edit"], "updated": 1, "chunks": ours["chunks"]}
    assert 1 <= figures["one_edit"]["embedded"] < ours["chunks"]
    delete = figures["one_delete"]
    assert delete["deleted"] == 1 and delete["chunks_removed"] > 0
    assert delete["left_in_vectors"] == delete["left_in_keywords"] == 0
    assert delete["chunks"] == ours["chunks"] - delete["chunks_removed"]
    kill = figures["kill"]
    assert len(kill["runs"]) == 2 and kill["identical"] == 2
    assert kill["expected"]["journal"] == 0 and kill["expected"]["chunks"] > 0
