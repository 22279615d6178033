"""``aof-index kb sync|status|documents FILE``: keep a KnowledgeBase's index in step with its
sources, and show what it holds.

``sync`` reads only new and changed documents (``--mode full`` re-reads everything) and shows
a progress bar per source; a source that fails is reported and the others still sync, and
the exit code is 1 when any failed. ``status`` prints the KnowledgeBase's ``status`` block
(``--json``: in the manifest's camelCase), ``documents`` the indexed documents.
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

from aof_index.build.memory import build_memory
from aof_index.cli.common import MemoryOption, console, err_console, fail
from aof_index.errors import AofIndexError
from aof_index.knowledge.sync import (
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

_STAGES = {"list": "listing", "read": "reading", "embed": "embedded", "delete": "deleting"}


def _open(file: Path, name: str | None, memory: Path | None) -> KnowledgeBaseSync:
    """Open the KnowledgeBase's sync (``--memory`` overrides ``memoryRef``), or exit cleanly."""
    try:
        target = build_memory(memory) if memory is not None else None
        return open_sync(file, name=name, memory=target)
    except (AofIndexError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc


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
) -> None:
    """Sync the KnowledgeBase's sources into its Memory (only what changed is embedded)."""
    kb = _open(file, name, memory)
    try:
        with _progress(enabled=not as_json) as progress:
            report = kb.sync(mode=mode, sources=source, progress=progress)
    except AofIndexError as exc:
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
    block = _open(file, name, memory).status()
    data = block.model_dump(mode="json", by_alias=True, exclude_none=True)
    if as_json:
        console.print_json(json.dumps(data))
        return
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
    rows = [
        {
            "source": row.source,
            "id": row.doc_id,
            "version": row.listing_version,
            "chunks": len(row.node_ids),
            "location": row.location,
            "updated": row.updated_at,
        }
        for row in _open(file, name, memory).documents()
    ]
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
