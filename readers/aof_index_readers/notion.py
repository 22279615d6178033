"""Read Notion pages, listed from databases or by id, as Markdown.

The reader speaks Notion's public API (https://developers.notion.com/reference), version
``2022-06-28``, with an internal integration's token (``Authorization: Bearer``). Only
pages and databases shared with the integration are visible to it. Databases and pages are
named by id (with or without dashes) or by URL (``https://www.notion.so/acme/Title-<id>``).

- **Listing**: each database's pages come from ``POST /v1/databases/{id}/query`` and each
  listed page from ``GET /v1/pages/{id}``, following ``next_cursor`` while ``has_more``. No
  content is fetched. A page's ref has a stable id (``stable_id("notion", page id without
  dashes)``), its ``last_edited_time`` as the version marker, and as metadata its title
  (the ``title`` property), author (the id of the last editor, else the creator: the API
  gives only ids without extra requests), last modification time, URL, database id and
  its database properties flattened to simple values under ``property_<name>`` keys (the
  name lower-cased, non-word characters as ``_``): select and status names, multi-select
  and people names joined by ``", "``, dates (``start`` or ``start/end``), numbers,
  checkboxes, plain text of rich text, URLs, e-mails, formulas' results. Archived and
  trashed pages are left out; a page listed twice (in a database and by id) once.
- **Loading** walks ``GET /v1/blocks/{id}/children`` (paginated, recursing into blocks with
  ``has_children``) and writes Markdown: ``#``-``###`` headings, paragraphs, bulleted,
  numbered and to-do (``[ ]``/``[x]``) lists with nested items indented, fenced code with
  its language, quotes and callouts as ``>`` quotes, toggles as their text followed by
  their content, dividers, tables as pipe tables, bookmarks and embeds as links, equations
  as ``$$`` blocks. Rich text keeps bold, italic, strike-through, inline code and links.
  Images, files, videos and PDFs are not read; their captions are kept. Block types
  without a rendering give their plain text (logged at DEBUG).

Child pages and child databases inside a page are not inlined: they are read only when
listed themselves (``page_ids``, or as rows of a listed database). ``last_edited_time`` is
rounded to the minute by Notion, so two edits within one minute of a sync can look the same
until the next edit. Rate limits (429 with ``Retry-After``) are waited out by
:class:`~aof_index_readers.http.HttpClient`; the token never appears in messages or logs.

Example:
    >>> reader = NotionReader(
    ...     api_token="secret_...", database_ids=["0f3c..."], source_name="handbook"
    ... )  # doctest: +SKIP
    >>> documents = reader.load_data()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Unpack
from urllib.parse import urlsplit

from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
    as_object,
    lenient_time,
    stable_id,
)
from aof_index_readers.errors import SourceNotFoundError
from aof_index_readers.http import HttpClient
from aof_index_readers.markup import (
    code_span,
    emphasis,
    fenced,
    join_blocks,
    link,
    list_item,
    pipe_table,
    quoted,
)

__all__ = [
    "NOTION_VERSION",
    "BlockMarkdown",
    "NotionReader",
    "flatten_property",
    "notion_id",
    "plain_text",
    "property_key",
    "rich_text",
]

logger = logging.getLogger(__name__)

NOTION_VERSION = "2022-06-28"
"""The ``Notion-Version`` header: the API version whose JSON shapes the reader reads."""
PAGE_SIZE = 100
"""Results asked for per request (Notion's maximum)."""
MAX_DEPTH = 30
"""Blocks nested deeper than this are not fetched."""

_LIST_TYPES = frozenset({"bulleted_list_item", "numbered_list_item", "to_do"})
_MEDIA_TYPES = frozenset({"image", "file", "pdf", "video", "audio"})
_LINK_TYPES = frozenset({"bookmark", "embed", "link_preview"})
_CONTAINER_TYPES = frozenset({"column_list", "column", "synced_block"})
_SILENT_TYPES = frozenset({"table_of_contents", "breadcrumb", "link_to_page", "unsupported"})
_NOT_INLINED = frozenset({"child_page", "child_database"})
_ID = re.compile(r"[0-9a-fA-F]{32}")
_Json = dict[str, Any]


# --- rich text and properties ---------------------------------------------------------------


def rich_text(items: Any) -> str:
    """Notion rich text as Markdown: bold, italic, strike-through, code and links kept."""
    if not isinstance(items, list):
        return ""
    return "".join(_segment(item) for item in items if isinstance(item, dict))


def _segment(item: _Json) -> str:
    if item.get("type") == "equation":
        expression = as_object(item.get("equation")).get("expression") or item.get("plain_text")
        return f"${expression}$" if expression else ""
    text = str(item.get("plain_text") or "")
    annotations = as_object(item.get("annotations"))
    if annotations.get("code"):
        text = code_span(text)
    for key, marker in (("italic", "*"), ("bold", "**"), ("strikethrough", "~~")):
        if annotations.get(key):
            text = emphasis(text, marker)
    href = item.get("href")
    return link(text, href if isinstance(href, str) else None)


def plain_text(items: Any) -> str:
    """The rich text's characters without formatting."""
    if not isinstance(items, list):
        return ""
    return "".join(str(item.get("plain_text") or "") for item in items if isinstance(item, dict))


Scalar = str | int | float | bool | None


def flatten_property(prop: Mapping[str, Any]) -> Scalar:
    """A database property's value as one simple value (``None`` when empty or unknown).

    Example:
        >>> flatten_property({"type": "select", "select": {"name": "High"}})
        'High'
    """
    kind = str(prop.get("type"))
    value = prop.get(kind)
    if kind in {"title", "rich_text"}:
        return plain_text(value) or None
    if kind in {"select", "status"}:
        return as_object(value).get("name")
    if kind == "multi_select":
        return _names(value, "name")
    if kind in {"people", "relation"}:
        return _names(value, "name", "id")
    if kind == "files":
        return _names(value, "name")
    if kind == "date":
        return _date(value)
    if kind in {"created_by", "last_edited_by"}:
        return as_object(value).get("name") or as_object(value).get("id")
    if kind == "formula":
        return flatten_property(as_object(value))
    if kind == "unique_id":
        number = as_object(value).get("number")
        prefix = as_object(value).get("prefix")
        return f"{prefix}-{number}" if prefix and number is not None else number
    if kind in {"number", "checkbox", "url", "email", "phone_number", "string", "boolean"}:
        return value if isinstance(value, str | int | float | bool) else None
    if kind in {"created_time", "last_edited_time"}:
        return value if isinstance(value, str) else None
    return None


def _names(values: Any, *keys: str) -> str | None:
    names = []
    for value in values if isinstance(values, list) else []:
        entry = as_object(value)
        name = next((entry[key] for key in keys if entry.get(key)), None)
        if name:
            names.append(str(name))
    return ", ".join(names) or None


def _date(value: Any) -> str | None:
    date = as_object(value)
    start, end = date.get("start"), date.get("end")
    if not start:
        return None
    return f"{start}/{end}" if end else str(start)


def notion_id(value: str) -> str:
    """The id in ``value``: an id with or without dashes, or a page's or database's URL.

    Example:
        >>> notion_id("https://www.notion.so/acme/Runbooks-0f3c4e5a6b7c4d8e9f0a1b2c3d4e5f60?v=1")
        '0f3c4e5a6b7c4d8e9f0a1b2c3d4e5f60'
    """
    segment = urlsplit(value.strip()).path.rstrip("/").rsplit("/", 1)[-1]
    for candidate in (segment.replace("-", ""), segment.rsplit("-", 1)[-1]):
        if _ID.fullmatch(candidate):
            return candidate.lower()
    raise ValueError(f"Notion id {value!r} is neither an id nor a page or database URL")


def property_key(name: str) -> str:
    """The metadata key of a property: ``Due date`` is ``property_due_date``."""
    return "property_" + (re.sub(r"\W+", "_", name).strip("_").lower() or "unnamed")


# --- blocks -----------------------------------------------------------------------------------


class BlockMarkdown:
    """Write a Notion block tree as Markdown, fetching children through ``children``.

    Args:
        children: yields the child blocks of a block (or page) id, all pages of them.
        max_depth: children nested deeper than this are not fetched.

    Example:
        >>> blocks = {"p": [{"id": "b", "type": "divider", "divider": {}}]}
        >>> BlockMarkdown(lambda block_id: blocks.get(block_id, [])).render("p")
        '---'
    """

    _HANDLERS: ClassVar[dict[str, str]] = {
        "paragraph": "_paragraph",
        "toggle": "_paragraph",
        "heading_1": "_heading",
        "heading_2": "_heading",
        "heading_3": "_heading",
        "bulleted_list_item": "_list_item",
        "numbered_list_item": "_list_item",
        "to_do": "_list_item",
        "quote": "_quote",
        "callout": "_quote",
        "code": "_code",
        "divider": "_divider",
        "equation": "_equation",
        "table": "_table",
    }

    def __init__(
        self, children: Callable[[str], Iterable[_Json]], *, max_depth: int = MAX_DEPTH
    ) -> None:
        self.children = children
        self.max_depth = max_depth

    def render(self, block_id: str, depth: int = 0) -> str:
        """The Markdown of ``block_id``'s children; items of one list on adjacent lines."""
        out: list[str] = []
        previous = ""
        number = 0
        for block in self.children(block_id):
            kind = str(block.get("type"))
            number = number + 1 if kind == "numbered_list_item" else 0
            text = self.block(block, number, depth)
            if not text.strip():
                continue
            if out:
                out.append("\n" if kind == previous and kind in _LIST_TYPES else "\n\n")
            out.append(text)
            previous = kind
        return "".join(out)

    def block(self, block: _Json, number: int, depth: int) -> str:
        """One block (and what is nested in it) as Markdown; ``number`` counts list items."""
        kind = str(block.get("type"))
        handler = self._HANDLERS.get(kind)
        if handler is not None:
            method: Callable[[_Json, int, int], str] = getattr(self, handler)
            return method(block, number, depth)
        data = as_object(block.get(kind))
        if kind in _LINK_TYPES:
            url = data.get("url")
            return link(rich_text(data.get("caption")) or str(url or ""), url)
        if kind in _MEDIA_TYPES:
            logger.debug(
                "Notion: not reading the %s block %s; keeping its caption", kind, _id(block)
            )
            return rich_text(data.get("caption"))
        if kind in _CONTAINER_TYPES:
            return self._nested(block, depth)
        if kind in _NOT_INLINED:
            logger.debug("Notion: %s %s is read only when listed itself", kind, _id(block))
            return ""
        if kind not in _SILENT_TYPES:
            logger.debug("Notion: block type %r has no rendering; keeping its text", kind)
        return join_blocks([plain_text(data.get("rich_text")), self._nested(block, depth)])

    # --- block types ------------------------------------------------------------------------

    def _paragraph(self, block: _Json, number: int, depth: int) -> str:
        return join_blocks([self._text(block), self._nested(block, depth)])

    def _heading(self, block: _Json, number: int, depth: int) -> str:
        level = int(str(block.get("type"))[-1])
        title = self._text(block).replace("\n", " ").strip()
        heading = f"{'#' * level} {title}" if title else ""
        return join_blocks([heading, self._nested(block, depth)])

    def _list_item(self, block: _Json, number: int, depth: int) -> str:
        kind = str(block.get("type"))
        text = self._text(block)
        if kind == "to_do":
            checked = as_object(block.get(kind)).get("checked")
            text = f"[{'x' if checked else ' '}] {text}"
        nested = self._nested(block, depth)
        body = f"{text}\n{nested}" if nested else text
        return list_item(f"{number}. " if kind == "numbered_list_item" else "- ", body)

    def _quote(self, block: _Json, number: int, depth: int) -> str:
        data = as_object(block.get(str(block.get("type"))))
        icon = as_object(data.get("icon"))
        text = self._text(block)
        if icon.get("type") == "emoji" and icon.get("emoji"):
            text = f"{icon['emoji']} {text}"
        return quoted(join_blocks([text, self._nested(block, depth)]))

    def _code(self, block: _Json, number: int, depth: int) -> str:
        data = as_object(block.get("code"))
        language = str(data.get("language") or "")
        return fenced(
            plain_text(data.get("rich_text")), "" if language == "plain text" else language
        )

    def _divider(self, block: _Json, number: int, depth: int) -> str:
        return "---"

    def _equation(self, block: _Json, number: int, depth: int) -> str:
        expression = str(as_object(block.get("equation")).get("expression") or "").strip()
        return f"$$\n{expression}\n$$" if expression else ""

    def _table(self, block: _Json, number: int, depth: int) -> str:
        rows = [
            [rich_text(cell) for cell in as_object(row.get("table_row")).get("cells") or []]
            for row in self._child_blocks(block, depth)
            if row.get("type") == "table_row"
        ]
        header = bool(as_object(block.get("table")).get("has_column_header"))
        return pipe_table(rows, header=header)

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _text(block: _Json) -> str:
        return rich_text(as_object(block.get(str(block.get("type")))).get("rich_text"))

    def _nested(self, block: _Json, depth: int) -> str:
        if not block.get("has_children") or not block.get("id"):
            return ""
        if depth >= self.max_depth:
            logger.debug("Notion: not reading blocks nested deeper than %d", self.max_depth)
            return ""
        return self.render(str(block["id"]), depth + 1)

    def _child_blocks(self, block: _Json, depth: int) -> Iterable[_Json]:
        if not block.get("has_children") or not block.get("id") or depth >= self.max_depth:
            return []
        return self.children(str(block["id"]))


# --- the reader ---------------------------------------------------------------------------------


class NotionReader(SourceReader):
    """Read Notion pages (database rows and pages listed by id) as Markdown documents.

    Args:
        api_token: the internal integration's token (``secret_...`` or ``ntn_...``).
        database_ids: databases whose pages are read: ids (with or without dashes) or the
            databases' URLs.
        page_ids: pages read individually: ids or URLs.
        base_url: the API's address (change it only for a proxy or a stand-in).
        http_options: keyword arguments for :class:`~aof_index_readers.http.HttpClient`
            (``timeout``, ``max_retries``, ``max_wait``...).
        source_name, max_document_bytes, max_source_bytes: see
            :class:`~aof_index_readers.base.SourceReader`.

    Example:
        >>> reader = NotionReader(api_token=token, page_ids=["9b1c..."])  # doctest: +SKIP
        >>> [ref.metadata["title"] for ref in reader.list_documents()]  # doctest: +SKIP
        ['On-call handbook']
    """

    source_type: ClassVar[str] = "Notion"

    def __init__(
        self,
        *,
        api_token: str,
        database_ids: Sequence[str] = (),
        page_ids: Sequence[str] = (),
        base_url: str = "https://api.notion.com",
        http_options: Mapping[str, Any] | None = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        if not database_ids and not page_ids:
            raise ValueError("Notion source needs database_ids, page_ids or both")
        self.database_ids = [notion_id(value) for value in database_ids]
        self.page_ids = [notion_id(value) for value in page_ids]
        self.base_url = base_url.rstrip("/")
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": {
                "Authorization": f"Bearer {api_token}",
                "Notion-Version": NOTION_VERSION,
                "Accept": "application/json",
            },
            "credential_hint": (
                "the integration token in apiTokenSecretRef (and that the page or database "
                "is shared with the integration)"
            ),
            **(http_options or {}),
        }
        self._http = HttpClient(self.source_type, self.source_name, **options)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # --- listing ------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """One ref per page of the databases and per listed page, each page once."""
        seen: set[str] = set()
        for page in self._pages():
            if page.get("archived") or page.get("in_trash"):
                logger.debug(
                    "Notion source %r: leaving out archived page %s", self.source_name, _id(page)
                )
                continue
            ref = self._ref(page)
            if ref.id not in seen:
                seen.add(ref.id)
                yield ref

    def _pages(self) -> Iterator[_Json]:
        for database_id in self.database_ids:
            for page in self._list("POST", f"/v1/databases/{database_id}/query"):
                if page.get("object") == "page":
                    yield page
        for page_id in self.page_ids:
            yield as_object(self._http.get_json(f"/v1/pages/{page_id}"))

    def _list(self, method: str, path: str) -> Iterator[_Json]:
        """Every result of a cursor-paginated list (``start_cursor``/``next_cursor``)."""
        cursor: str | None = None
        while True:
            page: dict[str, Any] = {"page_size": PAGE_SIZE}
            if cursor:
                page["start_cursor"] = cursor
            if method == "GET":
                response = self._http.get(path, params=page)
            else:
                response = self._http.request(method, path, json_body=page)
            data = as_object(self._http.json(response))
            for result in data.get("results") or []:
                if isinstance(result, dict):
                    yield result
            cursor = data.get("next_cursor") if data.get("has_more") else None
            if not cursor:
                return

    def _ref(self, page: _Json) -> DocumentRef:
        page_id = str(page.get("id") or "")
        properties = as_object(page.get("properties"))
        metadata: dict[str, Any] = {
            "source": page.get("url"),
            "title": _title(properties),
            "author": _user_id(page.get("last_edited_by")) or _user_id(page.get("created_by")),
            "last_modified": lenient_time(page.get("last_edited_time")),
            "page_id": page_id,
            "database_id": as_object(page.get("parent")).get("database_id"),
        }
        for name, prop in properties.items():
            if isinstance(prop, dict) and prop.get("type") != "title":
                value = flatten_property(prop)
                if value is not None:
                    metadata[property_key(str(name))] = value
        return DocumentRef(
            stable_id("notion", page_id.replace("-", "")),
            str(page.get("last_edited_time") or ""),
            metadata,
            handle=page_id,
        )

    # --- loading ------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """The page's blocks as Markdown (``None`` when the page is gone or empty)."""
        what = str(ref.metadata.get("source") or ref.handle)
        renderer = BlockMarkdown(
            lambda block_id: self._list("GET", f"/v1/blocks/{block_id}/children")
        )
        try:
            text = renderer.render(str(ref.handle))
        except SourceNotFoundError:
            self.skip(
                what,
                "the page no longer exists or is no longer shared with the integration (404)",
            )
            return None
        return self.make_document(ref, text)


def _title(properties: Mapping[str, Any]) -> str | None:
    for prop in properties.values():
        if isinstance(prop, dict) and prop.get("type") == "title":
            return plain_text(prop.get("title")) or None
    return None


def _user_id(user: Any) -> str | None:
    value = as_object(user).get("id")
    return str(value) if value else None


def _id(value: Mapping[str, Any]) -> str:
    return str(value.get("id") or "?")
