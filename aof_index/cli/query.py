"""``aof-index query TEXT``: ranked passages, and an answer with citations if an LLM is set."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from llama_index.core.schema import NodeWithScore
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from aof_index.build.memory import as_strategy
from aof_index.cli.common import (
    MemoryNameOption,
    MemoryOption,
    console,
    err_console,
    load_memory_option,
)
from aof_index.engine.query_engine import AOFQueryEngine, passage_label
from aof_index.errors import AofIndexError
from aof_index.llms import NO_LLM_HINT, llm_from_env

__all__ = ["passage_json", "query"]


def passage_json(rank: int, hit: NodeWithScore) -> dict[str, Any]:
    """One passage as JSON: rank, score, source, heading, text, node id."""
    meta = hit.node.metadata
    return {
        "rank": rank,
        "score": round(float(hit.score or 0.0), 6),
        "source": meta.get("source"),
        "title": meta.get("title"),
        "heading": meta.get("heading"),
        "node_id": hit.node.node_id,
        "text": hit.node.get_content(),
    }


def query(
    text: Annotated[str, typer.Argument(help="The question or search text.")],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Passages to show.")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="hybrid, semantic or keyword (default: the manifest's).")
    ] = None,
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search the Memory and, when an LLM is configured, answer with citations."""
    try:
        chosen = as_strategy(strategy)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from exc
    mem = load_memory_option(memory, name)
    try:
        engine = AOFQueryEngine(mem.retriever(top_k, strategy=chosen), llm=llm_from_env())
        with err_console.status("Searching…", spinner="dots"):
            hits = engine.retrieve(text)
    except AofIndexError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    answer, error = None, None
    if engine.llm is not None and hits:
        try:
            with err_console.status("Answering…", spinner="dots"):
                answer = engine.answer(text, hits)
        except AofIndexError as exc:
            error = str(exc)
    if as_json:
        payload = {
            "query": text,
            "passages": [passage_json(i, h) for i, h in enumerate(hits, 1)],
            "answer": answer,
            "error": error,
        }
        console.print_json(json.dumps(payload))
        return
    if not hits:
        console.print("No passages found. Ingest documents first: aof-index ingest PATH")
    for i, hit in enumerate(hits, 1):
        meta = hit.node.metadata
        source = str(meta.get("source") or hit.node.ref_doc_id)
        title = f"[{i}] {passage_label(hit, short=True)}"
        body = hit.node.get_content().strip()
        excerpt = body[:700] + ("…" if len(body) > 700 else "")
        console.print(
            Panel(
                Group(Text(source, style="dim", overflow="fold"), Text(excerpt)),
                title=escape(title),
                subtitle=f"score {float(hit.score or 0):.4f}",
                title_align="left",
            )
        )
    if answer:
        console.print(Panel(answer, title="Answer", border_style="green", title_align="left"))
    elif error:
        err_console.print(f"[bold red]LLM error:[/] {error}", highlight=False)
    elif engine.llm is None:
        err_console.print(f"[dim]{NO_LLM_HINT}[/]", highlight=False)
