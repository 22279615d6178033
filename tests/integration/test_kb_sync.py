"""``aof-index kb sync``: incremental, differential and full syncs of a KnowledgeBase.

Real: LocalFiles and Git sources over files and ``git`` repositories made here, the embedded
default Memory (Chroma on disk, the BM25 index, the local MiniLM model), the sync state in
SQLite, the CLI (in process with typer's runner, and as a subprocess killed with SIGKILL).
Nothing stands in for anything; a failing source is a Git URL that no longer exists.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kb_corpus import Corpus, consistent, doc, section, snapshot
from typer.testing import CliRunner

from aof_index.cli.main import app
from aof_index.knowledge.sync import open_sync

pytestmark = pytest.mark.slow

runner = CliRunner()


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    c = Corpus(tmp_path)
    for topic in ("dns", "disk", "oom"):
        c.write(f"{topic}.md", doc(topic.upper(), section(topic), section(f"{topic} alerts")))
    c.commit({f"{t}.md": doc(t, section(t), section(f"{t} logs")) for t in ("etcd", "ingress")})
    return c


def test_incremental_add_modify_delete(corpus: Corpus) -> None:
    kb = open_sync(corpus.manifest)
    first = kb.sync()
    assert (first.added, first.updated, first.deleted, first.unchanged) == (5, 0, 0, 0)
    before = snapshot(kb)
    ids = consistent(before)
    gone = {r[1]: r[5] for r in before["state"] if r[4].endswith("disk.md")}
    assert len(gone) == 1 and ids

    corpus.write("dns.md", doc("DNS", section("dns"), section("coredns ndots")))
    corpus.write("new.md", doc("New", section("certificates")))
    (corpus.files / "disk.md").unlink()
    corpus.commit({"etcd.md": None, "ingress.md": doc("ingress", section("ingress tls"))})
    second = open_sync(corpus.manifest).sync()
    files, repo = second.sources
    assert (files.added, files.updated, files.deleted, files.unchanged) == (1, 1, 1, 1)
    assert (repo.added, repo.updated, repo.deleted, repo.unchanged) == (0, 1, 1, 0)

    after = snapshot(open_sync(corpus.manifest))
    consistent(after)
    ((disk_id, disk_chunks),) = gone.items()
    assert disk_id not in {r[1] for r in after["state"]}
    assert not set(disk_chunks) & (set(after["vectors"]) | set(after["keywords"]))
    assert any("coredns ndots" in text for text in after["vectors"].values())
    assert not any("etcd" in r[4] for r in after["state"])
    assert second.documents == len(after["state"]) == 4


def test_unchanged_resync_embeds_nothing(corpus: Corpus) -> None:
    open_sync(corpus.manifest).sync()
    os.utime(corpus.files / "dns.md")  # a new listing version, the same content
    again = open_sync(corpus.manifest).sync()
    assert (again.added, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 5)
    assert again.embedded == 0 and again.as_dict()["written"] == 0
    assert again.chunks > 0


def test_differential_reembeds_only_the_changed_chunk(corpus: Corpus) -> None:
    parts = [section(t, 3) for t in ("pods", "nodes", "volumes", "quotas")]
    corpus.write("long.md", doc("Long", *parts))
    kb = open_sync(corpus.manifest)
    kb.sync()
    rows = {r.location: r for r in kb.documents()}
    long_chunks = len(rows[str(corpus.files / "long.md")].node_ids)
    assert long_chunks >= 4

    parts[1] = section("nodes drained", 3)
    corpus.write("long.md", doc("Long", *parts))
    report = open_sync(corpus.manifest).sync(mode="differential")
    assert report.updated == 1 and report.embedded == 1
    snap = snapshot(open_sync(corpus.manifest))
    consistent(snap)
    assert sum("nodes drained" in t for t in snap["vectors"].values()) == 1

    parts[2] = section("volumes resized", 3)
    corpus.write("long.md", doc("Long", *parts))
    incremental = open_sync(corpus.manifest).sync(mode="incremental")
    assert incremental.embedded == long_chunks  # the whole changed document


def test_full_sync_ends_identical_to_a_fresh_sync(corpus: Corpus, tmp_path: Path) -> None:
    open_sync(corpus.manifest).sync()
    corpus.write("dns.md", doc("DNS", section("dns search domains")))
    (corpus.files / "oom.md").unlink()
    corpus.commit({"etcd.md": doc("etcd", section("etcd defrag"), section("etcd backup"))})
    full = open_sync(corpus.manifest).sync(mode="full")
    assert full.unchanged == 0 and full.embedded == full.chunks
    fresh_home = tmp_path / "fresh"
    open_sync(corpus.manifest, home=fresh_home).sync()
    synced = snapshot(open_sync(corpus.manifest))
    fresh = snapshot(open_sync(corpus.manifest, home=fresh_home))
    consistent(synced)
    for key in ("vectors", "keywords", "state", "ingest"):
        assert synced[key] == fresh[key], key


def test_a_failing_source_keeps_its_documents_and_spares_the_others(corpus: Corpus) -> None:
    open_sync(corpus.manifest).sync()
    kept = snapshot(open_sync(corpus.manifest))
    repo_rows = [r for r in kept["state"] if r[0] == "repo"]
    shutil.move(corpus.repo, corpus.repo.with_name("moved"))  # the remote is gone
    corpus.write("dns.md", doc("DNS", section("dns over tcp")))

    result = runner.invoke(app, ["kb", "sync", str(corpus.manifest), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == ["repo"]
    assert report["sources"]["files"]["updated"] == 1
    assert "repo" in report["sources"]["repo"]["error"]

    kb = open_sync(corpus.manifest)
    after = snapshot(kb)
    consistent(after)
    assert [r for r in after["state"] if r[0] == "repo"] == repo_rows
    status = kb.status()
    assert status.stats is not None and status.stats.last_sync_status == "failed"
    (error,) = status.stats.errors or []
    assert error.source == "repo" and error.message and error.timestamp is not None
    by_name = {s.name: s for s in status.source_status or []}
    assert by_name["repo"].status == "failed" and by_name["repo"].documents_indexed == 2
    assert by_name["files"].status == "ready"


def test_cli_json_status_and_documents(corpus: Corpus) -> None:
    result = runner.invoke(app, ["kb", "sync", str(corpus.manifest), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("added", "updated", "deleted", "unchanged", "chunks", "embedded"):
        assert isinstance(report[key], int), key
    assert isinstance(report["seconds"], float)
    assert report["added"] == 5 and report["embedded"] == report["chunks"] > 0
    assert set(report["sources"]) == {"files", "repo"}
    assert report["sources"]["repo"]["documents"] == 2

    result = runner.invoke(app, ["kb", "status", str(corpus.manifest), "--json"])
    status = json.loads(result.stdout)
    assert status["ready"] is True
    assert status["stats"]["totalDocuments"] == 5
    assert status["stats"]["totalChunks"] == report["chunks"]
    assert status["stats"]["lastSyncStatus"] == "success"
    assert [s["name"] for s in status["sourceStatus"]] == ["files", "repo"]
    assert status["sourceStatus"][1]["documentsIndexed"] == 2
    assert "lastSync" in status["sourceStatus"][0]

    result = runner.invoke(app, ["kb", "documents", str(corpus.manifest), "--json"])
    rows = json.loads(result.stdout)
    assert len(rows) == 5
    assert sum(r["chunks"] for r in rows) == report["chunks"]
    assert {Path(r["location"]).name for r in rows if r["source"] == "files"} == {
        "dns.md",
        "disk.md",
        "oom.md",
    }

    result = runner.invoke(app, ["kb", "sync", str(corpus.manifest), "--source", "files", "--json"])
    assert list(json.loads(result.stdout)["sources"]) == ["files"]


# --- kill -9 at random points ---------------------------------------------------------------

CLI = [sys.executable, "-c", "from aof_index.cli.main import app; app()"]


def run_sync(manifest: Path, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AOF_INDEX_HOME": str(home)}
    return subprocess.Popen(
        [*CLI, "kb", "sync", str(manifest), "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def journal_rows(home: Path) -> int:
    db = home / "knowledge" / "default" / "ops" / "sync.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM journal").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def kill_at_random(manifest: Path, home: Path, rng: random.Random, on_journal: bool) -> None:
    """Start a sync and SIGKILL it: at a random time, or a random moment after it journals."""
    process = run_sync(manifest, home)
    deadline = time.monotonic() + rng.uniform(3.0, 14.0)
    while process.poll() is None:
        if on_journal and journal_rows(home) > 0:
            time.sleep(rng.uniform(0.0, 0.4))
            break
        if not on_journal and time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.timeout(900)
def test_kill_minus_nine_then_rerun_equals_a_clean_run(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path / "data", batch_size=2)
    topics = [f"topic{i}" for i in range(10)]
    for topic in topics:
        corpus.write(f"{topic}.md", doc(topic, section(topic, 2), section(f"{topic} checks", 2)))
    corpus.commit({f"{t}.md": doc(t, section(f"{t} repo", 2)) for t in topics[:5]})
    base = tmp_path / "base"
    assert run_sync(corpus.manifest, base).wait() == 0
    # The run to interrupt adds, changes and deletes documents in both sources.
    for topic in topics[:4]:
        corpus.write(f"{topic}.md", doc(topic, section(f"{topic} changed", 3)))
    (corpus.files / "topic9.md").unlink()
    for i in range(4):
        corpus.write(f"added{i}.md", doc(f"added {i}", section(f"added {i}", 2)))
    corpus.commit({"topic0.md": None, "topic1.md": doc("t1", section("t1 new")), "x.md": "# X\n"})

    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    assert run_sync(corpus.manifest, clean).wait() == 0
    expected = snapshot(open_sync(corpus.manifest, home=clean))
    consistent(expected)

    rng = random.Random(20240608)
    for run in range(6):
        home = tmp_path / f"killed-{run}"
        shutil.copytree(base, home)
        kill_at_random(corpus.manifest, home, rng, on_journal=run % 3 != 0)
        if run % 2:  # and once more while it recovers
            kill_at_random(corpus.manifest, home, rng, on_journal=True)
        assert run_sync(corpus.manifest, home).wait() == 0
        got = snapshot(open_sync(corpus.manifest, home=home))
        for key in ("vectors", "keywords", "state", "ingest", "journal"):
            assert got[key] == expected[key], (run, key)
