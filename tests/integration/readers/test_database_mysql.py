"""The Database reader's MySQL path against a real MariaDB server.

Real: a private ``mariadbd`` started for the session from the installed MariaDB binaries (see
``conftest.py``), reached over TCP on 127.0.0.1 with real password authentication by a user
that may only ``SELECT`` from its database, through SQLAlchemy and PyMySQL as in production.
Every test starts from an empty database (dropped and recreated); tables, functions and the
checks on the server (row counts, ``information_schema.processlist``) are made as root over
the server's Unix socket. Nothing stands in.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from mariadb_server import MariaDB, run_mariadb

from aof_index_readers.base import DocumentRef
from aof_index_readers.database import DatabaseReader
from aof_index_readers.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
)

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "Tr0ub4dor-not-it"


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    """A private MariaDB server (see ``mariadb_server.py``), removed with its data afterwards.

    Defined here rather than in a ``conftest.py``: tests import ``conftest`` by name, and a
    second one in this folder would shadow ``tests/integration/conftest.py``.
    """
    yield from run_mariadb()


@pytest.fixture
def db(mariadb: MariaDB) -> Iterator[MariaDB]:
    """The session's server with an empty database for this test."""
    mariadb.reset()
    yield mariadb


def run(server: MariaDB, *statements: str) -> list[tuple[Any, ...]]:
    """Run ``statements`` as root in the reader's database; the last one's rows."""
    rows: list[tuple[Any, ...]] = []
    with server.admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"USE `{server.database}`")
        for statement in statements:
            cursor.execute(statement)
            rows = list(cursor.fetchall())
    return rows


def reader(server: MariaDB, query: str, **kwargs: Any) -> DatabaseReader:
    return DatabaseReader("MySQL", server.url(), query, **kwargs)


def listing(reader: DatabaseReader) -> dict[str, DocumentRef]:
    return {ref.metadata["source"]: ref for ref in reader.list_documents()}


def shown(error: BaseException) -> str:
    """Everything a logged traceback of ``error`` would show."""
    return "".join(traceback.format_exception(error))


ARTICLES = (
    "CREATE TABLE articles (id int PRIMARY KEY, title text, body text, author text,"
    " source text, updated_at datetime)",
    "INSERT INTO articles VALUES"
    " (1, 'Restart', 'Restart the pod with kubectl.', 'ana', 'wiki', '2024-05-01 08:00:00'),"
    " (2, 'Scale', 'Scale the deployment to three replicas.', 'bo', 'wiki',"
    "  '2024-05-02 12:00:00'),"
    " (3, 'Drain', 'Drain the node before maintenance.', NULL, NULL, NULL)",
)


# --- documents ----------------------------------------------------------------------------


def test_rows_become_documents_with_content_and_metadata_columns(db: MariaDB) -> None:
    run(db, *ARTICLES)
    query = "SELECT * FROM articles ORDER BY id"

    documents = reader(db, query, columns=["body"], source_name="kb").load_data()

    assert [d.text for d in documents] == [
        "Restart the pod with kubectl.",
        "Scale the deployment to three replicas.",
        "Drain the node before maintenance.",
    ]
    first = documents[0].metadata
    assert first["source"] == f"mysql://127.0.0.1:{db.port}/kb#id=1"
    assert first["title"] == "Restart"
    assert first["last_modified"] == "2024-05-01T08:00:00+00:00"  # DATETIME read as UTC
    assert first["author"] == "ana"
    assert first["column_source"] == "wiki"  # cannot overwrite the citation
    assert first["id"] == 1
    assert "body" not in first and "updated_at" not in first
    assert (first["source_name"], first["source_type"]) == ("kb", "Database")
    assert documents[2].metadata["last_modified"] is None
    assert db.password not in str([d.metadata for d in documents])
    listed = list(reader(db, query, columns=["body"], source_name="kb").list_documents())
    assert [d.id_ for d in documents] == [ref.id for ref in listed]
    assert [d.metadata["version"] for d in documents] == [ref.version for ref in listed]


def test_default_content_is_every_column_but_key_and_time_as_labelled_lines(
    db: MariaDB,
) -> None:
    run(db, *ARTICLES)
    query = "SELECT id, title, body, author, updated_at FROM articles ORDER BY id"

    texts = [d.text for d in reader(db, query).load_data()]

    assert texts[0] == "title: Restart\nbody: Restart the pod with kubectl.\nauthor: ana"
    assert texts[2] == "title: Drain\nbody: Drain the node before maintenance."  # NULL left out


def test_ids_stay_stable_and_versions_change_only_for_changed_rows(db: MariaDB) -> None:
    run(db, *ARTICLES)
    query = "SELECT id, title, body FROM articles"
    before = listing(DatabaseReader("MySQL", db.url(), query))

    run(
        db,
        "UPDATE articles SET body = 'Scale to five replicas.' WHERE id = 2",
        "DELETE FROM articles WHERE id = 3",
        "INSERT INTO articles (id, title, body) VALUES (4, 'Cordon', 'Cordon it.')",
    )
    after = listing(DatabaseReader("MySQL", db.url(scheme="mariadb"), query))

    key = f"mysql://127.0.0.1:{db.port}/kb#id="
    assert set(before) == {key + "1", key + "2", key + "3"}
    assert set(after) == {key + "1", key + "2", key + "4"}  # the deleted row is gone
    assert after[key + "1"] == before[key + "1"]  # same id and version: unchanged
    assert after[key + "2"].id == before[key + "2"].id
    assert after[key + "2"].version != before[key + "2"].version
    assert after[key + "4"].id not in {ref.id for ref in before.values()}


