"""``aof-index kb sync|status|documents|serve|worker``: keep a KnowledgeBase's index in step
with its sources, show what it holds, run syncs on a schedule, share them among workers.

``sync`` reads only new and changed documents (``--mode full`` re-reads everything) and shows
a progress bar per source; a source that fails is reported and the others still sync, and
the exit code is 1 when any failed (or another process is syncing the same KnowledgeBase).
``--queue`` hands the reading and embedding to ``worker`` processes through Redis.
``status`` prints the KnowledgeBase's ``status`` block (``--json``: in the manifest's
camelCase), ``documents`` the indexed documents. ``serve`` runs every KnowledgeBase on its
schedule and serves the HTTP API and webhooks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from aof_index.cli.common import MemoryOption, console, err_console, fail
from aof_index.errors import AofIndexError
from aof_index.knowledge.runlock import run_lock
from aof_index.knowledge.sync import (
    Dispatcher,
    KnowledgeBaseSync,
    SyncMode,
    SyncProgress,
    SyncReport,
    open_sync,
)

__all__ = ["kb_app"]

kb_app = typer.Typer(
    help="KnowledgeBases: sync their sources into the Memory, show status and documents.",
    no_args_is_help=True,
)

FileArgument = Annotated[Path, typer.Argument(help="KnowledgeBase manifest file or directory.")]
NameOption = Annotated[
    str | None, typer.Option("--name", help="Which KnowledgeBase, when the file has several.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ModeOption = Annotated[
    SyncMode | None,
    typer.Option(
        "--mode",
        help="incremental: changed documents only; differential: also re-embed only changed "
        "chunks; full: re-process everything (default: spec.sync.mode).",
    ),
]

QueueOption = Annotated[
    str | None,
    typer.Option(
        "--queue",
        envvar="AOF_INDEX_QUEUE_URL",
        help="Redis URL of the work queue: documents are read and embedded by "
        "`aof-index kb worker` processes; without it, by this one.",
    ),
]

_NO_WORKERS = "workers need the workers extra: pip install 'aof-index[workers]' ({})"
_STAGES = {"list": "listing", "read": "reading", "embed": "embedded", "delete": "deleting"}


def _open(
    file: Path, name: str | None, memory: Path | None, queue: str | None = None
) -> KnowledgeBaseSync:
    """Open the KnowledgeBase's sync (``--memory`` overrides ``memoryRef``; ``queue``, a
    Redis URL, hands documents to ``kb worker`` processes), or exit cleanly."""
    try:
        return open_sync(file, name=name, memory=memory, dispatcher=_dispatcher(queue))
    except (AofIndexError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc


def _dispatcher(queue: str | None) -> Dispatcher | None:
    """The dispatcher to the workers on ``queue`` (a Redis URL), if one is given."""
    if queue is None:
        return None
    try:
        from aof_index.knowledge.workers import RedisDispatcher
    except ImportError as exc:
        raise fail(_NO_WORKERS.format(exc)) from exc
    return RedisDispatcher(queue)


@contextmanager
def _progress(enabled: bool) -> Iterator[SyncProgress]:
    """A rich display with one bar per source and stage, fed by ``SyncProgress`` calls."""
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, disable=not enabled, transient=True) as bar:
        tasks: dict[tuple[str, str], TaskID] = {}

        def update(source: str, stage: str, done: int, total: int) -> None:
            key = (source, stage)
            if key not in tasks:
                label = f"{source}: {_STAGES.get(stage, stage)}"
                tasks[key] = bar.add_task(label, total=total or None)
            bar.update(tasks[key], completed=done, total=total or None)

        yield update


@kb_app.command("sync")
def sync(
    file: FileArgument,
    mode: ModeOption = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Only this source (by name); repeatable."),
    ] = None,
    name: NameOption = None,
    memory: MemoryOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with the figures.")
    ] = False,
    queue: QueueOption = None,
) -> None:
    """Sync the KnowledgeBase's sources into its Memory (only what changed is embedded)."""
    kb = _open(file, name, memory, queue)
    try:
        with run_lock(kb), _progress(enabled=not as_json) as progress:
            report = kb.sync(mode=mode, sources=source, progress=progress)
    except AofIndexError as exc:  # SyncBusyError too: another process is syncing it
        raise fail(str(exc)) from exc
    for item in report.sources:
        if item.error is not None:
            err_console.print(
                f"[bold red]error:[/] source {item.name!r}: {item.error}", highlight=False
            )
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        _print_report(report)
    if report.failed:
        raise typer.Exit(1)


