"""A local stand-in for GitLab's REST API v4, for the GitLab reader tests.

:class:`FakeGitLab` is a real HTTP server on 127.0.0.1 (``github_server.FakeService`` on
``site_server.LocalServer``) answering the endpoints the reader uses, with the JSON shapes,
headers and errors that docs.gitlab.com/ee/api documents:

- ``GET /api/v4/projects/:id`` (numeric id or URL-encoded ``group/project`` path),
- ``GET /api/v4/projects/:id/repository/tree?ref=&recursive=true&pagination=keyset``
  with keyset pagination (``page_token``, ``Link: <...>; rel="next"``), at most
  :attr:`FakeGitLab.page_size` entries a page whatever ``per_page`` asks,
- ``GET /api/v4/projects/:id/repository/blobs/:sha/raw`` (the raw bytes),
- ``GET /api/v4/projects/:id/repository/commits/:ref`` (URL-encoded ref),
- ``401 {"message": "401 Unauthorized"}`` for a wrong ``PRIVATE-TOKEN``, ``404 Project Not
  Found`` for private projects without one, and scripted answers (``429`` with
  ``Retry-After`` / ``RateLimit-Reset``, 5xx) via :meth:`FakeService.script`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from github_server import FakeService, GitRepo, json_reply
from site_server import Recorded, Reply

__all__ = ["PROJECT_ID", "PROJECT_PATH", "FakeGitLab", "serve_gitlab"]

PROJECT_ID = 42
PROJECT_PATH = "platform/handbook"


class FakeGitLab(FakeService):
    """GitLab at ``/api/v4`` serving one project.

    Attributes tests change: :attr:`refs` (branch name to :class:`GitRepo`), :attr:`token`
    (the accepted ``PRIVATE-TOKEN``), :attr:`private` (anonymous requests get 404).
    """

    page_size = 2

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[str, GitRepo] = {"main": GitRepo()}
        self.token: str | None = None
        self.private = False

    @property
    def base(self) -> str:
        """The ``base_url`` a reader is given (the instance, without ``/api/v4``)."""
        return self.url("").rstrip("/")

    def respond(self, request: Recorded, segments: list[str], query: dict[str, str]) -> Reply:
        if segments[:3] != ["api", "v4", "projects"] or len(segments) < 4:
            return _not_found("404 Not Found")
        refused = self._auth(request)
        if refused is not None:
            return refused
        if segments[3] not in {str(PROJECT_ID), PROJECT_PATH}:
            return _not_found("404 Project Not Found")
        rest = segments[4:]
        if not rest:
            return json_reply(200, self._project())
        if rest == ["repository", "tree"]:
            return self._tree(request, query)
        if len(rest) == 4 and rest[:2] == ["repository", "blobs"] and rest[3] == "raw":
            return self._raw(rest[2])
        if len(rest) == 3 and rest[:2] == ["repository", "commits"]:
            return self._commit(rest[2])
        return _not_found("404 Not Found")

    def _auth(self, request: Recorded) -> Reply | None:
        given = request.headers.get("private-token")
        if given is None:
            return _not_found("404 Project Not Found") if self.private else None
        if self.token is None or given != self.token:
            return json_reply(401, {"message": "401 Unauthorized"})
        return None

    def _project(self) -> dict[str, Any]:
        return {
            "id": PROJECT_ID,
            "name": "handbook",
            "path": "handbook",
            "path_with_namespace": PROJECT_PATH,
            "default_branch": "main",
            "web_url": f"{self.base}/{PROJECT_PATH}",
        }

    def _tree(self, request: Recorded, query: dict[str, str]) -> Reply:
        repo = self.refs.get(query.get("ref", "main"))
        if repo is None:
            return _not_found("404 Tree Not Found")
        if query.get("recursive") == "true":
            entries = list(repo.walk())
        else:
            entries = [{**entry, "path": entry["name"]} for entry in repo.entries()]
        shown = [
            {
                "id": entry["sha"],
                "name": entry["name"],
                "type": entry["type"],
                "path": entry["path"],
                "mode": entry["mode"],
            }
            for entry in sorted(entries, key=lambda entry: entry["path"])
        ]
        if query.get("pagination") != "keyset":
            return json_reply(422, {"message": "this stand-in only serves keyset pagination"})
        after = query.get("page_token")
        if after is not None:
            shown = [entry for entry in shown if entry["path"] > after]
        size = min(int(query.get("per_page", 20)), self.page_size)
        page = shown[:size]
        headers = {}
        if len(shown) > size:
            route = request.path.split("?", 1)[0]
            headers["Link"] = (
                f'<{self.link(route, query, page_token=page[-1]["path"])}>; rel="next"'
            )
        return json_reply(200, page, headers)

    def _raw(self, sha: str) -> Reply:
        for repo in self.refs.values():
            data = repo.blob(sha)
            if data is not None:
                return Reply(200, data, content_type="text/plain; charset=utf-8")
        return _not_found("404 Blob Not Found")

    def _commit(self, ref: str) -> Reply:
        repo = self.refs.get(ref)
        if repo is None:
            return _not_found("404 Commit Not Found")
        sha = repo.commit_sha()
        return json_reply(
            200,
            {
                "id": sha,
                "short_id": sha[:8],
                "title": "Update docs",
                "author_name": "Alice",
                "committed_date": "2024-05-01T10:00:00.000+00:00",
                "web_url": f"{self.base}/{PROJECT_PATH}/-/commit/{sha}",
            },
        )


def _not_found(message: str) -> Reply:
    return json_reply(404, {"message": message})


def serve_gitlab() -> Iterator[FakeGitLab]:
    """A started :class:`FakeGitLab`, closed afterwards (wrap in a pytest fixture)."""
    server = FakeGitLab()
    try:
        yield server
    finally:
        server.close()
