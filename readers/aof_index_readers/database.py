"""Read the rows of a SQL query (PostgreSQL, MySQL, SQLite) or a MongoDB find as documents.

Each row (or MongoDB document) becomes one document:

- **id**: ``stable_id("database", type, target, sha256(query), key)`` where ``target`` is a
  credential-free fingerprint of the connection (``postgresql://host:5432/db``; never the
  user or password) and ``key`` the row's key values. The key columns are ``id_columns``;
  by default the column named ``id`` when the result has one, else the result's first
  column (MongoDB: ``_id``). Key values must be unique: rows sharing a key share an id.
- **version**: sha256 of the row's canonical JSON (all columns, sorted keys), so it changes
  exactly when a value in the row changes.
- **text**: the content columns (``columns``; by default every column except the key and
  modification-time columns) as ``column: value`` lines, or just the value when there is one
  content column. ``NULL`` values are left out.
- **metadata**: every other column under its own name (values made flat: dates as ISO 8601,
  JSON for nested values). ``title`` comes from ``title_column`` (default: a column named
  ``title``), ``last_modified`` from ``updated_column`` (default: the first of
  ``updated_at``, ``modified_at``, ``last_modified`` present). Columns named ``source``,
  ``source_name``, ``source_type`` or ``version`` are stored as ``column_<name>`` so they
  cannot overwrite what the reader sets. ``source`` is ``<target>#<key>=<value>`` and
  ``title`` falls back to ``<key>=<value>``. Each ref's metadata is what its document gets.

A database has no cheap listing: :meth:`DatabaseReader.list_documents` runs the query. It
streams (server-side cursors for PostgreSQL and MySQL, ``batch_size`` rows at a time) so
memory stays constant however many rows there are, and each ref carries its row's text, so
loading a listed ref costs nothing more.

The reader only reads. ``query`` must be one ``SELECT`` (or ``WITH ... SELECT``) statement
without data-modifying keywords, and it runs in a read-only transaction (PostgreSQL and
MySQL ``SET TRANSACTION READ ONLY``; SQLite opens the file with ``mode=ro`` and sets
``PRAGMA query_only``), so even a statement that slips past the check cannot write. For
MongoDB, ``query`` is JSON: ``{"collection": "...", "filter": {...}, "projection": {...},
"sort": [["field", 1]], "database": "..."}`` (MongoDB Extended JSON, so ``{"$oid": ...}``
and ``{"$date": ...}`` work; ``database`` defaults to the connection string's path).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Unpack
from urllib.parse import quote, unquote, urlsplit

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

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, CursorResult, Engine

__all__ = ["DATABASE_TYPES", "DatabaseReader"]

DATABASE_TYPES = ("PostgreSQL", "MySQL", "MongoDB", "SQLite")
"""Values of ``type`` (``SQLite`` is an extra for local files and tests)."""

UPDATED_COLUMNS = ("updated_at", "modified_at", "last_modified")
_RESERVED_METADATA = frozenset({"source", "source_name", "source_type", "version"})
_CONNECT_TIMEOUT_S = 10
_MONGO_QUERY_KEYS = frozenset({"collection", "filter", "projection", "sort", "database"})
_SQL_SCHEMES = {
    "PostgreSQL": ("postgresql+psycopg", 5432, ("postgres", "postgresql")),
    "MySQL": ("mysql+pymysql", 3306, ("mysql", "mariadb")),
}
# Comments, string literals and quoted identifiers: blanked before the statement check.
_SQL_NOISE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`", re.DOTALL)
_WRITE_KEYWORDS = re.compile(
    r"\b(insert|update|delete|merge|truncate|drop|alter|create|grant|revoke|into)\b",
    re.IGNORECASE,
)


class DatabaseReader(SourceReader):
    """Read the rows of a SQL query, or the documents of a MongoDB find, as documents.

    Args:
        type: ``PostgreSQL``, ``MySQL``, ``MongoDB`` or ``SQLite``.
        connection: connection string (a secret: it never appears in errors, reprs or
            metadata). PostgreSQL: ``postgresql://`` (``postgres://`` and
            ``postgresql+psycopg://`` too; read with psycopg). MySQL: ``mysql://`` (read
            with PyMySQL). SQLite: ``sqlite:///path.db`` or a plain path. MongoDB:
            ``mongodb://`` or ``mongodb+srv://``.
        query: one read-only ``SELECT``/``WITH`` statement; for MongoDB a JSON find
            specification (see the module docstring).
        columns: columns (MongoDB: fields) that make the text; default every column except
            the key and modification-time columns. The others become metadata.
        id_columns: columns whose values identify a row; default ``id`` when the result has
            such a column, else the first column (MongoDB: ``_id``).
        title_column: column holding the title (default: ``title`` when present).
        updated_column: column holding the last modification time (default: the first of
            ``updated_at``, ``modified_at``, ``last_modified`` present).
        batch_size: rows fetched per round trip while streaming.
        client: a ready ``pymongo.MongoClient`` (or compatible) to use instead of
            connecting with ``connection`` (MongoDB only; the caller closes it).
        source_name, max_document_bytes, max_source_bytes: see :class:`SourceReader`.

    Example:
        >>> reader = DatabaseReader(
        ...     type="PostgreSQL",
        ...     connection="postgresql://reader:secret@db:5432/app",
        ...     query="SELECT id, title, body, updated_at FROM articles",
        ...     columns=["body"],
        ...     source_name="articles",
        ... )  # doctest: +SKIP
        >>> for document in reader.lazy_load_data(): ...  # doctest: +SKIP
    """

    source_type = "Database"

    def __init__(
        self,
        type: str,
        connection: str,
        query: str,
        columns: Sequence[str] | None = None,
        id_columns: Sequence[str] | None = None,
        title_column: str | None = None,
        updated_column: str | None = None,
        batch_size: int = 1000,
        client: Any = None,
        **common: Unpack[ReaderOptions],
    ) -> None:
        super().__init__(**common)
        if type not in DATABASE_TYPES:
            raise ValueError(
                f"Database source {self.source_name!r}: type {type!r} is not one of "
                f"{', '.join(DATABASE_TYPES)}"
            )
        if batch_size < 1:
            raise ValueError(f"Database source {self.source_name!r}: batch_size must be >= 1")
        self.type = type
        self.query = query
        self.columns = list(columns) if columns else None
        self.id_columns = list(id_columns) if id_columns else None
        self.title_column = title_column
        self.updated_column = updated_column
        self.batch_size = batch_size
        self._client = client
        self._secrets = _connection_secrets(connection)
        self._connection = connection
        if type == "MongoDB":
            self._find = _parse_mongo_query(query, self.source_name)
            self.target = _mongo_target(connection, self._find.get("database"))
        else:
            _check_read_only_sql(query, self.source_name)
            self.target = self._sql_target()
        self._query_digest = hashlib.sha256(query.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"DatabaseReader(type={self.type!r}, target={self.target!r})"

    # --- listing -------------------------------------------------------------------------

    def list_documents(self) -> Iterator[DocumentRef]:
        """Run the query and yield one ref per row, streaming (see the module docstring)."""
        if self.type == "MongoDB":
            yield from self._refs(self._mongo_rows())
        else:
            yield from self._refs(self._sql_rows())

    def load_document(self, ref: DocumentRef) -> Document | None:
        """The row's document; a ref without its text (not from this reader) re-runs the query."""
        if isinstance(ref.handle, str):
            return self.make_document(ref, ref.handle)
        for listed in self.list_documents():
            if listed.id == ref.id:
                return self.make_document(listed, listed.handle)
        self.skip(str(ref.metadata.get("source") or ref.id), "no longer returned by the query")
        return None

    def _refs(self, rows: Iterator[tuple[_Layout, Mapping[str, Any]]]) -> Iterator[DocumentRef]:
        for layout, row in rows:
            yield self._ref(layout, row)

    def _ref(self, layout: _Layout, row: Mapping[str, Any]) -> DocumentRef:
        key = [_plain(row.get(column)) for column in layout.ids]
        label = "&".join(f"{c}={_text(v)}" for c, v in zip(layout.ids, key, strict=True))
        title = _plain(row.get(layout.title)) if layout.title else None
        updated = layout.updated_column(row)
        metadata: dict[str, Any] = {
            "source": f"{self.target}#{label}",
            "title": label if title is None else _text(title),
            "last_modified": _time(row.get(updated)) if updated else None,
        }
        for column in layout.metadata_columns(row):
            name = f"column_{column}" if column in _RESERVED_METADATA else column
            metadata[name] = _flat(row[column])
        return DocumentRef(
            id=stable_id("database", self.type, self.target, self._query_digest, _canonical(key)),
            version=hashlib.sha256(_canonical(row).encode("utf-8")).hexdigest(),
            metadata=metadata,
            handle=_row_text(row, layout.content_columns(row)),
        )

    # --- SQL -------------------------------------------------------------------------------

    def _sql_target(self) -> str:
        if self.type == "SQLite":
            return f"sqlite://{_sqlite_path(self._connection).as_posix()}"
        url = self._sql_url()
        default_port = _SQL_SCHEMES[self.type][1]
        scheme = url.get_backend_name()
        return f"{scheme}://{url.host or 'localhost'}:{url.port or default_port}/{url.database}"

    def _sql_url(self) -> URL:
        try:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError
        except ImportError as exc:  # pragma: no cover - database extra missing
            raise ImportError(_MISSING_EXTRA) from exc
        driver, _, schemes = _SQL_SCHEMES[self.type]
        scheme, sep, rest = self._connection.partition("://")
        if not sep or scheme.split("+")[0].lower() not in schemes:
            raise ValueError(
                f"Database source {self.source_name!r}: connection for type {self.type} must "
                f"start with {schemes[0]}:// (e.g. {schemes[0]}://user:password@host/db)"
            )
        try:
            return make_url(f"{driver}://{rest}")
        except (ArgumentError, ValueError):
            raise ValueError(
                f"Database source {self.source_name!r}: connection is not a valid "
                f"{self.type} URL ({schemes[0]}://user:password@host:port/database)"
            ) from None

    def _engine(self) -> Engine:
        try:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool
        except ImportError as exc:  # pragma: no cover - database extra missing
            raise ImportError(_MISSING_EXTRA) from exc
        if self.type == "SQLite":
            uri = f"file:{quote(_sqlite_path(self._connection).as_posix())}?mode=ro"
            return create_engine(
                "sqlite://",
                creator=lambda: sqlite3.connect(uri, uri=True),
                poolclass=NullPool,
            )
        return create_engine(
            self._sql_url(),
            poolclass=NullPool,
            connect_args={"connect_timeout": _CONNECT_TIMEOUT_S},
        )

    def _sql_rows(self) -> Iterator[tuple[_Layout, Mapping[str, Any]]]:
        engine = self._engine()
        try:
            with self._sql_call("connect"):
                connection = engine.connect()
            with connection:
                result = self._execute(connection)
                layout = self._layout(list(result.keys()))
                while True:
                    with self._sql_call("fetch rows"):
                        batch = result.fetchmany(self.batch_size)
                    if not batch:
                        return
                    for row in batch:
                        yield layout, dict(row._mapping)
        finally:
            engine.dispose()

    def _execute(self, connection: Connection) -> CursorResult[Any]:
        from sqlalchemy import text

        with self._sql_call("run the query"):
            if self.type == "SQLite":
                connection.exec_driver_sql("PRAGMA query_only = ON")
            else:
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            return connection.execution_options(
                stream_results=True, yield_per=self.batch_size
            ).execute(text(self.query))

    def _sql_call(self, action: str) -> _Translate:
        return _Translate(lambda exc: self._sql_error(exc, action))

    def _sql_error(self, exc: BaseException, action: str) -> SourceError | None:
        from sqlalchemy.exc import DBAPIError

        if not isinstance(exc, DBAPIError | sqlite3.Error):
            return None
        original = getattr(exc, "orig", None) or exc
        message = self._scrub(str(original).strip().splitlines()[0] if str(original) else "")
        kind, hint = _classify_sql(original, message)
        return kind(
            f"Database source {self.source_name!r} ({self.type} at {self.target}): could not "
            f"{action}: {message}; {hint}"
        )

    def _layout(self, keys: list[str]) -> _Layout:
        for field, names in (
            ("columns", self.columns or []),
            ("id_columns", self.id_columns or []),
            ("title_column", [self.title_column] if self.title_column else []),
            ("updated_column", [self.updated_column] if self.updated_column else []),
        ):
            missing = [name for name in names if name not in keys]
            if missing:
                raise SourceNotFoundError(
                    f"Database source {self.source_name!r}: {field} names "
                    f"{', '.join(map(repr, missing))}, which the query does not return (it "
                    f"returns {', '.join(keys)}); fix {field} or the query"
                )
        ids = self.id_columns or (["id"] if "id" in keys else keys[:1])
        updated = self.updated_column or next((c for c in UPDATED_COLUMNS if c in keys), None)
        return _Layout(
            ids=ids,
            content=self.columns or [key for key in keys if key not in (*ids, updated)],
            title=self.title_column or ("title" if "title" in keys else None),
            updated=updated,
        )

    # --- MongoDB ---------------------------------------------------------------------------

    def _mongo_rows(self) -> Iterator[tuple[_Layout, Mapping[str, Any]]]:
        client = self._client if self._client is not None else self._mongo_client()
        try:
            collection = self._mongo_collection(client)
            layout = _Layout(
                ids=self.id_columns or ["_id"],
                content=self.columns,
                title=self.title_column or "title",
                updated=self.updated_column,
                updated_candidates=UPDATED_COLUMNS,
            )
            with self._mongo_call("run the find"):
                cursor = collection.find(
                    self._find.get("filter") or {},
                    self._find.get("projection"),
                    sort=self._find.get("sort"),
                    batch_size=self.batch_size,
                )
            while True:
                with self._mongo_call("fetch documents"):
                    document = next(cursor, None)
                if document is None:
                    return
                yield layout, document
        finally:
            if client is not self._client:
                client.close()

    def _mongo_client(self) -> Any:
        try:
            import pymongo
        except ImportError as exc:  # pragma: no cover - database extra missing
            raise ImportError(_MISSING_EXTRA) from exc
        with self._mongo_call("connect"):
            return pymongo.MongoClient(
                self._connection,
                serverSelectionTimeoutMS=_CONNECT_TIMEOUT_S * 1000,
                connectTimeoutMS=_CONNECT_TIMEOUT_S * 1000,
            )

    def _mongo_collection(self, client: Any) -> Any:
        name = self._find.get("database") or _mongo_database(self._connection)
        if not name:
            raise ValueError(
                f"Database source {self.source_name!r}: name the MongoDB database in the "
                'connection string (mongodb://host/<database>) or in query\'s "database"'
            )
        database = client[name]
        collection = str(self._find["collection"])
        with self._mongo_call("list collections"):
            known = database.list_collection_names()
        if collection not in known:
            raise SourceNotFoundError(
                f"Database source {self.source_name!r} ({self.type} at {self.target}): "
                f"collection {collection!r} does not exist in database {name!r}; fix "
                'query\'s "collection" or the database name'
            )
        return database[collection]

    def _mongo_call(self, action: str) -> _Translate:
        return _Translate(lambda exc: self._mongo_error(exc, action))

    def _mongo_error(self, exc: BaseException, action: str) -> SourceError | None:
        try:
            from pymongo import errors
        except ImportError:  # pragma: no cover - database extra missing
            return None
        if not isinstance(exc, errors.PyMongoError | ValueError):
            return None
        message = self._scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        code = getattr(exc, "code", None)
        if isinstance(exc, errors.ConfigurationError | ValueError):
            kind, hint = SourceError, "check the connection string (mongodb://host:port/db)"
        elif code == 13:
            kind, hint = SourcePermissionError, "grant the user the read role on the database"
        elif code == 18 or "authentication failed" in message.lower():
            kind, hint = SourceAuthError, _HINTS[SourceAuthError]
        elif isinstance(exc, errors.ConnectionFailure):
            kind, hint = SourceUnavailableError, _HINTS[SourceUnavailableError]
        else:
            kind, hint = SourceError, "check query's filter, projection and sort"
        return kind(
            f"Database source {self.source_name!r} ({self.type} at {self.target}): could not "
            f"{action}: {message}; {hint}"
        )

    # --- secrets ---------------------------------------------------------------------------

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message


