"""``by_length``: local embeddings are computed shortest text first (less padding per batch)
and come back in the caller's order."""

from __future__ import annotations

from aof_index.embeddings.local import by_length


def test_texts_go_in_by_length_and_vectors_come_back_in_order() -> None:
    texts = ["a much longer text here", "b", "medium one", "", "xx"]
    seen: list[list[str]] = []

    def embed(batch: list[str]) -> list[list[float]]:
        seen.append(batch)
        return [[float(len(t)), float(ord(t[0]) if t else 0)] for t in batch]

    vectors = by_length(texts, embed)
    assert seen == [["", "b", "xx", "medium one", "a much longer text here"]]
    assert vectors == [[float(len(t)), float(ord(t[0]) if t else 0)] for t in texts]
    assert by_length([], embed) == []
