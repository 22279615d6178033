"""The Database reader against real databases, and stand-ins where no server runs here.

Real: the PostgreSQL server on 127.0.0.1:5432 (trust auth; every test gets a database of
its own, ``aof_reader_<hex>``, dropped afterwards, and roles it creates are dropped too),
SQLite files under ``tmp_path``, and PyMySQL's real connection attempt to a closed port.
Stand-in: MongoDB through ``mongomock``, an in-process imitation of a MongoDB server behind
pymongo's client API (no MongoDB server runs here). MySQL is tested against a real MariaDB
server started from the installed binaries in ``test_database_mysql.py``; here only its URL
handling, credential scrubbing and an unreachable server.

Trust auth accepts any password, so the credential failure produced here is the server
refusing a role that may not log in (SQLSTATE 28000), not a wrong password.
"""

from __future__ import annotations

import socket
import sqlite3
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mongomock
import psycopg
import pytest
from bson import ObjectId
from sqlalchemy import event
from sqlalchemy.engine import Engine

from aof_index_readers.base import DocumentRef
from aof_index_readers.database import DatabaseReader
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceUnavailableError,
)

pytestmark = pytest.mark.integration

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable"
PASSWORD = "Tr0ub4dor-s3cret"


@dataclass
class Postgres:
    """A database of this test's own on the shared server."""

    name: str
    connection: psycopg.Connection[Any]

    def url(self, user: str = "postgres", scheme: str = "postgresql", extra: str = "") -> str:
        return f"{scheme}://{user}@127.0.0.1:5432/{self.name}{extra}"

    def run(self, sql: str) -> None:
        self.connection.execute(sql.encode())  # bytes: no placeholder parsing

    def reader(self, query: str, **kwargs: Any) -> DatabaseReader:
        return DatabaseReader("PostgreSQL", self.url(), query, **kwargs)


@pytest.fixture
def pg() -> Iterator[Postgres]:
    name = f"aof_reader_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
        try:
            with psycopg.connect(
                ADMIN.replace("dbname=postgres", f"dbname={name}"), autocommit=True
            ) as connection:
                yield Postgres(name, connection)
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


@pytest.fixture
def role() -> Iterator[Callable[[str], str]]:
    """Create cluster roles (``CREATE ROLE <name> <options>``) dropped after the test."""
    made: list[str] = []

    def create(options: str) -> str:
        name = f"aof_reader_role_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {name} {options}".encode())
        made.append(name)
        return name

    yield create
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        for name in made:
            admin.execute(f"DROP ROLE IF EXISTS {name}".encode())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listing(reader: DatabaseReader) -> dict[str, DocumentRef]:
    return {ref.metadata["source"]: ref for ref in reader.list_documents()}


def shown(error: BaseException) -> str:
    """Everything a logged traceback of ``error`` would show."""
    return "".join(traceback.format_exception(error))


ARTICLES = """
CREATE TABLE articles (
    id integer PRIMARY KEY, title text, body text, author text, source text,
    updated_at timestamptz
);
INSERT INTO articles VALUES
    (1, 'Restart', 'Restart the pod with kubectl.', 'ana', 'wiki',
     '2024-05-01 10:00:00+02'),
    (2, 'Scale', 'Scale the deployment to three replicas.', 'bo', 'wiki',
     '2024-05-02 12:00:00+00'),
    (3, 'Drain', 'Drain the node before maintenance.', NULL, NULL, NULL);
"""


# --- PostgreSQL: documents ----------------------------------------------------------------


