"""``aof-index memory export|import|keygen`` on real stores: conversations exported from a
SQLite-backed Memory are imported into a Redis-backed and a PostgreSQL-backed Memory and
exported again, byte for byte the same (but for ``exported_at``).

Redis and PostgreSQL are the real servers on 127.0.0.1 (Redis is started here when 6379
does not answer; PostgreSQL with ``pg_ctlcluster``).  Every test writes under a Memory name
of its own (Redis keys ``aof:<namespace>:<name>:chat:*``) and a PostgreSQL schema of its
own, deleted afterwards, so tests running at the same time never see each other's data.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.storage.chat_store.base import BaseChatStore
from redis_server import answers, private_redis
from typer.testing import CliRunner

from aof_index import build_memory
from aof_index.cli.main import app
from aof_index.memory import PostgresChatStore, RedisChatStore, SQLiteChatStore
from aof_index.memory.codec import parse_keys

pytestmark = pytest.mark.integration

runner = CliRunner()
NAMESPACE = "transfer-test"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
MEGABYTE = "xyz\u00e9" * (256 * 1024)


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------------------------
# Servers.


def postgres_answers() -> bool:
    try:
        psycopg.connect(**PG, connect_timeout=2).close()  # type: ignore[arg-type]
    except psycopg.OperationalError:
        return False
    return True


def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The shared server on 6379, or a redis-server started here when none answers."""
    if answers(6379):
        yield 6379
        return
    with private_redis(tmp_path_factory.mktemp("redis")) as port:
        yield port


@pytest.fixture(scope="module")
def postgres() -> None:
    """The server on 5432, started with the machine's own cluster when it does not answer."""
    if postgres_answers():
        return
    clusters = sorted(Path("/etc/postgresql").glob("*/main"))
    if not clusters or shutil.which("pg_ctlcluster") is None:
        pytest.fail("PostgreSQL does not answer on 127.0.0.1:5432 and no cluster is installed")
    version = clusters[-1].parent.name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    wait_for(postgres_answers, f"PostgreSQL {version} to answer on 5432")


# --------------------------------------------------------------------------------------------
# Manifests: one Memory per backend, each of this test's own.


def write_manifest(path: Path, name: str, backend: dict[str, Any], **spec: Any) -> Path:
    manifest = {
        "apiVersion": "aof.agenticops.org/v1alpha1",
        "kind": "Memory",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"backend": backend, **spec},
    }
    path.write_text(json.dumps(manifest, indent=2))  # JSON is YAML
    return path


@pytest.fixture
def sqlite_manifest(tmp_path: Path) -> Path:
    return write_manifest(
        tmp_path / "sqlite-memory.yaml",
        "source",
        {"type": "SQLite", "sqlite": {"path": str(tmp_path / "source-chat.db")}},
    )


