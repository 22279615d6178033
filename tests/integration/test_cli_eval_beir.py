"""``aof-index eval beir`` with baselines, configuration flags, presets and splits.

Runs on the ``mini_scifact`` cut of the real SciFact data (40 judged test queries), with
the embedded default stack (Chroma, bm25s, local MiniLM): everything is real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from aof_index.cli.main import app
from aof_index.eval.beir import BASELINES

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_baselines_and_configurations_in_one_run(mini_scifact: Path) -> None:
    code, out, err = run(
        "eval", "beir", str(mini_scifact), "--baselines", "--preset", "tuned", "--json"
    )
    assert code == 0, err
    results = json.loads(out)
    names = [r["strategy"] for r in results]
    assert names[: len(BASELINES)] == list(BASELINES)
    assert names[-1].startswith("hybrid[") and "+sentences[" in names[-1]
    for result in results:
        assert set(result) >= {"ndcg@10", "recall@100", "mrr@10", "queries", "p50_ms"}
        assert result["queries"] == 40 and result["split"] == "test"
        assert result["p50_ms"] > 0
        assert 0.4 < result["ndcg@10"] <= 1.0  # a broken pipeline scores near 0
    by_name = dict(zip(names, results, strict=True))
    # Different retrievers really ran: the single sides differ from each other and from
    # the fused runs; the tuned configuration is recorded with its options.
    assert by_name["bm25"]["ndcg@10"] != by_name["dense"]["ndcg@10"]
    assert results[-1]["config"]["rerank"]["weight"] > 0  # the second stage ran
    assert results[-1]["config"]["strategy"] == "hybrid"
    assert results[-1]["ndcg@10"] != by_name["default"]["ndcg@10"]


def test_flags_override_and_reach_the_retriever(mini_scifact: Path) -> None:
    outputs = []
    for extra in (["--normalization", "dbsf"], ["--fusion", "rrf", "--keyword-weight", "0"]):
        code, out, err = run("eval", "beir", str(mini_scifact), "-s", "hybrid", "--json", *extra)
        assert code == 0, err
        outputs.append(json.loads(out))
    dbsf, dense_only_rrf = outputs
    assert dbsf["config"]["normalization"] == "dbsf"
    assert dense_only_rrf["strategy"] == "hybrid[fusion=rrf,keyword_weight=0.0]"
    assert dbsf["ndcg@10"] != dense_only_rrf["ndcg@10"]


def test_split_selects_the_qrels_file(mini_scifact: Path, tmp_path: Path) -> None:
    code, _, err = run("eval", "beir", str(mini_scifact), "--split", "train", "--json")
    assert code == 1 and "train.tsv" in err
    copy = tmp_path / mini_scifact.name
    shutil.copytree(mini_scifact, copy)
    lines = (copy / "qrels" / "test.tsv").read_text().splitlines()
    (copy / "qrels" / "train.tsv").write_text("\n".join(lines[:11]) + "\n")  # header + 10
    code, out, err = run("eval", "beir", str(copy), "--split", "train", "-s", "keyword", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["split"] == "train" and result["queries"] == len(
        {line.split()[0] for line in lines[1:11]}
    )


def test_bad_preset_and_normalization_are_refused(mini_scifact: Path) -> None:
    code, _, err = run("eval", "beir", str(mini_scifact), "--preset", "best-on-test")
    assert code == 2 and "tuned" in err
    code, _, err = run("eval", "beir", str(mini_scifact), "--normalization", "l2")
    assert code == 2 and "dbsf" in err
