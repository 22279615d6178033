"""Read the objects of an S3 bucket (AWS, or an S3-compatible server such as MinIO).

:meth:`S3Reader.list_documents` pages through ``ListObjectsV2`` under ``prefix`` (``page_size``
keys a request) and fetches no content: each object's ref has the id
``stable_id("s3", endpoint or "aws", bucket, key)``, its ETag (quotes stripped) as the version
marker, and ``source`` (``s3://bucket/key``), ``title`` (the file name), ``last_modified``,
``size``, ``file_name`` and ``file_type`` as metadata. Folder markers (keys ending in ``/``)
are left out, and so are keys the include/exclude globs reject: a pattern matches the key
relative to ``prefix``, the file name, or a folder name on the way.

:meth:`S3Reader.load_document` decides from the name and the listed size before downloading:
unsupported file types and objects over ``max_document_bytes`` are skipped with a reason.
Otherwise it sends ``GetObject`` with ``IfMatch`` set to the listed ETag, so the text always
belongs to the version the listing reported (an object rewritten in between is skipped and
read by the next sync), and turns the bytes into text the way the LocalFiles reader does
(:func:`aof_index_readers.text.extract_text`: text, Markdown, code, HTML, PDF, DOCX).

With ``endpoint`` set the client uses path-style addressing (``http://host:9000/bucket/key``),
which MinIO and most S3-compatible servers expect. Without ``access_key``/``secret_key`` boto3
finds credentials its usual way (environment, shared config, instance or pod role).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, TypeVar, Unpack

from llama_index.core.schema import Document

from aof_index_readers.base import (
    DocumentRef,
    ReaderOptions,
    SourceReader,
    iso_time,
    stable_id,
)
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceUnavailableError,
)
from aof_index_readers.local_files import excluded as matches
from aof_index_readers.text import file_type, unsupported_reason

__all__ = ["S3Reader"]

_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)
_T = TypeVar("_T")
_GONE = {
    "PreconditionFailed": "changed since it was listed; the next sync reads it",
    "412": "changed since it was listed; the next sync reads it",
    "NoSuchKey": "deleted since it was listed",
    "404": "deleted since it was listed",
    "InvalidObjectState": "archived (Glacier); restore it to read it",
}
"""``GetObject`` error codes that skip one object rather than fail the load."""
_CONNECT_TIMEOUT_S = 10
_READ_TIMEOUT_S = 60


class S3Reader(SourceReader):
    """Read the objects of an S3 bucket as documents.

    Args:
        bucket: the bucket's name.
        prefix: read only keys starting with this (``docs/``); empty reads the whole bucket.
        region: the bucket's region (``eu-west-1``); default boto3's configured region, or
            ``us-east-1`` with an ``endpoint``.
        endpoint: URL of an S3-compatible server (``http://minio:9000``); path-style
            addressing is used with it. Default: AWS S3.
        access_key: access key id (a secret); ``None`` uses boto3's default credential chain.
        secret_key: secret access key (a secret); give both keys or neither.
        include_patterns: globs; when given, only keys matching one are read.
        exclude_patterns: globs of keys to leave out (checked after ``include_patterns``).
        page_size: keys per ``ListObjectsV2`` request (at most 1000).
        source_name, max_document_bytes, max_source_bytes: see :class:`SourceReader`.

    Example:
        >>> reader = S3Reader(
        ...     bucket="team-docs",
        ...     prefix="runbooks/",
        ...     region="eu-west-1",
        ...     include_patterns=["*.md", "*.pdf"],
        ...     source_name="runbooks",
        ... )  # doctest: +SKIP
        >>> changed = [ref for ref in reader.list_documents()]  # doctest: +SKIP
    """

    source_type = "S3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        region: str | None = None,
        endpoint: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        include_patterns: Sequence[str] | None = None,
        exclude_patterns: Sequence[str] | None = None,
        page_size: int = 1000,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        if not bucket:
            raise ValueError(f"S3 source {self.source_name!r}: s3.bucket is required")
        if (access_key is None) != (secret_key is None):
            raise ValueError(
                f"S3 source {self.source_name!r}: give both accessKeySecretRef and "
                "secretKeySecretRef, or neither to use the default AWS credentials"
            )
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"S3 source {self.source_name!r}: s3.endpoint must be an http:// or https:// "
                f"URL, got {endpoint!r}"
            )
        if not 1 <= page_size <= 1000:
            raise ValueError(f"S3 source {self.source_name!r}: page_size must be 1..1000")
        self.bucket = bucket
        self.prefix = prefix or ""
        self.region = region
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.include_patterns = list(include_patterns or [])
        self.exclude_patterns = list(exclude_patterns or [])
        self.page_size = page_size
        self._credentials = (access_key, secret_key)
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Reader(bucket={self.bucket!r}, prefix={self.prefix!r}, at={self._where})"

    @property
    def client(self) -> Any:
        """The boto3 S3 client (made on first use)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    # --- listing -------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """One ref per object under ``prefix`` that the patterns keep; no content fetched."""
        paginator = self._call("list objects", lambda: self.client.get_paginator("list_objects_v2"))
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket,
                Prefix=self.prefix,
                PaginationConfig={"PageSize": self.page_size},
            )
        )
        while True:
            page = self._call("list objects", lambda: next(pages, None))
            if page is None:
                return
            for item in page.get("Contents", []):
                if self._wanted(item["Key"]):
                    yield self._ref(item)

    def _wanted(self, key: str) -> bool:
        if key.endswith("/"):
            return False  # a "folder" marker
        relative = key[len(self.prefix) :].lstrip("/")
        if self.include_patterns and not matches(relative, self.include_patterns):
            return False
        return not matches(relative, self.exclude_patterns)

    def _ref(self, item: Mapping[str, Any]) -> DocumentRef:
        key = str(item["Key"])
        name = PurePosixPath(key).name
        return DocumentRef(
            id=stable_id("s3", self.endpoint or "aws", self.bucket, key),
            version=str(item.get("ETag", "")).strip('"'),
            metadata={
                "source": f"s3://{self.bucket}/{key}",
                "title": name,
                "file_name": name,
                "file_type": file_type(name),
                "last_modified": iso_time(item.get("LastModified")),
                "size": int(item.get("Size", 0)),
            },
            handle=key,
        )

    # --- loading ---------------------------------------------------------------------------

    def load_document(self, ref: DocumentRef) -> Document | None:
        """Download and extract one listed object; ``None`` (and a skip reason) if unreadable."""
        key = ref.handle if isinstance(ref.handle, str) else self._key_of(ref)
        what = f"s3://{self.bucket}/{key}"
        name = PurePosixPath(key).name
        reason = unsupported_reason(name)
        if reason is not None:
            self.skip(what, reason)
            return None
        if self.too_large(what, int(ref.metadata.get("size") or 0)):
            return None
        data = self._download(key, ref.version, what)
        if data is None or self.too_large(what, len(data)):
            return None
        extracted = self.extract(what, name, data)
        if extracted is None:
            return None
        return self.make_document(ref, extracted.text, {"title": extracted.title or name})

    def _key_of(self, ref: DocumentRef) -> str:
        return str(ref.metadata["source"]).removeprefix(f"s3://{self.bucket}/")

    def _download(self, key: str, etag: str, what: str) -> bytes | None:
        """The object's bytes (at most one past the limit), or ``None`` when it went away."""
        from botocore.exceptions import BotoCoreError, ClientError

        arguments = {"Bucket": self.bucket, "Key": key, **({"IfMatch": etag} if etag else {})}
        try:
            response = self.client.get_object(**arguments)
            with response["Body"] as body:
                data: bytes = body.read(self.max_document_bytes + 1)
        except ClientError as exc:
            reason = _GONE.get(_code(exc))
            if reason is None:
                raise self._error(exc, f"get {key}") from exc
            self.skip(what, reason)
            return None
        except BotoCoreError as exc:
            raise self._error(exc, f"get {key}") from exc
        return data

    # --- the client and its errors ----------------------------------------------------------

    @property
    def _where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region or 'default region'})"

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - s3 extra missing
            raise ImportError("the S3 reader needs boto3: pip install 'aof-index[s3]'") from exc
        access_key, secret_key = self._credentials
        config = Config(
            connect_timeout=_CONNECT_TIMEOUT_S,
            read_timeout=_READ_TIMEOUT_S,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if self.endpoint else None,
        )
        return boto3.session.Session().client(
            "s3",
            region_name=self.region or ("us-east-1" if self.endpoint else None),
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )

    def _call(self, action: str, call: Callable[[], _T]) -> _T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, action) from exc

    def _error(self, exc: Exception, action: str) -> SourceError:
        """The typed error for a boto3 failure (the message names no key)."""
        from botocore import exceptions as boto

        head = f"S3 source {self.source_name!r}: could not {action} in bucket {self.bucket!r}"
        if isinstance(exc, boto.ClientError):
            return self._client_error(exc, head)
        if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
            return SourceAuthError(
                f"{head}: no AWS credentials found; set s3.accessKeySecretRef and "
                "s3.secretKeySecretRef, or give the process AWS credentials (environment, "
                "shared config, instance or pod role)"
            )
        if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
            return SourceUnavailableError(
                f"{head}: could not reach {self._where} ({type(exc).__name__}); check "
                "s3.endpoint and that the server is running and reachable"
            )
        return SourceError(f"{head}: {type(exc).__name__}: {exc}")

    def _client_error(self, exc: Any, head: str) -> SourceError:
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return SourceNotFoundError(
                f"{head}: the bucket does not exist at {self._where}; check s3.bucket "
                "(and s3.endpoint or s3.region)"
            )
        if code in _AUTH_CODES:
            return SourceAuthError(
                f"{head}: {self._where} rejected the credentials ({code}); check that "
                "s3.accessKeySecretRef and s3.secretKeySecretRef hold a valid key pair"
            )
        if code == "AccessDenied" or status == 403:
            return SourcePermissionError(
                f"{head}: access denied ({code}); the credentials need s3:ListBucket and "
                "s3:GetObject on the bucket and prefix"
            )
        if code in _UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
            return SourceUnavailableError(
                f"{head}: {self._where} failed ({code}, HTTP {status}); try again later"
            )
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
            return SourceError(f"{head}: the bucket is in another region ({code}); set s3.region")
        return SourceError(f"{head}: {code} (HTTP {status})")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
