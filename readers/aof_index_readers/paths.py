"""Which files of a repository a source reads, and how a listed file becomes a document.

:class:`PathFilter` implements the ``paths`` setting of repository sources (GitHub, GitLab,
Git). Each entry is either

- a **prefix**: ``docs/`` reads everything under ``docs``; ``README.md`` (no trailing
  slash) reads that file, or everything under it when it is a folder; or
- a **glob** (it contains ``*``, ``?`` or ``[``), with gitignore's rules: ``*`` and ``?``
  stay within one path segment, ``**`` spans any number of them (``docs/**/*.md``), a
  pattern without ``/`` matches a file or folder name at any depth (``*.md``), one with a
  ``/`` is anchored at the repository root (``docs/*.md``), and a matching folder takes in
  everything under it.

A leading ``/`` or ``./`` is ignored. No entries (``None`` or ``[]``) means every file.
:meth:`PathFilter.may_contain` tells a tree walk which folders it can leave out.

:class:`RepositoryFiles` is the part of a hosted-repository reader that does not depend on
the service: a tree entry becomes a :class:`~aof_index_readers.base.DocumentRef` (stable
id over the service, host, project and path; the blob sha as version; the file's URL as
``source``; its name as ``title``) unless the filter leaves it out or its name says it is
not text (recorded as skipped), and a blob's bytes become a document through the shared
text extraction (:func:`aof_index_readers.text.extract_text`).

Example:
    >>> keep = PathFilter(["docs/", "*.md"])
    >>> keep.matches("docs/guide/setup.txt"), keep.matches("src/README.md")
    (True, True)
    >>> keep.matches("src/main.py"), keep.may_contain("src")
    (False, True)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from llama_index.core.schema import Document

from aof_index_readers.base import DocumentRef, SourceReader, stable_id
from aof_index_readers.text import file_type, unsupported_reason

__all__ = ["PathFilter", "RepositoryBlob", "RepositoryFiles"]

_GLOB_CHARS = frozenset("*?[")


def _normalize(entry: str) -> str:
    entry = entry.strip()
    while entry.startswith(("./", "/")):
        entry = entry[2:] if entry.startswith("./") else entry[1:]
    return entry


def _glob_regex(pattern: str) -> str:
    """A regex (no anchors) for one gitignore-style glob."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Glob:
    pattern: str
    regex: re.Pattern[str]
    anchored: bool
    segments: tuple[re.Pattern[str] | None, ...]  # None for a ``**`` segment


def _compile_glob(pattern: str) -> _Glob:
    pattern = pattern.rstrip("/")
    segments = tuple(
        None if part == "**" else re.compile(_glob_regex(part)) for part in pattern.split("/")
    )
    return _Glob(pattern, re.compile(_glob_regex(pattern)), "/" in pattern, segments)


class PathFilter:
    """The ``paths`` of a repository source: prefixes and gitignore-style globs.

    Args:
        patterns: prefixes (``docs/``, ``README.md``) and globs (``*.md``,
            ``docs/**/*.rst``); ``None`` or empty reads every file.

    Example:
        >>> PathFilter(["docs/*.md"]).matches("docs/a.md")
        True
    """

    def __init__(self, patterns: Sequence[str] | None = None) -> None:
        entries = [_normalize(entry) for entry in patterns or ()]
        self.everything = not entries or any(entry in {"", "."} for entry in entries)
        """Whether no filter applies (every path matches)."""
        self._prefixes: list[tuple[str, bool]] = []  # (prefix, folder only)
        self._globs: list[_Glob] = []
        for entry in entries:
            if _GLOB_CHARS.intersection(entry):
                self._globs.append(_compile_glob(entry))
            elif entry not in {"", "."}:
                self._prefixes.append((entry.rstrip("/"), entry.endswith("/")))

    def matches(self, path: str) -> bool:
        """Whether the file at ``path`` (relative to the repository root) is read."""
        if self.everything:
            return True
        path = _normalize(path)
        for prefix, folder_only in self._prefixes:
            if path.startswith(prefix + "/") or (path == prefix and not folder_only):
                return True
        if not self._globs:
            return False
        parts = path.split("/")
        # The path itself or any folder above it (a matching folder takes in its contents).
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        return any(self._glob_matches(glob, candidates, parts) for glob in self._globs)

    @staticmethod
    def _glob_matches(glob: _Glob, candidates: list[str], parts: list[str]) -> bool:
        if glob.anchored:
            return any(glob.regex.fullmatch(candidate) for candidate in candidates)
        return any(glob.regex.fullmatch(part) for part in parts)

    def may_contain(self, folder: str) -> bool:
        """Whether a file under ``folder`` could match (``False``: a walk may leave it out)."""
        if self.everything:
            return True
        folder = _normalize(folder).rstrip("/")
        for prefix, _ in self._prefixes:
            # The folder is inside the prefix, or the prefix inside the folder.
            if f"{folder}/".startswith(f"{prefix}/") or prefix.startswith(f"{folder}/"):
                return True
        return any(self._glob_may_contain(glob, folder.split("/")) for glob in self._globs)

    @staticmethod
    def _glob_may_contain(glob: _Glob, parts: list[str]) -> bool:
        if not glob.anchored:
            return True
        for part, segment in zip(parts, glob.segments, strict=False):
            if segment is None:
                return True
            if not segment.fullmatch(part):
                return False
        # Every folder segment matched: the pattern goes deeper, or the folder matched it.
        return True


@dataclass(frozen=True)
class RepositoryBlob:
    """A listed repository file, as a ref's ``handle``: its path, blob sha and size if known."""

    path: str
    sha: str
    size: int | None = None


class RepositoryFiles:
    """Refs and documents for the files of one repository, shared by the hosted readers.

    Args:
        reader: the reader the refs are for (skips are recorded on it).
        paths: which files to read.
        id_parts: what identifies the repository across runs, e.g.
            ``("github", "github.com", "owner/repo")``; the file's path is appended.
        source_url: the URL a citation shows for a path (the file's page on the service).
    """

    def __init__(
        self,
        reader: SourceReader,
        paths: PathFilter,
        id_parts: Sequence[str],
        source_url: Callable[[str], str],
    ) -> None:
        self.reader = reader
        self.paths = paths
        self.id_parts = tuple(id_parts)
        self.source_url = source_url

    def ref(self, path: str, sha: str, size: int | None = None) -> DocumentRef | None:
        """The ref of the file at ``path``, or ``None`` when it is not read.

        Files outside :attr:`paths` are left out silently; files whose name says they are
        not text (images, archives...) are recorded as skipped without fetching them.
        """
        if not self.paths.matches(path):
            return None
        source = self.source_url(path)
        reason = unsupported_reason(path)
        if reason is not None:
            self.reader.skip(source, reason)
            return None
        metadata = {"source": source, "title": PurePosixPath(path).name, "path": path}
        return DocumentRef(
            id=stable_id(*self.id_parts, path),
            version=sha,
            metadata=metadata,
            handle=RepositoryBlob(path, sha, size),
        )

    def document(self, ref: DocumentRef, data: bytes) -> Document | None:
        """The document of a file whose blob holds ``data`` (``None``: skipped, with why)."""
        blob: RepositoryBlob = ref.handle
        extracted = self.reader.extract(str(ref.metadata["source"]), blob.path, data)
        if extracted is None:
            return None
        metadata = {"file_type": file_type(blob.path)}
        if extracted.title:
            metadata["title"] = extracted.title
        return self.reader.make_document(ref, extracted.text, metadata)