_MISSING_EXTRA = "the Database reader needs its extra: pip install 'aof-index[database]'"
_HINTS: dict[type[SourceError], str] = {
    SourceAuthError: "the server rejected the credentials; check the user and password in "
    "the connection string (connectionSecretRef)",
    SourcePermissionError: "the user may not read this; grant it read access (SELECT) to "
    "what the query reads",
    SourceNotFoundError: "check the table, column and database names in query and the "
    "connection string",
    SourceUnavailableError: "check the host and port in the connection string and that the "
    "server is running and reachable",
    SourceError: "check query",
}
_AUTH_MESSAGES = re.compile(
    r"password authentication failed|authentication failed|not permitted to log in"
    r"|role \".*\" does not exist|no pg_hba\.conf entry|access denied",
    re.IGNORECASE,
)
_NOT_FOUND_MESSAGES = re.compile(
    r"does not exist|no such (table|column|function)|unable to open database file"
    r"|unknown (database|column|table)",
    re.IGNORECASE,
)
_READ_ONLY_MESSAGES = re.compile(r"read[- ]only transaction|readonly database|query_only", re.I)
_MYSQL_CODES: dict[int, type[SourceError]] = {
    1045: SourceAuthError,
    1698: SourceAuthError,
    1044: SourcePermissionError,
    1142: SourcePermissionError,
    1143: SourcePermissionError,
    1049: SourceNotFoundError,
    1146: SourceNotFoundError,
    1054: SourceNotFoundError,
    1305: SourceNotFoundError,
    2003: SourceUnavailableError,
    2005: SourceUnavailableError,
    2006: SourceUnavailableError,
    2013: SourceUnavailableError,
}
_SQLSTATE_CLASSES: dict[str, type[SourceError]] = {
    "28": SourceAuthError,
    "42501": SourcePermissionError,
    "42P01": SourceNotFoundError,
    "42703": SourceNotFoundError,
    "42883": SourceNotFoundError,
    "3D000": SourceNotFoundError,
    "3F000": SourceNotFoundError,
    "08": SourceUnavailableError,
    "53": SourceUnavailableError,
    "57P": SourceUnavailableError,
}


