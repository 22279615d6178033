"""GitLabReader against a local stand-in for GitLab's REST API v4.

Real: the reader, its HttpClient (httpx over real sockets), the shared text extraction and
path filter, and an HTTP server on 127.0.0.1 (``gitlab_server.FakeGitLab``). The server is a
stand-in for gitlab.com at its HTTP boundary, speaking the documented wire format of
docs.gitlab.com/ee/api (projects, repository tree with keyset pagination and ``Link``
headers, raw blobs, commits, ``PRIVATE-TOKEN`` authentication, ``401``/``404`` bodies,
``429`` with ``Retry-After`` and ``RateLimit-Reset``). It serves at most two tree entries a
page so pagination is exercised. Only ``sleep`` is replaced (through ``http_options``), so
rate-limit and retry waits are recorded instead of slept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from github_server import GitRepo, Symlink, blob_sha, json_reply
from gitlab_server import PROJECT_ID, PROJECT_PATH, FakeGitLab, serve_gitlab

from aof_index_readers.base import stable_id
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceRateLimitError,
    SourceUnavailableError,
)
from aof_index_readers.gitlab import GitLabReader

TOKEN = "glpat-s3cr3tT0kenValue"
FILES: dict[str, bytes | Symlink] = {
    "README.md": b"# Handbook\n\nWelcome.\n",
    "docs/guide.md": b"# Guide\n\nInstall it.\n",
    "docs/setup.txt": b"Run make.\n",
    "docs/diagram.svg.gz": b"\x1f\x8b\x08\x00binary",
    "docs/blob.dat": b"\x00\x01\x02",
    "docs/data": b"\x00\x01\x02 extension-less binary",
    "src/app.py": b"print('app')\n",
    "latest.md": Symlink("README.md"),
}


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    for server in serve_gitlab():
        server.refs["main"] = GitRepo(dict(FILES))
        server.token = TOKEN
        yield server


def make_reader(
    server: FakeGitLab,
    sleeps: list[float] | None = None,
    project: str | int = PROJECT_ID,
    **kwargs: Any,
) -> GitLabReader:
    options: dict[str, Any] = {"sleep": (sleeps if sleeps is not None else []).append}
    options.update(kwargs.pop("http_options", {}))
    kwargs.setdefault("token", TOKEN)
    return GitLabReader(
        project, base_url=server.base, source_name="handbook", http_options=options, **kwargs
    )


def files_of(reader: GitLabReader) -> dict[str, str]:
    """``{path: version}`` of a listing."""
    return {ref.metadata["path"]: ref.version for ref in reader.list_documents()}


def test_listing_follows_keyset_pages_with_stable_ids_and_blob_sha_versions(
    gitlab: FakeGitLab,
) -> None:
    reader = make_reader(gitlab)
    refs = {ref.metadata["path"]: ref for ref in reader.list_documents()}

    assert set(refs) == {
        "README.md",
        "docs/guide.md",
        "docs/setup.txt",
        "docs/data",
        "src/app.py",
    }
    guide = refs["docs/guide.md"]
    assert guide.id == stable_id("gitlab", f"127.0.0.1:{gitlab.port}", "42", "docs/guide.md")
    assert guide.version == blob_sha(FILES["docs/guide.md"])  # type: ignore[arg-type]
    assert guide.metadata["source"] == f"{gitlab.base}/{PROJECT_PATH}/-/blob/main/docs/guide.md"
    assert guide.metadata["title"] == "guide.md"
    tree_pages = gitlab.paths("/repository/tree")
    # 10 entries (folders included) at two a page; pages 2 to 5 come from the Link header.
    assert len(tree_pages) == 5
    assert "pagination=keyset" in tree_pages[0] and "recursive=true" in tree_pages[0]
    assert all("page_token=" in page for page in tree_pages[1:])
    assert gitlab.paths().count(f"/api/v4/projects/{PROJECT_ID}") == 1  # for the path
    skipped = {entry.what.rsplit("/", 1)[1]: entry.reason for entry in reader.skipped}
    assert skipped["latest.md"] == "symbolic link"
    assert skipped["diagram.svg.gz"].startswith("unsupported file type")
    assert skipped["blob.dat"].startswith("unsupported file type")
    assert gitlab.requests[0].headers["private-token"] == TOKEN


def test_a_project_path_is_url_encoded_and_needs_no_lookup(gitlab: FakeGitLab) -> None:
    reader = make_reader(gitlab, project=PROJECT_PATH)

    refs = list(reader.list_documents())

    assert all(path.startswith("/api/v4/projects/platform%2Fhandbook/") for path in gitlab.paths())
    assert refs[0].metadata["source"].startswith(f"{gitlab.base}/{PROJECT_PATH}/-/blob/main/")
    assert refs[0].id == stable_id(
        "gitlab", f"127.0.0.1:{gitlab.port}", PROJECT_PATH, refs[0].metadata["path"]
    )


def test_a_numeric_project_is_looked_up_once_for_its_path(gitlab: FakeGitLab) -> None:
    reader = make_reader(gitlab)
    list(reader.list_documents())
    list(reader.list_documents())

    lookups = [path for path in gitlab.paths() if path == f"/api/v4/projects/{PROJECT_ID}"]
    assert len(lookups) == 1


def test_load_reads_raw_blobs_and_skips_binary_content(gitlab: FakeGitLab) -> None:
    reader = make_reader(gitlab)
    documents = {doc.metadata["path"]: doc for doc in reader.load_data()}

    assert set(documents) == {"README.md", "docs/guide.md", "docs/setup.txt", "src/app.py"}
    guide = documents["docs/guide.md"]
    assert guide.text == "# Guide\n\nInstall it.\n"
    assert guide.metadata["title"] == "Guide"
    assert guide.metadata["source_type"] == "GitLab"
    assert guide.metadata["version"] == blob_sha(FILES["docs/guide.md"])  # type: ignore[arg-type]
    assert documents["docs/setup.txt"].metadata["title"] == "setup.txt"
    data = next(s for s in reader.skipped if s.what.endswith("/docs/data"))
    assert "binary" in data.reason
    sha = blob_sha(FILES["docs/guide.md"])  # type: ignore[arg-type]
    assert f"/api/v4/projects/{PROJECT_ID}/repository/blobs/{sha}/raw" in gitlab.paths()


def test_paths_filter(gitlab: FakeGitLab) -> None:
    assert set(files_of(make_reader(gitlab, paths=["docs/"]))) == {
        "docs/guide.md",
        "docs/setup.txt",
        "docs/data",
    }
    assert set(files_of(make_reader(gitlab, paths=["*.md"]))) == {"README.md", "docs/guide.md"}
    assert set(files_of(make_reader(gitlab, paths=["src/**"]))) == {"src/app.py"}


def test_files_over_the_size_limit_are_skipped(gitlab: FakeGitLab) -> None:
    gitlab.refs["main"].files["docs/big.md"] = b"# Big\n" + b"x" * 500
    reader = make_reader(gitlab, paths=["docs/*.md"], max_document_bytes=100)

    documents = reader.load_data()

    assert [doc.metadata["path"] for doc in documents] == ["docs/guide.md"]
    [big] = [s for s in reader.skipped if s.what.endswith("/docs/big.md")]
    assert "per-document limit of 100 bytes" in big.reason


def test_versions_change_only_for_edited_files(gitlab: FakeGitLab) -> None:
    before = {ref.metadata["path"]: ref for ref in make_reader(gitlab).list_documents()}
    files = gitlab.refs["main"].files
    files["docs/setup.txt"] = b"Run make install.\n"
    files["docs/extra.md"] = b"more\n"
    del files["src/app.py"]

    after = {ref.metadata["path"]: ref for ref in make_reader(gitlab).list_documents()}

    shared = before.keys() & after.keys()
    assert {p for p in shared if before[p].version != after[p].version} == {"docs/setup.txt"}
    assert all(before[p].id == after[p].id for p in shared)
    assert set(after) - set(before) == {"docs/extra.md"}
    assert set(before) - set(after) == {"src/app.py"}


def test_head_resolves_the_ref(gitlab: FakeGitLab) -> None:
    gitlab.refs["release/1.0"] = GitRepo({"README.md": b"old\n"})
    reader = make_reader(gitlab, ref="release/1.0")

    first = reader.head()

    assert first == gitlab.refs["release/1.0"].commit_sha() == reader.commit
    assert gitlab.paths()[-1] == f"/api/v4/projects/{PROJECT_ID}/repository/commits/release%2F1.0"
    assert reader.head() == first
    gitlab.refs["release/1.0"].files["README.md"] = b"new\n"
    assert reader.head() != first
    assert files_of(reader) == {"README.md": blob_sha(b"new\n")}


def test_missing_ref_or_project_names_what_to_check(gitlab: FakeGitLab) -> None:
    for reader in (make_reader(gitlab, ref="nope"), make_reader(gitlab, project="other/x")):
        with pytest.raises(SourceNotFoundError) as caught:
            list(reader.list_documents())
        message = str(caught.value)
        assert "gitlab.projectId" in message and "tokenSecretRef" in message
        assert repr(reader.ref) in message and repr(reader.project_id) in message
    with pytest.raises(SourceNotFoundError, match="Commit Not Found"):
        make_reader(gitlab, ref="nope").head()


def test_private_project_without_token(gitlab: FakeGitLab) -> None:
    gitlab.private = True

    with pytest.raises(SourceNotFoundError, match="none is set"):
        list(make_reader(gitlab, token=None).list_documents())


def test_rejected_token_is_an_auth_error(gitlab: FakeGitLab) -> None:
    with pytest.raises(SourceAuthError, match="401 Unauthorized") as caught:
        list(make_reader(gitlab, token="glpat-wrong").list_documents())
    assert "tokenSecretRef" in str(caught.value)


def too_many(retry_after: str, reset: float) -> Any:
    return json_reply(
        429,
        {"message": "Retry later"},
        {
            "Retry-After": retry_after,
            "RateLimit-Limit": "2000",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(int(reset)),
        },
    )


def test_429_waits_for_retry_after_then_goes_on(gitlab: FakeGitLab) -> None:
    gitlab.script("/repository/tree", too_many("1", time.time() + 1))
    sleeps: list[float] = []

    assert "docs/guide.md" in files_of(make_reader(gitlab, sleeps))

    assert sleeps == [1.0]


def test_429_resetting_too_late_raises(gitlab: FakeGitLab) -> None:
    reset = time.time() + 3600
    gitlab.script("/repository/tree", too_many("3600", reset))

    with pytest.raises(SourceRateLimitError) as caught:
        list(make_reader(gitlab).list_documents())

    assert caught.value.reset_at is not None and abs(caught.value.reset_at - reset) < 5


def test_server_errors_are_retried(gitlab: FakeGitLab) -> None:
    gitlab.script("/repository/blobs/", json_reply(500, {"message": "500 Internal Server Error"}))
    sleeps: list[float] = []

    documents = make_reader(gitlab, sleeps, paths=["README.md"]).load_data()

    assert [doc.text for doc in documents] == ["# Handbook\n\nWelcome.\n"]
    assert len(sleeps) == 1
    gitlab.script("/repository/tree", *[json_reply(503, {"message": "unavailable"})] * 2)
    with pytest.raises(SourceUnavailableError, match="503"):
        list(make_reader(gitlab, http_options={"max_retries": 1}).list_documents())


def test_the_token_never_appears_in_errors_or_logs(
    gitlab: FakeGitLab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gitlab.script("/repository/tree", too_many("1", 0), too_many("9999", 0))
    readers = [make_reader(gitlab), make_reader(gitlab, ref="nope"), make_reader(gitlab)]
    errors: list[SourceError] = []
    for reader in readers[:2]:
        with pytest.raises(SourceError) as caught:
            list(reader.list_documents())
        errors.append(caught.value)
    with pytest.raises(SourceAuthError) as rejected:
        list(make_reader(gitlab, token=f"{TOKEN}-old").list_documents())
    errors.append(rejected.value)
    documents = readers[2].load_data()

    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in repr(error)
        assert TOKEN not in str(error.__cause__ or "")
    assert caplog.records and TOKEN not in caplog.text
    assert all(TOKEN not in repr(reader) for reader in readers)
    assert documents and all(TOKEN not in str(doc.metadata) for doc in documents)
