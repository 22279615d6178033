"""The ``aof-index`` command line: a thin surface over the library."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from aof_index.cli.bench import bench_app
from aof_index.cli.chat import chat
from aof_index.cli.chunk import chunk
from aof_index.cli.demo import demo
from aof_index.cli.embeddings import embeddings_app
from aof_index.cli.eval import eval_app
from aof_index.cli.ingest import ingest
from aof_index.cli.init import init
from aof_index.cli.kb import kb_app
from aof_index.cli.memory import memory_app
from aof_index.cli.query import query
from aof_index.cli.sources import sources_app
from aof_index.cli.validate import validate
from aof_index.offline import configure_offline

__all__ = ["app"]

app = typer.Typer(
    name="aof-index",
    help="Memory and knowledge for AOF agents: ingest, search, chat, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """Memory and knowledge for AOF agents (data under $AOF_INDEX_HOME)."""
    configure_offline()
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level)
    # Some libraries set their own loggers to DEBUG; keep them at the chosen level.
    for noisy in ("chromadb", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(level)


app.command()(init)
app.command()(validate)
app.command()(ingest)
app.command()(chunk)
app.command()(query)
app.command()(chat)
app.command()(demo)
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
app.add_typer(memory_app, name="memory")
app.add_typer(sources_app, name="sources")
app.add_typer(kb_app, name="kb")
app.add_typer(embeddings_app, name="embeddings")
