"""The HTTP API of ``aof-index kb serve``, served by a real uvicorn on 127.0.0.1.

Real: uvicorn and Starlette on a free loopback port, httpx as the client, the schedulers and
syncs over a LocalFiles folder and a ``git`` repository made here (cloned through a
``file://localhost/...`` URL, so that a GitHub push payload can name it), the embedded
default Memory with the local MiniLM model, and GitHub-signed webhook deliveries
(HMAC-SHA256 of the body with the shared secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from kb_corpus import git
from typer.testing import CliRunner

from aof_index.cli.main import app as cli
from aof_index.knowledge.scheduler import SyncScheduler
from aof_index.server.app import create_app
from aof_index.server.serve import build_schedulers, build_webhooks, open_knowledge_bases

pytestmark = pytest.mark.slow

SECRET = "s3cret-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    manifest: Path
    repo: Path
    repo_url: str
    schedulers: dict[str, SyncScheduler]
    client: httpx.Client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """One KnowledgeBase (a LocalFiles folder, a git repository; webhook schedule) served
    by ``kb serve``'s own building blocks on a real uvicorn."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "dns.md").write_text("# DNS\n\nThe dns runbook: check coredns and ndots.\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "etcd.md").write_text("# etcd\n\nThe etcd runbook: defragment when full.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "add")
    repo_url = f"file://localhost{repo}"
    manifest = tmp_path / "kb.yaml"
    manifest.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
        "metadata: {name: ops}\nspec:\n  sources:\n"
        "    - {name: files, type: LocalFiles, localFiles: {paths: [files]}}\n"
        f"    - {{name: repo, type: Git, git: {{url: '{repo_url}', ref: main}}}}\n"
        "  indexing:\n"
        f"    schedule: {{type: webhook, webhook: {{secret: {SECRET}}}}}\n"
        "  sync: {onStartup: false}\n"
    )
    syncs, locks = open_knowledge_bases([manifest])
    schedulers = build_schedulers(syncs, locks)
    webhooks = build_webhooks(syncs)
    assert list(webhooks) == ["ops"] and webhooks["ops"].path == "/webhooks/default/ops"
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(schedulers, webhooks=webhooks),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    for scheduler in schedulers.values():
        scheduler.start()
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield Served(manifest, repo, repo_url, schedulers, client)
    server.should_exit = True
    thread.join(timeout=30)
    for scheduler in schedulers.values():
        assert scheduler.stop(timeout=120)


API = "/api/v1/knowledgebases"


