"""Read the pages of a Confluence space (Cloud or Data Center), and optionally their attachments.

The reader speaks Confluence's REST API v1
(https://developer.atlassian.com/cloud/confluence/rest/v1/):

- **Listing** is one CQL search, ``GET /rest/api/content/search?cql=...&limit=50&expand=
  version,history,space``, following ``_links.next`` page by page. No page body is fetched:
  each page's ref has a stable id (``stable_id("confluence", host, content id)``), its
  version number as the version marker, and its title, author (the last editor, else the
  creator), last modification time, web link (``_links.base`` + ``_links.webui``) and space
  key as metadata. The default query is ``space = "KEY" and type = page``; a ``cql`` given
  with no ``space_key`` replaces it, and with one is AND-ed with ``space = "KEY"``.
  Results that are neither pages nor blog posts (comments, attachments matched by a custom
  query) are left out.
- **Loading** a page fetches ``GET /rest/api/content/{id}?expand=body.storage,version`` and
  turns the storage format (XHTML with ``ac:``/``ri:`` elements) into Markdown: headings,
  paragraphs, lists and task lists, code macros as fenced blocks with their language,
  info/note/warning/tip/panel/expand macros as their body, tables as pipe tables, links as
  their text, user mentions as ``@`` plus the user name or account id (Confluence Cloud
  gives only the id; no extra request resolves it), status lozenges as their title. Images,
  emoticons and macros without a body (table of contents, children) are dropped. Malformed
  markup gives its best-effort text; a body the parser rejects, or a response without a
  storage-format body, is skipped with the reason.
- **Attachments** (``include_attachments``): each page's
  ``GET /rest/api/content/{id}/child/attachment`` (paginated) lists one document per
  attachment, its version the attachment's version number. Text, Markdown, HTML, PDF and
  DOCX attachments are downloaded from ``_links.download`` and their text extracted by
  :func:`aof_index_readers.text.extract_text`; other media types (images, archives) are
  skipped with the media type as the reason, without being downloaded.

Authentication: Confluence Cloud takes the account's e-mail as ``username`` and an API token
(HTTP Basic); Data Center takes a personal access token alone (``username=None``: sent as a
Bearer token). Every request goes through :class:`~aof_index_readers.http.HttpClient`
(retries, ``Retry-After`` on 429, typed 401/403/404 errors); the token never appears in
messages, logs or metadata.

Example:
    >>> reader = ConfluenceReader(
    ...     base_url="https://example.atlassian.net/wiki", space_key="OPS",
    ...     username="me@example.com", api_token="...", source_name="runbooks",
    ... )  # doctest: +SKIP
    >>> documents = reader.load_data()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Unpack
from urllib.parse import urlsplit

import httpx
from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
    as_object,
    lenient_time,
    stable_id,
)
from aof_index_readers.errors import SourceError, SourceLimitError
from aof_index_readers.http import HttpClient
from aof_index_readers.markup import HtmlToMarkdown, fenced, join_blocks, list_item
from aof_index_readers.text import unsupported_reason

if TYPE_CHECKING:
    from bs4 import Tag
    from bs4.element import PageElement

__all__ = ["ConfluenceReader", "StorageFormat", "api_root", "build_cql"]

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
"""Results asked for per listing request (Confluence may return fewer)."""

_CONTENT_TYPES = frozenset({"page", "blogpost"})
_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_DOCUMENT_MEDIA = {
    "application/pdf": ".pdf",
    _DOCX: ".docx",
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/markdown": ".md",
}
"""Media types read as documents, and the file suffix that makes the extractor read them so."""
_TEXT_MEDIA = frozenset(
    {"application/json", "application/xml", "application/yaml", "application/x-yaml"}
)
_ORDER_BY = re.compile(r"\s+(order\s+by\s+[^\"']*)$", re.IGNORECASE)


# --- storage format -----------------------------------------------------------------------


class StorageFormat(HtmlToMarkdown):
    """Confluence storage format (XHTML with ``ac:`` and ``ri:`` elements) to Markdown.

    Example:
        >>> StorageFormat().convert(
        ...     '<ac:structured-macro ac:name="code"><ac:parameter ac:name="language">sh'
        ...     "</ac:parameter><ac:plain-text-body><![CDATA[make]]></ac:plain-text-body>"
        ...     "</ac:structured-macro>"
        ... )
        '```sh\\nmake\\n```'
    """

    BLOCK_TAGS: ClassVar[frozenset[str]] = HtmlToMarkdown.BLOCK_TAGS | {
        "ac:layout",
        "ac:layout-section",
        "ac:layout-cell",
        "ac:rich-text-body",
        "ac:task-list",
    }
    DROP_TAGS: ClassVar[frozenset[str]] = HtmlToMarkdown.DROP_TAGS | {
        "ac:image",
        "ac:emoticon",
        "ac:placeholder",
        "ac:parameter",
        "ac:adf-attribute",
        "ac:adf-fallback",
    }
    MACROS: ClassVar[frozenset[str]] = frozenset({"ac:structured-macro", "ac:macro"})
    CODE_MACROS: ClassVar[frozenset[str]] = frozenset({"code", "noformat"})

    def is_block(self, node: PageElement) -> bool:
        """Macros with a body, and code macros, are blocks; the others flow inline."""
        if self.tag_name(node) in self.MACROS:
            macro: Tag = node  # type: ignore[assignment]
            return self._macro_name(macro) in self.CODE_MACROS or (
                self._child(macro, "ac:rich-text-body") is not None
                or self._child(macro, "ac:plain-text-body") is not None
            )
        return super().is_block(node)

    def block(self, tag: Tag, depth: int) -> list[str]:
        """Code and body macros, task lists; HTML elements as the base class does."""
        name = self.tag_name(tag)
        if name in self.MACROS:
            return self.macro(tag, depth)
        if name == "ac:task-list":
            return [self.task_list(tag, depth)]
        return super().block(tag, depth)

    def inline_tag(self, tag: Tag, depth: int) -> str:
        """Links and mentions as their text, inline macros (status) as their title."""
        name = self.tag_name(tag)
        if name == "ac:link":
            return self.link_text(tag, depth)
        if name.startswith("ri:"):
            return self.resource_text(tag)
        if name in self.MACROS:
            return self.inline_macro(tag)
        return super().inline_tag(tag, depth)

    # --- elements -----------------------------------------------------------------------

    def macro(self, tag: Tag, depth: int) -> list[str]:
        """A code macro as a fenced block; a macro with a body as its title and body."""
        name = self._macro_name(tag)
        if name in self.CODE_MACROS:
            language = self._parameter(tag, "language") if name == "code" else ""
            return [fenced(self._plain_body(tag), language)]
        rich = self._child(tag, "ac:rich-text-body")
        body = self.blocks(rich, depth) if rich is not None else [self._plain_body(tag)]
        return [self.paragraph(self._parameter(tag, "title")), *body]

    def inline_macro(self, tag: Tag) -> str:
        """A macro without a body: a status lozenge's title, a Jira issue's key, else nothing."""
        name = self._macro_name(tag)
        if name == "status":
            return self._parameter(tag, "title")
        if name == "jira":
            return self._parameter(tag, "key")
        logger.debug("Confluence storage format: dropping the %r macro", name)
        return ""

    def task_list(self, tag: Tag, depth: int) -> str:
        """``ac:task`` items as ``- [ ]``/``- [x]`` lines (nested lists indented)."""
        items = []
        for task in tag.find_all("ac:task", recursive=False):
            status = self._child(task, "ac:task-status")
            done = status is not None and status.get_text().strip() == "complete"
            body = self._child(task, "ac:task-body")
            text = join_blocks(self.blocks(body, depth + 1), "\n") if body is not None else ""
            items.append(list_item("- ", f"[{'x' if done else ' '}] {text}"))
        return "\n".join(items)

    def link_text(self, tag: Tag, depth: int) -> str:
        """An ``ac:link``: its body text, else the text of what it points to."""
        body = self._child(tag, "ac:link-body")
        text = self.inline_text(body, depth) if body is not None else ""
        plain = self._child(tag, "ac:plain-text-link-body")
        if plain is not None:
            text = plain.get_text()
        resource = tag.find(lambda t: str(t.name).startswith("ri:"), recursive=False)
        if resource is not None and self.tag_name(resource) == "ri:user" and text.strip():
            return "@" + text.strip().lstrip("@")
        if text.strip():
            return text
        if resource is not None:
            return self.resource_text(resource)  # type: ignore[arg-type]
        return str(tag.get("ac:anchor") or "")

    @staticmethod
    def resource_text(tag: Tag) -> str:
        """What an ``ri:`` resource shows: a user's mention, a page's title, a file's name."""
        name = str(tag.name).lower()
        if name == "ri:user":
            user = tag.get("ri:username") or tag.get("ri:userkey") or tag.get("ri:account-id")
            return f"@{user}" if user else ""
        for attribute in ("ri:content-title", "ri:filename", "ri:space-key", "ri:value"):
            value = tag.get(attribute)
            if value:
                return str(value)
        return ""

    # --- helpers ------------------------------------------------------------------------

    @staticmethod
    def _child(tag: Tag, name: str) -> Tag | None:
        found = tag.find(name, recursive=False)
        return found if found is not None and found.name else None  # type: ignore[return-value]

    @staticmethod
    def _macro_name(tag: Tag) -> str:
        return str(tag.get("ac:name") or "").lower()

    def _parameter(self, tag: Tag, name: str) -> str:
        for parameter in tag.find_all("ac:parameter", recursive=False):
            if str(parameter.get("ac:name") or "").lower() == name:
                return str(parameter.get_text().strip())
        return ""

    def _plain_body(self, tag: Tag) -> str:
        body = self._child(tag, "ac:plain-text-body")
        return body.get_text().strip("\n") if body is not None else ""


