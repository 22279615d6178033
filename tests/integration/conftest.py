"""Integration fixtures: real stores on disk, real servers on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SCIFACT = SHARED_DATA / "beir" / "scifact"


@pytest.fixture
def runbooks(tmp_path: Path) -> Path:
    """A writable copy of the runbooks shipped for the demo."""
    target = tmp_path / "runbooks"
    shutil.copytree(str(files("aof_index.demo") / "corpus"), target)
    return target


@pytest.fixture(scope="session")
def mini_scifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BEIR folder cut from the real SciFact data: 40 judged queries, their
    relevant documents and 300 other documents as distractors."""
    if not SCIFACT.is_dir():
        pytest.fail(f"evaluation data missing: {SCIFACT} (../shared/data must be beside the repo)")
    out = tmp_path_factory.mktemp("mini-scifact")
    qrels_lines = (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = qrels_lines[0], [r.split("\t") for r in qrels_lines[1:] if r.strip()]
    chosen_queries = sorted({r[0] for r in rows}, key=int)[:40]
    kept_rows = [r for r in rows if r[0] in chosen_queries]
    relevant = {r[1] for r in kept_rows}
    corpus = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    distractors = [d for d in corpus if d["_id"] not in relevant][:300]
    keep = [d for d in corpus if d["_id"] in relevant] + distractors
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep))
    queries = [json.loads(line) for line in (SCIFACT / "queries.jsonl").open()]
    (out / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries if q["_id"] in chosen_queries)
    )
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text(
        "\n".join([header, *("\t".join(r) for r in kept_rows)]) + "\n"
    )
    return out