def test_sync_then_status_and_documents(served: Served) -> None:
    client, scheduler = served.client, served.schedulers["ops"]
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["knowledgeBases"]["ops"]["schedule"] == "webhook"
    before = client.get(f"{API}/ops/status").json()
    assert before["ready"] is False and before["stats"]["totalDocuments"] == 0

    answer = client.post(f"{API}/ops/sync", json={"sources": ["files"]})
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] is True and answer.json()["queued"] == ["files"]
    assert answer.json()["mode"] == "incremental"
    record = scheduler.wait_for_run(after=0, timeout=120)
    assert record.reason == "HTTP API" and record.sources == ("files",) and record.ok

    status = client.get(f"{API}/ops/status")
    assert status.status_code == 200
    block = status.json()
    assert block["ready"] is True
    assert block["stats"]["totalDocuments"] == 1 and block["stats"]["lastSyncStatus"] == "success"
    by_source = {s["name"]: s for s in block["sourceStatus"]}
    assert by_source["files"]["documentsIndexed"] == 1 and by_source["files"]["status"] == "ready"
    # exactly what `aof-index kb status --json` prints
    result = CliRunner().invoke(cli, ["kb", "status", str(served.manifest), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == block

    documents = client.get(f"{API}/ops/documents")
    assert documents.status_code == 200
    rows = documents.json()
    assert [(r["source"], Path(r["location"]).name) for r in rows] == [("files", "dns.md")]
    assert rows[0]["chunks"] >= 1

    # no body: every enabled source, the default mode; a body can ask for a full re-index
    answer = client.post(f"{API}/ops/sync")
    assert answer.status_code == 202 and answer.json()["queued"] == ["files", "repo"]
    scheduler.wait_for_run(after=1, timeout=120)
    answer = client.post(f"{API}/ops/sync", json={"sources": ["files"], "mode": "full"})
    assert answer.status_code == 202 and answer.json()["mode"] == "full"
    record = scheduler.wait_for_run(after=2, timeout=120)
    assert record.mode == "full" and record.report is not None and record.report.updated == 1
    assert client.get(f"{API}/ops/status").json()["stats"]["totalDocuments"] == 2


def test_unknown_knowledge_base_and_bad_requests(served: Served) -> None:
    client = served.client
    for method, path in (
        ("POST", f"{API}/nope/sync"),
        ("GET", f"{API}/nope/status"),
        ("GET", f"{API}/nope/documents"),
    ):
        answer = client.request(method, path)
        assert answer.status_code == 404, path
        assert answer.json() == {
            "error": "no KnowledgeBase named 'nope'; knowledge bases: ops",
            "knowledgeBases": ["ops"],
        }

    bad_mode = client.post(f"{API}/ops/sync", json={"mode": "fast"})
    assert bad_mode.status_code == 400
    assert bad_mode.json() == {
        "error": "mode must be one of full, incremental, differential (got 'fast')",
        "field": "mode",
        "allowed": ["full", "incremental", "differential"],
    }
    bad_source = client.post(f"{API}/ops/sync", json={"sources": ["files", "wiki"]})
    assert bad_source.status_code == 400
    assert bad_source.json()["field"] == "sources"
    assert bad_source.json()["allowed"] == ["files", "repo"]
    assert "no source named 'wiki'" in bad_source.json()["error"]
    empty = client.post(f"{API}/ops/sync", json={"sources": []})
    assert empty.status_code == 400 and empty.json()["field"] == "sources"
    unknown_field = client.post(f"{API}/ops/sync", json={"source": "files"})
    assert unknown_field.status_code == 400 and unknown_field.json()["field"] == "source"
    not_json = client.post(
        f"{API}/ops/sync", content=b"{mode: full", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    assert client.get(f"{API}/ops/sync").status_code == 405
    assert served.schedulers["ops"].runs == 0 and served.schedulers["ops"].pending is None


def signed_push(repo_url: str, *, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "ref": "refs/heads/main",
            "repository": {
                "full_name": "acme/repo",
                "clone_url": repo_url,
                "default_branch": "main",
            },
        }
    ).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
    }
    return body, headers


def test_github_push_webhook_syncs_the_affected_source(served: Served) -> None:
    client, scheduler = served.client, served.schedulers["ops"]
    body, headers = signed_push(served.repo_url)
    answer = client.post("/webhooks/default/ops", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": True, "sources": ["repo"]}
    record = scheduler.wait_for_run(after=0, timeout=120)
    assert record.reason == f"webhook github {headers['X-GitHub-Delivery']}"
    assert record.sources == ("repo",) and record.mode == "incremental" and record.ok
    rows = served.client.get(f"{API}/ops/documents").json()
    assert [(r["source"], Path(r["location"]).name) for r in rows] == [("repo", "etcd.md")]

    # the same delivery again: refused as a replay, nothing queued
    again = client.post("/webhooks/default/ops", content=body, headers=headers)
    assert again.status_code == 409 and "error" in again.json()
    # a wrong signature: 401
    forged, forged_headers = signed_push(served.repo_url, secret="wrong")
    answer = client.post("/webhooks/default/ops", content=forged, headers=forged_headers)
    assert answer.status_code == 401 and "error" in answer.json()
    # a genuine delivery that affects no source (a GitHub ping)
    ping = b'{"zen": "Keep it logically awesome."}'
    ping_headers = {
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(SECRET.encode(), ping, hashlib.sha256).hexdigest(),
    }
    answer = client.post("/webhooks/default/ops", content=ping, headers=ping_headers)
    assert answer.status_code == 200
    assert answer.json() == {"accepted": False, "reason": "no source affected"}
    time.sleep(0.5)
    assert scheduler.runs == 1 and scheduler.pending is None and not scheduler.running


def test_kb_serve_cli_schedules_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "dns.md").write_text("# DNS\n\nThe dns runbook: check coredns and ndots.\n")
    manifest = tmp_path / "kb.yaml"
    manifest.write_text(
        "apiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
        "metadata: {name: runbooks}\nspec:\n  sources:\n"
        "    - {name: files, type: LocalFiles, localFiles: {paths: [files]}}\n"
        "  indexing:\n    schedule: {type: cron, cron: '0 */6 * * *'}\n"
        "---\napiVersion: aof.agenticops.org/v1alpha1\nkind: KnowledgeBase\n"
        "metadata: {name: notes}\nspec:\n  sources:\n"
        "    - {name: files, type: LocalFiles, localFiles: {paths: [files]}}\n"
        "  sync: {onStartup: false}\n"
    )
    port = free_port()
    command = [str(Path(sys.executable).parent / "aof-index"), "kb", "serve", str(manifest)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.communicate()
                try:
                    health = client.get("/healthz").json()["knowledgeBases"]
                    if health["runbooks"]["runs"] >= 1:  # its onStartup sync is done
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "kb serve did not come up"
                time.sleep(0.2)
            assert health["notes"]["runs"] == 0 and health["runbooks"]["schedule"] == "cron"
            block = client.get(f"{API}/runbooks/status").json()
            assert block["stats"]["totalDocuments"] == 1
            assert client.post(f"{API}/notes/sync").status_code == 202
            while client.get("/healthz").json()["knowledgeBases"]["notes"]["runs"] < 1:
                assert time.monotonic() < deadline, "the requested sync did not run"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "runbooks: cron '0 */6 * * *', next run " in err and "sync on startup" in err
    assert "notes: manual (syncs on request)" in err
    assert "notes: sync #1 (HTTP API" in err
    assert err.rstrip().endswith("stopped")
