"""A local stand-in for Notion's public API (version 2022-06-28), for the Notion reader tests.

:class:`FakeNotion` is a real HTTP server on 127.0.0.1 (``github_server.FakeService`` on
``site_server.LocalServer``) answering only what NotionReader calls, with the JSON shapes of
https://developers.notion.com/reference :

- ``POST /v1/databases/{id}/query`` (body ``page_size``, ``start_cursor``) and
  ``GET /v1/blocks/{id}/children?page_size=&start_cursor=``: ``{"object": "list",
  "results", "next_cursor", "has_more", "type"}``, the cursor being the next item's id as
  Notion's is. At most :attr:`FakeNotion.page_size` items a response whatever
  ``page_size`` asks, so pagination is exercised.
- ``GET /v1/pages/{id}``: a page object (``properties``, ``parent``, ``url``,
  ``last_edited_time``, ``created_by``/``last_edited_by`` user references).

Every request must carry ``Authorization: Bearer <token>`` and a ``Notion-Version`` header.
Errors use Notion's body ``{"object": "error", "status", "code", "message"}``;
:meth:`FakeNotion.fail` queues failures (401/403/404/429 with ``Retry-After``) for the
next requests to a path. Ids may be given with or without dashes, as Notion accepts both.

The helpers (:func:`text`, :func:`block`, :func:`page`) build the documented objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from github_server import FakeService, json_reply
from site_server import Recorded, Reply

__all__ = [
    "USER_ADA",
    "USER_GRACE",
    "FakeNotion",
    "block",
    "compact",
    "page",
    "serve_notion",
    "text",
]

USER_ADA = "6794760a-1f15-45cd-9c65-0dfe42f5135a"
USER_GRACE = "92a680bb-6970-4726-952b-4f4c03bff617"


def new_id() -> str:
    return str(uuid.uuid4())


def compact(notion_id: str) -> str:
    return notion_id.replace("-", "")


# --- object builders ------------------------------------------------------------------------


def text(
    content: str,
    *,
    bold: bool = False,
    italic: bool = False,
    code: bool = False,
    strike: bool = False,
    url: str | None = None,
) -> dict[str, Any]:
    """A rich text object of type ``text``."""
    return {
        "type": "text",
        "text": {"content": content, "link": {"url": url} if url else None},
        "annotations": {
            "bold": bold,
            "italic": italic,
            "strikethrough": strike,
            "underline": False,
            "code": code,
            "color": "default",
        },
        "plain_text": content,
        "href": url,
    }


_TEXT_BLOCKS = frozenset(
    {
        "paragraph",
        "heading_1",
        "heading_2",
        "heading_3",
        "bulleted_list_item",
        "numbered_list_item",
        "to_do",
        "toggle",
        "quote",
        "callout",
        "code",
        "template",
    }
)


def block(
    kind: str, *rich: dict[str, Any], children: list[Any] | None = None, **data: Any
) -> dict[str, Any]:
    """A block object; ``children`` are stored by the server under the block's id."""
    body: dict[str, Any] = dict(data)
    if kind in _TEXT_BLOCKS:
        body = {"rich_text": list(rich), "color": "default", **data}
    return {
        "object": "block",
        "id": new_id(),
        "created_time": "2024-05-01T10:00:00.000Z",
        "last_edited_time": "2024-05-01T10:00:00.000Z",
        "created_by": {"object": "user", "id": USER_ADA},
        "last_edited_by": {"object": "user", "id": USER_ADA},
        "has_children": bool(children),
        "archived": False,
        "in_trash": False,
        "type": kind,
        kind: body,
        "_children": children or [],
    }


