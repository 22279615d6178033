"""A local stand-in for GitHub's REST API v3 and GraphQL API, for the GitHub reader tests.

:class:`FakeGitHub` is a real HTTP server on 127.0.0.1 (``site_server.LocalServer``) that
answers the endpoints the reader uses, with the JSON shapes, headers and errors that
docs.github.com/en/rest documents:

- ``GET /repos/{o}/{r}/commits/{ref}`` (``Accept: application/vnd.github.sha``: the bare sha),
- ``GET /repos/{o}/{r}/git/trees/{ref-or-sha}[?recursive=1]`` (``truncated`` on demand),
- ``GET /repos/{o}/{r}/git/blobs/{sha}`` (base64 content, wrapped at 60 columns),
- ``GET /repos/{o}/{r}/issues?state=all`` and ``.../issues/{n}/comments`` with ``Link``
  pagination (at most :attr:`FakeGitHub.page_size` items a page, whatever ``per_page``
  asks, so pagination is exercised) and ``ETag`` / ``304 Not Modified`` on issue pages,
- ``POST /graphql`` for ``repository.discussions`` (cursor pagination, ``errors`` arrays),
- ``401 Bad credentials`` for a wrong token, ``404 Not Found`` for private repositories
  without one, and scripted answers (rate limits, 5xx) via :meth:`FakeGitHub.script`.

It serves under ``/api/v3`` like GitHub Enterprise Server, so the reader's ``base_url`` is
``{server}/api/v3``, GraphQL ``{server}/api/graphql`` and web pages ``{server}/{o}/{r}/...``.
:class:`GitRepo` (git blob and tree objects with real blob shas) is shared with the GitLab
stand-in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from site_server import LocalServer, Recorded, Reply

__all__ = [
    "OWNER",
    "REPO",
    "FakeGitHub",
    "FakeService",
    "GitRepo",
    "Scripted",
    "Symlink",
    "blob_sha",
    "json_reply",
    "serve_github",
]

JSON = "application/json; charset=utf-8"
OWNER, REPO = "octo", "handbook"


def blob_sha(data: bytes) -> str:
    """Git's object id of a blob holding ``data`` (what GitHub and GitLab report)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(body), dict(headers or {}), content_type=JSON)


@dataclass(frozen=True)
class Symlink:
    """A symbolic link in a :class:`GitRepo` (mode 120000; its blob holds the target)."""

    target: str


@dataclass
class GitRepo:
    """A branch's files as git objects: blobs by sha, trees by sha, real blob shas."""

    files: dict[str, bytes | Symlink] = field(default_factory=dict)

    def blob(self, sha: str) -> bytes | None:
        """The content of the blob ``sha``, if the repository holds it."""
        for value in self.files.values():
            data = _blob_data(value)
            if blob_sha(data) == sha:
                return data
        return None

    def entries(self, folder: str = "") -> list[dict[str, Any]]:
        """Direct children of ``folder`` ("" is the root): name, mode, type, sha, size."""
        children: dict[str, dict[str, Any]] = {}
        prefix = f"{folder}/" if folder else ""
        for path, value in sorted(self.files.items()):
            if not path.startswith(prefix):
                continue
            name, _, rest = path[len(prefix) :].partition("/")
            if rest:
                children.setdefault(name, {"name": name, "type": "tree", "mode": "040000"})
            else:
                data = _blob_data(value)
                mode = "120000" if isinstance(value, Symlink) else "100644"
                children[name] = {
                    "name": name, "type": "blob", "mode": mode, "sha": blob_sha(data),
                    "size": len(data),
                }  # fmt: skip
        for child in children.values():
            if child["type"] == "tree":
                child["sha"] = self.tree_sha(f"{prefix}{child['name']}")
        return list(children.values())

    def tree_sha(self, folder: str = "") -> str:
        """A sha for the tree of ``folder`` that changes whenever anything under it does."""
        listing = "".join(
            f"{entry['mode']} {entry['name']} {entry['sha']}\n" for entry in self.entries(folder)
        )
        return hashlib.sha1(f"tree {folder}\n{listing}".encode()).hexdigest()

    def folder_of(self, sha: str) -> str | None:
        """The folder whose tree sha is ``sha``."""
        folders = {
            "/".join(parts[:n])
            for parts in (path.split("/") for path in self.files)
            for n in range(len(parts))
        }
        return next((folder for folder in folders if self.tree_sha(folder) == sha), None)

    def walk(self, folder: str = "") -> Iterator[dict[str, Any]]:
        """Every entry under ``folder``, with ``path`` relative to it, trees before contents."""
        for entry in self.entries(folder):
            full = f"{folder}/{entry['name']}" if folder else entry["name"]
            yield {**entry, "path": full}
            if entry["type"] == "tree":
                yield from self.walk(full)

    def commit_sha(self) -> str:
        """A commit sha for the current state."""
        return hashlib.sha1(f"commit {self.tree_sha()}".encode()).hexdigest()


