"""``aof-index bench memory`` against the real servers (Redis on 127.0.0.1:6379, PostgreSQL
on 127.0.0.1:5432) and SQLite files, on small sizes; and its verification against stores
broken on purpose.  No timing is asserted: only the shape of the report, the integrity
counts, error counting and cleanup."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from llama_index.core.llms import ChatMessage, MessageRole
from typer.testing import CliRunner

from aof_index.bench.memory import (
    bench_store,
    make_message,
    parse_message,
    verify_conversations,
)
from aof_index.cli.main import app
from aof_index.memory import SQLiteChatStore

pytestmark = pytest.mark.integration

runner = CliRunner()
FIGURES = {
    "throughput_ops_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "append_p50_ms",
    "append_p99_ms",
    "read_p50_ms",
    "read_p99_ms",
    "wait_p50_ms",
    "wait_p99_ms",
    "ops",
    "appends",
    "reads",
    "lost",
    "reordered",
    "duplicated",
    "foreign",
    "unacked_present",
    "unverified",
    "stale_reads",
    "errors",
    "error_kinds",
    "seconds",
}
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def redis_bench_keys() -> set[bytes]:
    client = redis.Redis(socket_connect_timeout=2)
    try:
        return set(client.scan_iter(match="aof-bench:*", count=1000))
    except redis.RedisError as exc:
        pytest.fail(f"Redis does not answer on 127.0.0.1:6379: {exc}")
    finally:
        client.close()


def postgres_bench_schemas() -> set[str]:
    try:
        with psycopg.connect(**POSTGRES, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'aof\\_bench\\_%'"
            ).fetchall()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL does not answer on 127.0.0.1:5432: {exc}")
    return {row[0] for row in rows}


def run_bench(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = runner.invoke(
        app,
        ["bench", "memory", "--conversations", "20", "--messages", "6", "--json", *args],
    )
    try:
        payload = json.loads(result.stdout)
    except json.JSONDecodeError:
        payload = None
    return result.exit_code, payload, result.output


# --------------------------------------------------------------------------------------------
# The CLI on each backend.


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"])
def test_bench_reports_both_stores_and_cleans_up(backend: str, tmp_path: Path) -> None:
    keys_before = redis_bench_keys() if backend == "redis" else set()
    schemas_before = postgres_bench_schemas() if backend == "postgres" else set()
    extra = ["--sqlite-path", str(tmp_path / "db")] if backend == "sqlite" else []

    code, report, output = run_bench("--backend", backend, "--concurrency", "4", *extra)

    assert code == 0, output
    assert report is not None, output
    assert report["backend"] == backend
    assert (report["conversations"], report["messages"], report["concurrency"]) == (20, 6, 4)
    assert report["pool_size"] == 4
    assert "slot" in report["latency"]
    for side in ("ours", "baseline", "ceiling"):
        assert report[side].keys() >= FIGURES, side
        # 20 conversations x (6 appends + 6 reads), every call answered.
        assert report[side]["ops"] == 240, report[side]
        assert report[side]["lost"] == 0 and report[side]["reordered"] == 0, report[side]
    ours = report["ours"]
    assert ours["implementation"].startswith("aof_index.memory.")
    assert report["baseline"]["implementation"].startswith("llama_index.storage.chat_store.")
    assert ours["errors"] == ours["duplicated"] == ours["foreign"] == ours["stale_reads"] == 0
    assert report["lost"] == 0 and report["reordered"] == 0
    assert report["throughput_ops_s"] == ours["throughput_ops_s"] > 0
    assert (report["p50_ms"], report["p99_ms"]) == (ours["p50_ms"], ours["p99_ms"])
    expected_ratio = ours["throughput_ops_s"] / report["baseline"]["throughput_ops_s"]
    assert report["baseline_ratio"] == pytest.approx(expected_ratio, rel=0.01)
    assert report["ceiling"]["implementation"] == "aof_index.memory.InMemoryChatStore"
    ceiling = report["ceiling"]["throughput_ops_s"] / report["baseline"]["throughput_ops_s"]
    assert report["ceiling_ratio"] == pytest.approx(ceiling, rel=0.01)

    # Nothing the run created is left behind.
    if backend == "redis":
        assert redis_bench_keys() <= keys_before
    elif backend == "postgres":
        assert postgres_bench_schemas() <= schemas_before
    else:
        assert list((tmp_path / "db").iterdir()) == []


def test_table_output_names_the_figures() -> None:
    result = runner.invoke(
        app,
        ["bench", "memory", "-b", "sqlite", "-n", "5", "-m", "3", "--no-baseline"],
    )
    assert result.exit_code == 0, result.output
    for words in ("throughput (ops/s)", "p99 (ms)", "lost", "reordered", "slot wait"):
        assert words in result.stdout


def test_baseline_failures_are_counted_not_fatal() -> None:
    # 30 conversations at once on pools of 2 connections: LlamaIndex's Redis client raises
    # "Too many connections" for calls beyond its pool; ours waits for a connection.
    code, report, output = run_bench(
        "--backend", "redis", "--conversations", "30", "--concurrency", "0", "--pool-size", "2"
    )
    assert code == 0, output
    assert report is not None, output
    assert report["concurrency"] == 30
    assert report["ours"]["errors"] == 0 and report["ours"]["lost"] == 0
    baseline = report["baseline"]
    assert baseline["errors"] > 0
    assert any("Too many connections" in kind for kind in baseline["error_kinds"])
    # Failed appends were never acknowledged, so they are not "lost".
    assert baseline["appends"] < 30 * 6


def test_unreachable_server_is_a_clean_error() -> None:
    code, report, output = run_bench("--backend", "redis", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 1
    assert report is None
    assert "error:" in output and "127.0.0.1:1" in output
    assert "Traceback" not in output


# --------------------------------------------------------------------------------------------
# The verification catches broken stores.


class FaultyStore(SQLiteChatStore):
    """A real SQLite store that mishandles message #2 of conversation ``conv-3``."""

    fault: str = "none"

    async def async_add_message(
        self, key: str, message: ChatMessage, idx: int | None = None
    ) -> None:
        if parse_message(message) == ("conv-3", 2):
            if self.fault == "drop":  # acknowledged, never stored
                return
            if self.fault == "reorder":  # stored before the message ahead of it
                await super().async_add_message(key, message, idx=-1)
                return
            if self.fault == "duplicate":
                await super().async_add_message(key, message)
            if self.fault == "misroute":  # stored in another conversation
                await super().async_add_message("conv-4", message)
                return
        await super().async_add_message(key, message, idx)


