"""GitReader against real git repositories made here with ``git init`` and commits.

Real: the ``git`` CLI, repositories, bare clones, fetches over ``file://`` URLs, a
``git http-backend`` (the real CGI program) served on 127.0.0.1 behind HTTP Basic auth by a
small threading ``http.server``. Standing in: the SSH client. ``GIT_SSH_COMMAND`` points at
a script that records the key file it was given (its mode and content) and then runs the
remote command (``git-upload-pack``) locally instead of on an SSH server.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aof_index_readers.base import stable_id
from aof_index_readers.errors import (
    SourceAuthError,
    SourceNotFoundError,
    SourceUnavailableError,
)
from aof_index_readers.git import GitReader

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Ada Author",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Author",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
USER, PASSWORD = "deploy", "s3cr3t-p4ss"


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=ENV,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.md").write_text("# Guide\n\nRestart the pods.\n")
    (repo / "docs" / "ops.txt").write_text("on-call rotation\n")
    (repo / "README.md").write_text("readme\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("print('hi')\n")
    (repo / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (repo / "data.txt").write_bytes(b"bin\x00ary")
    os.symlink("../../../etc/hostname", repo / "docs" / "link.md")
    commit(repo, "first")
    git(repo, "branch", "dev")
    return repo


def reader(origin: Path, cache: Path, **kwargs: object) -> GitReader:
    return GitReader(origin.as_uri(), cache_dir=cache, source_name="repo", **kwargs)  # type: ignore[arg-type]


def blob(repo: Path, path: str, rev: str = "HEAD") -> str:
    return git(repo, "rev-parse", f"{rev}:{path}")


def test_loads_text_files_with_metadata_and_skips_the_rest(origin: Path, tmp_path: Path) -> None:
    source = reader(origin, tmp_path / "cache")
    docs = {d.metadata["source"]: d for d in source.load_data()}
    assert set(docs) == {"docs/guide.md", "docs/ops.txt", "README.md", "src/app.py"}
    head = git(origin, "rev-parse", "HEAD")
    assert source.commit == head
    guide = docs["docs/guide.md"]
    assert guide.text == "# Guide\n\nRestart the pods.\n"
    assert guide.doc_id == stable_id("git", origin.as_uri(), "docs/guide.md")
    assert guide.metadata["version"] == blob(origin, "docs/guide.md")
    assert guide.metadata["title"] == "Guide"
    assert guide.metadata["commit"] == head
    assert guide.metadata["url"] == origin.as_uri()
    assert guide.metadata["author"] == "Ada Author"
    assert guide.metadata["last_modified"].endswith("+00:00")
    assert (guide.metadata["source_type"], guide.metadata["source_name"]) == ("Git", "repo")
    reasons = {s.what: s.reason for s in source.skipped}
    assert reasons["image.png"].startswith("unsupported file type")
    assert "NUL" in reasons["data.txt"]
    assert reasons["docs/link.md"].startswith("symlink")
    assert all("hostname" not in d.text for d in docs.values())


def test_ids_are_stable_across_clones(origin: Path, tmp_path: Path) -> None:
    first = {r.id: r.version for r in reader(origin, tmp_path / "a").list_documents()}
    second = {r.id: r.version for r in reader(origin, tmp_path / "b").list_documents()}
    assert first == second and len(first) == 5  # data.txt is only known binary once read


def test_fetch_picks_up_new_commits_and_only_edited_files_change_version(
    origin: Path, tmp_path: Path
) -> None:
    source = reader(origin, tmp_path / "cache")
    before = {r.metadata["source"]: r.version for r in source.list_documents()}
    old = source.commit
    (origin / "docs" / "ops.txt").write_text("on-call rotation, updated\n")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "edit ops", "--author", "Bo Editor <bo@example.com>")
    new = git(origin, "rev-parse", "HEAD")
    after = {r.metadata["source"]: r for r in source.list_documents()}
    assert source.commit == new != old
    changed = sorted(p for p in before if before[p] != after[p].version)
    assert changed == ["docs/ops.txt"]
    # author and last_modified come from the last commit touching each file
    assert after["docs/ops.txt"].metadata["author"] == "Bo Editor"
    assert after["docs/guide.md"].metadata["author"] == "Ada Author"
    (doc,) = source.load_documents([after["docs/ops.txt"]])
    assert doc.text == "on-call rotation, updated\n"
    assert doc.metadata["commit"] == new


def test_changes_since_reports_added_modified_deleted_and_renamed(
    origin: Path, tmp_path: Path
) -> None:
    source = reader(origin, tmp_path / "cache")
    list(source.list_documents())
    since = source.commit
    assert since is not None
    (origin / "docs" / "guide.md").write_text("# Guide\n\nDrain first.\n")  # modified
    (origin / "docs" / "new.md").write_text("brand new\n")  # added
    (origin / "README.md").unlink()  # deleted
    (origin / "src" / "app.py").rename(origin / "src" / "main.py")  # renamed
    (origin / "docs" / "ops.txt").unlink()
    os.symlink("guide.md", origin / "docs" / "ops.txt")  # no longer a readable file
    head = commit(origin, "changes")

    changes = source.changes_since(since)
    assert (changes.since, changes.commit, source.commit) == (since, head, head)
    assert [r.metadata["source"] for r in changes.added] == ["docs/new.md", "src/main.py"]
    assert [r.metadata["source"] for r in changes.modified] == ["docs/guide.md"]
    url = origin.as_uri()
    assert set(changes.deleted) == {
        stable_id("git", url, "README.md"),
        stable_id("git", url, "src/app.py"),
        stable_id("git", url, "docs/ops.txt"),
    }
    loaded = source.load_documents([*changes.added, *changes.modified])
    docs = {d.metadata["source"]: d.text for d in loaded}
    assert docs["docs/guide.md"] == "# Guide\n\nDrain first.\n"
    assert not source.changes_since(head)  # nothing since the last commit


def test_changes_since_an_unknown_commit_asks_for_a_full_listing(
    origin: Path, tmp_path: Path
) -> None:
    with pytest.raises(SourceNotFoundError, match="full listing"):
        reader(origin, tmp_path / "cache").changes_since("0" * 40)


def test_unknown_ref_names_the_ref_and_the_branches(origin: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError) as err:
        reader(origin, tmp_path / "cache", ref="release-9").load_data()
    message = str(err.value)
    assert "'release-9'" in message and "dev, main" in message and "'repo'" in message


def test_ref_may_be_a_tag_a_branch_or_a_commit(origin: Path, tmp_path: Path) -> None:
    first = git(origin, "rev-parse", "HEAD")
    git(origin, "tag", "v1")
    (origin / "README.md").write_text("readme v2\n")
    commit(origin, "v2")
    cache = tmp_path / "cache"
    for ref in ("v1", first, first[:10], "dev"):
        source = reader(origin, cache, ref=ref, paths=["README.md"])
        (doc,) = source.load_data()
        assert doc.text == "readme\n" and source.commit == first, ref
    (latest,) = reader(origin, cache, paths=["README.md"]).load_data()
    assert latest.text == "readme v2\n"


def test_paths_and_exclude_select_files(origin: Path, tmp_path: Path) -> None:
    source = reader(origin, tmp_path / "cache", paths=["docs/", "*.py"], exclude=["ops.*"])
    assert sorted(d.metadata["source"] for d in source.load_data()) == [
        "docs/guide.md",
        "src/app.py",
    ]


def test_files_over_the_limit_are_skipped_before_reading(origin: Path, tmp_path: Path) -> None:
    source = reader(origin, tmp_path / "cache", max_document_bytes=10)
    assert [d.metadata["source"] for d in source.load_data()] == ["README.md"]  # 7 bytes
    reasons = {s.what: s.reason for s in source.skipped}
    assert "per-document limit" in reasons["docs/guide.md"]


def test_a_dotdot_tree_entry_is_never_read(origin: Path, tmp_path: Path) -> None:
    """A crafted tree may hold a ``..`` entry; the reader skips it rather than use the path."""
    secret = git(origin, "hash-object", "-w", "--stdin", stdin="crafted\n")
    inner = git(origin, "mktree", stdin=f"100644 blob {secret}\tescape.md\n")
    readme = blob(origin, "README.md")
    root = git(origin, "mktree", stdin=f"040000 tree {inner}\t..\n100644 blob {readme}\tok.md\n")
    crafted = git(origin, "commit-tree", root, "-p", "HEAD", "-m", "crafted")
    git(origin, "update-ref", "refs/heads/crafted", crafted)
    source = reader(origin, tmp_path / "cache", ref="crafted")
    assert [d.metadata["source"] for d in source.load_data()] == ["ok.md"]
    assert [s.what for s in source.skipped] == ["../escape.md"]
    assert "unsafe path" in source.skipped[0].reason


def test_missing_and_unreachable_repositories(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="no repository there"):
        GitReader((tmp_path / "nothing").as_uri(), cache_dir=tmp_path / "c").load_data()
    assert not list((tmp_path / "c").iterdir())  # no empty clone left behind
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnavailableError, match="could not be reached"):
        GitReader(f"http://127.0.0.1:{port}/r.git", cache_dir=tmp_path / "c").load_data()


# --- HTTPS-style credentials: a real git http-backend behind Basic auth -----------------------


class _GitHttp(BaseHTTPRequestHandler):
    project_root: Path
    backend: Path
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _serve(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_USER": USER,
            "REMOTE_ADDR": "127.0.0.1",
        }
        out = subprocess.run(
            [str(self.backend)], input=body, env=env, capture_output=True, check=True
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.split(b":", 1) for line in head.split(b"\r\n") if b":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == b"status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != b"status":
                self.send_header(key.decode(), value.decode().strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def http_url(origin: Path) -> Iterator[str]:
    exec_path = Path(git(origin, "--exec-path"))
    attributes = {"project_root": origin.parent, "backend": exec_path / "git-http-backend"}
    handler = type("Handler", (_GitHttp,), attributes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{origin.name}"
    finally:
        server.shutdown()
        server.server_close()


def _files_contain(folder: Path, secret: str) -> bool:
    return any(secret.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_https_username_and_password_are_accepted_and_never_stored(
    http_url: str, tmp_path: Path
) -> None:
    source = GitReader(http_url, username=USER, password=PASSWORD, cache_dir=tmp_path / "c")
    assert {d.metadata["source"] for d in source.load_data()} >= {"docs/guide.md"}
    assert not _files_contain(tmp_path / "c", PASSWORD)
    assert git(source.repository, "config", "remote.origin.url") == http_url
    assert PASSWORD not in repr(source)


def test_https_wrong_password_is_an_auth_error_without_the_password(
    http_url: str, tmp_path: Path
) -> None:
    wrong = "wr0ng-pass"
    source = GitReader(http_url, username=USER, password=wrong, cache_dir=tmp_path / "c")
    with pytest.raises(SourceAuthError) as err:
        source.load_data()
    assert wrong not in str(err.value) and "credentialsSecretRef" in str(err.value)
    with pytest.raises(SourceAuthError):  # no credentials at all: git may not prompt
        GitReader(http_url, cache_dir=tmp_path / "c").load_data()


def test_credentials_in_the_url_are_taken_out_of_it(http_url: str, tmp_path: Path) -> None:
    with_credentials = http_url.replace("http://", f"http://{USER}:{PASSWORD}@")
    source = GitReader(with_credentials, cache_dir=tmp_path / "c")
    docs = source.load_data()
    assert source.url == http_url
    assert docs[0].doc_id == stable_id("git", http_url, docs[0].metadata["source"])
    assert not _files_contain(tmp_path / "c", PASSWORD)


# --- SSH keys: the key file handed to the SSH command -------------------------------------

FAKE_SSH = """#!{python}
import json, os, stat, subprocess, sys
args = sys.argv[1:]
if "-G" in args:  # git probing which SSH variant this is
    sys.exit(0)