def _blob_data(value: bytes | Symlink) -> bytes:
    return value.target.encode() if isinstance(value, Symlink) else value


@dataclass
class Scripted:
    """Answers given, in turn, to the next requests whose path contains ``contains``."""

    contains: str
    replies: list[Reply]


class FakeService(LocalServer):
    """A :class:`LocalServer` whose answers come from :meth:`respond` (pattern routing).

    :meth:`script` queues answers (a rate limit, a 500) for the next matching requests,
    before :meth:`respond` sees them.
    """

    def __init__(self) -> None:
        self.scripted: list[Scripted] = []
        self._script_lock = threading.Lock()
        super().__init__()

    def script(self, contains: str, *replies: Reply) -> None:
        """Answer the next ``len(replies)`` requests whose path contains ``contains``."""
        with self._script_lock:
            self.scripted.append(Scripted(contains, list(replies)))

    def paths(self, contains: str = "") -> list[str]:
        """Paths (with queries) of the requests received that contain ``contains``."""
        return [request.path for request in self.requests if contains in request.path]

    def _reply(self, request: Recorded) -> Reply:
        with self._script_lock:
            for scripted in self.scripted:
                if scripted.contains in request.path and scripted.replies:
                    return scripted.replies.pop(0)
        parts = urlsplit(request.path)
        segments = [unquote(part) for part in parts.path.strip("/").split("/")]
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        return self.respond(request, segments, query)

    def respond(self, request: Recorded, segments: list[str], query: dict[str, str]) -> Reply:
        """The answer to ``request`` (``segments``: its unquoted path segments)."""
        raise NotImplementedError

    def link(self, route: str, query: dict[str, str], **changes: str) -> str:
        """An absolute URL of ``route`` with ``query`` updated, for ``Link`` headers."""
        return self.url(route) + "?" + urlencode({**query, **changes})