def run_faulty(tmp_path: Path, fault: str) -> dict[str, Any]:
    store = FaultyStore(path=tmp_path / f"{fault}.db", fault=fault)
    keys = [f"conv-{i}" for i in range(8)]

    async def main() -> dict[str, Any]:
        try:
            figures = await bench_store(store, keys, 5, concurrency=3)
        finally:
            await store.aclose()
        return figures.as_json()

    return asyncio.run(main())


def test_an_intact_store_verifies_clean(tmp_path: Path) -> None:
    report = run_faulty(tmp_path, "none")
    counts = {k: report[k] for k in ("lost", "reordered", "duplicated", "foreign", "stale_reads")}
    assert counts == dict.fromkeys(counts, 0)
    assert report["ops"] == 8 * (5 + 5)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("drop", {"lost": 1, "reordered": 0, "duplicated": 0, "foreign": 0}),
        ("reorder", {"lost": 0, "reordered": 1, "duplicated": 0, "foreign": 0}),
        ("duplicate", {"lost": 0, "reordered": 0, "duplicated": 1, "foreign": 0}),
        ("misroute", {"lost": 1, "reordered": 0, "duplicated": 0, "foreign": 1}),
    ],
)
def test_a_broken_store_is_caught(tmp_path: Path, fault: str, expected: dict[str, int]) -> None:
    report = run_faulty(tmp_path, fault)
    assert {k: report[k] for k in expected} == expected
    # The read right after the faulty append already saw it.
    assert report["stale_reads"] >= 1


def test_verify_conversations_counts_each_defect() -> None:
    def conv(key: str, *seqs: int) -> list[ChatMessage]:
        return [make_message(key, s, 40) for s in seqs]

    stranger = ChatMessage(role=MessageRole.USER, content="not from the benchmark")
    acked = {"a": [0, 1, 2, 3], "b": [0, 1, 2], "c": [0, 1], "d": [0]}
    stored: dict[str, list[ChatMessage] | None] = {
        "a": conv("a", 0, 2, 1, 3, 3),  # reordered, one duplicate
        "b": [*conv("b", 0, 1), stranger, *conv("a", 9)],  # lost #2, two foreign
        "c": conv("c", 0, 1, 2),  # #2 stored although its append raised
        "d": None,  # read-back failed
    }
    v = verify_conversations(acked, stored)
    assert (v.lost, v.reordered, v.duplicated, v.foreign) == (1, 1, 1, 2)
    assert (v.unacked_present, v.unverified, v.conversations) == (1, 1, 4)
    assert not v.intact
    assert verify_conversations({"a": [0, 1]}, {"a": conv("a", 0, 1)}).intact
