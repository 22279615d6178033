"""Metadata enrichment: titles, authors, dates, tags and summaries read from documents.

:class:`MetadataExtractor` is the LlamaIndex ``TransformComponent`` behind
``spec.processing.metadata``.  Each key is looked for in a fixed order of sources:

* ``title``: front matter ``title``, the first ``# heading`` (outside code fences), the
  HTML ``<title>``, the file name.
* ``author``: front matter ``author`` / ``authors``, HTML ``<meta name="author">``.
* ``date``: front matter ``date`` / ``lastmod``, HTML ``<meta name="date">`` or
  ``article:published_time``, the reader's ``last_modified``; normalised to ISO 8601.
* ``tags``: front matter ``tags`` / ``keywords`` / ``categories`` (merged, in that order),
  HTML ``<meta name="keywords">``; always a list of strings.
* ``summary``: two sentences from the LLM, one ``complete`` call per document.

Only the keys asked for are set, metadata a document already has is never overwritten, and
``custom`` entries are added as constants.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from email.utils import parsedate_to_datetime
from pathlib import PurePath
from typing import Any, Literal

import yaml
from bs4 import BeautifulSoup, Tag
from llama_index.core.llms import LLM
from llama_index.core.schema import BaseNode, TransformComponent
from pydantic import Field

from aof_index.errors import LLMError
from aof_index.processing.extraction import HEADER_KEY, is_html
from aof_index.processing.flat import flat_value, join_values

__all__ = [
    "METADATA_KEYS",
    "SUMMARY_PROMPT",
    "MetadataExtractor",
    "MetadataKey",
    "normalize_date",
    "split_front_matter",
]

logger = logging.getLogger(__name__)

MetadataKey = Literal["title", "author", "date", "tags", "summary"]
METADATA_KEYS: tuple[MetadataKey, ...] = ("title", "author", "date", "tags", "summary")
"""The keys ``spec.processing.metadata.extract`` may list."""

SUMMARY_PROMPT = (
    "Summarize the following document in 2 short sentences. Reply with the summary only.\n\n"
    "Document:\n{text}\n\nSummary:"
)
"""The prompt for ``summary``; ``{text}`` is the document text (cut to ``summary_max_chars``)."""

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_H1 = re.compile(r"^\s{0,3}#(?:\s+)(.+?)(?:\s+#+)?\s*$")
_DATE_FORMATS = ("%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y", "%Y/%m/%d", "%d.%m.%Y")


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Return a document's YAML front matter (``{}`` when absent or not a mapping) and body."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        data = yaml.safe_load(match.group(1) or "")
    except yaml.YAMLError:
        logger.debug("front matter is not valid YAML; ignoring it")
        data = None
    return (data if isinstance(data, dict) else {}), text[match.end() :]


def normalize_date(value: object) -> str | None:
    """Normalise a date to ISO 8601, or return ``None`` when it cannot be read.

    Dates stay dates (``2024-03-01``); datetimes keep their time and offset
    (``2024-03-01T10:00:00+00:00``).  Accepts ``date``/``datetime`` objects (YAML front
    matter gives those), ISO strings (``Z`` included), RFC 2822 strings and a few common
    written forms (``March 1, 2024``, ``1 Mar 2024``, ``2024/03/01``).
    """
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.date.fromisoformat(text).isoformat()
        return dt.datetime.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError):
        pass
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _strings(value: object) -> list[str]:
    """A tag-ish value as a list of strings: lists kept, strings split on commas."""
    if value is None:
        return []
    items: Iterable[object] = value if isinstance(value, list | tuple | set) else [value]
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        parts = str(item).split(",") if isinstance(item, str) else [str(item)]
        out.extend(p.strip() for p in parts if p.strip())
    return out


def _first_heading(body: str) -> str | None:
    fence: str | None = None
    for line in body.splitlines():
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        if opening := _FENCE.match(line):
            fence = opening.group(1)
            continue
        if heading := _H1.match(line):
            return heading.group(1).strip()
    return None


class _Sources:
    """Everything a document offers to read metadata from, parsed once."""

    def __init__(self, node: BaseNode) -> None:
        text = node.get_content()
        header = str(node.metadata.get(HEADER_KEY) or "")
        self.metadata = node.metadata
        self.front_matter, body = split_front_matter(text)
        if header and not self.front_matter:
            self.front_matter, _ = split_front_matter(header)
        # A header from the TextExtractor is the <head> the converted text no longer has.
        html = header if header.lstrip().startswith("<") else text if is_html(node) else ""
        self.soup = BeautifulSoup(html, "html.parser") if html else None
        self.body = body

    def fm(self, *keys: str) -> object:
        for key in keys:
            value = self.front_matter.get(key)
            if value not in (None, "", []):
                return value
        return None

    def meta(self, *names: str) -> str | None:
        if self.soup is None:
            return None
        for name in names:
            for attr in ("name", "property", "itemprop"):
                tag = self.soup.find("meta", attrs={attr: re.compile(f"^{re.escape(name)}$", re.I)})
                if isinstance(tag, Tag) and str(tag.get("content") or "").strip():
                    return str(tag["content"]).strip()
        return None

    def html_title(self) -> str | None:
        if self.soup is None or not isinstance(title := self.soup.find("title"), Tag):
            return None
        return " ".join(title.get_text().split()) or None

    def file_name(self) -> str | None:
        for key in ("file_name", "file_path", "source"):
            value = self.metadata.get(key)
            if value:
                return PurePath(str(value)).name or None
        return None


class MetadataExtractor(TransformComponent):
    """``spec.processing.metadata`` as a LlamaIndex transform over documents.

    Sets the keys in ``extract`` that a document does not have yet (see the module
    docstring for where each comes from), then the ``custom`` constants (also without
    overwriting).  ``summary`` needs ``llm``: asking for it without one raises
    :class:`~aof_index.errors.LLMError` at construction.  Inputs are never mutated; a
    :data:`~aof_index.processing.extraction.HEADER_KEY` left by the ``TextExtractor`` is
    read and removed.
    """

    extract: list[MetadataKey] = Field(default_factory=list, description="Keys to extract.")
    custom: dict[str, Any] = Field(default_factory=dict, description="Constant metadata.")
    llm: LLM | None = Field(default=None, description="The LLM that writes summaries.")
    summary_max_chars: int = Field(
        default=12_000, description="Document characters sent to the LLM for a summary."
    )

    def __init__(
        self,
        extract: Sequence[MetadataKey] = (),
        custom: Mapping[str, Any] | None = None,
        llm: LLM | None = None,
        **kwargs: Any,
    ) -> None:
        """Check the configuration (no I/O): ``summary`` requires an ``llm``."""
        unknown = [key for key in extract if key not in METADATA_KEYS]
        if unknown:
            raise ValueError(f"unknown metadata keys {unknown}; allowed: {list(METADATA_KEYS)}")
        if "summary" in extract and llm is None:
            raise LLMError(
                "spec.processing.metadata.extract lists 'summary', which needs an LLM, and "
                "none is configured. Configure an LLM (OPENAI_API_KEY, or "
                "AOF_INDEX_LLM_BASE_URL and AOF_INDEX_LLM_MODEL; see aof_index.llms) and pass "
                "it to build_processing(..., llm=...), or remove 'summary' from the list."
            )
        super().__init__(
            extract=list(dict.fromkeys(extract)), custom=dict(custom or {}), llm=llm, **kwargs
        )

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        """Return copies of the documents with the requested metadata added."""
        out = []
        for node in nodes:
            copy, needs_summary = self._static(node)
            if needs_summary and self.llm is not None:
                response = self.llm.complete(self._prompt(copy))
                copy.metadata["summary"] = response.text.strip()
            out.append(copy)
        return out

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        """As :meth:`__call__`, with the LLM's async ``acomplete``."""
        out = []
        for node in nodes:
            copy, needs_summary = self._static(node)
            if needs_summary and self.llm is not None:
                response = await self.llm.acomplete(self._prompt(copy))
                copy.metadata["summary"] = response.text.strip()
            out.append(copy)
        return out

    def _prompt(self, node: BaseNode) -> str:
        _, body = split_front_matter(node.get_content())
        return SUMMARY_PROMPT.format(text=body.strip()[: self.summary_max_chars])

    def _static(self, node: BaseNode) -> tuple[BaseNode, bool]:
        """A copy with every key but ``summary`` set; and whether a summary is still due."""
        copy = node.model_copy(deep=True)
        metadata = dict(copy.metadata)
        sources = _Sources(node)
        found: dict[str, Any] = {}
        for key in self.extract:
            if key == "summary" or metadata.get(key) not in (None, "", []):
                continue
            value = self._find(key, sources)
            if value not in (None, "", []):
                found[key] = value
        metadata.update(found)
        for name, value in self.custom.items():
            metadata.setdefault(name, flat_value(value))
        if HEADER_KEY in metadata:
            del metadata[HEADER_KEY]
            for excluded in (copy.excluded_embed_metadata_keys, copy.excluded_llm_metadata_keys):
                if HEADER_KEY in excluded:
                    excluded.remove(HEADER_KEY)
        copy.metadata = metadata
        needs_summary = "summary" in self.extract and not metadata.get("summary")
        return copy, needs_summary

    @staticmethod
    def _find(key: str, src: _Sources) -> Any:
        if key == "title":
            title = src.fm("title")
            return (
                (str(title).strip() if title is not None else None)
                or _first_heading(src.body)
                or src.html_title()
                or src.file_name()
            )
        if key == "author":
            author = src.fm("author", "authors")
            if author is not None:
                return ", ".join(_strings(author)) or None
            return src.meta("author")
        if key == "date":
            candidates: list[object] = [
                src.front_matter.get("date"),
                src.front_matter.get("lastmod"),
                src.meta("date"),
                src.meta("article:published_time"),
                src.metadata.get("last_modified"),
            ]
            for candidate in candidates:
                if (normalized := normalize_date(candidate)) is not None:
                    return normalized
            return None
        if key == "tags":
            tags: list[str] = []
            for fm_key in ("tags", "keywords", "categories"):
                tags.extend(_strings(src.front_matter.get(fm_key)))
            if not tags:
                tags = _strings(src.meta("keywords"))
            return join_values(None, tags) or None
        raise AssertionError(key)  # pragma: no cover - keys are checked in __init__
