"""``aof-index bench memory``: the chat stores under concurrent conversations, next to
LlamaIndex's store for the same backend (see :mod:`aof_index.bench.memory`)."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aof_index.bench.memory import BenchConfig, BenchResult, PostgresTarget, run_memory_bench
from aof_index.cli.common import console, err_console, fail, progress_bar
from aof_index.errors import AofIndexError

__all__ = ["bench_app"]

bench_app = typer.Typer(
    help="Benchmarks: print figures measured in one run (never pass/fail on timings).",
    no_args_is_help=True,
)

REDIS_P99_TARGET_MS = 5.0
RATIO_TARGET = 3.0


class BackendName(StrEnum):
    """Backends of ``bench memory``."""

    sqlite = "sqlite"
    postgres = "postgres"
    redis = "redis"


@bench_app.command("memory")
def memory(
    backend: Annotated[
        BackendName, typer.Option("--backend", "-b", help="Chat-store backend to measure.")
    ] = BackendName.sqlite,
    conversations: Annotated[
        int, typer.Option("--conversations", "-n", min=1, help="Conversations, all active.")
    ] = 1000,
    messages: Annotated[
        int, typer.Option("--messages", "-m", min=1, help="Messages appended per conversation.")
    ] = 50,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            min=0,
            help="Calls in flight at most (latency is timed from taking a slot); "
            "0: no cap, one per conversation.",
        ),
    ] = 16,
    pool_size: Annotated[
        int | None,
        typer.Option(
            "--pool-size",
            min=1,
            help="Connections per store pool (default: the --concurrency cap).",
        ),
    ] = None,
    read_every: Annotated[
        int,
        typer.Option(
            "--read-every", min=1, help="Read the conversation back after every Nth append."
        ),
    ] = 1,
    message_bytes: Annotated[
        int, typer.Option("--message-bytes", min=1, help="Characters per message.")
    ] = 256,
    baseline: Annotated[
        bool,
        typer.Option("--baseline/--no-baseline", help="Also run LlamaIndex's store."),
    ] = True,
    redis_url: Annotated[
        str,
        typer.Option(
            "--redis-url", envvar="AOF_INDEX_BENCH_REDIS_URL", help="Redis server to use."
        ),
    ] = "redis://127.0.0.1:6379/0",
    postgres_dsn: Annotated[
        str | None,
        typer.Option(
            "--postgres-dsn",
            envvar="AOF_INDEX_BENCH_POSTGRES_DSN",
            help="libpq connection string or URL (overrides the --postgres-* options).",
        ),
    ] = None,
    postgres_host: Annotated[str, typer.Option("--postgres-host")] = "127.0.0.1",
    postgres_port: Annotated[int, typer.Option("--postgres-port")] = 5432,
    postgres_user: Annotated[str, typer.Option("--postgres-user")] = "postgres",
    postgres_database: Annotated[str, typer.Option("--postgres-database")] = "postgres",
    postgres_sslmode: Annotated[
        str, typer.Option("--postgres-sslmode", help="libpq sslmode.")
    ] = "prefer",
    sqlite_path: Annotated[
        Path | None,
        typer.Option(
            "--sqlite-path",
            file_okay=False,
            help="Directory for the SQLite files (default: a temporary directory, removed).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Concurrent conversations appending and reading: throughput, p50/p99 latency, and a
    check that no message was lost, reordered or duplicated, for our store and LlamaIndex's.

    Exits 1 when our store lost, reordered, duplicated or mixed up a message, or raised.
    The PostgreSQL password comes from the DSN or $PGPASSWORD.
    """
    try:
        target = (
            PostgresTarget.from_dsn(postgres_dsn)
            if postgres_dsn
            else PostgresTarget(
                host=postgres_host,
                port=postgres_port,
                database=postgres_database,
                user=postgres_user,
                password=os.environ.get("PGPASSWORD"),
                sslmode=postgres_sslmode,
            )
        )
        config = BenchConfig(
            backend=backend.value,  # type: ignore[arg-type]  # the enum's values are Backend
            conversations=conversations,
            messages=messages,
            concurrency=concurrency,
            pool_size=pool_size,
            read_every=read_every,
            message_bytes=message_bytes,
            baseline=baseline,
            redis_url=redis_url,
            postgres=target,
            sqlite_dir=sqlite_path,
        )
        with progress_bar() as progress:
            result = run_memory_bench(config, progress=progress)
    except AofIndexError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        console.print_json(json.dumps(result.as_json()))
    else:
        _print_table(result)
    ours = result.ours
    if not ours.verification.intact or ours.errors or ours.stale_reads:
        raise typer.Exit(1)