def test_rows_become_documents_with_content_and_metadata_columns(pg: Postgres) -> None:
    pg.run(ARTICLES)
    reader = pg.reader("SELECT * FROM articles ORDER BY id", columns=["body"], source_name="kb")

    documents = reader.load_data()

    assert [d.text for d in documents] == [
        "Restart the pod with kubectl.",
        "Scale the deployment to three replicas.",
        "Drain the node before maintenance.",
    ]
    first = documents[0].metadata
    assert first["source"] == f"postgresql://127.0.0.1:5432/{pg.name}#id=1"
    assert first["title"] == "Restart"
    assert first["last_modified"] == "2024-05-01T08:00:00+00:00"
    assert first["author"] == "ana"
    assert first["column_source"] == "wiki"  # cannot overwrite the citation
    assert first["id"] == 1
    assert "body" not in first and "updated_at" not in first
    assert (first["source_name"], first["source_type"]) == ("kb", "Database")
    assert documents[2].metadata["last_modified"] is None
    listed = list(reader.list_documents())
    assert [d.id_ for d in documents] == [ref.id for ref in listed]
    assert [d.metadata["version"] for d in documents] == [ref.version for ref in listed]


def test_default_content_is_every_column_but_key_and_time_as_labelled_lines(
    pg: Postgres,
) -> None:
    pg.run(ARTICLES)
    reader = pg.reader("SELECT id, title, body, author, updated_at FROM articles ORDER BY id")

    texts = [d.text for d in reader.load_data()]

    assert texts[0] == "title: Restart\nbody: Restart the pod with kubectl.\nauthor: ana"
    assert texts[2] == "title: Drain\nbody: Drain the node before maintenance."  # NULL left out


def test_ids_stay_stable_and_versions_change_only_for_changed_rows(pg: Postgres) -> None:
    pg.run(ARTICLES)
    query = "SELECT id, title, body FROM articles"
    before = listing(DatabaseReader("PostgreSQL", pg.url(scheme="postgres"), query))

    pg.run("UPDATE articles SET body = 'Scale to five replicas.' WHERE id = 2")
    pg.run("DELETE FROM articles WHERE id = 3")
    pg.run("INSERT INTO articles (id, title, body) VALUES (4, 'Cordon', 'Cordon it.')")
    after = listing(DatabaseReader("PostgreSQL", pg.url(scheme="postgresql+psycopg"), query))

    key = f"postgresql://127.0.0.1:5432/{pg.name}#id="
    assert set(before) == {key + "1", key + "2", key + "3"}
    assert set(after) == {key + "1", key + "2", key + "4"}  # the deleted row is gone
    assert after[key + "1"] == before[key + "1"]  # same id and version: unchanged
    assert after[key + "2"].id == before[key + "2"].id
    assert after[key + "2"].version != before[key + "2"].version
    assert after[key + "4"].id not in {ref.id for ref in before.values()}


def test_id_columns_default_to_the_first_column_and_may_be_composite(pg: Postgres) -> None:
    pg.run(
        "CREATE TABLE pages (space text, slug text, body text);"
        "INSERT INTO pages VALUES ('ops', 'a', 'one'), ('dev', 'a', 'two');"
    )
    query = "SELECT space, slug, body FROM pages ORDER BY space"

    by_first = [ref.metadata["source"] for ref in pg.reader(query).list_documents()]
    composite = list(pg.reader(query, id_columns=["space", "slug"]).list_documents())

    target = f"postgresql://127.0.0.1:5432/{pg.name}"
    assert by_first == [f"{target}#space=dev", f"{target}#space=ops"]
    assert [ref.metadata["source"] for ref in composite] == [
        f"{target}#space=dev&slug=a",
        f"{target}#space=ops&slug=a",
    ]
    assert len({ref.id for ref in composite}) == 2
    assert [ref.handle for ref in composite] == ["two", "one"]  # the one non-key column


def test_configured_columns_the_query_does_not_return_are_named(pg: Postgres) -> None:
    pg.run(ARTICLES)

    with pytest.raises(SourceNotFoundError, match=r"id_columns names 'slug'.*returns id, body"):
        list(pg.reader("SELECT id, body FROM articles", id_columns=["slug"]).list_documents())


# --- read-only ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("DELETE FROM articles", "starts with DELETE"),
        ("update articles set body = ''", "starts with UPDATE"),
        ("SELECT 1; DROP TABLE articles", "holds more than one statement"),
        ("WITH gone AS (DELETE FROM articles RETURNING *) SELECT * FROM gone", "contains DELETE"),
        ("SELECT * INTO copy FROM articles", "contains INTO"),
        ("  ", "is empty"),
    ],
)
def test_statements_that_are_not_one_select_are_refused(query: str, problem: str) -> None:
    with pytest.raises(ValueError, match=rf"query {problem}.*read-only SELECT"):
        DatabaseReader("PostgreSQL", "postgresql://u@127.0.0.1/db", query)


