"""``aof-index eval beir DIR``: retrieval quality on a BEIR-layout dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
from aof_index.eval.beir import (
    baseline_retrievers,
    evaluate,
    hybrid_options,
    load_beir,
    prepare,
    rerank_options,
    score_retriever,
)

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
    split: Annotated[
        str, typer.Option(help="qrels split to score: test, or train (tune on train only).")
    ] = "test",
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help="Also score, in the same run: BM25, dense, LlamaIndex QueryFusionRetriever "
            "(reciprocal_rerank) over the same two retrievers, and the Memory's default.",
        ),
    ] = False,
    fusion: Annotated[
        str | None, typer.Option(help="Hybrid fusion: linear, rrf or maximal.")
    ] = None,
    normalization: Annotated[
        str | None,
        typer.Option(help="Score normalisation for linear/maximal: zscore, dbsf, minmax, none."),
    ] = None,
    semantic_weight: Annotated[
        float | None, typer.Option(min=0.0, help="Weight of the vector side.")
    ] = None,
    keyword_weight: Annotated[
        float | None, typer.Option(min=0.0, help="Weight of the BM25 side.")
    ] = None,
    rrf_k: Annotated[float | None, typer.Option(min=0.0, help="k of weighted RRF.")] = None,
    feedback_docs: Annotated[
        int | None,
        typer.Option(
            min=0, help="Dense pseudo-relevance feedback: fused results fed back (0: off)."
        ),
    ] = None,
    feedback_weight: Annotated[
        float | None,
        typer.Option(min=0.0, help="Weight of the feedback centroid added to the query vector."),
    ] = None,
    rerank_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Sentence re-scoring second stage: share of the best sentence similarity "
            "(SentenceSimilarityReranker; 0 or unset: off).",
        ),
    ] = None,
    rerank_top: Annotated[
        int | None, typer.Option(min=1, help="How many fused results the re-scoring sees.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="A named hybrid configuration: 'tuned' (tuned on SciFact's train split, "
            "see docs/retrieval.md); explicit flags override it."
        ),
    ] = None,
    memory: MemoryOption = None,
    name: MemoryNameOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score the configured retriever: nDCG@10, Recall@100, MRR@10 (via ir-measures), p50.

    The configuration flags (``--fusion``, ``--normalization``, weights, ``--feedback-*``,
    ``--rerank-*``, ``--preset``) apply to the hybrid strategy and override the
    manifest's settings.
    """
    try:
        chosen = [as_strategy(s) for s in strategy] if strategy else [None]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--strategy") from exc
    try:
        overrides = hybrid_options(
            preset,
            fusion=fusion,
            normalization=normalization,
            semantic_weight=semantic_weight,
            keyword_weight=keyword_weight,
            rrf_k=rrf_k,
            feedback_docs=feedback_docs,
            feedback_weight=feedback_weight,
        )
        rerank = rerank_options(preset, weight=rerank_weight, rerank_top=rerank_top)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    mem = load_memory_option(memory, name)
    try:
        dataset = load_beir(folder, split)
        results = []
        with progress_bar(enabled=not as_json) as progress:
            target = prepare(mem, dataset, progress=progress)

            def on_query(done: int, total: int) -> None:
                progress("query", done, total)

            if baselines:
                for label, retriever in baseline_retrievers(target).items():
                    results.append(
                        score_retriever(retriever, dataset, name=label, on_query=on_query)
                    )
            for choice in chosen:
                effective = choice or target.default_strategy()
                kwargs = overrides if effective == "hybrid" else {}
                second = rerank if effective == "hybrid" else None
                label = describe(effective, kwargs)
                if second:
                    label += f"+sentences[{','.join(f'{k}={v}' for k, v in second.items())}]"
                results.append(
                    evaluate(
                        mem,
                        dataset,
                        strategy=choice,
                        target=target,
                        on_query=on_query,
                        label=label,
                        rerank=second,
                        **kwargs,
                    )
                )
    except AofIndexError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        payload = results[0].as_json() if len(results) == 1 else [r.as_json() for r in results]
        console.print_json(json.dumps(payload))
        return
    table = Table(title=f"{dataset.name} ({split}, {len(dataset.queries)} queries)")
    for column in ("run", "nDCG@10", "Recall@100", "MRR@10", "p50 ms", "seconds"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for r in results:
        table.add_row(
            r.strategy,
            f"{r.ndcg_at_10:.4f}",
            f"{r.recall_at_100:.4f}",
            f"{r.mrr_at_10:.4f}",
            "" if r.p50_ms is None else f"{r.p50_ms:.1f}",
            f"{r.seconds:.1f}",
        )
    console.print(table)


def describe(strategy: str, options: dict[str, Any]) -> str:
    """A run's label: the strategy, with its non-default options in brackets."""
    if not options:
        return strategy
    return f"{strategy}[{','.join(f'{k}={v}' for k, v in options.items())}]"


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
