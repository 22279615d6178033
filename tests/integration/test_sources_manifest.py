"""KnowledgeBase sources → readers (``aof_index.build.sources``) and ``aof-index sources list``.

Real parts: files on disk, a git repository made with ``git``, a table in the real
PostgreSQL on 127.0.0.1:5432, and the
URL reader against a real HTTP server on 127.0.0.1. Secrets come from ``AOF_SECRET_*``
environment variables, as outside a cluster. The hosted services (GitHub, GitLab,
Confluence, Notion, S3) are only built from their manifests here, never contacted: their
readers are tested against local stand-ins in ``tests/unit/readers``.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from aof_index.build.sources import (
    ALLOW_PRIVATE_ANNOTATION,
    build_reader,
    build_readers,
)
from aof_index.cli.main import app
from aof_index.errors import ManifestError
from aof_index.spec import KnowledgeBase
from aof_index.spec.loader import load_knowledge_base
from aof_index_readers.errors import BlockedAddressError

pytestmark = pytest.mark.integration

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sources.md"


def _kb(sources: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> str:
    metadata: dict[str, Any] = {"name": "kb"}
    if annotations:
        metadata["annotations"] = annotations
    return yaml.safe_dump(
        {
            "apiVersion": "aof.agenticops.org/v1alpha1",
            "kind": "KnowledgeBase",
            "metadata": metadata,
            "spec": {"sources": sources},
        }
    )


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def schema() -> Iterator[str]:
    """A PostgreSQL schema of this test's own with a ``known_errors`` table, dropped after."""
    name = f"sources_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {name}")
        db.execute(f"CREATE TABLE {name}.known_errors (id int PRIMARY KEY, title text, fix text)")
        db.execute(
            f"INSERT INTO {name}.known_errors VALUES "
            "(1, 'OOMKilled', 'raise the limit'), (2, 'CrashLoopBackOff', 'read the logs')"
        )
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schema: str) -> Path:
    """A manifest folder with local docs and a git repository; a table in PostgreSQL."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Alpha\n\nfirst")
    (docs / "b.md").write_text("# Bravo\n\nsecond")
    (docs / "logo.png").write_bytes(b"\x89PNG\r\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    (repo / "guide.md").write_text("# Guide\n\nread me")
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "one", cwd=repo)
    monkeypatch.setenv("AOF_SECRET_KEDB_URL", PG_URL)
    (tmp_path / "kb.yaml").write_text(
        _kb(
            [
                {"name": "docs", "type": "LocalFiles", "localFiles": {"paths": ["docs/"]}},
                {"name": "repo", "type": "Git", "git": {"url": repo.as_uri(), "ref": "main"}},
                {
                    "name": "kedb",
                    "type": "Database",
                    "database": {
                        "type": "PostgreSQL",
                        "connectionSecretRef": {"name": "kedb", "key": "url"},
                        "query": f"SELECT id, title, fix FROM {schema}.known_errors",
                        "columns": ["title", "fix"],
                    },
                },
                {
                    "name": "off",
                    "type": "LocalFiles",
                    "enabled": False,
                    "localFiles": {"paths": ["docs/a.md"]},
                },
            ]
        )
    )
    return tmp_path


def _list(*args: str) -> Any:
    result = runner.invoke(app, ["sources", "list", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sources_list_previews_every_enabled_source(workspace: Path) -> None:
    rows = _list(str(workspace / "kb.yaml"))
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        assert {"id", "version", "source_name", "source"} <= set(row)
        by_source.setdefault(row["source_name"], []).append(row)
    assert sorted(by_source) == ["docs", "kedb", "repo"]  # "off" is disabled
    assert sorted(Path(r["source"]).name for r in by_source["docs"]) == ["a.md", "b.md"]
    assert [r["source"] for r in by_source["repo"]] == ["guide.md"]
    assert len(by_source["kedb"]) == 2
    # The listing is what a load gives: same ids, same versions.
    for source, reader in build_readers(workspace / "kb.yaml"):
        loaded = {d.doc_id: d.metadata["version"] for d in reader.load_data()}
        listed = {r["id"]: r["version"] for r in by_source[str(source.name)]}
        assert loaded == listed


def test_sources_list_follows_changes_and_filters(workspace: Path) -> None:
    before = {r["id"]: r["version"] for r in _list(str(workspace / "kb.yaml"), "-s", "repo")}
    (workspace / "repo" / "guide.md").write_text("# Guide\n\nchanged")
    (workspace / "repo" / "new.md").write_text("# New")
    _git("add", "-A", cwd=workspace / "repo")
    _git("commit", "-q", "-m", "two", cwd=workspace / "repo")
    after = {r["id"]: r["version"] for r in _list(str(workspace / "kb.yaml"), "-s", "repo")}
    assert set(before) < set(after)
    changed = [i for i in before if before[i] != after[i]]
    assert len(changed) == 1
    # A disabled source is listed when named; --limit caps each source.
    assert len(_list(str(workspace / "kb.yaml"), "-s", "off")) == 1
    assert len(_list(str(workspace / "kb.yaml"), "--limit", "1")) == 3


def test_one_failing_source_does_not_hide_the_others(workspace: Path) -> None:
    manifest = workspace / "broken.yaml"
    manifest.write_text(
        _kb(
            [
                {
                    "name": "gone",
                    "type": "Git",
                    "git": {"url": (workspace / "missing").as_uri()},
                },
                {"name": "docs", "type": "LocalFiles", "localFiles": {"paths": ["docs/"]}},
            ]
        )
    )
    result = runner.invoke(app, ["sources", "list", str(manifest), "--json"])
    assert result.exit_code == 1
    assert "source 'gone'" in result.stderr
    assert {row["source_name"] for row in json.loads(result.stdout)} == {"docs"}


def test_unknown_source_name_lists_the_known_ones(workspace: Path) -> None:
    result = runner.invoke(app, ["sources", "list", str(workspace / "kb.yaml"), "-s", "nope"])
    assert result.exit_code == 1
    assert "no source named 'nope'" in result.stderr
    assert "docs, repo, kedb, off" in result.stderr


def test_missing_required_field_names_it(tmp_path: Path) -> None:
    kb = load_knowledge_base(_kb([{"name": "gh", "type": "GitHub", "github": {"repo": "r"}}]))
    with pytest.raises(ManifestError, match=r"spec\.sources\[0\]\.github\.owner: is required"):
        build_reader(kb, "gh")


def test_a_setting_the_reader_refuses_names_the_section(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = load_knowledge_base(
        _kb(
            [
                {
                    "name": "db",
                    "type": "Database",
                    "database": {
                        "type": "PostgreSQL",
                        "connectionSecretRef": {"name": "kedb", "key": "url"},
                        "query": "DELETE FROM known_errors",
                    },
                }
            ]
        )
    )
    with pytest.raises(ManifestError, match=r"spec\.sources\[0\]\.database: .*query"):
        build_reader(kb, "db")


def test_header_templates_resolve_secrets(
    monkeypatch: pytest.MonkeyPatch, json_api: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = json_api
    monkeypatch.setenv("AOF_SECRET_CATALOG_API_KEY", "s3cr3t")
    monkeypatch.setenv("AOF_SECRET_CATALOG_API_TOKEN", "t0ken")
    api = {
        "endpoint": url,
        "headers": {"X-Api-Key": "key {{ .secrets.catalog-api.key }}!"},
        "authSecretRef": {"name": "catalog-api", "key": "token"},
        "jsonPath": "$.items[*]",
    }
    kb = load_knowledge_base(
        _kb(
            [{"name": "api", "type": "API", "api": api}],
            annotations={ALLOW_PRIVATE_ANNOTATION: "127.0.0.1"},
        )
    )
    documents = build_reader(kb, "api").load_data()
    assert [d.metadata["title"] for d in documents] == ["checkout", "payments"]
    assert seen[-1]["x-api-key"] == "key s3cr3t!"
    assert seen[-1]["authorization"] == "Bearer t0ken"
    no_key = load_knowledge_base(
        _kb([{"name": "api", "type": "API", "api": {**api, "headers": {"A": "{{.secrets.x}}"}}}])
    )
    with pytest.raises(ManifestError, match=r"api\.headers\.A: .*NAME\.KEY"):
        build_reader(no_key, "api")


@pytest.fixture
def json_api() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A JSON API on 127.0.0.1 that records the headers of each request."""
    seen: list[dict[str, str]] = []
    body = json.dumps(
        {"items": [{"id": 1, "title": "checkout"}, {"id": 2, "title": "payments"}]}
    ).encode()

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Api) as base:
        yield base + "/services", seen


