"""What every reader shares: cheap listings with version markers, and standard metadata.

A :class:`SourceReader` is a LlamaIndex ``BaseReader`` (``lazy_load_data`` streams documents,
one in memory at a time) and a ``ResourcesReaderMixin`` (``list_resources``,
``load_resource``). On top of that it offers what an incremental sync needs:

- :meth:`SourceReader.list_documents` yields a :class:`DocumentRef` per document, its stable
  id and version marker (commit or blob sha, ETag, ``updated_at``, content hash), without
  fetching content where the service allows it. Comparing two listings tells new, changed
  and deleted documents apart.
- :meth:`SourceReader.load_documents` fetches just the documents a sync decided to read.

Every document carries the same metadata keys (:data:`STANDARD_METADATA`): ``source`` (the
URL or path a citation shows), ``source_name``, ``source_type``, ``title``, ``author``,
``last_modified`` (ISO 8601, UTC) and ``version``. A document's ``id_`` is its ref's ``id``
and its ``version`` metadata its ref's ``version``, so what a listing says is what a load
gives.

Example:
    >>> from aof_index_readers import LocalFilesReader
    >>> reader = LocalFilesReader(["docs/"], source_name="docs")  # doctest: +SKIP
    >>> before = {ref.id: ref.version for ref in reader.list_documents()}  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import uuid
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypedDict

from llama_index.core.readers.base import BaseReader, ResourcesReaderMixin
from llama_index.core.schema import Document

from aof_index_readers.errors import SourceLimitError
from aof_index_readers.text import Extracted, NotText, extract_text

__all__ = [
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "DEFAULT_MAX_SOURCE_BYTES",
    "STANDARD_METADATA",
    "DocumentRef",
    "ReaderOptions",
    "Skipped",
    "SourceReader",
    "as_object",
    "iso_time",
    "lenient_time",
    "stable_id",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_DOCUMENT_BYTES = 20 * 2**20
"""Documents larger than this (20 MiB of content) are skipped with a reason."""
DEFAULT_MAX_SOURCE_BYTES = 2 * 2**30
"""A source yielding more than this (2 GiB of content in one load) stops with an error."""

STANDARD_METADATA = (
    "source",
    "source_name",
    "source_type",
    "title",
    "author",
    "last_modified",
    "version",
)
"""Metadata keys every document has (``None`` where the source does not know the value)."""


def stable_id(*parts: str) -> str:
    """A document id that depends only on ``parts`` (``uuid5`` of their ``/``-join).

    Pass what identifies the document across runs and sources, e.g.
    ``stable_id("github", "owner/repo", "docs/a.md")``: the same parts give the same id on
    every machine, so re-ingestion is an upsert.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def iso_time(value: datetime | float | str | None) -> str | None:
    """``value`` (a datetime, Unix time or ISO string) as ISO 8601 in UTC, or ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif isinstance(value, datetime):
        parsed = value
    else:
        parsed = datetime.fromtimestamp(value, UTC)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat()


def lenient_time(value: Any) -> str | None:
    """Like :func:`iso_time` for a string from a service's JSON, ``None`` when unparseable."""
    try:
        return iso_time(value) if isinstance(value, str) else None
    except ValueError:
        return None


