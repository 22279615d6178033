"""``aof-index sources list FILE``: preview what a KnowledgeBase's sources yield, without
indexing.

Each source is listed the way an incremental sync sees it: per document its stable ``id``,
its ``version`` marker and the metadata known without fetching content. A source that fails
(bad token, unreachable host) is reported with its error and the others are still listed;
the exit code is 1 when any failed.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from aof_index.cli.common import console, err_console, fail

__all__ = ["sources_app"]

sources_app = typer.Typer(
    help="A KnowledgeBase's sources: preview documents, ids and versions.",
    no_args_is_help=True,
)


@sources_app.command("list")
def list_sources(
    file: Annotated[Path, typer.Argument(help="KnowledgeBase manifest file or directory.")],
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Only this source (by name); repeatable."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Which KnowledgeBase, when the file has several.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many documents per source.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print a JSON list of {source_name, id, version, ...}."),
    ] = False,
) -> None:
    """List each source's documents (id, version, metadata) without reading their content.

    Disabled sources are left out unless named with --source.
    """
    from aof_index.build.sources import build_reader, select_sources
    from aof_index.errors import AofIndexError
    from aof_index_readers.errors import SourceError

    try:
        resource, base_dir, entries = select_sources(file, names=source, name=name)
    except (AofIndexError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    rows: list[dict[str, Any]] = []
    failed = 0
    for entry in entries:
        try:
            reader = build_reader(resource, entry, base_dir=base_dir)
            listing = reader.list_documents()
            for ref in listing if limit is None else itertools.islice(listing, limit):
                rows.append({"source_name": reader.source_name, **ref.info()})
        except (AofIndexError, SourceError, OSError) as exc:
            failed += 1
            err_console.print(f"[bold red]error:[/] source {entry.name!r}: {exc}", highlight=False)
    if as_json:
        console.print_json(json.dumps(rows, default=str))
    else:
        _print_table(rows)
    if failed:
        raise typer.Exit(1)


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(show_lines=False, header_style="bold")
    for column in ("source", "id", "version", "location", "title"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["source_name"]),
            str(row["id"])[:8],
            str(row["version"])[:16],
            str(row.get("source") or ""),
            str(row.get("title") or ""),
        )
    console.print(table)
    per_source: dict[str, int] = {}
    for row in rows:
        per_source[row["source_name"]] = per_source.get(row["source_name"], 0) + 1
    summary = ", ".join(f"{name}: {count}" for name, count in per_source.items())
    console.print(f"{len(rows)} documents" + (f" ({summary})" if summary else ""))
