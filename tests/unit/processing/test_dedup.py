"""Deduplicator: hash, exact and similarity methods, reports, no mutation."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import BaseNode

from aof_index.processing import Deduplicator, jaccard, normalized_hash, shingles

POD_TEXT = (
    "A Pod is the smallest deployable unit of computing that you can create and manage in "
    "Kubernetes. A Pod is a group of one or more containers with shared storage and network "
    "resources and a specification for how to run the containers. Pods in a cluster are "
    "used in two main ways: pods that run a single container and pods that run multiple "
    "containers that need to work together."
)


def doc(id_: str, text: str) -> Document:
    return Document(id_=id_, text=text, metadata={"source": f"{id_}.md"})


def ids(nodes: Sequence[BaseNode]) -> list[str]:
    return [n.node_id for n in nodes]


def test_hash_ignores_case_and_whitespace() -> None:
    docs = [
        doc("a", POD_TEXT),
        doc("b", "  " + POD_TEXT.upper().replace(" ", " \n\t ")),
        doc("c", POD_TEXT + " Extra."),
    ]
    report = Deduplicator(method="hash").deduplicate(docs)
    assert ids(report.kept) == ["a", "c"]
    assert report.dropped == {"b": "a"}
    assert report.kept[0].metadata["duplicates"] == "b"
    assert "duplicates" not in report.kept[1].metadata
    assert normalized_hash("Hello   World") == normalized_hash("hello world\n")


def test_exact_needs_identical_text() -> None:
    docs = [doc("a", POD_TEXT), doc("b", POD_TEXT + " "), doc("c", POD_TEXT), doc("d", POD_TEXT)]
    report = Deduplicator(method="exact").deduplicate(docs)
    assert ids(report.kept) == ["a", "b"]
    assert report.dropped == {"c": "a", "d": "a"}
    assert report.kept[0].metadata["duplicates"] == "c, d"


def test_inputs_not_mutated_and_ids_kept() -> None:
    docs = [doc("a", POD_TEXT), doc("b", POD_TEXT)]
    before = [d.model_dump() for d in docs]
    kept = Deduplicator()(docs)
    assert [d.model_dump() for d in docs] == before
    assert kept[0] is not docs[0] and kept[0].id_ == "a"
    assert kept[0].metadata == {"source": "a.md", "duplicates": "b"}


def test_duplicates_extend_existing_list() -> None:
    first = Document(id_="a", text="same", metadata={"duplicates": "old"})
    [kept] = Deduplicator()([first, doc("b", "same")])
    assert kept.metadata["duplicates"] == "old, b"  # flat: vector stores take no lists


def test_shingles_and_jaccard() -> None:
    assert shingles("One two three four five six") == {
        "one two three four five",
        "two three four five six",
    }
    assert shingles("Too short, really.") == {"too short really"}
    assert shingles("  ") == frozenset()
    assert jaccard(frozenset({"a", "b"}), frozenset({"b", "c"})) == pytest.approx(1 / 3)


def _words(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(10_000)}" for _ in range(n)]


def test_similarity_at_and_below_threshold() -> None:
    base = _words(200)
    near = [*base, "extra"]  # 196 shingles + 1 new: Jaccard 196/197
    far = base[:100] + _words(100, seed=1)
    a, b, c = " ".join(base), " ".join(near), " ".join(far)
    similarity = jaccard(shingles(a), shingles(b))
    assert 0.99 < similarity < 1.0
    at = Deduplicator(method="similarity", threshold=similarity).deduplicate(
        [doc("a", a), doc("b", b), doc("c", c)]
    )
    assert at.dropped == {"b": "a"}
    assert ids(at.kept) == ["a", "c"]
    above = Deduplicator(method="similarity", threshold=min(1.0, similarity + 1e-6)).deduplicate(
        [doc("a", a), doc("b", b)]
    )
    assert above.dropped == {}
    # hash would not call the near-duplicate a duplicate
    assert Deduplicator(method="hash").deduplicate([doc("a", a), doc("b", b)]).dropped == {}


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.95])
def test_similarity_matches_brute_force(threshold: float) -> None:
    rng = random.Random(42)
    base = _words(400, seed=7)
    docs = []
    for i in range(60):
        words = list(base)
        for _ in range(rng.choice([0, 1, 1, 2, 3, 8, 20, 60])):  # a spread of similarities
            words[rng.randrange(len(words))] = f"x{rng.randrange(1000)}"
        docs.append(doc(f"d{i}", " ".join(words if i % 3 else _words(400, seed=100 + i))))
    report = Deduplicator(method="similarity", threshold=threshold).deduplicate(docs)
    # Brute force over all pairs: each doc duplicates the first kept doc it is similar to.
    sets = [shingles(d.text) for d in docs]
    kept: list[int] = []
    expected: dict[str, str] = {}
    for i in range(len(docs)):
        match = next((j for j in kept if jaccard(sets[i], sets[j]) >= threshold), None)
        if match is None:
            kept.append(i)
        else:
            expected[docs[i].id_] = docs[match].id_
    assert report.dropped == expected
    assert ids(report.kept) == [docs[i].id_ for i in kept]
    assert expected  # the data has duplicates at every threshold tested


def test_similarity_short_and_empty_texts() -> None:
    docs = [doc("a", ""), doc("b", "Hi there"), doc("c", " "), doc("d", "hi, THERE!")]
    report = Deduplicator(method="similarity", threshold=0.95).deduplicate(docs)
    assert report.dropped == {"c": "a", "d": "b"}


def test_as_transform_in_pipeline() -> None:
    dedup = Deduplicator(method="exact")
    assert dedup.last_report is None
    pipeline = IngestionPipeline(transformations=[dedup])
    out = pipeline.run(documents=[doc("a", POD_TEXT), doc("b", POD_TEXT), doc("c", "other")])
    assert ids(out) == ["a", "c"]
    assert dedup.last_report is not None and dedup.last_report.dropped == {"b": "a"}


def test_threshold_validated() -> None:
    with pytest.raises(ValueError):
        Deduplicator(method="similarity", threshold=1.5)
