"""Turn a file's bytes into text, or say why not: shared by the file and repository readers.

:func:`unsupported_reason` decides from the file name alone (no content read) whether a file
is worth reading: known text, Markdown, code, HTML, PDF and DOCX files, plus extension-less
files (``Makefile``, ``README``...) that are sniffed instead. :func:`extract_text` turns the
bytes into text: UTF-8 (Latin-1 as a fallback) for text, the visible text for HTML (scripts,
styles, navigation and footers dropped), the pages' text for PDF (``pypdf``), the
paragraphs and tables for DOCX (``python-docx``). Content that is not text (NUL bytes), a
malformed PDF or DOCX, and empty files raise :class:`NotText` with the reason a reader
records. A cheap title comes along: the first Markdown heading, the HTML ``<title>`` (else
first ``<h1>``), or the PDF/DOCX title property.

Example:
    >>> from aof_index_readers.text import extract_text
    >>> extract_text("guide.md", b"# Setup\\n\\nRun it.").title
    'Setup'
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = [
    "DOCX_SUFFIXES",
    "HTML_SUFFIXES",
    "MARKDOWN_SUFFIXES",
    "PDF_SUFFIXES",
    "TEXT_SUFFIXES",
    "Extracted",
    "NotText",
    "extract_text",
    "file_type",
    "markdown_title",
    "unsupported_reason",
]

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx"})
TEXT_SUFFIXES = MARKDOWN_SUFFIXES | frozenset(
    [
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
DOCX_SUFFIXES = frozenset({".docx"})
_TEXT_NAMES = frozenset({"dockerfile", "makefile", "readme", "license", "jenkinsfile"})
_SNIFF_BYTES = 8192
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


class NotText(ValueError):
    """The content is not readable text; ``reason`` says why (recorded as a skip reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Extracted:
    """A file's text, and its title when the content names one cheaply."""

    text: str
    title: str | None = None


def file_type(name: str) -> str:
    """``md`` for ``a.MD``; the lower-cased name for extension-less files (``makefile``)."""
    path = PurePosixPath(name)
    return path.suffix.lower().lstrip(".") or path.name.lower()


def unsupported_reason(name: str) -> str | None:
    """Why a file called ``name`` is not read (``None`` when it may be), from its name only."""
    path = PurePosixPath(name)
    suffix = path.suffix.lower()
    readable = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | DOCX_SUFFIXES
    if not suffix or suffix in readable or path.name.lower() in _TEXT_NAMES:
        return None
    return f"unsupported file type {suffix}"


def extract_text(name: str, data: bytes) -> Extracted:
    """The text of a file called ``name`` holding ``data``.

    Raises:
        NotText: binary or malformed content, an unsupported type, or no text at all.
    """
    reason = unsupported_reason(name)
    if reason is not None:
        raise NotText(reason)
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in PDF_SUFFIXES:
        extracted = _pdf(data)
    elif suffix in DOCX_SUFFIXES:
        extracted = _docx(data)
    else:
        extracted = _plain(suffix, data)
    if not extracted.text.strip():
        raise NotText("empty")
    return extracted


def _plain(suffix: str, data: bytes) -> Extracted:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise NotText("binary content (NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if suffix in HTML_SUFFIXES:
        return _html(text)
    return Extracted(text, markdown_title(text) if suffix in MARKDOWN_SUFFIXES else None)


_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)


def markdown_title(text: str) -> str | None:
    """The front matter's ``title:`` (Hugo, Jekyll), else the first ATX heading
    (``# Title``) outside fenced code blocks."""
    if (front := _FRONT_MATTER.match(text)) and (title := _FRONT_TITLE.search(front.group(1))):
        return title.group(1).strip("\"'") or None
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            return match.group(1).strip() or None
    return None


def _html(html: str) -> Extracted:
    try:
        from bs4 import BeautifulSoup
    except ImportError:  # pragma: no cover - files extra missing
        return Extracted(re.sub(r"<[^>]+>", " ", html))
    soup = BeautifulSoup(html, "html.parser")
    heading = soup.title or soup.find("h1")
    title = heading.get_text(" ", strip=True) if heading is not None else None
    for tag in soup(["script", "style", "nav", "footer"]):
        tag.decompose()
    return Extracted(soup.get_text("\n", strip=True), title or None)


def _pdf(data: bytes) -> Extracted:
    try:
        from pypdf import PdfReader
    except ImportError as exc:  # pragma: no cover - files extra missing
        raise NotText("PDF support needs pypdf: pip install 'aof-index[files]'") from exc
    try:
        reader = PdfReader(io.BytesIO(data))
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
        title = reader.metadata.title if reader.metadata else None
    except Exception as exc:  # a damaged file raises anything from deep in the parser
        raise NotText(f"malformed PDF: {exc}") from exc
    return Extracted(text, (str(title).strip() or None) if title else None)


def _docx(data: bytes) -> Extracted:
    try:
        import docx
    except ImportError as exc:  # pragma: no cover - files extra missing
        raise NotText("DOCX support needs python-docx: pip install 'aof-index[files]'") from exc
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # BadZipFile, KeyError, lxml errors...
        raise NotText(f"malformed DOCX: {exc}") from exc
    blocks = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            blocks.append(" | ".join(cell.text.strip() for cell in row.cells))
    title = document.core_properties.title or None
    return Extracted("\n\n".join(blocks), title)
