"""``aof-index validate``: check manifests against the resource schemas."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from aof_index.errors import ManifestError
from aof_index.spec.loader import load_resources, manifest_files

__all__ = ["validate"]


def validate(
    files: list[Path] = typer.Argument(
        ...,
        exists=False,
        help="Manifest files, or directories whose *.yaml/*.yml files are checked.",
        show_default=False,
    ),
) -> None:
    """Validate Memory, KnowledgeBase, Agent, AgentFleet and AgentFlow manifests.

    Prints one OK line per resource, or each problem with its field path and line, and
    exits with status 1 when any file has a problem.
    """
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    failed = 0
    for file in _expand(files):
        try:
            resources = load_resources(file)
        except ManifestError as exc:
            failed += 1
            err.print(Text.assemble(("FAIL", "bold red"), f"  {file}"))
            for issue in exc.issues:
                err.print(Text(f"  - {issue}"))
            continue
        for resource in resources:
            out.print(Text.assemble(("OK", "bold green"), f"  {file}  {resource.ref}"))
    if failed:
        err.print(Text(f"{failed} file(s) failed validation", style="bold red"))
        raise typer.Exit(code=1)


def _expand(paths: list[Path]) -> list[Path]:
    """Files to check: each directory's manifests in name order, anything else as given
    (loading a missing file or an empty directory reports the problem)."""
    files: list[Path] = []
    for path in paths:
        found = manifest_files(path) if path.is_dir() else []
        files += found or [path]
    return files