@contextmanager
def _serving(handler: Any) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<html><title>Home</title><body><p>hello</p></body></html>")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Quiet) as base:
        yield base + "/index.html"


def test_private_addresses_need_an_explicit_allowance(site: str) -> None:
    def reader(url: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
        kb = load_knowledge_base(_kb([{"name": "web", "type": "URL", "url": url}], annotations))
        return build_reader(kb, "web")

    with pytest.raises(BlockedAddressError, match="loopback"):
        list(reader({"urls": [site]}).list_documents())
    allowed_by_domain = reader({"urls": [site], "allowedDomains": ["127.0.0.1"]})
    assert [d.metadata["title"] for d in allowed_by_domain.load_data()] == ["Home"]
    allowed_by_annotation = reader(
        {"urls": [site]}, annotations={ALLOW_PRIVATE_ANNOTATION: "10.0.0.0/8, 127.0.0.0/8"}
    )
    assert len(allowed_by_annotation.load_data()) == 1


def _doc_examples() -> list[str]:
    return re.findall(r"```yaml\n(apiVersion.*?)```", DOCS.read_text(), flags=re.S)


def test_every_example_manifest_in_the_docs_builds_its_reader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    examples = _doc_examples()
    assert len(examples) == 10
    for var in (
        "GIT_CREDS_USERNAME",
        "GIT_CREDS_TOKEN",
        "GITHUB_TOKEN_TOKEN",
        "GITLAB_TOKEN_TOKEN",
        "CONFLUENCE_TOKEN_TOKEN",
        "NOTION_TOKEN_TOKEN",
        "S3_CREDS_ACCESS_KEY",
        "S3_CREDS_SECRET_KEY",
        "CATALOG_API_KEY",
    ):
        monkeypatch.setenv(f"AOF_SECRET_{var}", "x")
    monkeypatch.setenv("AOF_SECRET_KEDB_DB_URL", "postgresql://kedb@127.0.0.1:5432/kedb")
    types = set()
    for text in examples:
        kb = load_knowledge_base(text)
        assert isinstance(kb, KnowledgeBase)
        (source,) = kb.spec.sources or []
        reader = build_reader(kb, source, base_dir=tmp_path, home=tmp_path)
        assert reader.source_type == source.type
        assert reader.source_name == source.name
        types.add(source.type)
    assert len(types) == 10