key = args[args.index("-i") + 1]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps({{
        "args": args,
        "mode": stat.S_IMODE(os.stat(key).st_mode),
        "key": open(key).read(),
    }}) + "\\n")
if os.environ.get("FAKE_SSH_DENY"):
    sys.stderr.write("git@example.invalid: Permission denied (publickey).\\n")
    sys.exit(255)
sys.exit(subprocess.call(["sh", "-c", args[-1]]))
"""
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEgcmVhbCBrZXk=\n-----END OPENSSH PRIVATE KEY-----"


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake-ssh"
    script.write_text(FAKE_SSH.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "ssh-log.jsonl"
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return log


def test_ssh_key_is_a_0600_file_while_git_runs_and_gone_after(
    origin: Path, tmp_path: Path, fake_ssh: Path
) -> None:
    source = GitReader(f"ssh://git@example.invalid{origin}", ssh_key=KEY, cache_dir=tmp_path / "c")
    assert "docs/guide.md" in {d.metadata["source"] for d in source.load_data()}
    calls = [json.loads(line) for line in fake_ssh.read_text().splitlines()]
    assert calls, "git never ran the SSH command"
    for call in calls:
        assert call["mode"] == stat.S_IRUSR | stat.S_IWUSR
        assert call["key"] == KEY + "\n"
        assert "IdentitiesOnly=yes" in call["args"]
        key_file = Path(call["args"][call["args"].index("-i") + 1])
        assert not key_file.exists()
        assert not key_file.parent.exists()


def test_ssh_key_rejected_is_an_auth_error(
    origin: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SSH_DENY", "1")
    source = GitReader(f"ssh://git@example.invalid{origin}", ssh_key=KEY, cache_dir=tmp_path / "c")
    with pytest.raises(SourceAuthError, match="Permission denied"):
        source.load_data()
    (call,) = [json.loads(line) for line in fake_ssh.read_text().splitlines()]
    assert not Path(call["args"][call["args"].index("-i") + 1]).exists()