class FakeGitHub(FakeService):
    """GitHub at ``/api/v3`` serving one repository, its issues and discussions.

    Attributes tests change: :attr:`branches` (branch name to :class:`GitRepo`),
    :attr:`issues` (GitHub issue JSON, pull requests with a ``pull_request`` key),
    :attr:`comments` (issue number to comment JSON), :attr:`discussions` (GraphQL nodes),
    :attr:`token` (the accepted token), :attr:`private` (anonymous requests get 404),
    :attr:`truncate_after` (a recursive tree lists this many entries and says truncated),
    :attr:`issues_enabled`, :attr:`graphql_errors` (returned with HTTP 200).
    """

    page_size = 2

    def __init__(self) -> None:
        super().__init__()
        self.branches: dict[str, GitRepo] = {"main": GitRepo()}
        self.issues: list[dict[str, Any]] = []
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.discussions: list[dict[str, Any]] = []
        self.token: str | None = None
        self.private = False
        self.truncate_after: int | None = None
        self.issues_enabled = True
        self.graphql_errors: list[dict[str, Any]] | None = None
        self.not_modified = 0

    @property
    def api(self) -> str:
        """The ``base_url`` a reader is given."""
        return self.url("/api/v3")

    def web(self, path: str) -> str:
        """The web URL of ``path`` (``octo/handbook/blob/main/README.md``)."""
        return self.url("/" + path)

    # --- test data ------------------------------------------------------------------------

    def add_issue(
        self, number: int, title: str, body: str, *, pr: bool = False, updated: str = ""
    ) -> dict[str, Any]:
        """Add an issue (or pull request) with GitHub's JSON shape; returns it."""
        kind = "pull" if pr else "issues"
        issue: dict[str, Any] = {
            "id": 1000 + number,
            "node_id": f"I_{number}",
            "number": number,
            "title": title,
            "body": body,
            "user": {"login": f"user{number}", "id": number, "type": "User"},
            "labels": [{"id": 1, "name": "docs", "color": "0075ca"}],
            "state": "open",
            "comments": 0,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": updated or f"2024-01-{number:02d}T10:00:00Z",
            "html_url": self.web(f"{OWNER}/{REPO}/{kind}/{number}"),
            "url": self.api + f"/repos/{OWNER}/{REPO}/issues/{number}",
        }
        if pr:
            issue["pull_request"] = {
                "url": self.api + f"/repos/{OWNER}/{REPO}/pulls/{number}",
                "html_url": issue["html_url"],
            }
        self.issues.append(issue)
        return issue

    def add_comment(self, number: int, login: str, body: str, created: str) -> None:
        """Add a comment to issue ``number`` (updating its count and ``updated_at``)."""
        comments = self.comments.setdefault(number, [])
        comments.append(
            {
                "id": 5000 + len(comments),
                "user": {"login": login},
                "body": body,
                "created_at": created,
                "updated_at": created,
                "html_url": self.web(f"{OWNER}/{REPO}/issues/{number}#c{len(comments)}"),
            }
        )
        for issue in self.issues:
            if issue["number"] == number:
                issue["comments"] = len(comments)
                issue["updated_at"] = created

    # --- REST -----------------------------------------------------------------------------

    def respond(self, request: Recorded, segments: list[str], query: dict[str, str]) -> Reply:
        if segments[:2] == ["api", "graphql"] and request.method == "POST":
            return self._auth(request, required=True) or self._graphql(request)
        if segments[:2] != ["api", "v3"] or segments[2:3] != ["repos"]:
            return _not_found()
        refused = self._auth(request, required=self.private)
        if refused is not None:
            return refused
        owner, repo, *rest = segments[3:]
        if (owner, repo) != (OWNER, REPO):
            return _not_found()
        route = "/".join(rest)
        handlers: list[tuple[str, Callable[[re.Match[str]], Reply]]] = [
            (r"commits/(.+)", lambda m: self._commit(request, m[1])),
            (r"git/trees/(.+)", lambda m: self._tree(m[1], "recursive" in query)),
            (r"git/blobs/([0-9a-f]+)", lambda m: self._blob(m[1])),
            (r"issues", lambda m: self._issues(request, query)),
            (r"issues/(\d+)/comments", lambda m: self._comments(request, int(m[1]), query)),
        ]
        for pattern, handler in handlers:
            match = re.fullmatch(pattern, route)
            if match is not None:
                return handler(match)
        return _not_found()

    def _auth(self, request: Recorded, *, required: bool) -> Reply | None:
        """``None`` when the request may go on, else GitHub's refusal."""
        given = request.headers.get("authorization")
        if given is None:
            if not required:
                return None
            if request.path.startswith("/api/graphql"):
                return _unauthorized("This endpoint requires you to be authenticated.")
            return _not_found()  # GitHub hides private repositories from anonymous clients
        if self.token is None or given != f"Bearer {self.token}":
            return _unauthorized("Bad credentials")
        return None

    def _commit(self, request: Recorded, ref: str) -> Reply:
        repo = self.branches.get(ref)
        if repo is None:
            return json_reply(422, {"message": f"No commit found for SHA: {ref}"})
        if request.headers.get("accept") == "application/vnd.github.sha":
            return Reply(200, repo.commit_sha(), content_type="application/vnd.github.sha")
        return json_reply(200, {"sha": repo.commit_sha()})

    def _tree(self, ref: str, recursive: bool) -> Reply:
        repo = self.branches.get(ref)
        folder: str | None = ""
        if repo is None:  # a tree sha of some branch
            for candidate in self.branches.values():
                folder = candidate.folder_of(ref)
                if folder is not None:
                    repo = candidate
                    break
        if repo is None or folder is None:
            return _not_found()
        if recursive:
            entries = [self._entry(e, e["path"]) for e in repo.walk(folder)]
        else:
            entries = [self._entry(e, e["name"]) for e in repo.entries(folder)]
        truncated = recursive and self.truncate_after is not None
        if truncated:
            entries = entries[: self.truncate_after]
        sha = repo.tree_sha(folder)
        return json_reply(
            200,
            {
                "sha": sha,
                "url": self._git_url("trees", sha),
                "tree": entries,
                "truncated": truncated,
            },
        )

    def _entry(self, entry: dict[str, Any], path: str) -> dict[str, Any]:
        kind = "blobs" if entry["type"] == "blob" else "trees"
        shown = {"path": path, "mode": entry["mode"], "type": entry["type"], "sha": entry["sha"]}
        if entry["type"] == "blob":
            shown["size"] = entry["size"]
        shown["url"] = self._git_url(kind, entry["sha"])
        return shown

    def _git_url(self, kind: str, sha: str) -> str:
        return f"{self.api}/repos/{OWNER}/{REPO}/git/{kind}/{sha}"

    def _blob(self, sha: str) -> Reply:
        data = next(
            (d for repo in self.branches.values() if (d := repo.blob(sha)) is not None), None
        )
        if data is None:
            return _not_found()
        encoded = base64.b64encode(data).decode()
        wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n"
        return json_reply(
            200,
            {
                "sha": sha,
                "node_id": f"B_{sha[:8]}",
                "size": len(data),
                "url": self._git_url("blobs", sha),
                "content": wrapped,
                "encoding": "base64",
            },
        )

    def _issues(self, request: Recorded, query: dict[str, str]) -> Reply:
        if not self.issues_enabled:
            return json_reply(410, {"message": "Issues are disabled for this repo"})
        if query.get("state") != "all":
            return json_reply(422, {"message": "this stand-in only serves state=all"})
        ordered = sorted(self.issues, key=lambda issue: -int(issue["number"]))
        route = f"/api/v3/repos/{OWNER}/{REPO}/issues"
        return self._page(request, route, ordered, query, conditional=True)

    def _comments(self, request: Recorded, number: int, query: dict[str, str]) -> Reply:
        if not any(issue["number"] == number for issue in self.issues):
            return _not_found()
        route = f"/api/v3/repos/{OWNER}/{REPO}/issues/{number}/comments"
        return self._page(request, route, self.comments.get(number, []), query)

    def _page(
        self,
        request: Recorded,
        route: str,
        items: list[dict[str, Any]],
        query: dict[str, str],
        *,
        conditional: bool = False,
    ) -> Reply:
        """One page of ``items`` with GitHub's ``Link`` header (and ``ETag`` if asked)."""
        size = min(int(query.get("per_page", 30)), self.page_size)
        page = int(query.get("page", 1))
        last = max(1, -(-len(items) // size))
        body = json.dumps(items[(page - 1) * size : page * size])
        links = []
        if page < last:
            links.append(f'<{self.link(route, query, page=str(page + 1))}>; rel="next"')
            links.append(f'<{self.link(route, query, page=str(last))}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else {}
        if conditional:
            etag = f'W/"{hashlib.sha256(body.encode()).hexdigest()[:32]}"'
            headers["ETag"] = etag
            if request.headers.get("if-none-match") == etag:
                with self._script_lock:
                    self.not_modified += 1
                return Reply(304, b"", headers)
        return Reply(200, body, headers, content_type=JSON)

    # --- GraphQL ---------------------------------------------------------------------------

    def _graphql(self, request: Recorded) -> Reply:
        payload = json.loads(request.body)
        variables = payload.get("variables") or {}
        if self.graphql_errors is not None:
            return json_reply(200, {"data": None, "errors": self.graphql_errors})
        if "discussions" not in payload.get("query", ""):
            return json_reply(200, {"errors": [{"message": "unsupported query in stand-in"}]})
        start = (
            int(base64.b64decode(variables["cursor"]).decode()) if variables.get("cursor") else 0
        )
        nodes = self.discussions[start : start + self.page_size]
        end = start + len(nodes)
        page_info = {
            "hasNextPage": end < len(self.discussions),
            "endCursor": base64.b64encode(str(end).encode()).decode() if nodes else None,
        }
        return json_reply(
            200,
            {"data": {"repository": {"discussions": {"nodes": nodes, "pageInfo": page_info}}}},
        )

    def add_discussion(self, number: int, title: str, body: str, comments: list[str]) -> None:
        """Add a discussion node shaped like the GraphQL answer, with ``comments`` bodies."""
        self.discussions.append(
            {
                "number": number,
                "title": title,
                "body": body,
                "url": self.web(f"{OWNER}/{REPO}/discussions/{number}"),
                "updatedAt": f"2024-02-{number:02d}T08:00:00Z",
                "author": {"login": f"author{number}"},
                "comments": {
                    "nodes": [
                        {
                            "body": text,
                            "createdAt": f"2024-02-{number:02d}T09:0{i}:00Z",
                            "updatedAt": f"2024-02-{number:02d}T09:0{i}:00Z",
                            "author": {"login": f"commenter{i}"},
                        }
                        for i, text in enumerate(comments)
                    ]
                },
            }
        )


def _unauthorized(message: str) -> Reply:
    return json_reply(
        401, {"message": message, "documentation_url": "https://docs.github.com/rest"}
    )


def _not_found() -> Reply:
    return json_reply(
        404,
        {
            "message": "Not Found",
            "documentation_url": "https://docs.github.com/rest",
            "status": "404",
        },
    )


def serve_github() -> Iterator[FakeGitHub]:
    """A started :class:`FakeGitHub`, closed afterwards (wrap in a pytest fixture)."""
    server = FakeGitHub()
    try:
        yield server
    finally:
        server.close()
