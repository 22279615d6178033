"""Several ``aof-index kb worker`` processes share one KnowledgeBase's sync through Redis.

Real: a private ``redis-server`` started here on a free port (so queues and locks of other
tests never mix in), RQ, two worker processes running the real CLI, the embedded default
Memory (Chroma on disk, BM25, the local MiniLM model), LocalFiles and Git sources over
files and a ``git`` repository made here. Nothing stands in for anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kb_corpus import Corpus, consistent, doc, section, snapshot
from redis_server import private_redis
from rq import Queue, Worker
from rq.registry import FinishedJobRegistry
from typer.testing import CliRunner

from aof_index.cli.main import app
from aof_index.knowledge.sync import UnitResult, open_sync
from aof_index.knowledge.workers import RedisDispatcher

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CLI = [sys.executable, "-c", "from aof_index.cli.main import app; app()"]
QUEUE = "test-units"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with private_redis(tmp_path_factory.mktemp("redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()


class Workers:
    """``aof-index kb worker`` processes on the test queue, with the test's data root."""

    def __init__(self, url: str, home: Path, log_dir: Path) -> None:
        self.url, self.home, self.log_dir = url, home, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *names: str) -> None:
        env = {**os.environ, "AOF_INDEX_HOME": str(self.home)}
        for name in names:
            log = (self.log_dir / f"{name}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    [
                        *CLI,
                        "kb",
                        "worker",
                        "--queue",
                        self.url,
                        "--queue-name",
                        QUEUE,
                        *["--name", name],
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        conn = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 120
        while len(Worker.all(connection=conn)) < len(self.procs):
            assert all(p.poll() is None for p in self.procs), self.logs()
            assert time.monotonic() < deadline, "workers did not register: " + self.logs()
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM (RQ's warm shutdown: the job in progress finishes); an idle worker exits
        promptly (it used to wait for RQ's 60 s pub/sub poll)."""
        for proc in self.procs:
            proc.terminate()
        stuck = []
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                stuck.append(proc.args)
        assert not stuck, f"workers ignored SIGTERM: {stuck}\n{self.logs()}"


@pytest.fixture
def workers(redis_url: str, connection: redis.Redis, tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "worker-logs"
    logs.mkdir()
    pool = Workers(redis_url, Path(os.environ["AOF_INDEX_HOME"]), logs)
    yield pool
    pool.stop()


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    c = Corpus(tmp_path / "data", batch_size=4)
    for i in range(12):
        c.write(f"doc{i}.md", doc(f"Doc {i}", section(f"topic{i}"), section(f"alerts{i}")))
    c.commit({f"r{i}.md": doc(f"repo {i}", section(f"repo{i}")) for i in range(4)})
    return c


def finished_units(connection: redis.Redis, queue: str = QUEUE) -> list[Any]:
    registry = FinishedJobRegistry(queue, connection=connection)
    jobs = [Queue(queue, connection=connection).fetch_job(i) for i in registry.get_job_ids()]
    return [j for j in jobs if j is not None]


def same_as_one_process(manifest: Path, tmp_path: Path, label: str) -> None:
    """The data root of the workers' syncs holds exactly what one in-process sync of the
    same sources into a fresh root holds."""
    alone = tmp_path / f"alone-{label}"
    open_sync(manifest, home=alone).sync()
    shared = snapshot(open_sync(manifest))
    reference = snapshot(open_sync(manifest, home=alone))
    consistent(shared)
    for key in ("vectors", "keywords", "state", "ingest"):
        assert shared[key] == reference[key], key


def test_two_workers_end_with_the_chunks_of_one_process(
    corpus: Corpus, workers: Workers, connection: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    workers.start("w1", "w2")
    dispatcher = RedisDispatcher(redis_url, queue=QUEUE)
    report = open_sync(corpus.manifest, dispatcher=dispatcher).sync()
    assert (report.added, report.updated, report.deleted) == (16, 0, 0), workers.logs()
    assert report.embedded == report.chunks > 16 and not report.failed
    same_as_one_process(corpus.manifest, tmp_path, "first")

    units = finished_units(connection)
    assert len(units) == 16  # one unit per document, none run twice
    by_worker = {j.worker_name for j in units}
    assert by_worker == {"w1", "w2"}, by_worker

    # An incremental sync hands out only what changed; deletions stay with the syncing process.
    corpus.write("doc0.md", doc("Doc 0", section("topic0 rewritten")))
    corpus.write("new.md", doc("New", section("certificates")))
    (corpus.files / "doc5.md").unlink()
    corpus.commit({"r1.md": None, "r2.md": doc("repo 2", section("repo2 changed"))})
    again = open_sync(corpus.manifest, dispatcher=dispatcher).sync()
    assert (again.added, again.updated, again.deleted, again.unchanged) == (1, 2, 2, 12)
    assert len(finished_units(connection)) == 16 + 3
    same_as_one_process(corpus.manifest, tmp_path, "second")


def test_units_are_not_enqueued_twice_and_results_survive_the_syncing_process(
    corpus: Corpus, workers: Workers, connection: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """Two syncs hand out the same documents at once (two hosts, say), and the first is
    abandoned part-way: every unit still runs once, and the second sync's result equals a
    clean run's."""
    kb = open_sync(corpus.manifest)
    source, reader = "files", kb.reader("files")
    refs = list(reader.list_documents())
    dispatcher = RedisDispatcher(redis_url, queue=QUEUE)
    collected: list[list[UnitResult]] = [[], []]

    def hand_out(slot: int, take: int | None) -> None:
        results = dispatcher.run(open_sync(corpus.manifest), source, refs, {}, "incremental")
        for unit in results:
            collected[slot].append(unit)
            if take is not None and len(collected[slot]) == take:
                return  # abandoned, like a killed process: nothing written

    workers.start("w1", "w2")
    threads = [
        threading.Thread(target=hand_out, args=(0, 3)),
        threading.Thread(target=hand_out, args=(1, None)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(collected[0]) == 3
    assert sorted(u.doc_id for u in collected[1]) == sorted(r.id for r in refs)
    assert all(u.write is not None and u.error is None for u in collected[1])

    units = finished_units(connection)
    assert len(units) == len(refs) == 12  # the same units, each run once
    # Each document's unit ran once: no two executions overlap or repeat.
    results = [j.return_value() for j in units]
    assert sorted(r["doc_id"] for r in results) == sorted(r.id for r in refs)

    # The real sync re-uses the finished units (nothing embedded again for `files`).
    report = open_sync(corpus.manifest, dispatcher=dispatcher).sync()
    assert len(finished_units(connection)) == 12 + 4  # only the repo's documents were new
    assert report.added == 16
    same_as_one_process(corpus.manifest, tmp_path, "reused")


def test_a_failing_unit_keeps_the_documents_previous_chunks(
    corpus: Corpus, workers: Workers, connection: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    open_sync(corpus.manifest).sync()
    before = {r.doc_id: r for r in open_sync(corpus.manifest).documents()}
    # A worker whose pipeline differs from the syncing process's must refuse the unit.
    corpus.write("doc3.md", doc("Doc 3", section("topic3 updated")))
    dispatcher = RedisDispatcher(redis_url, queue=QUEUE, retries=0)
    kb = open_sync(corpus.manifest, dispatcher=dispatcher)
    kb.pipeline_id = "a-pipeline-no-worker-has"  # as if this process chunked differently
    workers.start("w1")
    report = kb.sync(sources=["files"])
    assert report.failed == ["files"]
    (item,) = report.sources
    assert item.error is not None and "pipeline" in item.error and "doc" in item.error
    after = {r.doc_id: r for r in open_sync(corpus.manifest).documents()}
    assert after == before  # nothing lost, nothing half-written
    status = open_sync(corpus.manifest).status()
    assert status.stats is not None and status.stats.errors


def test_cli_sync_with_queue_and_worker_burst(
    corpus: Corpus, connection: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """``kb sync --queue`` waits for workers; a ``kb worker --burst`` started after it
    drains the default queue and exits."""
    manifest = tmp_path / "files-only.yaml"
    manifest.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
        "metadata: {name: files-only}\nspec:\n  sources:\n"
        f"    - {{name: files, type: LocalFiles, localFiles: {{paths: ['{corpus.files}']}}}}\n"
    )
    sync = subprocess.Popen(
        [*CLI, "kb", "sync", str(manifest), "--json", "--queue", redis_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    queue = Queue("aof-index-kb", connection=connection)
    while queue.count < 12:
        assert sync.poll() is None, sync.communicate()
        assert time.monotonic() < deadline, "the sync did not enqueue its 12 units"
        time.sleep(0.1)
    worker = subprocess.run(
        [*CLI, "kb", "worker", "--queue", redis_url, "--burst", "--name", "burst"],
        capture_output=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stderr.decode()
    out, err = sync.communicate(timeout=300)
    assert sync.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["added"] == 12 and report["embedded"] == report["chunks"] > 12
    units = finished_units(connection, "aof-index-kb")
    assert len(units) == 12 and {j.worker_name for j in units} == {"burst"}
    same_as_one_process(manifest, tmp_path, "cli")


def test_worker_without_a_queue_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AOF_INDEX_QUEUE_URL", raising=False)
    result = CliRunner().invoke(app, ["kb", "worker"])
    assert result.exit_code == 1
    assert "--queue redis://" in result.output and "AOF_INDEX_QUEUE_URL" in result.output