def _print_report(report: SyncReport) -> None:
    table = Table(header_style="bold")
    for column in ("source", "added", "updated", "deleted", "unchanged", "embedded", "docs"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for item in report.sources:
        figures = (item.added, item.updated, item.deleted, item.unchanged, item.embedded)
        table.add_row(
            item.name + (" [red](failed)[/]" if item.error else ""),
            *(str(n) for n in figures),
            str(item.documents),
        )
    console.print(table)
    console.print(
        f"[bold green]Synced[/] ({report.mode}) in {report.seconds:.1f}s: {report.added} new, "
        f"{report.updated} changed, {report.deleted} deleted, {report.unchanged} unchanged; "
        f"{report.embedded} chunks embedded. Now {report.documents} documents, "
        f"{report.chunks} chunks."
        + (f" Recovered {report.recovered} interrupted writes." if report.recovered else "")
    )


@kb_app.command("status")
def status(
    file: FileArgument,
    name: NameOption = None,
    memory: MemoryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the KnowledgeBase's status: readiness, totals, last sync, per-source state."""
    kb = _open(file, name, memory)
    if as_json:
        console.print_json(json.dumps(kb.status_data()))
        return
    block = kb.status()
    stats = block.stats
    assert stats is not None
    console.print(
        f"ready: {block.ready}  documents: {stats.total_documents}  chunks: "
        f"{stats.total_chunks}  last sync: {stats.last_sync_time or 'never'} "
        f"({stats.last_sync_status or '-'})"
    )
    table = Table(header_style="bold")
    for column in ("source", "status", "documents", "last sync"):
        table.add_column(column)
    for item in block.source_status or []:
        table.add_row(
            str(item.name),
            str(item.status or "never synced"),
            str(item.documents_indexed or 0),
            str(item.last_sync or ""),
        )
    console.print(table)
    for error in stats.errors or []:
        err_console.print(
            f"[red]{error.source}[/] ({error.timestamp}): {error.message}", highlight=False
        )


@kb_app.command("documents")
def documents(
    file: FileArgument,
    name: NameOption = None,
    memory: MemoryOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the indexed documents: source, id, version, chunks, path or URL."""
    rows = _open(file, name, memory).documents_data()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(header_style="bold")
    for column in ("source", "id", "version", "chunks", "location"):
        table.add_column(column, overflow="fold")
    for item in rows:
        table.add_row(
            str(item["source"]),
            str(item["id"])[:8],
            str(item["version"])[:16],
            str(item["chunks"]),
            str(item["location"]),
        )
    console.print(table)
    console.print(f"{len(rows)} documents")


@kb_app.command("worker")
def worker(
    queue: QueueOption = None,
    queue_name: Annotated[
        list[str] | None,
        typer.Option("--queue-name", help="RQ queue(s) to serve (default: aof-index-kb)."),
    ] = None,
    worker_name: Annotated[
        str | None, typer.Option("--name", help="This worker's name (default: generated).")
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit when the queue is empty instead of waiting.")
    ] = False,
) -> None:
    """Process the documents syncs hand out (`kb sync --queue`): read, chunk and embed them.

    Start as many as you like, on this machine or others: each needs the same manifest
    path, the same $AOF_INDEX_HOME and the Redis URL. The syncing process writes the results.
    """
    url = queue
    if url is None:
        raise fail("no queue: pass --queue redis://HOST:6379/0 or set AOF_INDEX_QUEUE_URL")
    try:
        from aof_index.knowledge.workers import DEFAULT_QUEUE, run_worker
    except ImportError as exc:
        raise fail(_NO_WORKERS.format(exc)) from exc
    names = queue_name or [DEFAULT_QUEUE]
    err_console.print(f"worker on {', '.join(names)} at {_redacted(url)}", highlight=False)
    try:
        run_worker(url, queues=names, name=worker_name, burst=burst)
    except Exception as exc:  # redis errors: name the address
        raise fail(f"worker stopped: {exc} (queue {_redacted(url)})") from exc


def _redacted(url: str) -> str:
    """``url`` without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@kb_app.command("serve")
def serve(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="KnowledgeBase manifest files or directories."),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    memory: MemoryOption = None,
    interval: Annotated[
        float,
        typer.Option("--interval", help="continuous schedules: seconds between polls."),
    ] = 60.0,
    queue: QueueOption = None,
) -> None:
    """Run every KnowledgeBase's syncs on its schedule and serve the HTTP API.

    Schedules: spec.indexing.schedule (cron, continuous, webhook, manual), spec.sync.onStartup.

    API: POST /api/v1/knowledgebases/NAME/sync, GET .../status, GET .../documents, /healthz.

    Ctrl-C or SIGTERM stops it once the syncs in progress have finished.
    """
    import logging

    from aof_index.server.serve import (
        build_schedulers,
        build_webhooks,
        open_knowledge_bases,
    )
    from aof_index.server.serve import serve as run_server

    log = logging.getLogger("aof_index")
    if not log.handlers:  # one plain line per event on stderr, beside uvicorn's
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)
    try:
        syncs, locks = open_knowledge_bases(files, memory=memory, dispatcher=_dispatcher(queue))
        schedulers = build_schedulers(syncs, locks, interval=interval)
        webhooks = build_webhooks(syncs)
        run_server(schedulers, webhooks=webhooks, host=host, port=port)
    except (AofIndexError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
