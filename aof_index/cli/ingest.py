"""``aof-index ingest PATH...``: read local files into the Memory."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from aof_index.cli.common import (
    KnowledgeBaseOption,
    MemoryNameOption,
    MemoryOption,
    console,
    err_console,
    fail,
    load_knowledge_base_option,
    load_memory_option,
    progress_bar,
)
from aof_index.errors import AofIndexError
from aof_index.knowledge.ingest import IngestReport, ingest_documents

__all__ = ["ingest"]


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders or glob patterns.")],
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", "-x", help="Glob pattern to leave out.")
    ] = None,
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
    knowledge_base: KnowledgeBaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingest local files (Markdown, text, code, HTML, PDF); unchanged files are skipped.

    Chunks with the ``auto`` strategy, or with the chunking and processing of the
    ``--knowledge-base`` manifest (changing them re-processes every file on the next run).
    """
    from aof_index_readers import LocalFilesReader

    run: Callable[..., IngestReport]
    if knowledge_base is not None:
        kb = load_knowledge_base_option(knowledge_base, memory, name)
        mem, run = kb.memory, kb.ingest
    else:
        mem = load_memory_option(memory, name)
        run = partial(ingest_documents, mem)
    reader = LocalFilesReader(paths, exclude=exclude or ())
    try:
        with progress_bar(enabled=not as_json) as progress:
            report = run(reader.lazy_load_data(), progress=progress)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    except AofIndexError as exc:
        skipped = "; ".join(f"{s.what}: {s.reason}" for s in reader.skipped[:5])
        raise fail(f"{exc}" + (f" (skipped: {skipped})" if skipped else "")) from exc
    documents, chunks = mem.ingest_state.counts()
    summary = {
        "documents": report.documents,
        "added": report.added,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "chunks_written": report.chunks,
        "skipped": len(reader.skipped),
        "seconds": round(report.seconds, 2),
        "total_documents": documents,
        "total_chunks": chunks,
    }
    if as_json:
        console.print_json(json.dumps(summary))
        return
    for skip in reader.skipped:
        err_console.print(f"[yellow]skipped[/] {skip.what}: {skip.reason}", highlight=False)
    console.print(
        f"[bold green]Ingested[/] {report.documents} documents in {report.seconds:.1f}s: "
        f"{report.added} new, {report.updated} changed, {report.unchanged} unchanged; "
        f"{report.chunks} chunks written. Memory [bold]{mem.name}[/] now holds "
        f"{documents} documents, {chunks} chunks."
    )
