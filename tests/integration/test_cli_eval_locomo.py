"""``aof-index eval locomo`` on the real LoCoMo file (first conversation), and its loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from typer.testing import CliRunner

from aof_index.cli.main import app
from aof_index.eval.locomo import load_locomo, normalise_evidence

LOCOMO = SHARED_DATA / "locomo" / "locomo10.json"
runner = CliRunner()


@pytest.fixture(scope="module")
def locomo_file() -> Path:
    if not LOCOMO.is_file():
        pytest.fail(f"evaluation data missing: {LOCOMO} (../shared/data must be beside the repo)")
    return LOCOMO


@pytest.mark.parametrize(
    ("raw", "ids", "repaired", "dropped"),
    [
        ("D3:13", ["D3:13"], False, 0),
        ("D8:6; D9:17", ["D8:6", "D9:17"], True, 0),
        ("D9:1 D4:4 D4:6", ["D9:1", "D4:4", "D4:6"], True, 0),
        ("D:11:26", ["D11:26"], True, 0),
        ("D30:05", ["D30:5"], True, 0),
        ("D", [], False, 1),
        ("D10:19", [], False, 1),  # well formed, but no such turn
    ],
)
def test_evidence_ids_are_normalised(
    raw: str, ids: list[str], repaired: bool, dropped: int
) -> None:
    valid = {"D3:13", "D8:6", "D9:17", "D9:1", "D4:4", "D4:6", "D11:26", "D30:5"}
    assert normalise_evidence(raw, valid) == (ids, repaired, dropped)


def test_loader_matches_the_documented_counts(locomo_file: Path) -> None:
    data = load_locomo(locomo_file)
    assert len(data.turns) == 10
    assert sum(len(t) for t in data.turns.values()) == 5882
    # 1,540 questions of categories 1-4; 4 of them have no usable evidence.
    assert len(data.questions) + data.skipped_questions == 1540
    assert data.skipped_questions == 4
    assert (data.repaired_references, data.dropped_references) == (6, 3)
    every_id = {(t.conversation, t.dialog_id) for ts in data.turns.values() for t in ts}
    assert all((q.conversation, e) in every_id for q in data.questions for e in q.evidence)


@pytest.mark.slow
def test_eval_locomo_json_on_one_conversation(locomo_file: Path) -> None:
    result = runner.invoke(app, ["eval", "locomo", str(locomo_file), "--limit", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["conversations"] == 1 and payload["questions"] == 150
    assert set(payload["per_category"]) == {"1", "2", "3", "4"}
    assert sum(c["questions"] for c in payload["per_category"].values()) == 150
    assert set(payload["baselines"]) == {"bm25", "minilm", "rrf"}
    for figures in [payload, *payload["baselines"].values(), *payload["per_category"].values()]:
        r5, r10, r20 = figures["recall@5"], figures["recall@10"], figures["recall@20"]
        assert 0.0 <= r5 <= r10 <= r20 <= 1.0
    # Not a trivially wrong ranking: far above chance (10 of 419 turns ≈ 0.02) and not
    # below the plain baselines it builds on.
    assert payload["recall@10"] > 0.5
    assert payload["recall@10"] >= payload["baselines"]["bm25"]["recall@10"]
    assert payload["recall@10"] >= payload["baselines"]["minilm"]["recall@10"]


def test_eval_locomo_rejects_a_file_that_is_not_locomo(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    result = runner.invoke(app, ["eval", "locomo", str(bad)])
    assert result.exit_code == 1
    assert "is not a LoCoMo file" in result.stderr
