"""``aof-index init [DIR]``: write example manifests to start from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aof_index.build.defaults import example_manifest
from aof_index.cli.common import console, fail

__all__ = ["EXAMPLES", "init"]

EXAMPLES = ("memory.yaml", "memory-production.yaml", "knowledge-base.yaml", "agent.yaml")


def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the manifests.")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write example Memory, KnowledgeBase and Agent manifests."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = [n for n in EXAMPLES if (directory / n).exists()]
    if existing and not force:
        raise fail(f"{', '.join(existing)} already exist in {directory}; use --force to overwrite")
    for name in EXAMPLES:
        (directory / name).write_text(example_manifest(name), encoding="utf-8")
        console.print(f"wrote {directory / name}")
    console.print(
        f"Next: aof-index validate {directory}/*.yaml, then "
        f"aof-index ingest --memory {directory / 'memory.yaml'} docs/"
    )
