"""``aof-index eval beir DIR``: retrieval quality on a BEIR-layout dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aof_index.build.memory import as_strategy
from aof_index.cli.common import (
    MemoryNameOption,
    MemoryOption,
    console,
    fail,
    load_memory_option,
    progress_bar,
)
from aof_index.errors import AofIndexError
from aof_index.eval.beir import evaluate, load_beir

__all__ = ["eval_app"]

eval_app = typer.Typer(help="Evaluate retrieval quality.", no_args_is_help=True)


@eval_app.command("beir")
def beir(
    folder: Annotated[
        Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/.")
    ],
    strategy: Annotated[
        list[str] | None,
        typer.Option("--strategy", "-s", help="hybrid, semantic, keyword; repeat to compare."),
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split to score.")] = "test",
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score the configured retriever: nDCG@10, Recall@100, MRR@10 (via ir-measures)."""
    try:
        chosen = [as_strategy(s) for s in strategy] if strategy else [None]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from exc
    mem = load_memory_option(memory, name)
    try:
        dataset = load_beir(folder, split)
        results = []
        with progress_bar(enabled=not as_json) as progress:
            for choice in chosen:
                results.append(
                    evaluate(
                        mem,
                        dataset,
                        strategy=choice,
                        progress=progress,
                        on_query=lambda done, total: progress("query", done, total),
                    )
                )
    except AofIndexError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        payload = results[0].as_json() if len(results) == 1 else [r.as_json() for r in results]
        console.print_json(json.dumps(payload))
        return
    table = Table(title=f"{dataset.name} ({split}, {len(dataset.queries)} queries)")
    for column in ("strategy", "nDCG@10", "Recall@100", "MRR@10", "seconds"):
        table.add_column(column, justify="right" if column != "strategy" else "left")
    for r in results:
        table.add_row(
            r.strategy,
            f"{r.ndcg_at_10:.4f}",
            f"{r.recall_at_100:.4f}",
            f"{r.mrr_at_10:.4f}",
            f"{r.seconds:.1f}",
        )
    console.print(table)


@eval_app.command("locomo")
def locomo(
    file: Annotated[Path, typer.Argument(help="LoCoMo data file (locomo10.json).")],
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Evaluate only the first N conversations."),
    ] = None,
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score conversation recall: recall@5/10/20 of the evidence turns, with baselines."""
    from aof_index.eval.locomo import CATEGORIES, KS, evaluate_locomo, load_locomo

    mem = load_memory_option(memory, name)
    try:
        dataset = load_locomo(file).limited(limit)
        with progress_bar(enabled=not as_json) as progress:
            result = evaluate_locomo(mem, dataset, progress=progress)
    except AofIndexError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        console.print_json(json.dumps(result.as_json()))
        return
    table = Table(
        title=f"LoCoMo ({len(dataset.turns)} conversations, {result.method.count()} questions)"
    )
    columns = [f"R@{k}" for k in KS] + [f"R@10 cat {c}" for c in CATEGORIES]
    for column in ("method", *columns, "seconds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for scores in (result.method, *result.baselines.values()):
        table.add_row(
            scores.name,
            *(f"{scores.recall(k):.4f}" for k in KS),
            *(f"{scores.recall(10, c):.4f}" for c in CATEGORIES),
            "shared" if scores.seconds is None else f"{scores.seconds:.1f}",
        )
    console.print(table)