def _print_table(result: BenchResult) -> None:
    c = result.config
    ours, base = result.ours, result.baseline
    table = Table(
        title=(
            f"bench memory: {c.backend} at {result.where}, {c.conversations} conversations "
            f"x {c.messages} messages, cap {c.cap} in flight, pool {c.pool}"
        )
    )
    table.add_column("figure")
    table.add_column("aof-index", justify="right")
    if base is not None:
        table.add_column("LlamaIndex", justify="right")
    ours_json = ours.as_json()
    base_json = base.as_json() if base is not None else {}
    rows: list[tuple[str, str | tuple[str, str]]] = [
        ("throughput (ops/s)", "throughput_ops_s"),
        ("p50 (ms)", "p50_ms"),
        ("p99 (ms)", "p99_ms"),
        ("max (ms)", "max_ms"),
        ("append p50 / p99 (ms)", ("append_p50_ms", "append_p99_ms")),
        ("read p50 / p99 (ms)", ("read_p50_ms", "read_p99_ms")),
        ("slot wait p50 / p99 (ms)", ("wait_p50_ms", "wait_p99_ms")),
        ("successful calls", "ops"),
        ("errors", "errors"),
        ("lost", "lost"),
        ("reordered", "reordered"),
        ("duplicated", "duplicated"),
        ("foreign", "foreign"),
        ("stale reads", "stale_reads"),
        ("seconds", "seconds"),
    ]
    for name, field in rows:
        cells = [_cell(ours_json, field)]
        if base is not None:
            cells.append(_cell(base_json, field))
        table.add_row(name, *cells)
    console.print(table)
    console.print(
        f"Latency: per call, from taking one of {c.cap} in-flight slots to its return "
        f"(successful calls); the wait for a slot is the 'slot wait' row.",
        highlight=False,
    )
    for figures in (ours, base):
        if figures is not None and figures.error_kinds:
            err_console.print(f"{figures.store} errors:", highlight=False)
            for kind, count in figures.error_kinds.items():
                err_console.print(f"  {count} x {kind}", highlight=False)
    ratio = result.baseline_ratio
    verdicts = [
        f"lost {ours.verification.lost} (target 0)",
        f"reordered {ours.verification.reordered} (target 0)",
    ]
    if ratio is not None:
        verdicts.append(f"throughput {ratio:.2f}x LlamaIndex's (target >= {RATIO_TARGET:g}x)")
    ceiling = result.ceiling_ratio
    if ceiling is not None:
        verdicts.append(f"a store with no I/O: {ceiling:.2f}x (the ceiling of this run)")
    if c.backend == "redis":
        verdicts.append(f"p99 {ours.p99_ms:.2f} ms (target <= {REDIS_P99_TARGET_MS:g} ms)")
    console.print("; ".join(verdicts), highlight=False)


def _cell(figures: dict[str, object], field: str | tuple[str, str]) -> str:
    if isinstance(field, tuple):
        return " / ".join(_cell(figures, f) for f in field)
    value = figures.get(field)
    if isinstance(value, float):
        return f"{value:,.1f}" if field == "throughput_ops_s" else f"{value:.3f}"
    return str(value)


class ReaderName(StrEnum):
    """Readers ``bench sources`` measures."""

    local_files = "LocalFiles"
    git = "Git"
    url = "URL"


