"""Fine-tune the local embedding model on a corpus's own (query, passage) pairs.

A 22M-parameter model such as all-MiniLM-L6-v2 was trained on general web text; a few
hundred judged questions about one corpus teach it that corpus's vocabulary and what its
users mean. :func:`finetune` trains a copy of a local sentence-transformers model with
in-batch negatives (each query against every passage of its batch, cross-entropy on the
scaled cosine similarities: sentence-transformers' ``MultipleNegativesRankingLoss``, written
out in plain torch so nothing beyond ``aof-index[local]`` is needed) and writes a folder that
``spec.semantic.embedding.model`` can name like any other local model.

Pairs come from a BEIR-layout folder's training judgements (:func:`pairs_from_beir`; the
``test`` split is refused: train on test and every figure measured on it is void) or from a
JSON Lines file of ``{"query": ..., "passage": ...}`` objects (:func:`pairs_from_jsonl`).
A pair may carry a hard negative, a passage that shares the query's words without
answering it (mined with BM25 by :func:`pairs_from_beir`, or given as ``"negative"``); it
joins its batch as one more wrong answer.

The output is written to a temporary sibling folder and renamed into place, so a failure or
an interruption never leaves a half-written model; an existing folder is replaced only with
``overwrite=True``. Next to the weights, ``aof-finetune.json`` records the base model and its
fingerprint, the settings, the number and SHA-256 of the pairs, the losses and the time taken.
Training is deterministic for a given seed on one machine (torch's CPU kernels).

Example:
    >>> from aof_index.embeddings.finetune import finetune, pairs_from_beir
    >>> pairs = pairs_from_beir("../shared/data/beir/scifact", split="train")  # doctest: +SKIP
    >>> finetune(pairs, "models/scifact-minilm")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aof_index.embeddings.cache import fingerprint
from aof_index.embeddings.local import DEFAULT_LOCAL_MODEL, resolve_local_model
from aof_index.errors import AofIndexError

if TYPE_CHECKING:
    from aof_index.eval.beir import BeirDataset

__all__ = [
    "MANIFEST",
    "NEGATIVE_POOL",
    "FinetuneError",
    "FinetuneReport",
    "FinetuneSettings",
    "TrainingPair",
    "batches",
    "finetune",
    "pairs_from_beir",
    "pairs_from_jsonl",
]

MANIFEST = "aof-finetune.json"

Progress = Callable[[int, int], None]
"""``progress(steps_done, steps_total)``."""


class FinetuneError(AofIndexError):
    """Training data or settings that cannot be used, named with the fix."""


@dataclass(frozen=True)
class TrainingPair:
    """A query, a passage that answers it and, optionally, a hard negative.

    ``negative`` is a passage that looks relevant (it shares the query's words) but does not
    answer it; it is trained as a wrong answer to its query alongside the in-batch ones.
    """

    query: str
    passage: str
    negative: str | None = None


@dataclass(frozen=True)
class FinetuneSettings:
    """How to train.

    The defaults were fixed before any evaluation (two passes, a learning rate of 3e-5,
    batches of 32, scale 20: the usual sentence-transformers recipe for a small model and
    a few hundred pairs) and not tuned on any test split.
    """

    epochs: int = 2
    learning_rate: float = 3e-5
    batch_size: int = 32
    scale: float = 20.0
    warmup: float = 0.1
    max_seq_length: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "learning_rate": self.learning_rate > 0,
            "batch_size": self.batch_size >= 2,
            "scale": self.scale > 0,
            "warmup": 0 <= self.warmup < 1,
            "max_seq_length": self.max_seq_length >= 8,
        }
        for name, ok in checks.items():
            if not ok:
                raise FinetuneError(
                    f"fine-tuning setting {name}={getattr(self, name)!r} is out of range: "
                    "epochs >= 1, learning_rate > 0, batch_size >= 2 (in-batch negatives "
                    "need company), scale > 0, 0 <= warmup < 1, max_seq_length >= 8"
                )


@dataclass(frozen=True)
class FinetuneReport:
    """What :func:`finetune` did: where the model is, on what, and the losses."""

    output: str
    base_model: str
    pairs: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    settings: FinetuneSettings

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form (also what the manifest records)."""
        return {**asdict(self), "seconds": round(self.seconds, 2)}


def pairs_from_beir(
    folder: str | Path,
    split: str = "train",
    *,
    hard_negatives: bool = True,
    seed: int = 0,
) -> list[TrainingPair]:
    """(query, relevant passage) pairs from a BEIR folder's ``qrels/<split>.tsv``.

    Judgements with a score of 0 (judged not relevant) are left out, and so are judgements
    naming a query or document the folder lacks. A passage is ``title. text``.

    With ``hard_negatives`` (the default), each pair also gets a hard negative: one of
    the :data:`NEGATIVE_POOL` documents BM25 ranks highest for the query among those not
    judged for it, drawn at random (``seed``) rather than always the first, since the very
    top of an unjudged list is where relevant but unjudged documents hide.

    Raises:
        FinetuneError: for ``split="test"``, or when no pair is left.
    """
    from aof_index.eval.beir import load_beir

    if split == "test":
        raise FinetuneError(
            "fine-tuning on the test split would void every figure measured on it: train on "
            "'train' (BEIR's training judgements) or a split of your own, and evaluate on test"
        )
    dataset = load_beir(folder, split)
    pools = _bm25_negative_pools(dataset) if hard_negatives else {}
    rng = random.Random(seed)
    pairs = [
        TrainingPair(
            dataset.queries[query],
            _passage(*dataset.corpus[doc]),
            _draw(pools.get(query, []), rng),
        )
        for query, judged in dataset.qrels.items()
        if query in dataset.queries
        for doc, score in judged.items()
        if score > 0 and doc in dataset.corpus
    ]
    if not pairs:
        raise FinetuneError(
            f"{folder}: qrels/{split}.tsv names no relevant (score > 0) document that "
            "corpus.jsonl and queries.jsonl both hold: nothing to train on"
        )
    return pairs


NEGATIVE_POOL = 20
"""How many of BM25's best unjudged documents a hard negative is drawn from."""


def _bm25_negative_pools(dataset: BeirDataset) -> dict[str, list[str]]:
    """Per query id: the passages of its :data:`NEGATIVE_POOL` best unjudged BM25 hits."""
    from llama_index.core.schema import TextNode

    from aof_index_retrievers import BM25Index

    index = BM25Index()
    index.add([TextNode(id_=doc, text=_passage(*entry)) for doc, entry in dataset.corpus.items()])
    queries = list(dataset.queries)
    widest = max((len(judged) for judged in dataset.qrels.values()), default=0)
    hits = index.batch_query(
        [dataset.queries[q] for q in queries], top_k=NEGATIVE_POOL + widest, n_threads=0
    )
    return {
        query: [
            hit.node.get_content()
            for hit in found
            if hit.node.node_id not in dataset.qrels.get(query, {})
        ][:NEGATIVE_POOL]
        for query, found in zip(queries, hits, strict=True)
    }


def _draw(pool: list[str], rng: random.Random) -> str | None:
    return rng.choice(pool) if pool else None


def pairs_from_jsonl(path: str | Path) -> list[TrainingPair]:
    """Pairs from JSON Lines, one ``{"query": "...", "passage": "..."}`` object per line.

    An optional ``"negative"`` names a passage that does not answer the query but looks as
    if it might (a hard negative; see :class:`TrainingPair`).

    Raises:
        FinetuneError: naming the line of a malformed entry, or when the file holds none.
    """
    pairs: list[TrainingPair] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FinetuneError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            query = entry.get("query") if isinstance(entry, dict) else None
            passage = entry.get("passage") if isinstance(entry, dict) else None
            if not (isinstance(query, str) and query.strip()):
                raise FinetuneError(f'{path}:{number}: "query" must be a non-empty string')
            if not (isinstance(passage, str) and passage.strip()):
                raise FinetuneError(f'{path}:{number}: "passage" must be a non-empty string')
            negative = entry.get("negative")
            if negative is not None and not (isinstance(negative, str) and negative.strip()):
                raise FinetuneError(
                    f'{path}:{number}: "negative", when given, must be a non-empty string'
                )
            if negative == passage:
                raise FinetuneError(
                    f'{path}:{number}: "negative" repeats "passage": a hard negative must be '
                    "a passage that does not answer the query"
                )
            pairs.append(TrainingPair(query, passage, negative))
    if not pairs:
        raise FinetuneError(f"{path}: no pairs; expected lines like {_EXAMPLE}")
    return pairs


_EXAMPLE = '{"query": "why is my pod pending?", "passage": "A Pod stays Pending when ..."}'


def _passage(title: str, text: str) -> str:
    return f"{title}. {text}" if title else text


def batches(
    pairs: Sequence[TrainingPair], size: int, rng: random.Random
) -> list[list[TrainingPair]]:
    """One pass over ``pairs`` in random order, cut into batches of at most ``size``.

    A batch never holds one passage (or one query) twice, hard negatives included: with
    in-batch negatives, the second copy would be trained as a wrong answer to the first's
    query. A pair that would repeat one is moved to a later batch.
    """
    pending = list(pairs)
    rng.shuffle(pending)
    out: list[list[TrainingPair]] = []
    while pending:
        batch: list[TrainingPair] = []
        queries: set[str] = set()
        passages: set[str] = set()
        deferred: list[TrainingPair] = []
        for pair in pending:
            texts = {pair.passage} if pair.negative is None else {pair.passage, pair.negative}
            if len(batch) < size and pair.query not in queries and not texts & passages:
                batch.append(pair)
                queries.add(pair.query)
                passages |= texts
            else:
                deferred.append(pair)
        out.append(batch)
        pending = deferred
    return out


def finetune(
    pairs: Sequence[TrainingPair],
    output: str | Path,
    *,
    base_model: str | None = None,
    settings: FinetuneSettings | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> FinetuneReport:
    """Train a copy of ``base_model`` (default all-MiniLM-L6-v2) on ``pairs``; write it to
    ``output``.

    Args:
        pairs: (query, passage) pairs; at least two distinct ones.
        output: folder to create: a sentence-transformers model plus ``aof-finetune.json``.
        base_model: a local model as ``spec.semantic.embedding.model`` names it.
        settings: training settings (:class:`FinetuneSettings` defaults).
        overwrite: replace ``output`` if it exists (else an existing folder is an error).
        progress: called with (steps done, steps in all) after each step.

    Raises:
        FinetuneError: ``output`` exists, or fewer than two distinct pairs.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    settings = settings or FinetuneSettings()
    target = Path(output).expanduser()
    if target.exists() and not overwrite:
        raise FinetuneError(
            f"{target} already exists: choose a new folder (a new model path is a new "
            "embedding identity, so Memories re-embed with it) or pass overwrite"
        )
    unique = list(dict.fromkeys(pairs))
    if len(unique) < 2:
        raise FinetuneError(
            f"fine-tuning needs at least 2 distinct (query, passage) pairs, got {len(unique)}"
        )
    source = resolve_local_model(base_model)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    model.max_seq_length = settings.max_seq_length
    plan = [batches(unique, settings.batch_size, rng) for _ in range(settings.epochs)]
    total = sum(len(epoch) for epoch in plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_then_linear(total, math.ceil(settings.warmup * total))
    )
    started = time.perf_counter()
    losses: list[float] = []
    model.train()
    for epoch in plan:
        for batch in epoch:
            queries = _embed(model, [pair.query for pair in batch])
            # Positives first (pair i's answer is column i), then the hard negatives.
            negatives = [pair.negative for pair in batch if pair.negative is not None]
            passages = _embed(model, [pair.passage for pair in batch] + negatives)
            scores = queries @ passages.T * settings.scale
            loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(len(losses), total)
    model.eval()
    report = FinetuneReport(
        output=str(target),
        base_model=base_model or DEFAULT_LOCAL_MODEL,
        pairs=len(unique),
        steps=total,
        seconds=time.perf_counter() - started,
        first_loss=losses[0],
        last_loss=losses[-1],
        settings=settings,
    )
    _write(model, target, report, source, unique)
    return report


def _embed(model: Any, texts: list[str]) -> Any:
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in ST 6
    features = prepare(texts)
    vectors = model(dict(features))["sentence_embedding"]
    return torch.nn.functional.normalize(vectors, dim=-1)


def _warmup_then_linear(total: int, warmup: int) -> Callable[[int], float]:
    """Learning-rate factor: rises linearly over ``warmup`` steps, then falls to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _write(
    model: Any, target: Path, report: FinetuneReport, source: Path, pairs: Iterable[TrainingPair]
) -> None:
    """Save beside ``target``, record the manifest, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save(str(staging))
        digest = hashlib.sha256()
        for pair in pairs:
            digest.update(json.dumps([pair.query, pair.passage, pair.negative]).encode())
        manifest = {
            **report.as_json(),
            "base_fingerprint": fingerprint(source),
            "pairs_sha256": digest.hexdigest(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