def _classify_sql(original: BaseException, message: str) -> tuple[type[SourceError], str]:
    """The error type and hint for a driver error (psycopg, PyMySQL, sqlite3)."""
    kind = _sql_error_kind(original, message)
    if kind is SourceError and _READ_ONLY_MESSAGES.search(message):
        return kind, "query must only read: the reader runs it in a read-only transaction"
    return kind, _HINTS[kind]


def _sql_error_kind(original: BaseException, message: str) -> type[SourceError]:
    # PyMySQL errors carry (code, message) args and, since PyMySQL 1.2, a ``sqlstate`` too
    # (often a generic one such as 42S02 or HY000), so the MySQL code is looked at first.
    code = original.args[0] if original.args and isinstance(original.args[0], int) else None
    if code is not None and code in _MYSQL_CODES:
        return _MYSQL_CODES[code]
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str):
        for prefix, kind in _SQLSTATE_CLASSES.items():
            if sqlstate.startswith(prefix):
                return kind
        return SourceError
    if _READ_ONLY_MESSAGES.search(message):
        return SourceError
    if _AUTH_MESSAGES.search(message):
        return SourceAuthError
    if _NOT_FOUND_MESSAGES.search(message):
        return SourceNotFoundError
    if type(original).__name__ in ("OperationalError", "InterfaceError"):
        return SourceUnavailableError  # a connection failure carries no SQLSTATE
    return SourceError


