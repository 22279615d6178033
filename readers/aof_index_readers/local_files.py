"""Read local files (text, Markdown, code, HTML, PDF) into LlamaIndex documents.

Documents get stable ids (``uuid5`` of the file's path relative to its root), a content hash
as their version marker, and metadata naming the file.  Files that are not text (images,
archives, anything with NUL bytes) are skipped and reported, never indexed as garbage.
Symlinks and ``..`` cannot reach outside the configured roots.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

__all__ = ["LocalFilesReader", "SkippedFile", "document_id"]

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset(
    [
        ".md",
        ".markdown",
        ".mdx",
        ".txt",
        ".text",
        ".rst",
        ".adoc",
        ".csv",
        ".log",
        ".ini",
        ".cfg",
        ".conf",
        ".toml",
        ".yaml",
        ".yml",
        ".json",
        ".xml",
        ".py",
        ".go",
        ".rs",
        ".java",
        ".kt",
        ".scala",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".js",
        ".jsx",
        ".ts",
        ".tsx",
        ".rb",
        ".php",
        ".sh",
        ".bash",
        ".zsh",
        ".ps1",
        ".sql",
        ".tf",
        ".hcl",
        ".proto",
        ".graphql",
        ".lua",
        ".swift",
        ".r",
        ".dockerfile",
    ]
)
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
_TEXT_NAMES = frozenset({"dockerfile", "makefile", "readme", "license", "jenkinsfile"})
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class SkippedFile:
    """A file that was found but not read, and why."""

    path: Path
    reason: str


def document_id(root: Path, path: Path) -> str:
    """Stable document id of ``path`` under ``root``."""
    relative = path.relative_to(root).as_posix()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"file:{root.as_posix()}/{relative}"))


class LocalFilesReader(BaseReader):
    """Read files and folders from the local disk.

    Args:
        paths: files, folders (read recursively) or glob patterns.
        exclude: glob patterns (matched against the path relative to its root and the
            file name) of files to leave out.
        root: folder that every path must stay inside; defaults to each path's own folder.

    Example:
        >>> docs = LocalFilesReader(["docs/"], exclude=["*.png"]).load_data()  # doctest: +SKIP
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        exclude: Sequence[str] = (),
        root: str | Path | None = None,
    ) -> None:
        self.paths = [Path(p).expanduser() for p in paths]
        self.exclude = list(exclude)
        self.root = Path(root).expanduser().resolve() if root is not None else None
        self.skipped: list[SkippedFile] = []

    def _targets(self) -> Iterator[tuple[Path, Path]]:
        """(root, file) pairs, each file once, sorted for determinism."""
        seen: set[Path] = set()
        for raw in self.paths:
            if any(ch in str(raw) for ch in "*?["):
                base = self.root or Path.cwd()
                candidates: Iterable[Path] = sorted(base.glob(str(raw)))
                root = base
            elif raw.is_dir():
                root = self.root or raw.resolve()
                candidates = sorted(p for p in raw.rglob("*") if p.is_file())
            elif raw.exists():
                root = self.root or raw.resolve().parent
                candidates = [raw]
            else:
                raise FileNotFoundError(f"LocalFiles: {raw} does not exist")
            for path in candidates:
                real = path.resolve()
                if real in seen or not real.is_file():
                    continue
                if not real.is_relative_to(root):
                    self._skip(path, f"resolves outside the root {root}")
                    continue
                if self._excluded(real.relative_to(root)):
                    continue
                seen.add(real)
                yield root, real

    def _excluded(self, relative: Path) -> bool:
        rel = relative.as_posix()
        return any(
            fnmatch.fnmatch(rel, pat)
            or fnmatch.fnmatch(relative.name, pat)
            or any(fnmatch.fnmatch(part, pat) for part in relative.parts[:-1])
            for pat in self.exclude
        )

    def _skip(self, path: Path, reason: str) -> None:
        logger.info("skipping %s: %s", path, reason)
        self.skipped.append(SkippedFile(path, reason))

    def lazy_load_data(self) -> Iterator[Document]:  # type: ignore[override]
        """Yield one document per readable file, streaming (one file in memory at a time)."""
        self.skipped = []
        for root, path in self._targets():
            text = self._read(path)
            if text is None:
                continue
            stat = path.stat()
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            yield Document(
                id_=document_id(root, path),
                text=text,
                metadata={
                    "source": str(path),
                    "file_name": path.name,
                    "file_type": path.suffix.lower().lstrip(".") or path.name.lower(),
                    "last_modified": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
                    "version": digest,
                },
            )

    def load_data(self) -> list[Document]:  # type: ignore[override]
        """Read every file into memory at once (prefer :meth:`lazy_load_data`)."""
        return list(self.lazy_load_data())

    def _read(self, path: Path) -> str | None:
        suffix = path.suffix.lower()
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            self._skip(path, f"larger than {MAX_FILE_BYTES // 2**20} MiB")
            return None
        try:
            if suffix in PDF_SUFFIXES:
                return _read_pdf(path)
            raw = path.read_bytes()
        except (OSError, ValueError) as exc:
            self._skip(path, f"unreadable: {exc}")
            return None
        known = suffix in TEXT_SUFFIXES | HTML_SUFFIXES or path.name.lower() in _TEXT_NAMES
        if not known and suffix:  # extension-less files are sniffed below instead
            self._skip(path, f"unsupported file type {suffix}")
            return None
        if b"\x00" in raw[:8192]:
            self._skip(path, "binary content (NUL bytes)")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        if suffix in HTML_SUFFIXES:
            text = _html_to_text(text)
        if not text.strip():
            self._skip(path, "empty")
            return None
        return text


def _html_to_text(html: str) -> str:
    try:
        from bs4 import BeautifulSoup
    except ImportError:  # pragma: no cover - files extra missing
        import re

        return re.sub(r"<[^>]+>", " ", html)
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "footer"]):
        tag.decompose()
    return soup.get_text("\n", strip=True)


def _read_pdf(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        raise ValueError("PDF support needs pypdf: pip install 'aof-index[files]'") from exc
    reader = PdfReader(str(path))
    return "\n\n".join(page.extract_text() or "" for page in reader.pages)