@pytest.fixture
def redis_manifest(tmp_path: Path, redis_port: int) -> Iterator[Path]:
    name = f"r{uuid.uuid4().hex[:12]}"
    yield write_manifest(
        tmp_path / "redis-memory.yaml",
        name,
        {"type": "Redis", "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "ttl": "1h"}},
    )
    client = redis.Redis(port=redis_port)
    keys = list(client.scan_iter(match=f"aof:{NAMESPACE}:{name}:chat:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def pg_schema(postgres: None) -> str:
    return f"aof_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def postgres_manifest(
    tmp_path: Path, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A PostgreSQL Memory that compresses and encrypts at rest, with a key from keygen."""
    code, key, _ = run("memory", "keygen")
    assert code == 0
    monkeypatch.setenv("AOF_SECRET_MEMORY_KEY_KEY", key.strip())
    schema = pg_schema
    yield write_manifest(
        tmp_path / "postgres-memory.yaml",
        "target",
        {
            "type": "PostgreSQL",
            "postgresql": {
                "host": "127.0.0.1",
                "port": 5432,
                "database": "postgres",
                "user": "postgres",
                "sslMode": "disable",
                "schema": schema,
            },
        },
        conversational={"compression": {"enabled": True, "algorithm": "gzip"}},
        access={"encryption": {"keySecretRef": {"name": "memory-key", "key": "key"}}},
    )
    with psycopg.connect(**PG, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def store_of(manifest: Path) -> BaseChatStore:
    return build_memory(manifest).chat_store


def close(store: BaseChatStore) -> None:
    store.close()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Helpers.


def conversations() -> dict[str, list[ChatMessage]]:
    tool_call = {
        "id": "call_7",
        "type": "function",
        "function": {"name": "get_pods", "arguments": '{"namespace": "prod"}'},
    }
    return {
        "incident-42": [
            ChatMessage(role=MessageRole.USER, content="Why are pods pending?"),
            ChatMessage(
                role=MessageRole.ASSISTANT,
                content="",
                additional_kwargs={"tool_calls": [tool_call]},
            ),
            ChatMessage(
                role=MessageRole.TOOL,
                content='{"pending": 3}',
                additional_kwargs={"tool_call_id": "call_7"},
            ),
            ChatMessage(role=MessageRole.ASSISTANT, content="No node has 64Gi free."),
        ],
        "screenshot": [
            ChatMessage(
                role=MessageRole.USER,
                blocks=[
                    TextBlock(text="Look:"),
                    ImageBlock(
                        image=b"\x89PNG\r\n\x1a\n" + bytes(range(256)), image_mimetype="image/png"
                    ),
                ],
            )
        ],
        "ünïcode/会話 \u2028": [ChatMessage(content="🚀 e\u0301 \x00 \u2029 \x85 مرحبا")],
        "empty": [ChatMessage(content="")],
        "large": [ChatMessage(content=MEGABYTE)],
        "Z-last-in-collation": [ChatMessage(content="sorted by code point, not collation")],
    }


def without_time(text: str) -> list[str]:
    assert text.endswith("\n")
    header, *rest = text[:-1].split("\n")
    fields = json.loads(header)
    assert fields.pop("exported_at")
    return [json.dumps(fields, sort_keys=True), *rest]


def dumps(store: BaseChatStore) -> dict[str, list[dict[str, Any]]]:
    return {k: [m.model_dump() for m in store.get_messages(k)] for k in store.get_keys()}


def export(manifest: Path, out: Path) -> str:
    code, _, err = run("memory", "export", str(out), "--memory", str(manifest))
    assert code == 0, err
    assert "Exported" in err and "plaintext" in err
    return out.read_text(encoding="utf-8")


def import_json(manifest: Path, file: Path, *extra: str) -> dict[str, int]:
    code, out, err = run("memory", "import", str(file), "-m", str(manifest), "--json", *extra)
    assert code == 0, err
    result: dict[str, int] = json.loads(out)
    return result


# --------------------------------------------------------------------------------------------
# The migration: SQLite → Redis and PostgreSQL → export again.


def test_sqlite_to_redis_and_postgres_round_trip_is_byte_identical(
    tmp_path: Path,
    sqlite_manifest: Path,
    redis_manifest: Path,
    postgres_manifest: Path,
    pg_schema: str,
) -> None:
    data = conversations()
    source = store_of(sqlite_manifest)
    assert isinstance(source, SQLiteChatStore)
    for key, messages in data.items():
        source.set_messages(key, messages)
    expected = dumps(source)
    close(source)

    first = export(sqlite_manifest, tmp_path / "from-sqlite.jsonl")
    assert stat.S_IMODE((tmp_path / "from-sqlite.jsonl").stat().st_mode) == 0o600
    header = json.loads(first.split("\n", 1)[0])
    assert (header["format"], header["version"], header["conversations"]) == (
        "aof-index/conversations",
        1,
        len(data),
    )

    for manifest, kind in (
        (redis_manifest, RedisChatStore),
        (postgres_manifest, PostgresChatStore),
    ):
        counts = import_json(manifest, tmp_path / "from-sqlite.jsonl")
        assert counts == {
            "conversations": 6,
            "messages": 9,
            "created": 6,
            "replaced": 0,
            "appended": 0,
            "skipped": 0,
        }
        again = export(manifest, tmp_path / f"from-{kind.__name__}.jsonl")
        assert without_time(again) == without_time(first), kind.__name__

        target = store_of(manifest)
        assert isinstance(target, kind)
        try:
            assert dumps(target) == expected
            assert target.get_messages("large")[0].content == MEGABYTE
        finally:
            close(target)

    # PostgreSQL keeps the messages encrypted (its manifest says so); the exports are the
    # same plaintext.
    with psycopg.connect(**PG) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            f'SELECT message FROM "{pg_schema}".aof_chat_transfer_test_target'
        ).fetchall()
    assert len(rows) == 9 and all(row[0].startswith("aof:fe:") for row in rows)
    assert "No node has 64Gi free." in first

    # Standard output gives the same lines as a file.
    code, out, err = run("memory", "export", "-o", "-", "-m", str(postgres_manifest))
    assert code == 0, err
    assert without_time(out) == without_time(first)


def test_conflicts_through_the_cli(
    tmp_path: Path, sqlite_manifest: Path, redis_manifest: Path
) -> None:
    source = store_of(sqlite_manifest)
    source.set_messages("shared", [ChatMessage(content="from sqlite")])
    source.set_messages("only-sqlite", [ChatMessage(content="new")])
    close(source)
    target = store_of(redis_manifest)
    target.set_messages("shared", [ChatMessage(content="already in redis")])
    close(target)
    file = tmp_path / "export.jsonl"
    export(sqlite_manifest, file)

    code, out, err = run("memory", "import", str(file), "-m", str(redis_manifest))
    assert code == 1 and out == ""
    assert "already exist" in err and "'shared'" in err and "--on-conflict" in err
    target = store_of(redis_manifest)
    try:
        assert target.get_keys() == ["shared"]  # nothing written

        assert import_json(redis_manifest, file, "--on-conflict", "skip")["skipped"] == 1
        assert [m.content for m in target.get_messages("shared")] == ["already in redis"]

        counts = import_json(redis_manifest, file, "--on-conflict", "append")
        assert (counts["appended"], counts["conversations"]) == (2, 2)
        assert [m.content for m in target.get_messages("shared")] == [
            "already in redis",
            "from sqlite",
        ]

        counts = import_json(redis_manifest, file, "--on-conflict", "replace")
        assert counts["replaced"] == 2
        assert [m.content for m in target.get_messages("shared")] == ["from sqlite"]
        assert [m.content for m in target.get_messages("only-sqlite")] == ["new"]
    finally:
        close(target)


def test_prefix_and_stdin(tmp_path: Path, sqlite_manifest: Path, redis_manifest: Path) -> None:
    source = store_of(sqlite_manifest)
    for key in ("team-a/1", "team-a/2", "team-b/1"):
        source.set_messages(key, [ChatMessage(content=key)])
    close(source)
    code, out, err = run("memory", "export", "--prefix", "team-a/", "-m", str(sqlite_manifest))
    assert code == 0, err
    assert [json.loads(line)["key"] for line in out.splitlines()[1:]] == ["team-a/1", "team-a/2"]

    code, _, err = run("memory", "import", "-", "-m", str(redis_manifest), input=out)
    assert code == 0, err
    assert "Imported 2 conversation(s), 2 message(s)" in err and "2 new" in err
    target = store_of(redis_manifest)
    try:
        assert target.get_keys() == ["team-a/1", "team-a/2"]
    finally:
        close(target)


# --------------------------------------------------------------------------------------------
# Errors and keygen (the embedded default Memory: SQLite under $AOF_INDEX_HOME).


def test_invalid_file_exits_1_naming_the_line_and_writes_nothing(tmp_path: Path) -> None:
    file = tmp_path / "edited.jsonl"
    file.write_text(
        '{"conversations": 2, "format": "aof-index/conversations", "version": 1}\n'
        '{"key": "ok", "messages": [{"role": "user", "content": "fine"}]}\n'
        '{"key": "bad", "messages": [{"role": "robot", "content": "x"}]}\n',
        encoding="utf-8",
    )
    code, out, err = run("memory", "import", str(file))
    assert code == 1 and out == ""
    assert "line 3: messages[0].role" in err and "'robot'" in err
    assert "Nothing was imported" in err
    store = build_memory().chat_store
    assert store.get_keys() == []


def test_missing_file_and_unwritable_output(tmp_path: Path) -> None:
    code, _, err = run("memory", "import", str(tmp_path / "absent.jsonl"))
    assert code == 1 and "cannot read" in err and "absent.jsonl" in err
    code, _, err = run("memory", "export", str(tmp_path / "no-such-dir" / "out.jsonl"))
    assert code == 1 and "cannot write" in err
    code, _, err = run("memory", "export", "a.jsonl", "-o", "b.jsonl")
    assert code == 2 and "differ" in err


def test_export_replaces_an_existing_file_privately(tmp_path: Path) -> None:
    build_memory().chat_store.set_messages("k", [ChatMessage(content="secret")])
    folder = tmp_path / "exports"
    folder.mkdir()
    file = folder / "out.jsonl"
    file.write_text("old")
    file.chmod(0o644)
    code, _, err = run("memory", "export", str(file))
    assert code == 0, err
    assert '"secret"' in file.read_text() and stat.S_IMODE(file.stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == ["out.jsonl"]  # no temporary file left


def test_keygen_prints_a_key_and_where_to_put_it() -> None:
    code, out, err = run("memory", "keygen")
    assert code == 0
    key = out.strip()
    assert out == key + "\n" and len(parse_keys(key)) == 1
    assert "spec.access.encryption.keySecretRef" in err and "Secret" in err
    assert run("memory", "keygen")[1].strip() != key