# --- the reader ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """What a load needs: the content id, and for attachments where and what to download."""

    content_id: str
    attachment: bool = False
    name: str = ""
    media_type: str = ""
    size: int | None = None
    download: str | None = None


def api_root(base_url: str) -> str:
    """The URL the REST API hangs off: ``https://x.atlassian.net`` becomes ``.../wiki``.

    A Confluence Cloud site (``*.atlassian.net``) serves Confluence under ``/wiki``; it is
    added when missing. Data Center URLs are kept as given (with their context path, if
    any). A trailing ``/`` or ``/rest/api`` is dropped.
    """
    url = base_url.strip().rstrip("/")
    url = url.removesuffix("/rest/api")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"Confluence base_url {base_url!r} must be an http(s) URL")
    if parts.hostname.endswith(".atlassian.net") and not parts.path:
        url += "/wiki"
    return url


def build_cql(space_key: str | None, cql: str | None) -> str:
    """The listing's CQL: the space's pages, the given query, or both AND-ed.

    A trailing ``order by`` clause of ``cql`` stays at the end.

    Example:
        >>> build_cql("OPS", 'label = "runbook" order by created')
        'space = "OPS" and (label = "runbook") order by created'
    """
    space = f'space = "{_escape(space_key)}"' if space_key else ""
    if not cql or not cql.strip():
        if not space:
            raise ValueError("Confluence source needs space_key, cql or both")
        return f"{space} and type = page"
    if not space:
        return cql.strip()
    match = _ORDER_BY.search(cql.strip())
    where = cql.strip()[: match.start()] if match else cql.strip()
    order = f" {match.group(1)}" if match else ""
    return f"{space} and ({where.strip()}){order}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class ConfluenceReader(SourceReader):
    """Read the pages (and attachments) of a Confluence space or CQL query.

    Args:
        base_url: the site, ``https://example.atlassian.net/wiki`` (``/wiki`` may be left
            out for ``*.atlassian.net``) or a Data Center URL with its context path
            (``https://confluence.example.com`` or ``.../confluence``).
        space_key: the space to read (``OPS``).
        username: the account e-mail for a Cloud API token (HTTP Basic); ``None`` sends
            ``api_token`` as a Bearer token (a Data Center personal access token).
        api_token: the API token or personal access token; ``None`` reads anonymously.
        cql: a CQL query selecting the content; AND-ed with the space when both are given.
        include_attachments: also read each page's attachments (text, Markdown, HTML, PDF,
            DOCX).
        http_options: keyword arguments for :class:`~aof_index_readers.http.HttpClient`
            (``timeout``, ``max_retries``, ``max_wait``...).
        source_name, max_document_bytes, max_source_bytes: see
            :class:`~aof_index_readers.base.SourceReader`.

    Example:
        >>> reader = ConfluenceReader(
        ...     base_url="https://example.atlassian.net", space_key="OPS",
        ...     username="me@example.com", api_token=token, include_attachments=True,
        ... )  # doctest: +SKIP
        >>> versions = {ref.id: ref.version for ref in reader.list_documents()}  # doctest: +SKIP
    """

    source_type: ClassVar[str] = "Confluence"

    def __init__(
        self,
        *,
        base_url: str,
        space_key: str | None = None,
        username: str | None = None,
        api_token: str | None = None,
        cql: str | None = None,
        include_attachments: bool = False,
        http_options: Mapping[str, Any] | None = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        self.base_url = api_root(base_url)
        self.space_key = space_key
        self.cql = build_cql(space_key, cql)
        self.include_attachments = include_attachments
        self._host = (urlsplit(self.base_url).netloc or "").lower()
        self._path = urlsplit(self.base_url).path
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": {"Accept": "application/json"},
            "credential_hint": "the personal access token in apiTokenSecretRef",
        }
        if api_token and username:
            options["auth"] = httpx.BasicAuth(username, api_token)
            options["credential_hint"] = "the username and the API token in apiTokenSecretRef"
        elif api_token:
            options["headers"] = {**options["headers"], "Authorization": f"Bearer {api_token}"}
        options.update(http_options or {})
        self._http = HttpClient(self.source_type, self.source_name, **options)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # --- listing ------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """One ref per page or blog post the query matches (and per attachment, if asked)."""
        params = {"cql": self.cql, "limit": PAGE_SIZE, "expand": "version,history,space"}
        for content, base in self._results("/rest/api/content/search", params):
            if content.get("type") not in _CONTENT_TYPES:
                logger.debug(
                    "Confluence source %r: leaving out %s %s",
                    self.source_name,
                    content.get("type"),
                    content.get("id"),
                )
                continue
            ref = self._page_ref(content, base)
            yield ref
            if self.include_attachments:
                yield from self._attachment_refs(ref)

    def _results(
        self, path: str, params: Mapping[str, Any]
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Every result of a paginated listing with the ``_links.base`` of its page."""
        response = as_object(self._http.get_json(path, params=params))
        while True:
            links = as_object(response.get("_links"))
            base = str(links.get("base") or self.base_url).rstrip("/")
            for result in response.get("results") or []:
                if isinstance(result, dict) and result.get("id") is not None:
                    yield result, base
            following = links.get("next")
            if not isinstance(following, str) or not following:
                return
            response = as_object(self._http.get_json(self._site_url(following)))

    def _site_url(self, following: str) -> str:
        """A ``_links.next`` or download link as a URL of this site (credentials stay here)."""
        if following.startswith(("http://", "https://")):
            if not following.startswith(self.base_url + "/"):
                raise SourceError(
                    f"Confluence source {self.source_name!r}: the service's next-page link "
                    f"points outside {self.base_url}; the reader does not send credentials "
                    "there. Check base_url (use the site's canonical address)"
                )
            return following
        if self._path and following.startswith(self._path + "/rest/"):
            following = following[len(self._path) :]  # relative to the host, not the base
        return following

    def _page_ref(self, content: dict[str, Any], base: str) -> DocumentRef:
        content_id = str(content["id"])
        version = as_object(content.get("version"))
        history = as_object(content.get("history"))
        links = as_object(content.get("_links"))
        metadata = {
            "source": base + str(links.get("webui") or ""),
            "title": content.get("title"),
            "author": _display_name(version.get("by")) or _display_name(history.get("createdBy")),
            "last_modified": lenient_time(version.get("when")),
            "space": as_object(content.get("space")).get("key") or self.space_key,
            "content_type": content.get("type"),
            "content_id": content_id,
        }
        return DocumentRef(
            stable_id("confluence", self._host, content_id),
            _version(version),
            metadata,
            handle=_Item(content_id),
        )

    def _attachment_refs(self, page: DocumentRef) -> Iterator[DocumentRef]:
        item: _Item = page.handle
        path = f"/rest/api/content/{item.content_id}/child/attachment"
        params = {"limit": PAGE_SIZE, "expand": "version"}
        for attachment, base in self._results(path, params):
            yield self._attachment_ref(attachment, base, page)

    def _attachment_ref(
        self, attachment: dict[str, Any], base: str, page: DocumentRef
    ) -> DocumentRef:
        content_id = str(attachment["id"])
        version = as_object(attachment.get("version"))
        links = as_object(attachment.get("_links"))
        extensions = as_object(attachment.get("extensions"))
        media_type = str(
            as_object(attachment.get("metadata")).get("mediaType")
            or extensions.get("mediaType")
            or ""
        )
        name = str(attachment.get("title") or content_id)
        download = links.get("download")
        metadata = {
            "source": base + str(links.get("webui") or download or ""),
            "title": name,
            "author": _display_name(version.get("by")),
            "last_modified": lenient_time(version.get("when")),
            "space": page.metadata.get("space"),
            "content_type": "attachment",
            "content_id": content_id,
            "media_type": media_type or None,
            "parent_title": page.metadata.get("title"),
        }
        size = extensions.get("fileSize")
        handle = _Item(
            content_id,
            attachment=True,
            name=name,
            media_type=media_type.split(";", 1)[0].strip().lower(),
            size=size if isinstance(size, int) else None,
            download=str(download) if download else None,
        )
        return DocumentRef(
            stable_id("confluence", self._host, content_id), _version(version), metadata, handle
        )

    # --- loading ------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """A page's storage format as Markdown, or an attachment's extracted text."""
        item: _Item = ref.handle
        if item.attachment:
            return self._load_attachment(ref, item)
        return self._load_page(ref, item)

    def _load_page(self, ref: DocumentRef, item: _Item) -> Document | None:
        what = str(ref.metadata.get("source") or item.content_id)
        response = self._http.get(
            f"/rest/api/content/{item.content_id}",
            params={"expand": "body.storage,version"},
            allow=frozenset({404}),
        )
        if response.status_code == 404:
            self.skip(what, "the page no longer exists (404); the next listing drops it")
            return None
        body = as_object(as_object(self._http.json(response)).get("body"))
        storage = as_object(body.get("storage")).get("value")
        if not isinstance(storage, str):
            self.skip(what, "the response has no storage-format body (body.storage.value)")
            return None
        text = self._convert(what, storage)
        return None if text is None else self.make_document(ref, text)

    def _convert(self, what: str, storage: str) -> str | None:
        from bs4 import ParserRejectedMarkup

        try:
            return StorageFormat().convert(storage)
        except ParserRejectedMarkup as exc:
            lines = str(exc).strip().splitlines()
            self.skip(what, f"the storage format could not be parsed ({lines[-1].strip()})")
            return None

    def _load_attachment(self, ref: DocumentRef, item: _Item) -> Document | None:
        what = str(ref.metadata.get("source") or item.content_id)
        name = _extraction_name(item.name, item.media_type)
        if name is None:
            self.skip(what, f"unsupported media type {item.media_type or '(none given)'}")
            return None
        if item.size is not None and self.too_large(what, item.size):
            return None
        if not item.download:
            self.skip(what, "the attachment has no download link")
            return None
        data = self._download(what, item.download)
        if data is None or self.too_large(what, len(data)):
            return None
        extracted = self.extract(what, name, data)
        return None if extracted is None else self.make_document(ref, extracted.text)

    def _download(self, what: str, download: str) -> bytes | None:
        try:
            response = self._http.get(self._site_url(download), allow=frozenset({404}))
        except SourceLimitError:
            self.skip(what, f"larger than the {self._http.max_bytes:,} bytes a download may be")
            return None
        if response.status_code == 404:
            self.skip(what, "the attachment no longer exists (404)")
            return None
        return response.content


def _extraction_name(name: str, media_type: str) -> str | None:
    """The file name that makes the text extractor read ``media_type`` content, if readable."""
    suffix = _DOCUMENT_MEDIA.get(media_type)
    if suffix is not None:
        return name if name.lower().endswith(suffix) else name + suffix
    if media_type.startswith("text/") or media_type in _TEXT_MEDIA:
        return name if unsupported_reason(name) is None else name + ".txt"
    return None


def _display_name(user: Any) -> str | None:
    user = as_object(user)
    name = user.get("displayName") or user.get("publicName") or user.get("username")
    return str(name) if name else None


def _version(version: dict[str, Any]) -> str:
    number = version.get("number")
    return str(number if number is not None else version.get("when") or "")