@bench_app.command("sources")
def sources(
    corpus: Annotated[
        Path,
        typer.Option(
            "--corpus",
            exists=True,
            file_okay=False,
            help="Folder of Markdown documents (LocalFiles reads it; Git and URL are built "
            "from it).",
        ),
    ] = Path("../shared/data/k8s-docs"),
    reader: Annotated[
        list[ReaderName] | None,
        typer.Option("--reader", "-r", help="Reader to measure (repeatable; default: all)."),
    ] = None,
    git_files: Annotated[
        int, typer.Option("--git-files", min=1, help="Files in the generated repository.")
    ] = 3000,
    pages: Annotated[
        int, typer.Option("--pages", min=1, help="Pages of the generated site.")
    ] = 500,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="URL requests in flight per host.")
    ] = 4,
    delay_ms: Annotated[
        float,
        typer.Option("--delay-ms", min=0, help="The local site's wait before each answer."),
    ] = 20.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Readers' documents/s and MB/s next to a baseline in the same run, and the cost of a
    no-change listing (the incremental check)."""
    from aof_index.bench.sources import SourcesBenchConfig, run_sources_bench

    config = SourcesBenchConfig(
        corpus=corpus,
        readers=[r.value for r in reader] if reader else ("LocalFiles", "Git", "URL"),
        git_files=git_files,
        pages=pages,
        concurrency=concurrency,
        delay_ms=delay_ms,
    )

    def say(name: str) -> None:
        if not as_json:
            err_console.print(f"[dim]measuring {name}...[/]", highlight=False)

    try:
        results = run_sources_bench(config, progress=say)
    except (AofIndexError, OSError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in results]))
        return
    table = Table(title="bench sources")
    for column in ("reader", "docs", "MB", "s", "docs/s", "MB/s", "no-change listing s"):
        table.add_column(column, justify="right" if column != "reader" else "left")
    table.add_column("baseline")
    table.add_column("baseline s", justify="right")
    table.add_column("ratio", justify="right")
    for r in results:
        table.add_row(
            r.reader,
            str(r.documents),
            f"{r.megabytes:.2f}",
            f"{r.seconds:.2f}",
            f"{r.docs_per_s:,.0f}",
            f"{r.mb_per_s:.2f}",
            f"{r.listing_seconds:.3f}",
            f"{r.baseline} ({r.baseline_documents} docs)",
            f"{r.baseline_seconds:.2f}",
            f"{r.ratio:.2f}x",
        )
    console.print(table)


@bench_app.command("kb")
def kb(
    corpus: Annotated[
        Path,
        typer.Option("--corpus", exists=True, file_okay=False, help="Folder of Markdown files."),
    ] = Path("../shared/data/k8s-docs"),
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline/--no-baseline",
            help="Also time plain LlamaIndex and the model alone (the ceiling).",
        ),
    ] = True,
    sync: Annotated[
        bool, typer.Option("--sync/--no-sync", help="Run the full-sync part (else kills only).")
    ] = True,
    kills: Annotated[int, typer.Option("--kills", min=0, help="kill -9 runs (0: skip them).")] = 20,
    kill_files: Annotated[
        int, typer.Option("--kill-files", min=1, help="Documents synced in each kill run.")
    ] = 20,
    parallelism: Annotated[
        int | None,
        typer.Option("--parallelism", min=1, help="Embedding batches in flight (default: 4)."),
    ] = None,
    memory_file: Annotated[
        Path | None,
        typer.Option(
            "--memory", exists=True, help="Memory manifest to sync into (default: embedded)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """KnowledgeBase sync: full sync next to LlamaIndex and the raw model, no-change, edit
    and delete re-syncs, and kill -9 at random points (see :mod:`aof_index.bench.kb`)."""
    from aof_index.bench.kb import KbBenchConfig, run_kb_bench

    config = KbBenchConfig(
        corpus=corpus,
        baseline=baseline,
        sync=sync,
        kills=kills,
        kill_files=kill_files,
        parallelism=parallelism,
        memory=memory_file.resolve() if memory_file is not None else None,
    )

    def say(message: str) -> None:
        err_console.print(f"[dim]{message}...[/]", highlight=False)

    try:
        result = run_kb_bench(config, progress=say)
    except (AofIndexError, OSError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table(title="bench kb: full sync")
    for column in ("run", "chunks", "seconds", "chunks/s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    runs = (
        ("model alone", "ceiling"),
        ("ours", "ours"),
        ("LlamaIndex defaults", "llamaindex"),
        ("LlamaIndex, 256-token chunks", "llamaindex_256"),
    )
    for label, key in runs:
        if key in result and "chunks_per_s" in result[key]:
            row = result[key]
            table.add_row(
                label, str(row["chunks"]), f"{row['seconds']:.1f}", f"{row['chunks_per_s']:.1f}"
            )
    console.print(table)
    for key in ("no_change", "one_edit", "one_delete"):
        if key in result:
            console.print(f"{key}: {json.dumps(result[key])}")
    if "kill" in result:
        kill = result["kill"]
        console.print(
            f"kill -9: {kill['identical']}/{len(kill['runs'])} identical to a clean run "
            f"({kill['killed_mid_sync']} killed mid-sync)"
        )
