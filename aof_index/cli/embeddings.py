"""``aof-index embeddings finetune``: adapt the local embedding model to a corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aof_index.cli.common import console, fail, progress_bar
from aof_index.embeddings.finetune import (
    MANIFEST,
    FinetuneSettings,
    finetune,
    pairs_from_beir,
    pairs_from_jsonl,
)
from aof_index.errors import AofIndexError

__all__ = ["embeddings_app"]

embeddings_app = typer.Typer(
    help="Local embedding models: fine-tune one on a corpus's own questions.",
    no_args_is_help=True,
)


@embeddings_app.command("finetune")
def finetune_command(
    output: Annotated[Path, typer.Argument(help="Folder to write the fine-tuned model to.")],
    beir: Annotated[
        Path | None,
        typer.Option(help="BEIR folder whose training judgements give the pairs."),
    ] = None,
    split: Annotated[
        str, typer.Option(help="qrels split to train on with --beir ('test' is refused).")
    ] = "train",
    hard_negatives: Annotated[
        bool,
        typer.Option(
            help="With --beir: pair each query with a hard negative, one of BM25's 20 best "
            "unjudged documents for it."
        ),
    ] = True,
    pairs: Annotated[
        Path | None,
        typer.Option(
            help='JSON Lines of {"query": ..., "passage": ...} pairs (optional "negative").'
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(help="Model to start from: all-MiniLM-L6-v2 (default) or a local folder."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the pairs.")] = 2,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Peak learning rate.")] = 3e-5,
    batch_size: Annotated[
        int, typer.Option(min=2, help="Pairs per batch (each query's in-batch negatives).")
    ] = 32,
    seed: Annotated[
        int, typer.Option(help="Random seed (order of the pairs, choice of hard negatives).")
    ] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fine-tune the local embedding model on (query, passage) pairs; name OUTPUT in
    spec.semantic.embedding.model to use it."""
    if beir is not None and pairs is not None:
        raise fail("give the training pairs with one of --beir DIR or --pairs FILE, not both")
    try:
        if beir is not None:
            training = pairs_from_beir(beir, split, hard_negatives=hard_negatives, seed=seed)
        elif pairs is not None:
            training = pairs_from_jsonl(pairs)
        else:
            raise fail("give the training pairs with --beir DIR or --pairs FILE")
        settings = FinetuneSettings(
            epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed
        )
        with progress_bar(not as_json) as update:
            report = finetune(
                training,
                output,
                base_model=base,
                settings=settings,
                overwrite=overwrite,
                progress=lambda done, total: update("Training", done, total),
            )
    except (AofIndexError, OSError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
        return
    console.print(
        f"Fine-tuned {report.base_model} on {report.pairs} pairs: {report.steps} steps in "
        f"{report.seconds:.0f} s, loss {report.first_loss:.3f} → {report.last_loss:.3f}.\n"
        f"Model and {MANIFEST} in {report.output}; use it with\n"
        f"  spec.semantic.embedding: {{provider: Local, model: {report.output}}}",
        highlight=False,
    )
