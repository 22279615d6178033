"""Small BEIR folders cut from the real SciFact data (``../shared/data/beir/scifact``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "beir" / "scifact"


def cut_scifact(
    out: Path,
    *,
    split: str,
    queries: int,
    distractors: int,
    qrels_as: Sequence[str] | None = None,
) -> Path:
    """Write into ``out`` the first ``queries`` judged queries of ``split`` (by id), their
    relevant documents followed by ``distractors`` other documents, and their judgements as
    ``qrels/<name>.tsv`` for each name of ``qrels_as`` (default: ``split``)."""
    if not SCIFACT.is_dir():
        pytest.fail(f"evaluation data missing: {SCIFACT} (../shared/data must be beside the repo)")
    lines = (SCIFACT / "qrels" / f"{split}.tsv").read_text().splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:] if line.strip()]
    chosen = sorted({row[0] for row in rows}, key=int)[:queries]
    kept = [row for row in rows if row[0] in chosen]
    relevant = {row[1] for row in kept}
    corpus = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    keep = [d for d in corpus if d["_id"] in relevant]
    keep += [d for d in corpus if d["_id"] not in relevant][:distractors]
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep))
    judged = [json.loads(line) for line in (SCIFACT / "queries.jsonl").open()]
    (out / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in judged if q["_id"] in chosen)
    )
    (out / "qrels").mkdir()
    body = "\n".join([header, *("\t".join(row) for row in kept)]) + "\n"
    for name in qrels_as or (split,):
        (out / "qrels" / f"{name}.tsv").write_text(body)
    return out
