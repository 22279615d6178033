"""``aof-index demo``: ingest the shipped SRE runbooks and answer a few questions."""

from __future__ import annotations

from importlib.resources import as_file, files

from rich.panel import Panel

from aof_index.cli.common import (
    MemoryOption,
    console,
    err_console,
    load_memory_option,
    progress_bar,
)
from aof_index.engine.query_engine import AOFQueryEngine, passage_label
from aof_index.errors import AofIndexError
from aof_index.knowledge.ingest import ingest_documents
from aof_index.llms import NO_LLM_HINT, llm_from_env

__all__ = ["QUESTIONS", "demo"]

QUESTIONS = (
    "A pod keeps restarting with CrashLoopBackOff, what should I check?",
    "How do I find out why a container was OOMKilled?",
    "Service DNS names do not resolve inside the cluster",
)


def demo(memory: MemoryOption = None) -> None:
    """Ingest the runbooks shipped with aof-index and answer a few SRE questions."""
    from aof_index_readers import LocalFilesReader

    mem = load_memory_option(memory)
    with as_file(files("aof_index.demo") / "corpus") as corpus:
        reader = LocalFilesReader([corpus])
        try:
            with progress_bar() as progress:
                report = ingest_documents(mem, reader.lazy_load_data(), progress=progress)
        except AofIndexError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise SystemExit(1) from exc
    console.print(
        f"Ingested {report.documents} runbooks ({report.chunks} new chunks, "
        f"{report.unchanged} unchanged) in {report.seconds:.1f}s into memory "
        f"[bold]{mem.name}[/] at {mem.data_dir}"
    )
    engine = AOFQueryEngine(mem.retriever(top_k=3), llm=llm_from_env())
    for question in QUESTIONS:
        hits = engine.retrieve(question)
        lines = []
        for i, hit in enumerate(hits, 1):
            where = passage_label(hit, short=True)
            snippet = " ".join(hit.node.get_content().split())[:160]
            lines.append(f"[{i}] [bold]{where}[/] ({float(hit.score or 0):.3f})\n    {snippet}…")
        if engine.llm is not None:
            try:
                lines.append("\n[green]Answer:[/] " + engine.answer(question, hits))
            except AofIndexError as exc:
                lines.append(f"\n[red]LLM error:[/] {exc}")
        console.print(Panel("\n".join(lines), title=f"Q: {question}", title_align="left"))
    if engine.llm is None:
        err_console.print(f"[dim]{NO_LLM_HINT}[/]", highlight=False)
