"""Shared CLI pieces: the console, the ``--memory`` option, progress bars, error display."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from aof_index.build.memory import MemoryComponents, build_memory
from aof_index.errors import AofIndexError
from aof_index.knowledge.ingest import Progress as ProgressCallback
from aof_index.knowledge.pipeline import KnowledgeBasePipeline, build_knowledge_base

__all__ = [
    "KnowledgeBaseOption",
    "MemoryOption",
    "console",
    "err_console",
    "fail",
    "load_knowledge_base_option",
    "load_memory_option",
    "progress_bar",
]

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

MemoryOption = Annotated[
    Path | None,
    typer.Option(
        "--memory",
        "-m",
        help="Memory manifest to use (default: the embedded default, no server needed).",
        envvar="AOF_INDEX_MEMORY",
    ),
]
KnowledgeBaseOption = Annotated[
    Path | None,
    typer.Option(
        "--knowledge-base",
        "-k",
        help="KnowledgeBase manifest whose chunking and processing to use; its memoryRef "
        "picks the Memory (one in the same file or directory, else the embedded default).",
    ),
]
MemoryNameOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Which Memory (with --knowledge-base: which KnowledgeBase) when the manifest "
        "holds several.",
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error on stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def load_memory_option(path: Path | None, name: str | None = None) -> MemoryComponents:
    """Build the Memory named on the command line, turning errors into a clean exit."""
    try:
        return build_memory(path, name=name)
    except AofIndexError as exc:
        raise fail(str(exc)) from exc


def load_knowledge_base_option(
    path: Path, memory: Path | None, name: str | None = None
) -> KnowledgeBasePipeline:
    """Build the KnowledgeBase named on the command line (``--memory`` overrides its
    ``memoryRef``), turning errors into a clean exit."""
    try:
        target = build_memory(memory) if memory is not None else None
        return build_knowledge_base(path, name=name, memory=target)
    except AofIndexError as exc:
        raise fail(str(exc)) from exc


_STAGES = {"read": "Reading", "chunk": "Chunking", "embed": "Embedding"}


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressCallback]:
    """A rich progress display driven by ``progress(stage, done, total)`` callbacks."""
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, disable=not enabled, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        yield update