def page(
    title: str,
    *,
    database_id: str | None = None,
    properties: dict[str, Any] | None = None,
    edited: str = "2024-05-02T10:00:00.000Z",
    blocks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A page object (a database row when ``database_id`` is given)."""
    page_id = new_id()
    parent = (
        {"type": "database_id", "database_id": database_id}
        if database_id
        else {"type": "workspace", "workspace": True}
    )
    return {
        "object": "page",
        "id": page_id,
        "created_time": "2024-01-10T08:00:00.000Z",
        "last_edited_time": edited,
        "created_by": {"object": "user", "id": USER_ADA},
        "last_edited_by": {"object": "user", "id": USER_GRACE},
        "cover": None,
        "icon": None,
        "parent": parent,
        "archived": False,
        "in_trash": False,
        "properties": {
            "Name": {"id": "title", "type": "title", "title": [text(title)]},
            **(properties or {}),
        },
        "url": f"https://www.notion.so/{title.replace(' ', '-')}-{compact(page_id)}",
        "public_url": None,
        "_children": blocks or [],
    }


# --- the server ---------------------------------------------------------------------------------

_ERRORS = {
    400: ("missing_version", "Notion-Version header failed validation."),
    401: ("unauthorized", "API token is invalid."),
    403: ("restricted_resource", "Insufficient permissions for this endpoint."),
    404: (
        "object_not_found",
        "Could not find object. Make sure the relevant pages and databases are shared with "
        "your integration.",
    ),
    429: ("rate_limited", "You have been rate limited. Please try again in a few minutes."),
}


class FakeNotion(FakeService):
    """Notion at ``/v1``: pages, databases (lists of row ids), blocks by parent id.

    Attributes tests change: :attr:`pages`, :attr:`databases`, :attr:`blocks` (all keyed by
    ids without dashes), :attr:`token` (the accepted integration token).
    """

    page_size = 2

    def __init__(self, *, token: str = "secret_t") -> None:
        super().__init__()
        self.token = token
        self.pages: dict[str, dict[str, Any]] = {}
        self.databases: dict[str, list[str]] = {}
        self.blocks: dict[str, list[dict[str, Any]]] = {}

    def add_database(self) -> str:
        database_id = new_id()
        self.databases[compact(database_id)] = []
        return database_id

    def add(self, new: dict[str, Any]) -> dict[str, Any]:
        """Store a page (and its blocks); a row joins its database."""
        self._store_children(new)
        self.pages[compact(new["id"])] = new
        database_id = new["parent"].get("database_id")
        if database_id:
            self.databases[compact(database_id)].append(compact(new["id"]))
        return new

    def edit(self, page_id: str, blocks: list[dict[str, Any]], edited: str) -> None:
        """Replace a page's content, as an edit in Notion does (``last_edited_time`` moves)."""
        stored = self.pages[compact(page_id)]
        stored["_children"] = blocks
        stored["last_edited_time"] = edited
        self._store_children(stored)

    def fail(self, path: str, status: int, headers: dict[str, str] | None = None) -> None:
        """Answer the next request whose path contains ``path`` with a ``status`` error."""
        self.script(path, _error(status, headers))

    def _store_children(self, parent: dict[str, Any]) -> None:
        children = parent.pop("_children", [])
        self.blocks[compact(parent["id"])] = children
        for child in children:
            self._store_children(child)

    # --- routing ------------------------------------------------------------------------------

    def respond(self, request: Recorded, segments: list[str], query: dict[str, str]) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401)
        if not request.headers.get("notion-version"):
            return _error(400)
        if segments[0] != "v1" or len(segments) < 3:
            return _error(404)
        kind, key, action = segments[1], compact(segments[2]), segments[3:]
        if request.method == "POST" and kind == "databases" and action == ["query"]:
            body = json.loads(request.body or b"{}")
            rows = self.databases.get(key)
            if rows is None:
                return _error(404)
            found = [_public(self.pages[row]) for row in rows]
            return self._list(found, body.get("page_size"), body.get("start_cursor"), "page")
        if request.method == "GET" and kind == "pages" and key in self.pages and not action:
            return json_reply(200, _public(self.pages[key]))
        if request.method == "GET" and kind == "blocks" and action == ["children"]:
            children = self.blocks.get(key)
            if children is None:
                return _error(404)
            found = [_public(child) for child in children]
            return self._list(found, query.get("page_size"), query.get("start_cursor"), "block")
        return _error(404)

    def _list(self, items: list[Any], size: Any, cursor: Any, kind: str) -> Reply:
        """A list object: ``next_cursor`` is the id of the first item not returned."""
        start = next((i for i, item in enumerate(items) if item["id"] == cursor), 0)
        limit = min(int(size or 100), self.page_size)
        more = start + limit < len(items)
        kind = "page_or_database" if kind == "page" else kind
        listing: dict[str, Any] = {
            "object": "list",
            "results": items[start : start + limit],
            "next_cursor": items[start + limit]["id"] if more else None,
            "has_more": more,
            "type": kind,
            kind: {},
            "request_id": new_id(),
        }
        return json_reply(200, listing)


def serve_notion(**options: Any) -> Iterator[FakeNotion]:
    """A started :class:`FakeNotion`, closed afterwards (wrap in a pytest fixture)."""
    server = FakeNotion(**options)
    try:
        yield server
    finally:
        server.close()


def _error(status: int, headers: dict[str, str] | None = None) -> Reply:
    code, message = _ERRORS.get(status, ("internal_server_error", "Unexpected error."))
    body = {"object": "error", "status": status, "code": code, "message": message}
    return json_reply(status, body, headers)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """The object as the API shows it (without the builder's ``_children``)."""
    return {key: value for key, value in item.items() if not key.startswith("_")}
