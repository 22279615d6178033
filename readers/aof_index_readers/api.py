"""Read the records of a JSON HTTP API into documents, one document per record.

:class:`APIReader` requests ``endpoint`` (``GET``, or ``POST`` with a JSON ``body``), selects
the records with a JSONPath expression (``json_path``, jsonpath-ng's extended syntax, filters
included; a match that is a list contributes its elements, so ``$.items`` and ``$.items[*]``
select the same records) or, without one, takes the top-level list's elements, or the
top-level object as the only record.

Pagination: a ``GET`` follows ``Link: <...>; rel="next"`` headers (RFC 8288, as GitHub and
GitLab send them) page after page. Other schemes (a cursor or page number in the body or
the query) are not followed; ``POST`` requests are sent once.

Each record that is a JSON object becomes a document (other values are skipped with a
reason):

- id: ``stable_id("api", endpoint without its query, record id)``; the record id is the
  ``id_field`` value, by default the record's ``id`` when it has one, else the SHA-256 of
  the record's canonical JSON (such an id changes with the content: an edited record then
  replaces the old document instead of updating it). Duplicate ids are skipped.
- version: the ``updated_field`` value (default: ``updated_at``, ``updatedAt``,
  ``modified_at`` or ``last_modified``) when the record has it, else the record's hash.
- text: the ``text_fields`` (default: every field) as ``key: value`` lines, nested values
  as compact JSON; a single text field gives its value alone.
- metadata: ``source`` (the endpoint without its query: queries can hold API keys),
  ``title`` (``title_field``, default ``title`` or ``name``), ``last_modified``
  (``updated_field``, when it parses as an ISO date or a Unix time) and ``record_id``.

The listing reads every page (there is no cheaper way to learn the records and their
versions) and keeps each record on its ref, so loading the listed documents sends no
further request; a ref without its record (from another reader) fetches the records again.

Requests go through :class:`~aof_index_readers.http.HttpClient` (retries, rate limits,
typed errors) with an :class:`~aof_index_readers.guard.AddressPolicy`: loopback,
link-local and private addresses are refused unless listed in ``allow_private``. A body
that is not JSON, or a ``json_path`` that matches nothing in a page, fails the whole read
with a :class:`~aof_index_readers.errors.SourceError` (listing nothing instead would make
an incremental sync delete every document of the source); a path that matches an empty
list is fine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Unpack
from urllib.parse import urlsplit, urlunsplit

from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
    iso_time,
    stable_id,
)
from aof_index_readers.errors import SourceError
from aof_index_readers.guard import AddressPolicy
from aof_index_readers.http import HttpClient

if TYPE_CHECKING:
    import httpx
    from jsonpath_ng import JSONPath

__all__ = ["PRIVATE_NETWORK_HINT", "APIReader"]

PRIVATE_NETWORK_HINT = (
    "list the host, address or network in the annotation aof.agenticops.org/allow-private-networks"
)


class APIReader(SourceReader):
    """Read the records a JSON API returns.

    Args:
        endpoint: the http(s) URL to request.
        method: ``GET`` (paginated by ``Link`` headers) or ``POST`` (sent once).
        headers: request headers, already rendered (secret templates resolved).
        auth_token: sent as ``Authorization: Bearer <token>`` unless ``headers`` has an
            ``Authorization`` header.
        json_path: JSONPath selecting the records (default: the top-level list, or the
            top-level object).
        body: the JSON body of a ``POST``.
        id_field: the field holding each record's id (default: ``id`` when present, else a
            hash of the record).
        text_fields: the fields that make a record's text (default: all of them).
        title_field: the field holding a record's title (default: ``title``, else ``name``,
            when present).
        updated_field: the field holding a record's last-update time, used as its version
            (default: the first of ``updated_at``, ``updatedAt``, ``modified_at``,
            ``last_modified`` present).
        allow_private: hosts (with subdomains), IP addresses or CIDR networks that may be
            requested although they are loopback, link-local or private.
        http_options: keyword arguments for :class:`~aof_index_readers.http.HttpClient`
            (``timeout``, ``max_retries``...; tests pass ``sleep``).
        source_name, max_document_bytes, max_source_bytes: see
            :class:`~aof_index_readers.base.SourceReader`.

    Example:
        >>> reader = APIReader(
        ...     "https://status.example.com/api/incidents",
        ...     json_path="$.incidents",
        ...     title_field="name",
        ...     updated_field="updated_at",
        ... )
        >>> documents = reader.load_data()  # doctest: +SKIP
    """

    source_type: ClassVar[str] = "API"

    def __init__(
        self,
        endpoint: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        json_path: str | None = None,
        body: Any = None,
        id_field: str | None = None,
        text_fields: Sequence[str] | None = None,
        title_field: str | None = None,
        updated_field: str | None = None,
        allow_private: Sequence[str] = (),
        http_options: Mapping[str, Any] | None = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        parts = urlsplit(endpoint)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise self._config_error("endpoint", f"{self._shown(endpoint)!r} is not an http(s) URL")
        if method.upper() not in {"GET", "POST"}:
            raise self._config_error("method", f"{method!r} is not GET or POST")
        self.endpoint = endpoint
        self.source = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
        self.method = method.upper()
        self.json_path = json_path
        self._path = self._compiled(json_path)
        self.body = body
        self.id_field = id_field
        self.text_fields = list(text_fields) if text_fields else None
        self.title_field = title_field
        self.updated_field = updated_field
        sent = {"Accept": "application/json", **dict(headers or {})}
        if auth_token and not any(name.lower() == "authorization" for name in sent):
            sent["Authorization"] = f"Bearer {auth_token}"
        hint = (
            "the token in authSecretRef"
            if auth_token
            else "the credentials in spec.sources[].api.headers"
            if headers
            else None
        )
        settings: dict[str, Any] = {"headers": sent, "credential_hint": hint}
        settings.update(http_options or {})
        settings["addresses"] = AddressPolicy(allow_private, hint=PRIVATE_NETWORK_HINT)
        self._client = HttpClient("API", self.source_name, **settings)

    # --- listing and loading -----------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """Yield a ref per record (every page is read; see the module docstring)."""
        seen: set[str] = set()
        for number, record in enumerate(self._records(), start=1):
            what = f"{self.source} record #{number}"
            if not isinstance(record, dict):
                self.skip(what, f"a JSON {_json_type(record)}, not an object")
                continue
            record_id = self._record_id(record)
            if record_id is None:
                self.skip(what, f"has no {self.id_field!r} field (id_field)")
                continue
            if record_id in seen:
                self.skip(what, f"repeats the id {record_id!r} of an earlier record")
                continue
            seen.add(record_id)
            yield self._ref(record_id, record)

    def load_document(self, ref: DocumentRef) -> Document | None:
        """The record's document (a ref without its record fetches the records again)."""
        record = ref.handle if isinstance(ref.handle, dict) else self._find(ref.id)
        if record is None:
            self.skip(str(ref.metadata.get("record_id") or ref.id), "no longer returned")
            return None
        return self.make_document(ref, self._text(record))

    # --- records ----------------------------------------------------------------------------

    def _responses(self) -> Iterator[httpx.Response]:
        if self.method == "POST":
            yield self._client.request("POST", self.endpoint, json_body=self.body)
        else:
            yield from self._client.paginate(self.endpoint)

    def _records(self) -> Iterator[Any]:
        for response in self._responses():
            data = self._client.json(response)
            if self._path is None:
                yield from data if isinstance(data, list) else [data]
                continue
            matches = self._path.find(data)
            if not matches:
                # An error object answered with 200, or a wrong path: listing nothing would
                # make an incremental sync delete every document of the source.
                raise self._config_error(
                    "jsonPath",
                    f"{self.json_path!r} matched nothing in the response to {self.method} "
                    f"{self._shown(str(response.request.url))} (it has "
                    f"{_shape(data)})",
                )
            for match in matches:
                value = match.value
                yield from value if isinstance(value, list) else [value]

    def _record_id(self, record: dict[str, Any]) -> str | None:
        field = self.id_field or "id"
        value = record.get(field)
        if value is None or value == "":
            return None if self.id_field else _digest(record)
        return str(value)

    def _ref(self, record_id: str, record: dict[str, Any]) -> DocumentRef:
        updated = _field(record, self.updated_field, _UPDATED_FIELDS)
        title = _field(record, self.title_field, _TITLE_FIELDS)
        return DocumentRef(
            id=stable_id("api", self.source, record_id),
            version=str(updated) if updated not in (None, "") else _digest(record),
            metadata={
                "source": self.source,
                "title": None if title is None else str(title),
                "last_modified": _iso(updated),
                "record_id": record_id,
            },
            handle=record,
        )

    def _find(self, ref_id: str) -> dict[str, Any] | None:
        for ref in self.list_documents():
            if ref.id == ref_id:
                record: dict[str, Any] = ref.handle
                return record
        return None

    def _text(self, record: dict[str, Any]) -> str:
        if self.text_fields is not None and len(self.text_fields) == 1:
            value = record.get(self.text_fields[0])
            return "" if value is None else _value(value)
        fields = self.text_fields if self.text_fields is not None else list(record)
        return "\n".join(f"{name}: {_value(record[name])}" for name in fields if name in record)

    # --- configuration ----------------------------------------------------------------------

    def _compiled(self, json_path: str | None) -> JSONPath | None:
        if not json_path:
            return None
        try:
            from jsonpath_ng.ext.parser import parse
        except ImportError as exc:  # pragma: no cover - extra missing
            raise ImportError(
                "the API reader needs jsonpath-ng: pip install 'aof-index[api]'"
            ) from exc
        try:
            return parse(json_path)
        except Exception as exc:  # JsonPathParserError, lexer errors
            raise self._config_error(
                "jsonPath", f"{json_path!r} is not valid JSONPath ({exc})"
            ) from exc

    def _config_error(self, field: str, problem: str) -> SourceError:
        return SourceError(
            f"API source {self.source_name!r}: {problem}; fix spec.sources[].api.{field}"
        )

    @staticmethod
    def _shown(endpoint: str) -> str:
        """``endpoint`` without its query (it may hold an API key)."""
        return endpoint.split("?", 1)[0]


def _digest(record: Any) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _value(value: Any) -> str:
    """A field's text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _shape(data: Any) -> str:
    """What a JSON document holds at its top, for messages (keys, not values)."""
    if isinstance(data, dict):
        keys = ", ".join(repr(key) for key in list(data)[:8])
        return f"an object with keys {keys}" if keys else "an empty object"
    return f"a JSON {_json_type(data)} at its top"


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _iso(value: Any) -> str | None:
    """``value`` as ISO 8601 UTC when it is an ISO string or a Unix time; else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        return iso_time(value)
    except (ValueError, OverflowError, OSError):
        return None


_TITLE_FIELDS = ("title", "name")
_UPDATED_FIELDS = ("updated_at", "updatedAt", "modified_at", "last_modified")


def _field(record: dict[str, Any], explicit: str | None, defaults: tuple[str, ...]) -> Any:
    """``record[explicit]``, or the first of ``defaults`` the record has (``None`` if none)."""
    for name in (explicit,) if explicit else defaults:
        value = record.get(name)
        if value not in (None, ""):
            return value
    return None
