"""Conversation recall on LoCoMo (../shared/data/locomo): recall@5/10/20 of evidence turns.

    .venv/bin/python benchmarks/locomo.py [--limit N]

Indexes the 10 conversations with ``ConversationRecall`` into an evaluation Memory under
``$AOF_INDEX_HOME`` (reused by later runs: delete it to time indexing again), then ranks
the turns of each question's conversation for our method, the three baselines (BM25 over
raw turns, MiniLM over raw turns, their RRF) and one ablation per idea kept, all on the same
questions in the same run. Prints Markdown tables; "seconds" is query time (query embedding
included); "shared" marks a baseline read off the method's own vector list (MiniLM) or fused
from lists already there (RRF); an ablation's seconds are its time on top of the method's
candidates.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

from aof_index import build_memory
from aof_index.eval.locomo import (
    CATEGORIES,
    DEFAULT_ABLATIONS,
    KS,
    MethodScores,
    evaluate_locomo,
    load_locomo,
)
from aof_index.memory.recall import RecallOptions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"


def row(name: str, scores: MethodScores) -> str:
    figures = [f"{scores.recall(k):.3f}" for k in KS]
    figures += [f"{scores.recall(10, c):.3f}" for c in CATEGORIES]
    seconds = "shared" if scores.seconds is None else f"{scores.seconds:.1f}"
    return f"| {name} | " + " | ".join(figures) + f" | {seconds} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N conversations")
    args = parser.parse_args()
    dataset = load_locomo(DATA).limited(args.limit)
    options = RecallOptions()
    started = time.perf_counter()
    result = evaluate_locomo(
        build_memory(), dataset, options=options, ablations=DEFAULT_ABLATIONS(options)
    )
    total = time.perf_counter() - started
    method = result.method
    counts = " / ".join(f"{method.count(c)}" for c in CATEGORIES)
    print(
        f"LoCoMo: {len(dataset.turns)} conversations, "
        f"{sum(len(t) for t in dataset.turns.values())} turns, {method.count()} questions "
        f"(categories 1-4: {counts}); {dataset.skipped_questions} skipped without valid "
        f"evidence, {dataset.repaired_references} evidence entries repaired, "
        f"{dataset.dropped_references} dropped. {platform.machine()}, "
        f"{date.today().isoformat()}; indexing {result.index_seconds:.0f} s, total {total:.0f} s.\n"
    )
    header = (
        "| method | R@5 | R@10 | R@20 | R@10 cat 1 | R@10 cat 2 | R@10 cat 3 | R@10 cat 4 "
        "| seconds |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    print(header)
    print(row(f"**{method.name}**", method))
    for name, scores in result.baselines.items():
        print(row(f"baseline: {name}", scores))
    print("\nAblations (one idea removed at a time; same candidates where possible):\n")
    print(header)
    print(row(f"**{method.name}**", method))
    for name, scores in result.ablations.items():
        print(row(name, scores))


if __name__ == "__main__":
    main()