def as_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else ``{}`` (for fields a service may leave out)."""
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class DocumentRef:
    """One document as a listing sees it: stable id, version marker, metadata.

    ``metadata`` holds what the listing knew without fetching content (at least ``source``;
    often title and last modified). ``handle`` is reader-private data the load needs (a blob
    sha, an object key) and is not shown to users.
    """

    id: str
    version: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    handle: Any = field(default=None, compare=False, repr=False)

    def info(self) -> dict[str, Any]:
        """``{**metadata, "id", "version"}``: what ``aof-index sources list`` prints (the
        ref's id and version win over metadata keys of the same name)."""
        return {**self.metadata, "id": self.id, "version": self.version}


@dataclass(frozen=True)
class Skipped:
    """A document that was found but not read, and why (``what`` is its path, URL or id;
    ``doc_id`` its document id when known)."""

    what: str
    reason: str
    doc_id: str | None = None


class ReaderOptions(TypedDict, total=False):
    """Keyword arguments every reader takes (see :class:`SourceReader`)."""

    source_name: str | None
    max_document_bytes: int
    max_source_bytes: int


class SourceReader(BaseReader, ResourcesReaderMixin):
    """Base of every AOF reader.

    Subclasses implement :meth:`list_documents` and :meth:`load_document`; they may override
    :meth:`lazy_load_data` when one request yields content for many documents.

    Args:
        source_name: ``spec.sources[].name``, copied into every document's metadata.
        max_document_bytes: larger documents are skipped with a reason.
        max_source_bytes: one load stops with :class:`SourceLimitError` past this much content.
    """

    source_type: ClassVar[str] = ""
    """``spec.sources[].type`` of this reader (``GitHub``, ``LocalFiles``...)."""

    def __init__(
        self,
        *,
        source_name: str | None = None,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
    ) -> None:
        self.source_name = source_name or self.source_type
        self.max_document_bytes = max_document_bytes
        self.max_source_bytes = max_source_bytes
        self.skipped: list[Skipped] = []
        """Documents not read since the last :meth:`lazy_load_data` began, with reasons."""
        self._skipped_seen: set[Skipped] = set()
        self._loaded_bytes = 0

    # --- what subclasses implement -------------------------------------------------------

    @abstractmethod
    def list_documents(self) -> Iterator[DocumentRef]:
        """Yield every document's ref, fetching as little content as the service allows."""

    @abstractmethod
    def load_document(self, ref: DocumentRef) -> Document | None:
        """Fetch one listed document; ``None`` when it was skipped (see :attr:`skipped`)."""

    # --- loading ---------------------------------------------------------------------------

    def lazy_load_data(self) -> Iterator[Document]:  # type: ignore[override]
        """Yield every readable document, streaming; skipped ones land in :attr:`skipped`."""
        self._start()
        for ref in self.list_documents():
            document = self.load_document(ref)
            if document is not None:
                yield document

    def load_data(self) -> list[Document]:  # type: ignore[override]
        """Every document in memory at once (prefer :meth:`lazy_load_data`)."""
        return list(self.lazy_load_data())

    def load_documents(self, refs: Iterable[DocumentRef]) -> Iterator[Document]:
        """Fetch just ``refs`` (from :meth:`list_documents`): the incremental sync's read.

        Skips are added to :attr:`skipped`, after those the listing recorded.
        """
        self._loaded_bytes = 0
        for ref in refs:
            document = self.load_document(ref)
            if document is not None:
                yield document

    def _start(self) -> None:
        self.skipped = []
        self._skipped_seen = set()
        self._loaded_bytes = 0

    # --- helpers for subclasses --------------------------------------------------------------

    def skip(self, what: str, reason: str, *, doc_id: str | None = None) -> None:
        """Record that ``what`` was not read, and why (logged at INFO; once per document)."""
        entry = Skipped(what, reason, doc_id)
        if entry in self._skipped_seen:  # a listing and the load after it skip the same files
            return
        self._skipped_seen.add(entry)
        logger.info(
            "%s source %r: skipping %s: %s", self.source_type, self.source_name, what, reason
        )
        self.skipped.append(entry)

    def extract(self, what: str, name: str, data: bytes) -> Extracted | None:
        """The text of file ``name`` holding ``data`` (see :mod:`aof_index_readers.text`),
        or ``None`` after recording why ``what`` was skipped (binary, malformed, empty)."""
        try:
            return extract_text(name, data)
        except NotText as exc:
            self.skip(what, exc.reason)
            return None

    def too_large(self, what: str, size: int, *, doc_id: str | None = None) -> bool:
        """Whether a document of ``size`` bytes is over the limit (and if so, skip it)."""
        if size <= self.max_document_bytes:
            return False
        self.skip(
            what,
            f"{size:,} bytes is over the per-document limit of {self.max_document_bytes:,} "
            "bytes (raise max_document_bytes to read it)",
            doc_id=doc_id,
        )
        return True

    def make_document(
        self, ref: DocumentRef, text: str, metadata: Mapping[str, Any] | None = None
    ) -> Document | None:
        """A document for ``ref`` with the standard metadata, or ``None`` if skipped.

        ``metadata`` adds to (and overrides) what the ref's listing knew. Text over the
        per-document limit is skipped; a load past the per-source limit raises
        :class:`SourceLimitError`.
        """
        what = str(ref.metadata.get("source") or ref.id)
        size = len(text.encode("utf-8"))
        if self.too_large(what, size, doc_id=ref.id):
            return None
        if not text.strip():
            self.skip(what, "no text content", doc_id=ref.id)
            return None
        self._loaded_bytes += size
        if self._loaded_bytes > self.max_source_bytes:
            raise SourceLimitError(
                f"{self.source_type} source {self.source_name!r} yielded more than "
                f"{self.max_source_bytes:,} bytes of content in one load; narrow the source "
                "(paths, prefix, query) or raise max_source_bytes"
            )
        merged: dict[str, Any] = {key: None for key in STANDARD_METADATA}
        merged.update(ref.metadata)
        merged.update(metadata or {})
        merged["source_name"] = self.source_name
        merged["source_type"] = self.source_type
        merged["version"] = ref.version
        merged.setdefault("source", ref.id)
        return Document(id_=ref.id, text=text, metadata=merged)

    # --- LlamaIndex's ResourcesReaderMixin -----------------------------------------------------

    def list_resources(self, *args: Any, **kwargs: Any) -> list[str]:
        """Ids of every document (LlamaIndex's resource listing)."""
        return [ref.id for ref in self.list_documents()]

    def list_resources_with_info(self, *args: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        """``{id: {"id", "version", **metadata}}`` from one listing."""
        return {ref.id: ref.info() for ref in self.list_documents()}

    def get_resource_info(self, resource_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The listing's info for one document id."""
        return self._find_ref(resource_id).info()

    def load_resource(self, resource_id: str, *args: Any, **kwargs: Any) -> list[Document]:
        """The document with this id (empty when it was skipped)."""
        return list(self.load_documents([self._find_ref(resource_id)]))

    def _find_ref(self, resource_id: str) -> DocumentRef:
        for ref in self.list_documents():
            if ref.id == resource_id:
                return ref
        raise KeyError(
            f"{self.source_type} source {self.source_name!r} has no document {resource_id!r}"
        )
