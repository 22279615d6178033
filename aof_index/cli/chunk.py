"""``aof-index chunk FILE...``: show how files would be chunked, without indexing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from llama_index.core.schema import MetadataMode, TextNode
from rich.table import Table
from rich.text import Text

from aof_index.cli.common import (
    KnowledgeBaseOption,
    MemoryOption,
    console,
    err_console,
    fail,
    load_knowledge_base_option,
    load_memory_option,
)
from aof_index.errors import AofIndexError
from aof_index.node_parsers.factory import CHUNKING_STRATEGIES, DEFAULT_STRATEGY, build_chunker
from aof_index.node_parsers.window import TokenWindow

__all__ = ["chunk"]

_PREVIEW = 60


def chunk(
    files: Annotated[list[Path], typer.Argument(help="Files, folders or glob patterns.")],
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            help=f"Chunking strategy: {', '.join(CHUNKING_STRATEGIES)} (default: the "
            f"--knowledge-base's, else {DEFAULT_STRATEGY}).",
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size", min=1, help="Target tokens per chunk (capped at the model's window)."
        ),
    ] = None,
    memory: MemoryOption = None,
    knowledge_base: KnowledgeBaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the chunks as JSON.")] = False,
) -> None:
    """Chunk files with the Memory's embedding window and show every chunk (nothing is stored).

    With ``--knowledge-base`` the manifest's chunking section (sizes, separators, markdown
    and semantic settings) and its Memory's embedding model apply; ``--strategy`` and
    ``--chunk-size`` still override them.
    """
    from aof_index_readers import LocalFilesReader

    if strategy is not None and strategy not in CHUNKING_STRATEGIES:
        raise fail(
            f"unknown strategy {strategy!r}; use one of {', '.join(CHUNKING_STRATEGIES)}", code=2
        )
    reader = LocalFilesReader(files)
    try:
        documents = reader.load_data()
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    for skip in reader.skipped:
        err_console.print(f"[yellow]skipped[/] {skip.what}: {skip.reason}", highlight=False)
    if knowledge_base is not None:
        kb = load_knowledge_base_option(knowledge_base, memory)
        mem, chunking = kb.memory, kb.resource.spec.chunking
    else:
        mem, chunking = load_memory_option(memory), None
    try:
        window = mem.window  # built from the embedding model, which semantic also uses
        chunker = build_chunker(chunking, window, mem.embed_model, strategy, chunk_size=chunk_size)
        nodes = [n for n in chunker.get_nodes_from_documents(documents) if isinstance(n, TextNode)]
    except AofIndexError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        console.print_json(json.dumps([_row(node, window) for node in nodes]))
        return
    _print_table(nodes, len(documents), window)


def _row(node: TextNode, window: TokenWindow) -> dict[str, Any]:
    """One chunk as the JSON object ``--json`` prints."""
    text = node.get_content(metadata_mode=MetadataMode.EMBED)
    meta = node.metadata
    return {
        "id": node.node_id,
        "file": meta.get("source") or meta.get("file_name"),
        "strategy": meta.get("strategy"),
        "text": text,
        "start": node.start_char_idx,
        "end": node.end_char_idx,
        "tokens": window.count(text),
        "start_line": meta.get("start_line"),
        "end_line": meta.get("end_line"),
        "heading": meta.get("heading"),
    }


def _print_table(nodes: list[TextNode], documents: int, window: TokenWindow) -> None:
    table = Table(title=f"{len(nodes)} chunks from {documents} files")
    table.add_column("file", overflow="fold", ratio=1)
    table.add_column("strategy", no_wrap=True, min_width=9)
    table.add_column("lines", justify="right", no_wrap=True, min_width=7)
    table.add_column("tokens", justify="right", no_wrap=True, min_width=7)
    table.add_column("first line", ratio=2)
    for node in nodes:
        meta = node.metadata
        first = next((line.strip() for line in node.text.splitlines() if line.strip()), "")
        if len(first) > _PREVIEW:
            first = first[: _PREVIEW - 1] + "…"
        tokens = window.count(node.get_content(metadata_mode=MetadataMode.EMBED))
        table.add_row(
            Text(_display_path(meta.get("source") or meta.get("file_name") or "")),
            Text(str(meta.get("strategy"))),
            f"{meta.get('start_line')}-{meta.get('end_line')}",
            f"{tokens}/{window.max_tokens}",
            Text(first, no_wrap=True, overflow="ellipsis"),  # plain text, never rich markup
        )
    console.print(table)
    if not nodes:
        err_console.print("[yellow]no chunks[/]: the files hold no text", highlight=False)


def _display_path(source: str) -> str:
    """``source`` relative to the working directory when it is below it."""
    path = Path(source)
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return source