def test_keywords_inside_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id integer, body text)")
        db.execute("INSERT INTO notes VALUES (1, 'x')")
    query = "-- delete nothing\nSELECT id, 'drop; update' AS body FROM notes /* insert */;"

    documents = DatabaseReader("SQLite", str(path), query).load_data()

    assert [d.text for d in documents] == ["drop; update"]


def test_the_read_only_transaction_stops_writes_the_check_cannot_see(pg: Postgres) -> None:
    pg.run("CREATE SEQUENCE counter")

    with pytest.raises(SourceError, match="read-only transaction; query must only read"):
        list(pg.reader("SELECT nextval('counter') AS id").list_documents())

    value = pg.connection.execute(b"SELECT last_value, is_called FROM counter").fetchone()
    assert value == (1, False)  # never advanced


def test_sqlite_files_are_opened_read_only(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"

    with pytest.raises(SourceNotFoundError, match="unable to open database file"):
        list(DatabaseReader("SQLite", f"sqlite:///{missing}", "SELECT 1").list_documents())

    assert not missing.exists()  # a writable open would have created it


# --- errors -------------------------------------------------------------------------------


def test_a_role_the_server_refuses_is_an_auth_error_without_the_password(
    pg: Postgres, role: Callable[[str], str]
) -> None:
    name = role(f"NOLOGIN PASSWORD '{PASSWORD}'")
    reader = DatabaseReader(
        "PostgreSQL", pg.url(user=f"{name}:{PASSWORD}"), "SELECT 1", source_name="kb"
    )

    with pytest.raises(SourceAuthError) as caught:
        list(reader.list_documents())

    assert f'role "{name}" is not permitted to log in' in str(caught.value)
    assert "Database source 'kb' (PostgreSQL at postgresql://127.0.0.1:5432/" in str(caught.value)
    assert PASSWORD not in shown(caught.value)
    assert PASSWORD not in repr(reader)


def test_a_role_without_select_is_a_permission_error(
    pg: Postgres, role: Callable[[str], str]
) -> None:
    pg.run(ARTICLES)
    name = role("LOGIN")

    with pytest.raises(SourcePermissionError, match="permission denied for table articles"):
        list(
            DatabaseReader(
                "PostgreSQL", pg.url(user=name), "SELECT * FROM articles"
            ).list_documents()
        )


@pytest.mark.parametrize(
    ("query", "database", "named"),
    [
        ("SELECT * FROM no_such_table", None, 'relation "no_such_table" does not exist'),
        ("SELECT no_such_column FROM articles", None, 'column "no_such_column" does not'),
        ("SELECT 1", "aof_reader_no_such_db", 'database "aof_reader_no_such_db" does not'),
    ],
)
def test_unknown_tables_columns_and_databases_are_named(
    pg: Postgres, query: str, database: str | None, named: str
) -> None:
    pg.run(ARTICLES)
    url = pg.url().replace(pg.name, database) if database else pg.url()

    with pytest.raises(SourceNotFoundError, match=named):
        list(DatabaseReader("PostgreSQL", url, query).list_documents())


@pytest.mark.parametrize(("kind", "scheme"), [("PostgreSQL", "postgresql"), ("MySQL", "mysql")])
def test_an_unreachable_server_is_unavailable(kind: str, scheme: str) -> None:
    port = closed_port()
    reader = DatabaseReader(kind, f"{scheme}://app:{PASSWORD}@127.0.0.1:{port}/app", "SELECT 1")

    with pytest.raises(SourceUnavailableError, match="check the host and port") as caught:
        list(reader.list_documents())

    assert f"{scheme}://127.0.0.1:{port}/app" in str(caught.value)
    assert "Connection refused" in str(caught.value)
    assert PASSWORD not in shown(caught.value)


# --- streaming ----------------------------------------------------------------------------


def test_fifty_thousand_rows_stream_from_a_server_side_cursor(pg: Postgres) -> None:
    pg.run(
        "CREATE TABLE big AS SELECT g AS id, 'row ' || g AS body FROM generate_series(1, 50000) g"
    )
    app = f"aof-stream-{uuid.uuid4().hex[:8]}"
    reader = DatabaseReader(
        "PostgreSQL",
        pg.url(extra=f"?application_name={app}"),
        "SELECT id, body FROM big ORDER BY id",
        batch_size=500,
    )
    activity = f"SELECT state, query FROM pg_stat_activity WHERE application_name = '{app}'"

    refs = reader.list_documents()
    first = next(refs)
    while_open = pg.connection.execute(activity.encode()).fetchall()
    rest = sum(1 for _ in refs)

    assert first.handle == "row 1"
    # The first document came while the query's cursor was still open on the server.
    assert len(while_open) == 1
    state, statement = while_open[0]
    assert state == "idle in transaction"
    assert statement.startswith("FETCH FORWARD")
    assert rest == 49_999
    # Closed afterwards. The server ends a backend a moment after its client hung up, so
    # pg_stat_activity may show it (idle, after its ROLLBACK) for a few milliseconds.
    deadline = time.monotonic() + 10
    while (left := pg.connection.execute(activity.encode()).fetchall()) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert left == []


def test_fifty_thousand_sqlite_rows_are_evaluated_as_they_are_read(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE big (id integer PRIMARY KEY, body text)")
        db.executemany("INSERT INTO big (body) VALUES (?)", ((f"row {i}",) for i in range(50000)))
    evaluated: list[str] = []

    def probe(value: str) -> str:
        evaluated.append(value)
        return value

    def register(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("probe", 1, probe)

    event.listen(Engine, "connect", register)
    try:
        reader = DatabaseReader(
            "SQLite", str(path), "SELECT id, probe(body) AS body FROM big", batch_size=100
        )
        refs = reader.list_documents()
        next(refs)
        evaluated_before_first = len(evaluated)
        rest = sum(1 for _ in refs)
    finally:
        event.remove(Engine, "connect", register)

    assert evaluated_before_first <= 2 * 100  # one batch, not the whole result
    assert rest == 49_999
    assert len(evaluated) == 50_000


# --- SQLite, MySQL URLs -------------------------------------------------------------------


def test_sqlite_paths_and_urls_name_the_same_source(tmp_path: Path) -> None:
    path = tmp_path / "my notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (id integer, body text, modified_at text)")
        db.execute("INSERT INTO notes VALUES (7, 'hello', '2024-03-04T05:06:07Z')")

    plain = list(DatabaseReader("SQLite", str(path), "SELECT * FROM notes").list_documents())
    url = list(
        DatabaseReader("SQLite", f"sqlite:///{path}", "SELECT * FROM notes").list_documents()
    )

    assert plain == url
    assert plain[0].metadata["source"] == f"sqlite://{path}#id=7"
    assert plain[0].metadata["last_modified"] == "2024-03-04T05:06:07+00:00"
    assert plain[0].handle == "hello"


def test_mysql_urls_are_read_with_pymysql_and_fingerprinted_without_credentials() -> None:
    query = "SELECT id, body FROM docs"

    plain = DatabaseReader("MySQL", f"mysql://app:{PASSWORD}@db.example:3307/kb", query)
    mariadb = DatabaseReader("MySQL", "mariadb+pymysql://other@db.example:3307/kb", query)
    default_port = DatabaseReader("MySQL", "mysql://db.example/kb", query)

    assert plain.target == mariadb.target == "mysql://db.example:3307/kb"
    assert default_port.target == "mysql://db.example:3306/kb"
    assert PASSWORD not in repr(plain)
    with pytest.raises(ValueError, match="must start with mysql://") as caught:
        DatabaseReader("MySQL", f"postgresql://app:{PASSWORD}@db/kb", query)
    assert PASSWORD not in str(caught.value)


def test_a_connection_string_of_another_type_is_refused_without_leaking_it() -> None:
    with pytest.raises(ValueError, match="must start with postgres://") as caught:
        DatabaseReader("PostgreSQL", f"mysql://app:{PASSWORD}@db/kb", "SELECT 1")

    assert PASSWORD not in str(caught.value)


# --- MongoDB (mongomock) ------------------------------------------------------------------


@pytest.fixture
def mongo() -> mongomock.MongoClient:
    client = mongomock.MongoClient()
    client.kb.runbooks.insert_many(
        [
            {"_id": ObjectId("65f0a0000000000000000001"), "title": "Restart", "body": "kubectl",
             "team": {"name": "sre"}, "updated_at": "2024-05-01T10:00:00Z", "draft": False},
            {"_id": ObjectId("65f0a0000000000000000002"), "title": "Scale", "body": "replicas",
             "team": {"name": "dev"}, "draft": False},
            {"_id": ObjectId("65f0a0000000000000000003"), "title": "Secret", "body": "hidden",
             "draft": True},
        ]
    )  # fmt: skip
    return client


def mongo_reader(client: mongomock.MongoClient, query: str, **kwargs: Any) -> DatabaseReader:
    connection = f"mongodb://app:{PASSWORD}@mongo.internal/kb?authSource=admin"
    return DatabaseReader("MongoDB", connection, query, client=client, **kwargs)


def test_mongodb_documents_by_filter_with_content_fields(mongo: mongomock.MongoClient) -> None:
    query = '{"collection": "runbooks", "filter": {"draft": false}, "sort": [["_id", 1]]}'

    documents = mongo_reader(mongo, query, columns=["body"]).load_data()

    assert [d.text for d in documents] == ["kubectl", "replicas"]
    metadata = documents[0].metadata
    assert metadata["source"] == "mongodb://mongo.internal:27017/kb#_id=65f0a0000000000000000001"
    assert metadata["title"] == "Restart"
    assert metadata["last_modified"] == "2024-05-01T10:00:00+00:00"
    assert metadata["team"] == '{"name": "sre"}'  # nested values flattened to JSON
    assert metadata["draft"] is False
    assert PASSWORD not in str(documents[0].metadata)


def test_mongodb_extended_json_filter_and_projection(mongo: mongomock.MongoClient) -> None:
    query = (
        '{"collection": "runbooks", "filter": {"_id": {"$oid": "65f0a0000000000000000002"}},'
        ' "projection": {"team": 0, "draft": 0}}'
    )

    documents = mongo_reader(mongo, query).load_data()

    assert [d.text for d in documents] == ["title: Scale\nbody: replicas"]


def test_mongodb_versions_change_only_for_changed_documents(
    mongo: mongomock.MongoClient,
) -> None:
    query = '{"collection": "runbooks"}'
    before = listing(mongo_reader(mongo, query))

    mongo.kb.runbooks.update_one({"title": "Scale"}, {"$set": {"body": "five replicas"}})
    mongo.kb.runbooks.delete_one({"title": "Secret"})
    after = listing(mongo_reader(mongo, query))

    changed = {s for s in after if after[s].version != before[s].version}
    assert set(before) - set(after) == {
        "mongodb://mongo.internal:27017/kb#_id=65f0a0000000000000000003"
    }
    assert changed == {"mongodb://mongo.internal:27017/kb#_id=65f0a0000000000000000002"}
    assert all(after[s].id == before[s].id for s in after)


def test_mongodb_unknown_collection_and_bad_query(mongo: mongomock.MongoClient) -> None:
    with pytest.raises(SourceNotFoundError, match="collection 'nope' does not exist in database"):
        list(mongo_reader(mongo, '{"collection": "nope"}').list_documents())
    with pytest.raises(ValueError, match="query is not valid JSON for MongoDB"):
        mongo_reader(mongo, "db.runbooks.find({})")
    with pytest.raises(ValueError, match=r"query has unknown keys \['limit'\]"):
        mongo_reader(mongo, '{"collection": "runbooks", "limit": 5}')
