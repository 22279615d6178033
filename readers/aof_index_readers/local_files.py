"""Read local files (text, Markdown, code, HTML, PDF, DOCX) into LlamaIndex documents.

Listing is cheap: it walks the folders and calls ``stat`` on each file, reading no content. A
document's id is stable (``uuid5`` of its path relative to its root, see
:func:`document_id`) and its version is ``"<mtime_ns>-<size>"``, so an edited file gets a
new version and an untouched one keeps it. Loading reads the file, turns it into text (see
:mod:`aof_index_readers.text`) and adds ``content_hash`` (sha256 of the text) to the
metadata. Files that are not text (images, archives, anything with NUL bytes), empty files
and files over the size limit are skipped with a reason, never indexed as garbage.
Symlinks and ``..`` cannot reach outside the configured roots.
"""

from __future__ import annotations

import fnmatch
import hashlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Unpack

from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    Skipped,
    SourceReader,
    iso_time,
)
from aof_index_readers.errors import SourceNotFoundError
from aof_index_readers.text import file_type, unsupported_reason

__all__ = [
    "LocalFilesReader",
    "LocalPathNotFoundError",
    "SkippedFile",
    "document_id",
    "excluded",
]

SkippedFile = Skipped
"""Former name of :class:`~aof_index_readers.base.Skipped` (its ``path`` is now ``what``)."""

_GLOB_CHARS = frozenset("*?[")


class LocalPathNotFoundError(SourceNotFoundError, FileNotFoundError):
    """A configured path does not exist (also a ``FileNotFoundError`` for older callers)."""


def document_id(root: Path, path: Path) -> str:
    """Stable document id of ``path`` under ``root``."""
    relative = path.relative_to(root).as_posix()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"file:{root.as_posix()}/{relative}"))


def excluded(relative: str, patterns: Iterable[str]) -> bool:
    """Whether the ``/``-separated ``relative`` path matches one of the glob ``patterns``.

    A pattern matches the whole relative path, the file name, or any folder name on the way
    (``node_modules`` leaves out everything below such a folder).
    """
    parts = relative.split("/")
    return any(
        fnmatch.fnmatch(relative, pattern)
        or fnmatch.fnmatch(parts[-1], pattern)
        or any(fnmatch.fnmatch(part, pattern) for part in parts[:-1])
        for pattern in patterns
    )


class LocalFilesReader(SourceReader):
    """Read files and folders from the local disk.

    Args:
        paths: files, folders (read recursively) or glob patterns; relative globs are
            matched from ``root`` (else the working directory).
        exclude: glob patterns (matched against the path relative to its root, the file
            name and each folder name) of files to leave out.
        root: folder that every path must stay inside; defaults to each path's own folder.
        source_name: the source's name, copied into every document's metadata.
        max_document_bytes: larger files are skipped with a reason.
        max_source_bytes: one load stops with ``SourceLimitError`` past this much text.

    Metadata: ``source`` (the resolved path), ``file_name``, ``file_type``, ``title`` (the
    first Markdown heading, HTML ``<title>``, PDF/DOCX title, else the file name),
    ``last_modified``, ``version`` (``"<mtime_ns>-<size>"``) and, once loaded,
    ``content_hash``.

    Example:
        >>> reader = LocalFilesReader(["docs/"], exclude=["*.png"], source_name="docs")
        >>> docs = reader.load_data()  # doctest: +SKIP
    """

    source_type = "LocalFiles"

    def __init__(
        self,
        paths: Sequence[str | Path],
        exclude: Sequence[str] = (),
        root: str | Path | None = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        self.paths = [Path(p).expanduser() for p in paths]
        self.exclude = list(exclude)
        self.root = Path(root).expanduser().resolve() if root is not None else None

    # --- listing ---------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """One ref per file, from ``stat`` alone (no content is read).

        Files whose name says they are not text (images, archives...) are skipped here.
        """
        for root, path in self._targets():
            reason = unsupported_reason(path.name)
            if reason is not None:
                self.skip(str(path), reason)
                continue
            try:
                stat = path.stat()
            except OSError as exc:  # removed or unreadable since the walk
                self.skip(str(path), f"unreadable: {exc}")
                continue
            yield DocumentRef(
                id=document_id(root, path),
                version=f"{stat.st_mtime_ns}-{stat.st_size}",
                metadata={
                    "source": str(path),
                    "file_name": path.name,
                    "file_type": file_type(path.name),
                    "title": path.name,
                    "last_modified": iso_time(stat.st_mtime),
                },
                handle=path,
            )

    def _targets(self) -> Iterator[tuple[Path, Path]]:
        """(root, file) pairs, each file once, sorted for determinism."""
        seen: set[Path] = set()
        for raw in self.paths:
            root, candidates = self._candidates(raw)
            for path in candidates:
                real = path.resolve()
                if real in seen or not real.is_file():
                    continue
                if not real.is_relative_to(root):
                    self.skip(str(path), f"resolves outside the root {root}")
                    continue
                if excluded(real.relative_to(root).as_posix(), self.exclude):
                    continue
                seen.add(real)
                yield root, real

    def _candidates(self, raw: Path) -> tuple[Path, Iterable[Path]]:
        """The root of ``raw`` and the paths it names (before the root and exclude checks)."""
        if any(ch in _GLOB_CHARS for ch in str(raw)):
            if raw.is_absolute():
                base, pattern = _split_glob(raw)
                return self.root or base.resolve(), sorted(base.glob(pattern))
            base = self.root or Path.cwd()
            return base, sorted(base.glob(str(raw)))
        if raw.is_dir():
            return self.root or raw.resolve(), sorted(p for p in raw.rglob("*") if p.is_file())
        if raw.exists():
            return self.root or raw.resolve().parent, [raw]
        raise LocalPathNotFoundError(
            f"LocalFiles source {self.source_name!r}: {raw} does not exist; check "
            "localFiles.paths (relative paths start from the working directory)"
        )

    # --- loading ---------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """Read one listed file; ``None`` (and a :attr:`skipped` entry) if it is not text."""
        path = ref.handle if isinstance(ref.handle, Path) else Path(str(ref.metadata["source"]))
        what = str(path)
        reason = unsupported_reason(path.name)
        if reason is not None:
            self.skip(what, reason)
            return None
        try:
            if self.too_large(what, path.stat().st_size):
                return None
            data = path.read_bytes()
        except OSError as exc:
            self.skip(what, f"unreadable: {exc}")
            return None
        extracted = self.extract(what, path.name, data)
        if extracted is None:
            return None
        digest = hashlib.sha256(extracted.text.encode("utf-8")).hexdigest()
        return self.make_document(
            ref, extracted.text, {"title": extracted.title or path.name, "content_hash": digest}
        )


def _split_glob(pattern: Path) -> tuple[Path, str]:
    """``/a/b/*.md`` as (``/a/b``, ``*.md``): the fixed folder and the pattern below it."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if any(ch in _GLOB_CHARS for ch in part))
    return Path(*parts[:first]), "/".join(parts[first:])
