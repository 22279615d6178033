"""GitHubReader against a local stand-in for GitHub's REST v3 and GraphQL APIs.

Real: the reader, its HttpClient (httpx over real sockets), the shared text extraction and
path filter, and an HTTP server on 127.0.0.1 (``github_server.FakeGitHub``). The server is a
stand-in for api.github.com at its HTTP boundary: it speaks the documented wire format of
docs.github.com/en/rest (git trees and blobs, commits with ``application/vnd.github.sha``,
issues and comments with ``Link`` pagination, ``ETag``/``304``, ``X-RateLimit-*`` headers,
``401 Bad credentials`` and ``404 Not Found`` bodies) and of docs.github.com/en/graphql
(discussions with cursor pagination, ``errors`` arrays with HTTP 200). It serves at most two
items a page so pagination is exercised. Only ``sleep`` is replaced (through
``http_options``), so rate-limit and retry waits are recorded instead of slept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from github_server import (
    OWNER,
    REPO,
    FakeGitHub,
    GitRepo,
    Symlink,
    blob_sha,
    json_reply,
    serve_github,
)
from site_server import Reply

from aof_index_readers.base import stable_id
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourceRateLimitError,
    SourceUnavailableError,
)
from aof_index_readers.github import GitHubReader, graphql_url, web_url
from aof_index_readers.paths import PathFilter

TOKEN = "ghp_s3cr3tT0kenValue"
FILES: dict[str, bytes | Symlink] = {
    "README.md": b"# Handbook\n\nWelcome.\n",
    "docs/guide.md": b"# Guide\n\nInstall it.\n",
    "docs/api/reference.rst": b"Reference\n=========\n\nCalls.\n",
    "docs/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00binary",
    "docs/notes.txt": b"looks like text\x00but is not",
    "src/main.py": b"print('hi')\n",
    "src/lib/util.py": b"def util():\n    return 1\n",
    "link.md": Symlink("README.md"),
}


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    for server in serve_github():
        server.branches["main"] = GitRepo(dict(FILES))
        server.token = TOKEN
        yield server


def make_reader(
    server: FakeGitHub, sleeps: list[float] | None = None, **kwargs: Any
) -> GitHubReader:
    options: dict[str, Any] = {"sleep": (sleeps if sleeps is not None else []).append}
    options.update(kwargs.pop("http_options", {}))
    kwargs.setdefault("token", TOKEN)
    return GitHubReader(
        OWNER, REPO, base_url=server.api, source_name="handbook", http_options=options, **kwargs
    )


def files_of(reader: GitHubReader) -> dict[str, str]:
    """``{path: version}`` of the file refs a listing yields."""
    return {
        ref.metadata["path"]: ref.version
        for ref in reader.list_documents()
        if "path" in ref.metadata
    }


# --- files -------------------------------------------------------------------------------


def test_listing_is_one_tree_request_with_stable_ids_and_blob_sha_versions(
    github: FakeGitHub,
) -> None:
    reader = make_reader(github)
    refs = {ref.metadata["path"]: ref for ref in reader.list_documents()}

    assert set(refs) == {
        "README.md",
        "docs/guide.md",
        "docs/api/reference.rst",
        "docs/notes.txt",
        "src/main.py",
        "src/lib/util.py",
    }
    host = f"127.0.0.1:{github.port}"
    guide = refs["docs/guide.md"]
    assert guide.id == stable_id("github", host, f"{OWNER}/{REPO}", "docs/guide.md")
    assert guide.version == blob_sha(FILES["docs/guide.md"])  # type: ignore[arg-type]
    assert guide.metadata["source"] == github.web(f"{OWNER}/{REPO}/blob/main/docs/guide.md")
    assert guide.metadata["title"] == "guide.md"
    assert github.paths("/git/") == [f"/api/v3/repos/{OWNER}/{REPO}/git/trees/main?recursive=1"]
    # The image is left out by name (never fetched), the symlink as a link.
    skipped = {entry.what: entry.reason for entry in reader.skipped}
    assert skipped[github.web(f"{OWNER}/{REPO}/blob/main/docs/logo.png")].startswith(
        "unsupported file type"
    )
    assert skipped[github.web(f"{OWNER}/{REPO}/blob/main/link.md")] == "symbolic link"


def test_requests_carry_githubs_headers(github: FakeGitHub) -> None:
    list(make_reader(github).list_documents())

    headers = github.requests[-1].headers
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["authorization"] == f"Bearer {TOKEN}"


def test_load_reads_blobs_and_skips_binary_content(github: FakeGitHub) -> None:
    reader = make_reader(github)
    documents = {doc.metadata["path"]: doc for doc in reader.load_data()}

    assert set(documents) == {
        "README.md",
        "docs/guide.md",
        "docs/api/reference.rst",
        "src/main.py",
        "src/lib/util.py",
    }
    guide = documents["docs/guide.md"]
    assert guide.text == "# Guide\n\nInstall it.\n"
    assert guide.metadata["title"] == "Guide"  # the Markdown heading
    assert guide.metadata["source_type"] == "GitHub"
    assert guide.metadata["source_name"] == "handbook"
    assert guide.metadata["version"] == blob_sha(FILES["docs/guide.md"])  # type: ignore[arg-type]
    assert guide.metadata["author"] is None and guide.metadata["last_modified"] is None
    notes = github.web(f"{OWNER}/{REPO}/blob/main/docs/notes.txt")
    assert any(s.what == notes and "binary" in s.reason for s in reader.skipped)


def test_paths_filter_prefixes_and_globs(github: FakeGitHub) -> None:
    assert set(files_of(make_reader(github, paths=["docs/"]))) == {
        "docs/guide.md",
        "docs/api/reference.rst",
        "docs/notes.txt",
    }
    assert set(files_of(make_reader(github, paths=["*.md"]))) == {"README.md", "docs/guide.md"}
    assert set(files_of(make_reader(github, paths=["src/*.py", "/README.md"]))) == {
        "src/main.py",
        "README.md",
    }
    assert set(files_of(make_reader(github, paths=["docs/**/*.rst"]))) == {"docs/api/reference.rst"}


def test_truncated_tree_is_walked_folder_by_folder(github: FakeGitHub) -> None:
    complete = files_of(make_reader(github))
    github.truncate_after = 2

    assert files_of(make_reader(github)) == complete

    github.requests.clear()
    assert set(files_of(make_reader(github, paths=["docs/api/"]))) == {"docs/api/reference.rst"}
    walked = github.paths("/git/trees/")
    repo = github.branches["main"]
    # The recursive try, the root, docs and docs/api; src is never listed.
    assert len(walked) == 4
    assert not any(repo.tree_sha("src") in path for path in walked)


def test_versions_change_only_for_edited_files(github: FakeGitHub) -> None:
    before = {ref.metadata["path"]: ref for ref in make_reader(github).list_documents()}
    files = github.branches["main"].files
    files["docs/guide.md"] = b"# Guide\n\nInstall it twice.\n"
    files["docs/new.md"] = b"new\n"
    del files["src/main.py"]

    after = {ref.metadata["path"]: ref for ref in make_reader(github).list_documents()}

    changed = {p for p in before.keys() & after.keys() if before[p].version != after[p].version}
    assert changed == {"docs/guide.md"}
    assert all(before[p].id == after[p].id for p in before.keys() & after.keys())
    assert set(after) - set(before) == {"docs/new.md"}
    assert set(before) - set(after) == {"src/main.py"}


def test_files_over_the_size_limit_are_skipped_without_fetching(github: FakeGitHub) -> None:
    github.branches["main"].files["docs/big.md"] = b"x" * 500
    reader = make_reader(github, paths=["docs/*.md"], max_document_bytes=100)

    documents = reader.load_data()

    assert [doc.metadata["path"] for doc in documents] == ["docs/guide.md"]
    assert any("per-document limit" in s.reason for s in reader.skipped)
    big = blob_sha(b"x" * 500)
    assert not github.paths(f"/git/blobs/{big}")


def test_head_resolves_the_branch_and_moves_with_it(github: FakeGitHub) -> None:
    reader = make_reader(github)
    first = reader.head()

    assert first == github.branches["main"].commit_sha() == reader.commit
    assert github.requests[-1].headers["accept"] == "application/vnd.github.sha"
    assert reader.head() == first
    github.branches["main"].files["docs/guide.md"] = b"changed\n"
    assert reader.head() != first


def test_missing_branch_names_the_repository_branch_and_token(github: FakeGitHub) -> None:
    reader = make_reader(github, branch="release")

    with pytest.raises(SourceNotFoundError) as listing:
        list(reader.list_documents())
    with pytest.raises(SourceNotFoundError) as head:
        reader.head()

    for error in (listing.value, head.value):
        message = str(error)
        assert "'release'" in message and f"{OWNER}/{REPO}" in message
        assert "tokenSecretRef" in message and "handbook" in message


def test_private_repository_without_token_says_a_token_is_missing(github: FakeGitHub) -> None:
    github.private = True

    with pytest.raises(SourceNotFoundError, match="none is set"):
        list(make_reader(github, token=None).list_documents())


def test_rejected_token_is_an_auth_error(github: FakeGitHub) -> None:
    with pytest.raises(SourceAuthError, match="tokenSecretRef") as caught:
        list(make_reader(github, token="ghp_wrong").list_documents())
    assert "401" in str(caught.value) and "Bad credentials" in str(caught.value)


# --- rate limits and failures -----------------------------------------------------------


def rate_limited(reset: float) -> Reply:
    return json_reply(
        403,
        {"message": "API rate limit exceeded for user ID 1."},
        {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(reset)),
            "X-RateLimit-Resource": "core",
        },
    )


def test_exhausted_rate_limit_waits_for_the_reset_then_goes_on(github: FakeGitHub) -> None:
    github.script("/git/trees/", rate_limited(time.time() + 1))
    sleeps: list[float] = []

    assert "docs/guide.md" in files_of(make_reader(github, sleeps))

    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 2
    assert len(github.paths("/git/trees/")) == 2


def test_rate_limit_resetting_too_late_raises_with_the_reset_time(github: FakeGitHub) -> None:
    reset = time.time() + 3600
    github.script("/git/trees/", rate_limited(reset))
    sleeps: list[float] = []

    with pytest.raises(SourceRateLimitError) as caught:
        list(make_reader(github, sleeps).list_documents())

    assert caught.value.reset_at is not None and abs(caught.value.reset_at - reset) < 5
    assert sleeps == []


def test_server_errors_are_retried(github: FakeGitHub) -> None:
    github.script("/git/trees/", json_reply(500, {"message": "Server Error"}))
    sleeps: list[float] = []

    assert "README.md" in files_of(make_reader(github, sleeps))
    assert len(sleeps) == 1

    github.script("/git/trees/", *[json_reply(502, {"message": "Bad Gateway"})] * 3)
    reader = make_reader(github, http_options={"max_retries": 2})
    with pytest.raises(SourceUnavailableError, match="502"):
        list(reader.list_documents())


# --- issues and pull requests ------------------------------------------------------------


@pytest.fixture
def tracker(github: FakeGitHub) -> FakeGitHub:
    github.add_issue(1, "Install fails", "It fails on step 2.")
    github.add_issue(2, "Add a guide", "This adds docs/guide.md.", pr=True)
    github.add_issue(3, "Typo", "In the README.")
    github.add_issue(4, "Fix typo", "Fixes #3.", pr=True)
    github.add_issue(5, "Question", "How do I start?")
    github.branches["main"] = GitRepo({"README.md": b"# Handbook\n"})
    return github


def kinds(reader: GitHubReader) -> dict[int, str]:
    return {
        ref.metadata["number"]: ref.metadata["kind"]
        for ref in reader.list_documents()
        if "number" in ref.metadata
    }


def test_issues_and_pull_requests_are_split(tracker: FakeGitHub) -> None:
    assert kinds(make_reader(tracker, include_issues=True)) == {
        1: "issue",
        3: "issue",
        5: "issue",
    }
    assert kinds(make_reader(tracker, include_prs=True)) == {2: "pull_request", 4: "pull_request"}
    assert len(kinds(make_reader(tracker, include_issues=True, include_prs=True))) == 5
    tracker.requests.clear()
    assert kinds(make_reader(tracker)) == {}
    assert not tracker.paths("/issues")  # not asked for, not requested


def test_issue_refs_carry_ids_versions_and_metadata(tracker: FakeGitHub) -> None:
    reader = make_reader(tracker, include_issues=True, include_prs=True)
    refs = {ref.metadata.get("number"): ref for ref in reader.list_documents()}
    host = f"127.0.0.1:{tracker.port}"

    issue, pull = refs[1], refs[2]
    assert issue.id == stable_id("github", host, f"{OWNER}/{REPO}", "issue", "1")
    assert pull.id == stable_id("github", host, f"{OWNER}/{REPO}", "pull", "2")
    assert issue.version == "2024-01-01T10:00:00Z"
    assert issue.metadata["source"] == tracker.web(f"{OWNER}/{REPO}/issues/1")
    assert issue.metadata["title"] == "Install fails"
    assert issue.metadata["author"] == "user1"
    assert issue.metadata["last_modified"] == "2024-01-01T10:00:00+00:00"
    assert issue.metadata["labels"] == "docs"
    assert issue.metadata["state"] == "open"
    # Five items at two a page: three pages, each followed from the Link header.
    assert len(tracker.paths("/issues?")) == 3


def test_issue_documents_include_every_comment(tracker: FakeGitHub) -> None:
    tracker.add_comment(1, "alice", "Which OS?", "2024-03-01T10:00:00Z")
    tracker.add_comment(1, "bob", "Linux.", "2024-03-02T10:00:00Z")
    tracker.add_comment(1, "alice", "Fixed in 1.2.", "2024-03-03T10:00:00Z")
    reader = make_reader(tracker, include_issues=True)
    issue = next(ref for ref in reader.list_documents() if ref.metadata.get("number") == 1)

    [document] = reader.load_documents([issue])

    assert document.text == (
        "# Install fails\n\nIt fails on step 2.\n\n"
        "## Comment by alice on 2024-03-01T10:00:00Z\n\nWhich OS?\n\n"
        "## Comment by bob on 2024-03-02T10:00:00Z\n\nLinux.\n\n"
        "## Comment by alice on 2024-03-03T10:00:00Z\n\nFixed in 1.2.\n"
    )
    assert document.id_ == issue.id and document.metadata["version"] == "2024-03-03T10:00:00Z"
    assert len(tracker.paths("/issues/1/comments")) == 2  # three comments, two a page
    # Issues without comments cost no comment request.
    list(reader.load_documents(r for r in reader.list_documents() if r.metadata.get("number")))
    assert {p.split("/comments")[0].rsplit("/", 1)[1] for p in tracker.paths("/comments")} == {"1"}


def test_unchanged_issue_pages_are_answered_304(tracker: FakeGitHub) -> None:
    reader = make_reader(tracker, include_issues=True, include_prs=True)
    first = {ref.id: ref.version for ref in reader.list_documents()}

    second = {ref.id: ref.version for ref in reader.list_documents()}

    assert second == first
    assert tracker.not_modified == 3
    assert all("if-none-match" in r.headers for r in tracker.requests[-3:])

    tracker.add_comment(5, "carol", "Read the guide.", "2024-04-01T00:00:00Z")
    third = {ref.id: ref.version for ref in reader.list_documents()}
    changed = {key for key in first if first[key] != third[key]}
    assert changed == {
        stable_id("github", f"127.0.0.1:{tracker.port}", "octo/handbook", "issue", "5")
    }


def test_disabled_issues_yield_none(tracker: FakeGitHub, caplog: pytest.LogCaptureFixture) -> None:
    tracker.issues_enabled = False

    with caplog.at_level(logging.WARNING):
        refs = list(make_reader(tracker, include_issues=True).list_documents())

    assert [ref.metadata["path"] for ref in refs] == ["README.md"]
    assert "issues are disabled" in caplog.text


# --- discussions --------------------------------------------------------------------------


def test_discussions_come_from_graphql_with_their_comments(github: FakeGitHub) -> None:
    github.add_discussion(1, "Welcome", "Say hi.", ["Hi!", "Hello."])
    github.add_discussion(2, "Roadmap", "What next?", [])
    github.add_discussion(3, "Ideas", "Share them.", ["More docs."])
    reader = make_reader(github, paths=["none/"], include_discussions=True)

    refs = list(reader.list_documents())
    documents = reader.load_data()

    assert [ref.metadata["number"] for ref in refs] == [1, 2, 3]
    assert len(github.paths("/api/graphql")) == 2 * 2  # two pages, listed twice
    welcome = refs[0]
    host = f"127.0.0.1:{github.port}"
    assert welcome.id == stable_id("github", host, f"{OWNER}/{REPO}", "discussion", "1")
    assert welcome.version == "2024-02-01T09:01:00Z"  # the latest comment
    assert welcome.metadata["source"] == github.web(f"{OWNER}/{REPO}/discussions/1")
    assert welcome.metadata["author"] == "author1"
    assert documents[0].text == (
        "# Welcome\n\nSay hi.\n\n## Comment by commenter0 on 2024-02-01T09:00:00Z\n\nHi!\n\n"
        "## Comment by commenter1 on 2024-02-01T09:01:00Z\n\nHello.\n"
    )
    assert refs[1].version == "2024-02-02T08:00:00Z"


def test_graphql_errors_become_source_errors(github: FakeGitHub) -> None:
    github.graphql_errors = [
        {"type": "FORBIDDEN", "message": "Resource not accessible by integration"}
    ]
    reader = make_reader(github, paths=["none/"], include_discussions=True)

    with pytest.raises(SourceError, match="Resource not accessible by integration"):
        list(reader.list_documents())

    github.graphql_errors = [
        {
            "type": "NOT_FOUND",
            "path": ["repository"],
            "message": "Could not resolve to a Repository with the name 'octo/handbook'.",
        }
    ]
    with pytest.raises(SourceNotFoundError, match="Could not resolve to a Repository"):
        list(reader.list_documents())


def test_discussions_without_a_token_are_refused(github: FakeGitHub) -> None:
    reader = make_reader(github, token=None, paths=["none/"], include_discussions=True)

    with pytest.raises(SourceAuthError, match="none is set"):
        list(reader.list_documents())


# --- secrets and interfaces -----------------------------------------------------------------


def test_the_token_never_appears_in_errors_or_logs(
    github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    github.add_issue(1, "Issue", "Body")
    caplog.set_level(logging.DEBUG)
    errors: list[Exception] = []
    github.script("/git/trees/", rate_limited(time.time() + 1), rate_limited(time.time() + 9999))
    scenarios = [
        make_reader(github),  # waits once, then rate limit too far away
        make_reader(github, branch="nope"),
        make_reader(github, include_discussions=True, paths=["none/"]),
    ]
    github.graphql_errors = [{"message": "boom"}]
    for reader in scenarios:
        with pytest.raises(SourceError) as caught:
            list(reader.list_documents())
        errors.append(caught.value)
    wrong = f"{TOKEN}-old"
    with pytest.raises(SourceAuthError) as rejected:
        list(make_reader(github, token=wrong).list_documents())
    errors.append(rejected.value)

    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in repr(error)
        assert TOKEN not in str(error.__cause__ or "")
    assert caplog.records and TOKEN not in caplog.text
    assert all(TOKEN not in repr(reader) for reader in scenarios)
    assert TOKEN not in str(make_reader(github).load_data()[0].metadata)


def test_llamaindex_resource_interface(github: FakeGitHub) -> None:
    reader = make_reader(github, paths=["docs/guide.md"])
    [resource] = reader.list_resources()

    info = reader.get_resource_info(resource)
    [document] = reader.load_resource(resource)

    assert info["path"] == "docs/guide.md" and document.id_ == resource
    assert "Install it." in document.text


# --- pure helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "web", "graphql"),
    [
        ("https://api.github.com", "https://github.com", "https://api.github.com/graphql"),
        (
            "https://ghe.example.com/api/v3/",
            "https://ghe.example.com",
            "https://ghe.example.com/api/graphql",
        ),
    ],
)
def test_web_and_graphql_urls_follow_the_api_base(api: str, web: str, graphql: str) -> None:
    assert web_url(api) == web
    assert graphql_url(api) == graphql


@pytest.mark.parametrize(
    ("patterns", "path", "matches"),
    [
        (None, "anything/at/all.bin", True),
        (["docs/"], "docs/a/b.md", True),
        (["docs/"], "docs", False),
        (["docs/"], "docsx/a.md", False),
        (["docs"], "docs/a.md", True),
        (["./README.md"], "README.md", True),
        (["README.md"], "sub/README.md", False),
        (["*.md"], "a/b/c.md", True),
        (["*.md"], "a/b/c.mdx", False),
        (["docs/*.md"], "docs/a.md", True),
        (["docs/*.md"], "docs/sub/a.md", False),
        (["docs/**/*.md"], "docs/a.md", True),
        (["docs/**/*.md"], "docs/x/y/a.md", True),
        (["docs/*"], "docs/x/y/a.md", True),  # a matching folder takes in its contents
        (["**/api/*"], "src/api/x.py", True),
        (["file?.txt"], "file1.txt", True),
        (["file[!0-9].txt"], "file1.txt", False),
        (["file[!0-9].txt"], "fileA.txt", True),
    ],
)
def test_path_filter(patterns: list[str] | None, path: str, matches: bool) -> None:
    assert PathFilter(patterns).matches(path) is matches


@pytest.mark.parametrize(
    ("patterns", "folder", "may"),
    [
        (["docs/api/"], "docs", True),
        (["docs/api/"], "docs/api/v1", True),
        (["docs/api/"], "src", False),
        (["docs/*.md"], "docs/sub", False),
        (["*.md"], "anything", True),
        (["docs/**/*.md"], "docs/a/b", True),
        (["docs/**/*.md"], "src", False),
    ],
)
def test_path_filter_prunes_folders(patterns: list[str], folder: str, may: bool) -> None:
    assert PathFilter(patterns).may_contain(folder) is may
