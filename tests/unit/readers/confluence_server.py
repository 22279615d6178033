"""A local stand-in for Confluence Cloud's REST API v1, for the Confluence reader tests.

:class:`FakeConfluence` is a real HTTP server on 127.0.0.1 (``github_server.FakeService`` on
``site_server.LocalServer``) answering only what ConfluenceReader calls, with the JSON shapes
of https://developer.atlassian.com/cloud/confluence/rest/v1/ :

- ``GET /wiki/rest/api/content/search?cql=&limit=&expand=`` (``api-group-search``): results
  with ``version``, ``history`` and ``space`` expanded, ``_links.base``/``context``/``next``.
  At most :attr:`FakeConfluence.page_size` results a response whatever ``limit`` asks (as
  Confluence caps it), so pagination is exercised; ``next`` carries an opaque ``cursor``.
  The CQL understood is a conjunction of ``field = "value"`` clauses over ``space``,
  ``type`` and ``label`` (enough for the queries the reader builds).
- ``GET /wiki/rest/api/content/{id}?expand=body.storage,version`` (``api-group-content``).
- ``GET /wiki/rest/api/content/{id}/child/attachment`` (``start``/``limit`` pagination; its
  ``next`` link written with the context path, as some Confluence versions do).
- ``GET /wiki/download/attachments/{page}/{file}``: a redirect to the file's bytes, as
  Confluence Cloud redirects downloads to its media service.

Authentication is HTTP Basic (e-mail and API token) or, with ``bearer=True``, a Bearer
personal access token (Data Center). Errors have Confluence's body ``{"statusCode",
"message", "reason"}``; :meth:`FakeConfluence.fail` queues them (401/403/404/429 with
``Retry-After``) for the next requests to a path.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from github_server import FakeService, json_reply
from site_server import Recorded, Reply

__all__ = ["Attachment", "FakeConfluence", "Page", "serve_confluence", "tiny_docx", "tiny_pdf"]

CONTEXT = "/wiki"
_CLAUSE = re.compile(r'(\w+)\s*=\s*"?([\w-]+)"?')
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}
_MESSAGES = {
    401: "Client must be authenticated to access this resource.",
    403: "You do not have permission to view this content.",
    404: "No content found with id: ContentId{id=404}",
    429: "Rate limit exceeded.",
}


@dataclass
class Attachment:
    id: str
    title: str
    media_type: str
    data: bytes
    version: int = 1


@dataclass
class Page:
    id: str
    title: str
    body: str | None
    space: str = "OPS"
    type: str = "page"
    version: int = 1
    when: str = "2024-05-02T10:00:00.000Z"
    editor: str | None = "Grace Hopper"
    creator: str = "Ada Lovelace"
    labels: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


class FakeConfluence(FakeService):
    """Confluence at ``/wiki``: pages, their attachments, the accepted credentials.

    Attributes tests change: :attr:`pages`, :attr:`next_link_override` (sent once as the
    next search page's ``_links.next``).
    """

    page_size = 2

    def __init__(
        self, *, username: str = "me@example.com", token: str = "t", bearer: bool = False
    ) -> None:
        super().__init__()
        self.username = username
        self.token = token
        self.bearer = bearer
        self.pages: dict[str, Page] = {}
        self.next_link_override: str | None = None

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:port``."""
        return self.url("").rstrip("/")

    @property
    def site(self) -> str:
        """The site's base URL, ``http://127.0.0.1:port/wiki``."""
        return self.origin + CONTEXT

    def add(self, page: Page) -> Page:
        self.pages[page.id] = page
        return page

    def edit(self, page_id: str, body: str) -> None:
        """A new version of a page, as an edit in the editor makes."""
        page = self.pages[page_id]
        page.body = body
        page.version += 1
        page.when = "2024-06-01T09:30:00.000Z"

    def fail(self, path: str, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next request whose path contains ``path`` with a ``status`` error."""
        self.script(path, _error(status, headers))

    # --- routing ----------------------------------------------------------------------------

    def respond(self, request: Recorded, segments: list[str], query: dict[str, str]) -> Reply:
        if not self._authorized(request):
            return _error(401)
        if segments[:4] == ["wiki", "rest", "api", "content"]:
            return self._content_api(segments[4:], query)
        if segments[:3] == ["wiki", "download", "attachments"] and len(segments) == 5:
            return self._redirect_to_file(segments[3], segments[4])
        if segments[:2] == ["wiki", "files"] and len(segments) == 3:
            return self._file(segments[2])
        return _error(404)

    def _content_api(self, rest: list[str], query: dict[str, str]) -> Reply:
        if rest == ["search"]:
            return self._search(query)
        page = self.pages.get(rest[0]) if rest else None
        if page is None:
            return _error(404)
        if rest[1:] == ["child", "attachment"]:
            return self._attachments(page, query)
        if len(rest) == 1:
            return json_reply(200, self._content(page, query.get("expand", "")))
        return _error(404)

    def _search(self, query: dict[str, str]) -> Reply:
        clauses = _CLAUSE.findall(query.get("cql", ""))
        matched = [page for page in self.pages.values() if _matches(page, clauses)]
        start = int(base64.b64decode(query["cursor"]).decode()) if "cursor" in query else 0
        limit = min(int(query.get("limit", 25)), self.page_size)
        expand = query.get("expand", "")
        results = [self._content(page, expand) for page in matched[start : start + limit]]
        following = None
        if start + limit < len(matched):
            cursor = base64.b64encode(str(start + limit).encode()).decode()
            changes = {"cursor": cursor, "next": "true", "limit": str(limit)}
            following = "/rest/api/content/search?" + urlencode({**query, **changes})
            if self.next_link_override is not None:
                following, self.next_link_override = self.next_link_override, None
        return json_reply(200, self._listing(results, start, limit, following))

    def _attachments(self, page: Page, query: dict[str, str]) -> Reply:
        start = int(query.get("start", 0))
        limit = min(int(query.get("limit", 25)), self.page_size)
        chosen = page.attachments[start : start + limit]
        results = [self._attachment(page, attachment) for attachment in chosen]
        following = None
        if start + limit < len(page.attachments):
            changes = {"limit": str(limit), "start": str(start + limit)}
            path = f"{CONTEXT}/rest/api/content/{page.id}/child/attachment"
            following = path + "?" + urlencode({**query, **changes})
        return json_reply(200, self._listing(results, start, limit, following))

    def _redirect_to_file(self, page_id: str, name: str) -> Reply:
        page = self.pages.get(page_id)
        found = [a for a in page.attachments if a.title == name] if page else []
        if not found:
            return _error(404)
        return Reply(302, b"", {"Location": f"{CONTEXT}/files/{found[0].id}"})

    def _file(self, attachment_id: str) -> Reply:
        for page in self.pages.values():
            for attachment in page.attachments:
                if attachment.id == attachment_id:
                    return Reply(200, attachment.data, content_type=attachment.media_type)
        return _error(404)

    def _authorized(self, request: Recorded) -> bool:
        header = request.headers.get("authorization", "")
        if self.bearer:
            return header == f"Bearer {self.token}"
        expected = base64.b64encode(f"{self.username}:{self.token}".encode()).decode()
        return header == f"Basic {expected}"

    # --- JSON shapes --------------------------------------------------------------------------

    def _listing(
        self, results: list[dict[str, Any]], start: int, limit: int, following: str | None
    ) -> dict[str, Any]:
        links = {"base": self.site, "context": CONTEXT}
        if following:
            links["next"] = following
        size = len(results)
        return {"results": results, "start": start, "limit": limit, "size": size, "_links": links}

    def _content(self, page: Page, expand: str) -> dict[str, Any]:
        wanted = set(expand.split(","))
        content: dict[str, Any] = {
            "id": page.id,
            "type": page.type,
            "status": "current",
            "title": page.title,
            "_links": {
                "webui": f"/spaces/{page.space}/pages/{page.id}/{quote(page.title)}",
                "self": f"{self.site}/rest/api/content/{page.id}",
                "tinyui": f"/x/{page.id}",
            },
            "_expandable": {"children": "", "ancestors": ""},
        }
        if "version" in wanted:
            content["version"] = {"when": page.when, "number": page.version, "minorEdit": False}
            if page.editor:
                content["version"]["by"] = _user(page.editor)
        if "history" in wanted:
            created = "2024-01-10T08:00:00.000Z"
            content["history"] = {
                "latest": True,
                "createdBy": _user(page.creator),
                "createdDate": created,
            }
        if "space" in wanted:
            content["space"] = {"id": 98305, "key": page.space, "name": "Ops", "type": "global"}
        if "body.storage" in wanted:
            storage = {"value": page.body, "representation": "storage"}
            content["body"] = {"storage": storage} if page.body is not None else {}
        return content

    def _attachment(self, page: Page, attachment: Attachment) -> dict[str, Any]:
        name = quote(attachment.title)
        preview = quote(f"/{page.id}/{attachment.id}/{attachment.title}", safe="")
        download = f"/download/attachments/{page.id}/{name}?version={attachment.version}"
        return {
            "id": attachment.id,
            "type": "attachment",
            "status": "current",
            "title": attachment.title,
            "version": {
                "by": _user("Grace Hopper"),
                "when": "2024-05-03T11:00:00.000Z",
                "number": attachment.version,
            },
            "metadata": {"mediaType": attachment.media_type, "comment": ""},
            "extensions": {"mediaType": attachment.media_type, "fileSize": len(attachment.data)},
            "_links": {
                "webui": f"/pages/viewpageattachments.action?pageId={page.id}&preview={preview}",
                "download": download + "&modificationDate=1714734000000&api=v2",
                "self": f"{self.site}/rest/api/content/{attachment.id}",
            },
        }


def serve_confluence(**options: Any) -> Iterator[FakeConfluence]:
    """A started :class:`FakeConfluence`, closed afterwards (wrap in a pytest fixture)."""
    server = FakeConfluence(**options)
    try:
        yield server
    finally:
        server.close()


def _error(status: int, headers: dict[str, str] | None = None) -> Reply:
    body = {
        "statusCode": status,
        "data": {"authorized": status != 401, "valid": True, "errors": [], "successful": False},
        "message": _MESSAGES.get(status, "Server error"),
        "reason": _REASONS.get(status, "Error"),
    }
    return json_reply(status, body, headers)


def _user(name: str) -> dict[str, Any]:
    return {
        "type": "known",
        "accountId": "557058:" + name.lower().replace(" ", "-"),
        "accountType": "atlassian",
        "displayName": name,
        "publicName": name,
    }


def _matches(page: Page, clauses: list[tuple[str, str]]) -> bool:
    for name, value in clauses:
        if name == "space" and page.space != value:
            return False
        if name == "type" and page.type != value:
            return False
        if name == "label" and value not in page.labels:
            return False
    return True


# --- attachment files -------------------------------------------------------------------------


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, written with pypdf."""
    from pypdf import PdfWriter
    from pypdf.generic import ContentStream, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=300, height=200)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
    )
    content = ContentStream(None, writer)
    content.set_data(f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode("latin-1"))
    page.replace_contents(content)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def tiny_docx(*paragraphs: str) -> bytes:
    """A DOCX document with ``paragraphs``, written with python-docx."""
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