class _Translate:
    """Context manager turning a driver exception into the typed error ``convert`` returns."""

    def __init__(self, convert: Callable[[BaseException], SourceError | None]) -> None:
        self._convert = convert

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        error = self._convert(exc)
        if error is not None:
            _raise(error)


def _raise(error: SourceError) -> NoReturn:
    # ``from None``: the driver's own exception may quote the connection string.
    raise error from None


@dataclass(frozen=True)
class _Layout:
    """Which columns are the key, the text, the title and the modification time.

    SQL results share their columns, so everything is resolved once; MongoDB documents need
    not share fields, so ``content=None`` (every field but the key) and
    ``updated_candidates`` are resolved per document.
    """

    ids: list[str]
    content: list[str] | None
    title: str | None
    updated: str | None
    updated_candidates: tuple[str, ...] = ()

    def content_columns(self, row: Mapping[str, Any]) -> list[str]:
        """The columns of ``row`` that make the text."""
        if self.content is not None:
            return self.content
        updated = self.updated_column(row)
        return [column for column in row if column not in self.ids and column != updated]

    def metadata_columns(self, row: Mapping[str, Any]) -> list[str]:
        """The columns of ``row`` that become metadata (title and time have their own keys)."""
        skip = {*self.content_columns(row), self.title, self.updated_column(row)}
        return [column for column in row if column not in skip]

    def updated_column(self, row: Mapping[str, Any]) -> str | None:
        """The column holding ``row``'s modification time, if any."""
        if self.updated is not None:
            return self.updated
        return next((c for c in self.updated_candidates if c in row), None)