# --- streaming ----------------------------------------------------------------------------


def test_fifty_thousand_rows_stream_from_a_server_side_cursor(db: MariaDB) -> None:
    # About 25 MB of rows: far more than socket buffers hold, so a streaming server is still
    # sending when the first document arrives, while a buffered client would have read it all.
    run(
        db,
        "CREATE TABLE big (id int PRIMARY KEY, body text, pad text)",
        "INSERT INTO big SELECT seq, CONCAT('row ', seq), REPEAT('x', 500) FROM seq_1_to_50000",
    )
    query = "SELECT id, body, pad FROM big ORDER BY id"
    activity = (
        "SELECT command, info FROM information_schema.processlist "
        f"WHERE user = '{db.user}' AND db = '{db.database}'"
    )

    refs = reader(db, query, columns=["body"], batch_size=500).list_documents()
    first = next(refs)
    while_open = run(db, activity)
    rest = sum(1 for _ in refs)

    assert first.handle == "row 1"
    # The first document came while the server was still running the query for the reader.
    assert while_open == [("Query", query)]
    assert rest == 49_999
    assert run(db, activity) == []  # the reader's connection is closed afterwards


# --- read-only ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("REPLACE INTO articles (id) VALUES (9)", "starts with REPLACE"),
        ("SELECT * FROM articles INTO OUTFILE '/tmp/leak'", "contains INTO"),
        ("SELECT 1; DROP TABLE articles", "holds more than one statement"),
        ("CALL refresh()", "starts with CALL"),
    ],
)
def test_statements_that_write_are_refused_before_reaching_the_server(
    db: MariaDB, query: str, problem: str
) -> None:
    run(db, *ARTICLES)

    with pytest.raises(ValueError, match=rf"query {problem}.*read-only SELECT"):
        reader(db, query)

    assert run(db, "SELECT COUNT(*) FROM articles") == [(3,)]


def test_the_read_only_transaction_stops_a_function_that_writes(db: MariaDB) -> None:
    run(
        db,
        "CREATE TABLE counter (n int)",
        "INSERT INTO counter VALUES (0)",
        "CREATE FUNCTION bump() RETURNS int MODIFIES SQL DATA"
        " BEGIN UPDATE counter SET n = n + 1; RETURN (SELECT n FROM counter); END",
        f"GRANT EXECUTE ON FUNCTION `{db.database}`.bump TO '{db.user}'@'127.0.0.1'",
    )

    with pytest.raises(SourceError, match=r"READ ONLY transaction.*; query must only read"):
        list(reader(db, "SELECT bump() AS id").list_documents())
    assert run(db, "SELECT n FROM counter") == [(0,)]  # never written

    # The same user and statement outside a read-only transaction do write: it was the
    # transaction, not a missing privilege, that stopped the reader.
    with pymysql.connect(
        host="127.0.0.1", port=db.port, user=db.user, password=db.password,
        database=db.database, autocommit=True,
    ) as plain, plain.cursor() as cursor:  # fmt: skip
        cursor.execute("SELECT bump()")
    assert run(db, "SELECT n FROM counter") == [(1,)]


# --- errors -------------------------------------------------------------------------------


def test_a_wrong_password_is_an_auth_error_without_the_password(db: MariaDB) -> None:
    bad = DatabaseReader(
        "MySQL", db.url(password=WRONG_PASSWORD), "SELECT 1 AS id", source_name="kb"
    )

    with pytest.raises(SourceAuthError) as caught:
        list(bad.list_documents())

    message = str(caught.value)
    assert f"Access denied for user '{db.user}'@'127.0.0.1' (using password: YES)" in message
    assert f"Database source 'kb' (MySQL at mysql://127.0.0.1:{db.port}/kb)" in message
    assert "check the user and password" in message
    assert WRONG_PASSWORD not in shown(caught.value)
    assert WRONG_PASSWORD not in repr(bad)
    # The right password gets in, so it was the password that was refused.
    assert [ref.handle for ref in reader(db, "SELECT 1 AS id, 'ok' AS body").list_documents()] == [
        "ok"
    ]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("SELECT * FROM no_such_table", "Table 'kb.no_such_table' doesn't exist"),
        ("SELECT no_such_column FROM articles", "Unknown column 'no_such_column'"),
    ],
)
def test_unknown_tables_and_columns_are_named(db: MariaDB, query: str, named: str) -> None:
    run(db, *ARTICLES)

    with pytest.raises(SourceNotFoundError, match=named) as caught:
        list(reader(db, query).list_documents())

    assert "check the table, column and database names" in str(caught.value)
    assert db.password not in shown(caught.value)


def test_tables_outside_the_granted_database_are_a_permission_error(db: MariaDB) -> None:
    run(db, "CREATE TABLE mysql.aof_private (id int)")
    try:
        with pytest.raises(SourcePermissionError, match="SELECT command denied") as caught:
            list(reader(db, "SELECT * FROM mysql.aof_private").list_documents())
    finally:
        run(db, "DROP TABLE mysql.aof_private")

    assert "grant it read access (SELECT)" in str(caught.value)


def test_a_database_the_user_may_not_see_is_a_permission_error(db: MariaDB) -> None:
    # MySQL answers "access denied" (1044) rather than "unknown database" to a user without
    # rights on it, so that a user cannot probe which databases exist.
    bad = DatabaseReader("MySQL", db.url(database="no_such_db"), "SELECT 1")

    with pytest.raises(SourcePermissionError, match=r"Access denied .* to database 'no_such_db'"):
        list(bad.list_documents())
