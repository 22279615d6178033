"""Write LoCoMo as a BEIR-layout folder: a second, very different retrieval collection.

    .venv/bin/python benchmarks/locomo_as_beir.py OUT [--locomo ../shared/data/locomo/locomo10.json]

Corpus: every turn of the 10 conversations (``Speaker: text``, id ``conv:dialog-id``);
queries: the questions of categories 1-4; qrels (``qrels/test.tsv``): their evidence
turns, relevance 1. Retrieval runs over all conversations at once (no per-conversation
filter), so it is harder than ``aof-index eval locomo``. Used to check that a hybrid
configuration tuned on SciFact's train split is not SciFact-specific: short chat turns,
not scientific abstracts. The output is derived data: keep it outside the repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aof_index.eval.locomo import load_locomo

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--locomo", type=Path, default=DATA)
    args = parser.parse_args()
    dataset = load_locomo(args.locomo)
    out: Path = args.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for conversation, turns in dataset.turns.items():
            for turn in turns:
                doc = {
                    "_id": f"{conversation}:{turn.dialog_id}",
                    "title": "",
                    "text": f"{turn.speaker}: {turn.text}",
                }
                fh.write(json.dumps(doc) + "\n")
    with (
        (out / "queries.jsonl").open("w", encoding="utf-8") as q,
        (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as r,
    ):
        r.write("query-id\tcorpus-id\tscore\n")
        for n, question in enumerate(dataset.questions):
            qid = f"q{n}"
            q.write(json.dumps({"_id": qid, "text": question.question}) + "\n")
            for evidence in question.evidence:
                r.write(f"{qid}\t{question.conversation}:{evidence}\t1\n")
    print(f"{sum(map(len, dataset.turns.values()))} turns, {len(dataset.questions)} questions")


if __name__ == "__main__":
    main()