def _row_text(row: Mapping[str, Any], columns: list[str]) -> str:
    """The content columns as ``column: value`` lines (just the value for one column)."""
    if len(columns) == 1:
        return _text(_plain(row.get(columns[0])))
    lines = []
    for column in columns:
        value = _plain(row.get(column))
        if value is not None:
            lines.append(f"{column}: {_text(value)}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """``value`` as JSON-compatible data (dates as ISO 8601, binary as a size and digest)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return f"<{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}>"
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)  # ObjectId, intervals, enums...


def _canonical(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text(value: Any) -> str:
    """A plain value as text: nested values as JSON, ``None`` as empty."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _flat(value: Any) -> Any:
    """A metadata value vector stores accept: ``str``, ``int``, ``float``, ``bool``, ``None``."""
    plain = _plain(value)
    return _text(plain) if isinstance(plain, dict | list) else plain


def _time(value: Any) -> str | None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time(), dt.UTC)
    if not isinstance(value, dt.datetime | int | float | str):
        return None
    try:
        return iso_time(value)
    except (ValueError, OverflowError, OSError):
        return None


def _check_read_only_sql(query: str, source_name: str) -> None:
    """Refuse anything but one ``SELECT``/``WITH`` statement, with an error naming ``query``."""
    body = _SQL_NOISE.sub(" ", query).strip().rstrip(";").strip()
    problem = None
    first = re.match(r"[\s(]*(\w+)", body)
    if not body or first is None:
        problem = "is empty"
    elif first.group(1).lower() not in ("select", "with"):
        problem = f"starts with {first.group(1).upper()}"
    elif ";" in body:
        problem = "holds more than one statement"
    elif (write := _WRITE_KEYWORDS.search(body)) is not None:
        problem = f"contains {write.group(1).upper()}"
    if problem:
        raise ValueError(
            f"Database source {source_name!r}: query {problem}; the Database reader only runs "
            "one read-only SELECT (or WITH ... SELECT) statement"
        )


def _sqlite_path(connection: str) -> Path:
    path = connection.removeprefix("sqlite:///") if connection.startswith("sqlite:") else connection
    return Path(path).expanduser().resolve()


def _connection_secrets(connection: str) -> list[str]:
    """The password in ``connection`` (raw and URL-decoded) and the whole string, to scrub."""
    secrets = [connection]
    netloc = urlsplit(connection).netloc if "://" in connection else ""
    userinfo, at, _ = netloc.rpartition("@")
    if at and ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        secrets += [password, unquote(password)]
    return sorted({s for s in secrets if s}, key=len, reverse=True)


def _parse_mongo_query(query: str, source_name: str) -> dict[str, Any]:
    try:
        from bson import json_util
    except ImportError as exc:  # pragma: no cover - database extra missing
        raise ImportError(_MISSING_EXTRA) from exc
    try:
        parsed = json_util.loads(query)
    except ValueError as exc:
        raise ValueError(
            f"Database source {source_name!r}: query is not valid JSON for MongoDB ({exc}); "
            'expected {"collection": "...", "filter": {...}, "projection": {...}}'
        ) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("collection"), str):
        raise ValueError(
            f"Database source {source_name!r}: query must be a JSON object naming a "
            '"collection" (with optional "filter", "projection", "sort", "database")'
        )
    unknown = sorted(set(parsed) - _MONGO_QUERY_KEYS)
    if unknown:
        raise ValueError(
            f"Database source {source_name!r}: query has unknown keys {unknown}; allowed: "
            f"{sorted(_MONGO_QUERY_KEYS)}"
        )
    return parsed


def _mongo_hosts_path(connection: str) -> tuple[str, str, str]:
    scheme, _, rest = connection.partition("://")
    netloc, _, path = rest.partition("/")
    hosts = netloc.rpartition("@")[2]
    return scheme.lower() or "mongodb", hosts.lower(), path.partition("?")[0]


def _mongo_database(connection: str) -> str:
    return unquote(_mongo_hosts_path(connection)[2])


def _mongo_target(connection: str, database: str | None) -> str:
    """``mongodb://host1,host2/db``: no user, password or options."""
    scheme, hosts, _ = _mongo_hosts_path(connection)
    if scheme == "mongodb":  # mongodb+srv names a DNS record, not host:port pairs
        hosts = ",".join(h if ":" in h else f"{h}:27017" for h in hosts.split(",") if h)
    ordered = ",".join(sorted(hosts.split(","))) if hosts else "localhost"
    return f"{scheme}://{ordered}/{database or _mongo_database(connection)}"
