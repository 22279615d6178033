"""The CLI on the embedded default: ingest, re-ingest, query, chat, eval, init, validate.

Everything is real: Chroma's persistent client, the BM25 index, SQLite, the local MiniLM
model, files on disk. Only the hosted LLM is replaced, at its HTTP boundary, by a local
server speaking OpenAI's API (``openai_stub.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai_stub import OpenAIStub
from typer.testing import CliRunner

from aof_index.cli.main import app

runner = CliRunner()


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_ingest_is_idempotent_and_query_finds_the_runbook(runbooks: Path) -> None:
    code, out, err = run("ingest", str(runbooks), "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["added"] == 6 and first["chunks_written"] > 6
    assert first["total_chunks"] == first["chunks_written"]

    code, out, _ = run("ingest", str(runbooks), "--json")
    again = json.loads(out)
    assert (again["added"], again["updated"], again["chunks_written"]) == (0, 0, 0)
    assert again["total_chunks"] == first["total_chunks"]

    code, out, _ = run("query", "container killed for exceeding its memory limit", "--json")
    assert code == 0
    passages = json.loads(out)["passages"]
    assert Path(passages[0]["source"]).name == "oomkilled.md"
    assert passages[0]["heading"].startswith("Container OOMKilled")
    assert [p["rank"] for p in passages] == list(range(1, 6))


def test_changed_file_replaces_its_chunks_without_duplicates(runbooks: Path) -> None:
    assert run("ingest", str(runbooks), "--json")[0] == 0
    dns = runbooks / "dns.md"
    dns.write_text(dns.read_text() + "\n## Zebra section\n\nUnique marker quokka-7731.\n")
    code, out, _ = run("ingest", str(runbooks), "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["updated"], report["unchanged"]) == (1, 5)
    _, out, _ = run("query", "quokka-7731", "--strategy", "keyword", "--json")
    hits = json.loads(out)["passages"]
    # One chunk holds the marker (no stale copy), ranked first; the chunk before it in
    # dns.md is found through its keyword window, below it.
    assert [("quokka-7731" in hit["text"]) for hit in hits] == [True, False]
    assert {Path(hit["source"]).name for hit in hits} == {"dns.md"}

    from aof_index.build.memory import build_memory

    memory = build_memory()
    stored = memory.vector_store.client.count()  # type: ignore[attr-defined]
    documents, chunks = memory.ingest_state.counts()
    assert (documents, stored, len(memory.keyword_index)) == (6, chunks, chunks)


def test_query_with_an_llm_answers_with_citations(runbooks: Path, monkeypatch) -> None:
    assert run("ingest", str(runbooks))[0] == 0
    with OpenAIStub(reply="Read the previous logs [1].") as stub:
        monkeypatch.setenv("AOF_INDEX_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("AOF_INDEX_LLM_MODEL", "local-model")
        code, out, _ = run("query", "pod keeps restarting CrashLoopBackOff", "--json")
    payload = json.loads(out)
    assert code == 0 and payload["answer"] == "Read the previous logs [1]."
    prompt = stub.requests[0]["body"]["messages"][-1]["content"]
    assert "[1] (source:" in prompt and "crashloopbackoff.md" in prompt
    assert stub.requests[0]["body"]["model"] == "local-model"


def test_llm_timeout_is_reported_and_passages_still_shown(runbooks: Path, monkeypatch) -> None:
    assert run("ingest", str(runbooks))[0] == 0
    with OpenAIStub(delay_s=3) as stub:
        monkeypatch.setenv("AOF_INDEX_LLM_BASE_URL", stub.base_url)
        monkeypatch.setenv("AOF_INDEX_LLM_TIMEOUT", "0.5")
        code, out, err = run("query", "certificate expired x509")
    assert code == 0
    assert "certificate-expiry.md" in out
    assert "LLM error" in err and stub.base_url in err


def test_query_without_llm_explains_how_to_configure_one(runbooks: Path) -> None:
    assert run("ingest", str(runbooks))[0] == 0
    code, out, err = run("query", "node NotReady kubelet")
    assert code == 0 and "node-not-ready.md" in out
    assert "No LLM is configured" in err


def test_chat_keeps_history_across_sessions(runbooks: Path) -> None:
    assert run("ingest", str(runbooks))[0] == 0
    code, out, _ = run("chat", "-c", "incident-42", input="coredns is failing\n/exit\n")
    assert code == 0 and "dns.md" in out
    code, out, _ = run("chat", "-c", "incident-42", input="/history\n")
    assert "(2 stored messages)" in out
    assert "user> coredns is failing" in out
    code, out, _ = run("chat", "-c", "other", input="/history\n")
    assert "(0 stored messages)" in out


def test_ingest_of_nothing_fails_cleanly(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "photo.png").write_bytes(b"\x89PNG\r\n\x00")
    code, _, err = run("ingest", str(empty))
    assert code == 1
    assert "nothing to ingest" in err and "photo.png" in err
    code, _, err = run("ingest", str(tmp_path / "missing"))
    assert code == 1 and "missing does not exist" in err


def test_init_writes_manifests_that_validate(tmp_path: Path) -> None:
    code, out, _ = run("init", str(tmp_path / "m"))
    assert code == 0
    files = sorted((tmp_path / "m").glob("*.yaml"))
    assert len(files) == 4
    code, out, err = run("validate", *map(str, files))
    assert code == 0, err
    assert out.count("OK") == 4
    assert run("init", str(tmp_path / "m"))[0] == 1  # refuses to overwrite


def test_validate_rejects_a_broken_manifest_with_the_field_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: Memory\nmetadata: {name: m}\n"
        "spec:\n  semantic:\n    retrieval:\n      hybridSerch: {enabled: true}\n"
    )
    code, out, err = run("validate", str(bad))
    assert code == 1
    text = out + err
    assert "spec.semantic.retrieval.hybridSerch" in text and "hybridSearch" in text


def test_eval_beir_scores_real_scifact_queries(mini_scifact: Path) -> None:
    code, out, err = run(
        "eval",
        "beir",
        str(mini_scifact),
        "--strategy",
        "hybrid",
        "--strategy",
        "keyword",
        "--json",
    )
    assert code == 0, err
    hybrid, keyword = json.loads(out)
    assert hybrid["queries"] == keyword["queries"] == 40
    for result in (hybrid, keyword):
        assert set(result) >= {"ndcg@10", "recall@100", "mrr@10", "queries"}
        assert 0.4 < result["ndcg@10"] <= 1.0  # a broken pipeline scores near 0
    assert hybrid["ndcg@10"] != keyword["ndcg@10"]


def test_eval_beir_names_missing_files(tmp_path: Path) -> None:
    code, _, err = run("eval", "beir", str(tmp_path))
    assert code == 1 and "corpus.jsonl" in err


@pytest.mark.parametrize("strategy", ["bogus"])
def test_bad_strategy_is_refused(strategy: str) -> None:
    code, _, err = run("query", "x", "--strategy", strategy)
    assert code == 2 and "hybrid, semantic, keyword" in err
