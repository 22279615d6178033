"""Read a GitHub repository's files, and optionally its issues, pull requests and discussions.

Everything goes through GitHub's REST API v3 (and GraphQL for discussions) with
:class:`~aof_index_readers.http.HttpClient`, so retries, rate limits (a 403 with
``X-RateLimit-Remaining: 0`` waits until ``X-RateLimit-Reset``) and typed errors are handled
once. GitHub Enterprise Server works with ``base_url="https://HOST/api/v3"``.

- **Files**: one ``GET /repos/{owner}/{repo}/git/trees/{branch}?recursive=1`` lists the whole
  tree with each file's blob sha and size. When GitHub truncates that answer (very large
  trees), the reader walks the tree one folder at a time instead, leaving out folders that
  ``paths`` excludes. A file's id is ``stable_id("github", host, "owner/repo", path)``, its
  version the blob sha (so it changes exactly when the file's content does), ``source`` its
  page ``https://HOST/{owner}/{repo}/blob/{branch}/{path}``. Loading fetches
  ``GET /repos/{owner}/{repo}/git/blobs/{sha}``; files over ``max_document_bytes`` (known
  from the listing) are skipped without fetching, and the shared text extraction
  (:mod:`aof_index_readers.text`) reads the bytes or skips binary and unsupported files.
  ``author`` and ``last_modified`` of files stay ``None``: GitHub only knows them per commit,
  which would cost one request per file.
- **Issues and pull requests** (``include_issues``, ``include_prs``): one paginated
  ``GET /repos/{owner}/{repo}/issues?state=all`` lists both (pull requests carry a
  ``pull_request`` key), sent as conditional requests so an unchanged page is a free
  ``304``. Id ``stable_id("github", host, "owner/repo", "issue"|"pull", number)``, version
  ``updated_at`` (a new comment updates it). The document is Markdown: the title as a
  heading, the body, then ``## Comment by LOGIN on DATE`` sections from
  ``GET /repos/{owner}/{repo}/issues/{number}/comments``. Review comments on pull request
  diffs are not read.
- **Discussions** (``include_discussions``): GraphQL (``/graphql``, or ``/api/graphql`` on
  Enterprise), 50 discussions per request with up to 50 comments each; the listing carries
  their text, so loading costs nothing more. The version is the latest ``updatedAt`` of the
  discussion and its comments. GitHub's GraphQL API always needs a token.

``head()`` resolves the branch's commit sha with one small request, so a sync can skip the
whole listing when the branch has not moved.

Example:
    >>> reader = GitHubReader("octo", "handbook", paths=["docs/", "*.md"], token="...")
    >>> for document in reader.lazy_load_data():  # doctest: +SKIP
    ...     print(document.metadata["source"])
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Unpack
from urllib.parse import quote, urlsplit

import httpx
from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
    iso_time,
    stable_id,
)
from aof_index_readers.errors import (
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceRateLimitError,
)
from aof_index_readers.http import DEFAULT_MAX_RESPONSE_BYTES, HttpClient
from aof_index_readers.paths import PathFilter, RepositoryBlob, RepositoryFiles

__all__ = ["DEFAULT_GITHUB_API", "GitHubReader", "graphql_url", "web_url"]

logger = logging.getLogger(__name__)

DEFAULT_GITHUB_API = "https://api.github.com"
_API_VERSION = "2022-11-28"
_DISCUSSIONS_QUERY = """
query($owner: String!, $name: String!, $cursor: String) {
  repository(owner: $owner, name: $name) {
    discussions(first: 50, after: $cursor) {
      nodes {
        number title body url updatedAt
        author { login }
        comments(first: 50) { nodes { body createdAt updatedAt author { login } } }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
_GRAPHQL_ERRORS: Mapping[str, type[SourceError]] = {
    "NOT_FOUND": SourceNotFoundError,
    "FORBIDDEN": SourcePermissionError,
    "RATE_LIMITED": SourceRateLimitError,
}


def web_url(api_url: str) -> str:
    """The web address for an API base: ``https://github.com`` for ``api.github.com``.

    GitHub Enterprise Server's ``https://HOST/api/v3`` gives ``https://HOST``.
    """
    parts = urlsplit(api_url.rstrip("/"))
    host, path = parts.netloc, parts.path
    if path.endswith("/api/v3"):
        path = path.removesuffix("/api/v3")
    elif host.startswith("api.") and not path:
        host = host.removeprefix("api.")
    return f"{parts.scheme}://{host}{path}"


def graphql_url(api_url: str) -> str:
    """GraphQL endpoint for an API base (``/graphql``; ``/api/graphql`` on Enterprise)."""
    api_url = api_url.rstrip("/")
    if api_url.endswith("/api/v3"):
        return api_url.removesuffix("/v3") + "/graphql"
    return api_url + "/graphql"


@dataclass(frozen=True)
class _Issue:
    """An issue or pull request as a ref's handle: what its document needs besides comments."""

    number: int
    title: str
    body: str
    comments: int


@dataclass(frozen=True)
class _Discussion:
    """A discussion as a ref's handle: its whole text, from the listing."""

    text: str


def _said(response: httpx.Response) -> str:
    """GitHub's ``message`` from an error body."""
    try:
        return str(response.json().get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        return response.reason_phrase


def _thread_text(title: str, body: str | None, comments: Sequence[Mapping[str, Any]]) -> str:
    """Markdown of a conversation: title heading, body, then one section per comment."""
    parts = [f"# {title}", (body or "").strip()]
    for comment in comments:
        login = (comment.get("user") or comment.get("author") or {}).get("login") or "ghost"
        date = comment.get("created_at") or comment.get("createdAt") or ""
        parts.append(f"## Comment by {login} on {date}")
        parts.append((comment.get("body") or "").strip())
    return "\n\n".join(parts) + "\n"


class GitHubReader(SourceReader):
    """Files (and optionally issues, pull requests, discussions) of a GitHub repository.

    Args:
        owner: the user or organisation owning the repository.
        repo: the repository's name.
        branch: the branch (or tag) whose files are read.
        paths: prefixes (``docs/``) and globs (``*.md``) of files to read; ``None`` reads
            every file (see :class:`~aof_index_readers.paths.PathFilter`).
        token: a personal access or app token (``tokenSecretRef``); needed for private
            repositories and discussions, and for a rate limit above 60 requests an hour.
        include_issues: also read issues, with their comments.
        include_prs: also read pull requests (their descriptions and conversation).
        include_discussions: also read discussions (GraphQL; needs ``token``).
        base_url: the REST API's base, ``https://HOST/api/v3`` for GitHub Enterprise Server.
        http_options: keyword arguments for :class:`~aof_index_readers.http.HttpClient`
            (``timeout``, ``max_retries``, ``max_wait``, ``addresses``...; tests pass
            ``sleep``).
        source_name, max_document_bytes, max_source_bytes: see
            :class:`~aof_index_readers.base.SourceReader`.

    Example:
        >>> reader = GitHubReader("octo", "handbook", branch="main", include_issues=True)
        >>> refs = list(reader.list_documents())  # doctest: +SKIP
    """

    source_type: ClassVar[str] = "GitHub"

    def __init__(
        self,
        owner: str,
        repo: str,
        *,
        branch: str = "main",
        paths: Sequence[str] | None = None,
        token: str | None = None,
        include_issues: bool = False,
        include_prs: bool = False,
        include_discussions: bool = False,
        base_url: str = DEFAULT_GITHUB_API,
        http_options: Mapping[str, Any] | None = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        self.owner = owner
        self.repo = repo
        self.branch = branch
        self.paths = PathFilter(paths)
        self.include_issues = include_issues
        self.include_prs = include_prs
        self.include_discussions = include_discussions
        self.base_url = base_url.rstrip("/")
        self.web_url = web_url(self.base_url)
        self.host = urlsplit(self.web_url).netloc
        self.commit: str | None = None
        """The branch's head commit sha, once :meth:`head` resolved it."""
        self._has_token = bool(token)
        self._repo_path = f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"
        self._files = RepositoryFiles(
            self, self.paths, ("github", self.host, f"{owner}/{repo}"), self._file_url
        )
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": _API_VERSION}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        settings: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": headers,
            "credential_hint": self._credential_hint(),
            # A blob's base64 JSON is about 4/3 of the file: room for the largest one read.
            "max_bytes": max(DEFAULT_MAX_RESPONSE_BYTES, 2 * self.max_document_bytes),
            **(http_options or {}),
        }
        self.http = HttpClient("GitHub", self.source_name, **settings)
        """Client for trees, blobs, comments and GraphQL."""
        # Issue pages are listed again on every sync: conditional requests make an unchanged
        # page a free 304. Separate, so blobs are not kept in the ETag cache.
        self.issues_http = HttpClient(
            "GitHub", self.source_name, **{**settings, "conditional": True}
        )
        """Client for the issue listing (conditional requests)."""

    def _credential_hint(self) -> str:
        if self._has_token:
            return "the token in tokenSecretRef"
        return (
            "a token in tokenSecretRef (none is set; private repositories and discussions need one)"
        )

    def _file_url(self, path: str) -> str:
        return (
            f"{self.web_url}/{self.owner}/{self.repo}/blob/{quote(self.branch, safe='/')}/"
            f"{quote(path, safe='/')}"
        )

    def _missing(self, said: object) -> SourceNotFoundError:
        """A not-found error (``said``: what GitHub answered) with what to fix."""
        return SourceNotFoundError(
            f"{said}. Looked for branch {self.branch!r} of repository {self.owner}/{self.repo} "
            f"on {self.host}: check github.owner, github.repo and github.branch, and that "
            f"{self._credential_hint()} grants read access if the repository is private"
        )

    # --- head ------------------------------------------------------------------------------

    def head(self) -> str:
        """The branch's head commit sha (one request); also kept in :attr:`commit`.

        A sync that saw the same sha last time can skip listing the files.
        """
        try:
            response = self.http.get(
                f"{self._repo_path}/commits/{quote(self.branch, safe='/')}",
                headers={"Accept": "application/vnd.github.sha"},
                allow=frozenset({422}),  # GitHub's answer for a ref that does not exist
            )
        except SourceNotFoundError as exc:
            raise self._missing(exc) from exc
        if response.status_code == 422:
            raise self._missing(
                f"GitHub source {self.source_name!r}: 422 for GET {response.request.url.path} "
                f"({_said(response)})"
            )
        self.commit = response.text.strip()
        return self.commit

    # --- listing ---------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """Files matching ``paths``, then issues/PRs and discussions when included."""
        yield from self._list_files()
        if self.include_issues or self.include_prs:
            yield from self._list_issues()
        if self.include_discussions:
            yield from self._list_discussions()

    def _tree(self, sha: str, *, recursive: bool) -> Mapping[str, Any]:
        params = {"recursive": "1"} if recursive else None
        tree: Mapping[str, Any] = self.http.get_json(
            f"{self._repo_path}/git/trees/{quote(sha, safe='/')}", params=params
        )
        return tree

    def _list_files(self) -> Iterator[DocumentRef]:
        try:
            tree = self._tree(self.branch, recursive=True)
        except SourceNotFoundError as exc:
            raise self._missing(exc) from exc
        if tree.get("truncated"):
            logger.info(
                "GitHub source %r: the tree of %s/%s is too large for one listing; walking "
                "it folder by folder",
                self.source_name,
                self.owner,
                self.repo,
            )
            entries: Iterator[Mapping[str, Any]] = self._walk("", str(tree["sha"]))
        else:
            entries = iter(tree.get("tree", []))
        for entry in entries:
            ref = self._file_ref(entry)
            if ref is not None:
                yield ref

    def _walk(self, folder: str, sha: str) -> Iterator[Mapping[str, Any]]:
        """Blob entries (with full paths) under the tree ``sha``, one request per folder."""
        for entry in self._tree(sha, recursive=False).get("tree", []):
            path = f"{folder}{entry['path']}"
            if entry.get("type") == "tree":
                if self.paths.may_contain(path):
                    yield from self._walk(f"{path}/", str(entry["sha"]))
            else:
                yield {**entry, "path": path}

    def _file_ref(self, entry: Mapping[str, Any]) -> DocumentRef | None:
        if entry.get("type") != "blob":  # folders, and submodules ("commit")
            return None
        path = str(entry["path"])
        if entry.get("mode") == "120000":
            if self.paths.matches(path):
                self.skip(self._file_url(path), "symbolic link")
            return None
        return self._files.ref(path, str(entry["sha"]), entry.get("size"))

    def _list_issues(self) -> Iterator[DocumentRef]:
        pages = self.issues_http.paginate(
            f"{self._repo_path}/issues",
            params={"state": "all", "per_page": 100},
            allow=frozenset({410}),
        )
        for page in pages:
            if page.status_code == 410:  # issues are turned off for the repository
                logger.warning(
                    "GitHub source %r: issues are disabled for %s/%s; none are read",
                    self.source_name,
                    self.owner,
                    self.repo,
                )
                return
            for item in self.issues_http.json(page):
                ref = self._issue_ref(item)
                if ref is not None:
                    yield ref

    def _issue_ref(self, item: Mapping[str, Any]) -> DocumentRef | None:
        is_pr = "pull_request" in item
        if not (self.include_prs if is_pr else self.include_issues):
            return None
        number = int(item["number"])
        title = str(item.get("title") or "")
        metadata = {
            "source": item.get("html_url"),
            "title": title,
            "author": (item.get("user") or {}).get("login"),
            "last_modified": iso_time(item.get("updated_at")),
            "number": number,
            "state": item.get("state"),
            "labels": ", ".join(str(label.get("name")) for label in item.get("labels") or []),
            "kind": "pull_request" if is_pr else "issue",
        }
        return DocumentRef(
            id=stable_id(
                "github",
                self.host,
                f"{self.owner}/{self.repo}",
                "pull" if is_pr else "issue",
                str(number),
            ),
            version=str(item.get("updated_at")),
            metadata=metadata,
            handle=_Issue(number, title, str(item.get("body") or ""), int(item.get("comments", 0))),
        )

    def _list_discussions(self) -> Iterator[DocumentRef]:
        cursor: str | None = None
        while True:
            connection = self._discussions_page(cursor)
            for node in connection.get("nodes") or []:
                yield self._discussion_ref(node)
            info = connection.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            cursor = info.get("endCursor")

    def _discussions_page(self, cursor: str | None) -> Mapping[str, Any]:
        variables = {"owner": self.owner, "name": self.repo, "cursor": cursor}
        response = self.http.request(
            "POST",
            graphql_url(self.base_url),
            json_body={"query": _DISCUSSIONS_QUERY, "variables": variables},
        )
        body = self.http.json(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            raise self._graphql_error(errors)
        repository = ((body.get("data") or {}) if isinstance(body, dict) else {}).get("repository")
        return (repository or {}).get("discussions") or {}

    def _graphql_error(self, errors: Sequence[Mapping[str, Any]]) -> SourceError:
        said = "; ".join(str(error.get("message")) for error in errors)
        kind = _GRAPHQL_ERRORS.get(str(errors[0].get("type")), SourceError)
        return kind(
            f"GitHub source {self.source_name!r}: the GraphQL query for the discussions of "
            f"{self.owner}/{self.repo} failed: {said}. Check that discussions are enabled and "
            f"that {self._credential_hint()} may read them"
        )

    def _discussion_ref(self, node: Mapping[str, Any]) -> DocumentRef:
        comments = (node.get("comments") or {}).get("nodes") or []
        updated = max(
            [str(node.get("updatedAt") or "")]
            + [str(comment.get("updatedAt") or "") for comment in comments]
        )
        number = int(node["number"])
        title = str(node.get("title") or "")
        metadata = {
            "source": node.get("url"),
            "title": title,
            "author": (node.get("author") or {}).get("login"),
            "last_modified": iso_time(updated),
            "number": number,
            "kind": "discussion",
        }
        return DocumentRef(
            id=stable_id(
                "github", self.host, f"{self.owner}/{self.repo}", "discussion", str(number)
            ),
            version=updated,
            metadata=metadata,
            handle=_Discussion(_thread_text(title, node.get("body"), comments)),
        )

    # --- loading ---------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """The file, issue, pull request or discussion ``ref`` names."""
        handle = ref.handle
        if isinstance(handle, RepositoryBlob):
            return self._load_file(ref, handle)
        if isinstance(handle, _Issue):
            return self.make_document(ref, self._issue_text(handle))
        if isinstance(handle, _Discussion):
            return self.make_document(ref, handle.text)
        raise TypeError(f"GitHub source {self.source_name!r}: not a ref of this reader: {ref!r}")

    def _load_file(self, ref: DocumentRef, blob: RepositoryBlob) -> Document | None:
        if blob.size is not None and self.too_large(str(ref.metadata["source"]), blob.size):
            return None
        body = self.http.get_json(f"{self._repo_path}/git/blobs/{blob.sha}")
        content = str(body.get("content") or "")
        if body.get("encoding") == "base64":
            try:
                data = base64.b64decode(content)
            except binascii.Error as exc:
                self.skip(str(ref.metadata["source"]), f"malformed base64 content ({exc})")
                return None
        else:
            data = content.encode("utf-8")
        return self._files.document(ref, data)

    def _issue_text(self, issue: _Issue) -> str:
        comments: list[Mapping[str, Any]] = []
        if issue.comments:
            for page in self.http.paginate(
                f"{self._repo_path}/issues/{issue.number}/comments", params={"per_page": 100}
            ):
                comments.extend(self.http.json(page))
        return _thread_text(issue.title, issue.body, comments)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()
        self.issues_http.close()
