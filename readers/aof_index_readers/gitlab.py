"""Read the files of a GitLab project (gitlab.com or self-managed) through the REST API v4.

Requests go through :class:`~aof_index_readers.http.HttpClient` with the token in the
``PRIVATE-TOKEN`` header, so retries, GitLab's rate limits (``429`` with ``Retry-After`` /
``RateLimit-Reset``) and typed errors are handled once. ``project_id`` is the numeric id or
the ``group/project`` path (URL-encoded in requests, as GitLab requires).

- **Listing**: ``GET /api/v4/projects/:id/repository/tree?ref=REF&recursive=true`` with
  keyset pagination (100 entries a page, following ``Link: rel="next"``) lists every file
  and its blob sha without content. A file's id is
  ``stable_id("gitlab", host, project_id, path)``, its version the blob sha (so it changes
  exactly when the file's content does), ``source`` its page
  ``{base_url}/{group/project}/-/blob/{ref}/{path}`` (a numeric ``project_id`` costs one
  ``GET /projects/:id`` for the path).
- **Loading**: ``GET /api/v4/projects/:id/repository/blobs/:sha/raw``, then the shared text
  extraction (:mod:`aof_index_readers.text`); binary and unsupported files are skipped.
  GitLab's tree does not give sizes, so a file larger than ``max_document_bytes`` is
  noticed while downloading it (from ``Content-Length`` when sent) and skipped.
  ``author`` and ``last_modified`` stay ``None``: GitLab only knows them per commit.

``head()`` resolves ``ref`` to its commit sha with one small request, so a sync can skip the
whole listing when the ref has not moved.

Example:
    >>> reader = GitLabReader("platform/handbook", ref="main", paths=["docs/"], token="...")
    >>> for document in reader.lazy_load_data():  # doctest: +SKIP
    ...     print(document.metadata["source"])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Unpack
from urllib.parse import quote, urlsplit

from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
)
from aof_index_readers.errors import SourceLimitError, SourceNotFoundError
from aof_index_readers.http import HttpClient
from aof_index_readers.paths import PathFilter, RepositoryBlob, RepositoryFiles

__all__ = ["DEFAULT_GITLAB_URL", "GitLabReader"]

DEFAULT_GITLAB_URL = "https://gitlab.com"


class GitLabReader(SourceReader):
    """Files of a GitLab project at one ref.

    Args:
        project_id: the numeric project id, or its ``group/subgroup/project`` path.
        ref: the branch, tag or commit whose files are read.
        paths: prefixes (``docs/``) and globs (``*.md``) of files to read; ``None`` reads
            every file (see :class:`~aof_index_readers.paths.PathFilter`).
        token: a personal, project or group access token with ``read_api`` (or
            ``read_repository``) scope (``tokenSecretRef``); needed for private projects.
        base_url: the GitLab instance, ``https://gitlab.com`` or a self-managed one.
        http_options: keyword arguments for :class:`~aof_index_readers.http.HttpClient`
            (``timeout``, ``max_retries``, ``max_wait``, ``addresses``...; tests pass
            ``sleep``).
        source_name, max_document_bytes, max_source_bytes: see
            :class:`~aof_index_readers.base.SourceReader`.

    Example:
        >>> reader = GitLabReader(12345, ref="main", base_url="https://gitlab.example.com")
        >>> refs = list(reader.list_documents())  # doctest: +SKIP
    """

    source_type: ClassVar[str] = "GitLab"

    def __init__(
        self,
        project_id: str | int,
        *,
        ref: str = "main",
        paths: Sequence[str] | None = None,
        token: str | None = None,
        base_url: str = DEFAULT_GITLAB_URL,
        http_options: Mapping[str, Any] | None = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        self.project_id = str(project_id).strip("/")
        self.ref = ref
        self.paths = PathFilter(paths)
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        self.commit: str | None = None
        """The ref's commit sha, once :meth:`head` resolved it."""
        self._has_token = bool(token)
        self._project_path = f"/projects/{quote(self.project_id, safe='')}"
        self._namespace = None if self.project_id.isdigit() else self.project_id
        self._files = RepositoryFiles(
            self, self.paths, ("gitlab", self.host, self.project_id), self._file_url
        )
        settings: dict[str, Any] = {
            "base_url": f"{self.base_url}/api/v4",
            "headers": {"PRIVATE-TOKEN": token} if token else {},
            "credential_hint": self._credential_hint(),
            **(http_options or {}),
        }
        self.http = HttpClient("GitLab", self.source_name, **settings)
        """Client for the project, tree and commit requests."""
        # The tree gives no sizes: raw blobs are read with the per-document limit instead.
        self.blobs_http = HttpClient(
            "GitLab", self.source_name, **{**settings, "max_bytes": self.max_document_bytes}
        )
        """Client for raw blobs (bodies up to ``max_document_bytes``)."""

    def _credential_hint(self) -> str:
        if self._has_token:
            return "the token in tokenSecretRef"
        return "a token in tokenSecretRef (none is set; private projects need one)"

    def _missing(self, exc: SourceNotFoundError) -> SourceNotFoundError:
        """``exc`` with what to fix when the project or ref was not found."""
        return SourceNotFoundError(
            f"{exc}. Looked for ref {self.ref!r} of project {self.project_id!r} on "
            f"{self.host}: check gitlab.projectId, gitlab.ref and gitlab.baseUrl, and that "
            f"{self._credential_hint()} grants read access if the project is private"
        )

    def _file_url(self, path: str) -> str:
        return (
            f"{self.base_url}/{self._namespace or self.project_id}/-/blob/"
            f"{quote(self.ref, safe='/')}/{quote(path, safe='/')}"
        )

    # --- head ------------------------------------------------------------------------------

    def head(self) -> str:
        """The ref's commit sha (one request); also kept in :attr:`commit`."""
        try:
            commit = self.http.get_json(
                f"{self._project_path}/repository/commits/{quote(self.ref, safe='')}"
            )
        except SourceNotFoundError as exc:
            raise self._missing(exc) from exc
        self.commit = str(commit["id"])
        return self.commit

    # --- listing ---------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """Every file of the ref that matches ``paths``, without content."""
        try:
            if self._namespace is None:
                project = self.http.get_json(self._project_path)
                self._namespace = str(project["path_with_namespace"])
            pages = self.http.paginate(
                f"{self._project_path}/repository/tree",
                params={
                    "ref": self.ref,
                    "recursive": "true",
                    "per_page": 100,
                    "pagination": "keyset",
                },
            )
            for page in pages:
                for entry in self.http.json(page):
                    ref = self._file_ref(entry)
                    if ref is not None:
                        yield ref
        except SourceNotFoundError as exc:
            raise self._missing(exc) from exc

    def _file_ref(self, entry: Mapping[str, Any]) -> DocumentRef | None:
        if entry.get("type") != "blob":  # folders, and submodules ("commit")
            return None
        path = str(entry["path"])
        if entry.get("mode") == "120000":
            if self.paths.matches(path):
                self.skip(self._file_url(path), "symbolic link")
            return None
        return self._files.ref(path, str(entry["id"]))

    # --- loading ---------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """The file ``ref`` names, or ``None`` when it is skipped (binary, too large...)."""
        blob: RepositoryBlob = ref.handle
        try:
            response = self.blobs_http.get(f"{self._project_path}/repository/blobs/{blob.sha}/raw")
        except SourceLimitError:
            self.skip(
                str(ref.metadata["source"]),
                f"larger than the per-document limit of {self.max_document_bytes:,} bytes "
                "(raise max_document_bytes to read it)",
            )
            return None
        return self._files.document(ref, response.content)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()
        self.blobs_http.close()
