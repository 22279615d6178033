"""The semantic chunker: sentences as exact ranges, one embedding batch per document,
breaks where the topic changes, small groups merged, large ones cut to the window."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.schema import MetadataMode
from pydantic import Field

from aof_index.node_parsers.base import chunk_id
from aof_index.node_parsers.semantic import SemanticChunker, split_sentences
from aof_index.node_parsers.window import TokenWindow

K8S_DOCS = Path(__file__).resolve().parents[4] / "shared" / "data" / "k8s-docs"


def _words(text: str) -> Sequence[int]:
    """A whitespace tokenizer: one token per word (a stand-in for a model's tokenizer)."""
    return [hash(w) for w in text.split()]


TOPICS = ("pod", "storage", "network", "dns")


class TopicEmbedding(BaseEmbedding):
    """One axis per topic word: a sentence's vector counts the topic words it contains,
    so similarities, and therefore breakpoints, are known in advance."""

    batches: list[int] = Field(default_factory=list, description="Size of each batch call.")

    def _vector(self, text: str) -> Embedding:
        words = [w.strip(".,!?").lower() for w in text.split()]
        counts = [float(sum(w.startswith(topic) for w in words)) for topic in TOPICS]
        return [*counts, 0.0 if any(counts) else 1.0]

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        self.batches.append(len(texts))
        return super().get_text_embedding_batch(texts, show_progress, **kwargs)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._vector(text)


POD = [
    "A pod runs one or more containers on a node.",
    "Every pod gets its own address inside the cluster.",
    "The kubelet restarts a pod container that fails its probe.",
]
STORAGE = [
    "A storage class names a provisioner and its parameters.",
    "Claims bind storage volumes of the requested size.",
    "Reclaimed storage is deleted or retained by policy.",
]
NETWORK = [
    "A network policy selects the traffic that may reach the workload.",
    "Without a policy every network connection is allowed.",
]


def _chunker(window: TokenWindow, **kwargs: Any) -> tuple[SemanticChunker, TopicEmbedding]:
    embed = TopicEmbedding(model_name="topics")
    options: dict[str, Any] = {"min_chunk_size": 0, **kwargs}
    return SemanticChunker(window, embed_model=embed, **options), embed


def test_sentences_are_exact_ranges_that_keep_abbreviations_and_code_blocks_whole() -> None:
    text = (
        "Pods run containers, e.g. nginx v1.2 images. Each pod has an IP!\n"
        "Why? Because services need one.\n\n"
        "```yaml\nkind: Pod\n\nspec: {}. Not. A sentence.\n```\n"
        "  After the block  \n"
    )
    ranges = split_sentences(text)
    assert [text[s:e] for s, e in ranges] == [
        "Pods run containers, e.g. nginx v1.2 images.",
        "Each pod has an IP!",
        "Why?",
        "Because services need one.",
        "```yaml\nkind: Pod\n\nspec: {}. Not. A sentence.\n```",
        "After the block",
    ]
    assert split_sentences("   \n\n ") == []


def test_groups_break_where_the_topic_changes_and_are_never_packed_together() -> None:
    text = " ".join(POD) + "\n\n" + " ".join(STORAGE) + " " + " ".join(NETWORK)
    chunker, embed = _chunker(TokenWindow(_words, 200))
    nodes = chunker.get_nodes_from_documents([Document(id_="s", text=text)])
    # The whole text fits one chunk: only the group keys keep the topics apart.
    assert len(_words(text)) < chunker.chunk_size
    assert [n.text for n in nodes] == [" ".join(POD), " ".join(STORAGE), " ".join(NETWORK)]
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        assert node.metadata["strategy"] == "semantic"
        assert "group" not in node.metadata and "semantic_group" not in node.metadata
    assert embed.batches == [8]  # one batch call for the 8 sentences of the document


def test_threshold_decides_what_counts_as_a_new_topic() -> None:
    # "pod storage" sentences score 0.71 against a pod-only group: together at 0.5,
    # apart at 0.8.
    mixed = ["The pod mounts storage.", "The pod writes storage logs."]
    text = " ".join(POD + mixed)
    window = TokenWindow(_words, 200)
    low, _ = _chunker(window, threshold=0.5)
    high, _ = _chunker(window, threshold=0.8)
    assert len(low.get_nodes_from_documents([Document(id_="t", text=text)])) == 1
    high_nodes = high.get_nodes_from_documents([Document(id_="t", text=text)])
    assert [n.text for n in high_nodes] == [" ".join(POD), " ".join(mixed)]


def test_small_groups_merge_with_their_more_similar_neighbour() -> None:
    back = "Storage storage pod."  # cos 0.45 with the pod group, 0 with the next: joins pods
    forward = "Dns dns network."  # cos 0 with the pods, 0.45 with the network group
    network = [*NETWORK, "Network routes reach every network node."]
    text = " ".join([*POD, back, forward, *network])
    window = TokenWindow(_words, 200)
    unmerged, _ = _chunker(window, min_chunk_size=0)
    assert [n.text for n in unmerged.get_nodes_from_documents([Document(text=text)])] == [
        " ".join(POD),
        back,
        forward,
        " ".join(network),
    ]
    chunker, _ = _chunker(window, min_chunk_size=8)
    nodes = chunker.get_nodes_from_documents([Document(id_="m", text=text)])
    assert [n.text for n in nodes] == [" ".join([*POD, back]), " ".join([forward, *network])]


def test_a_small_group_stays_alone_when_merging_would_exceed_the_maximum() -> None:
    text = " ".join([*POD, "Storage storage pod."])
    chunker, _ = _chunker(TokenWindow(_words, 200), min_chunk_size=8, max_chunk_size=30)
    nodes = chunker.get_nodes_from_documents([Document(id_="x", text=text)])
    assert [n.text for n in nodes] == [" ".join(POD), "Storage storage pod."]


def test_large_groups_are_cut_to_max_chunk_size_and_the_window() -> None:
    pods = [f"Pod number {i} runs a container on node {i}." for i in range(40)]
    stores = [f"Storage volume {i} is bound to claim {i}." for i in range(40)]
    text = " ".join(pods) + "\n\n" + " ".join(stores)
    doc = Document(id_="big", text=text, metadata={"title": "pods and volumes"})
    window = TokenWindow(_words, 40)
    default, _ = _chunker(window)  # max 2000, capped at the 40-token window
    assert default.chunk_size == 40
    capped, _ = _chunker(window, max_chunk_size=25)
    for chunker, limit in ((default, 40), (capped, 25)):
        nodes = chunker.get_nodes_from_documents([doc])
        assert len(nodes) >= len(_words(text)) // limit
        for node in nodes:
            assert window.count(node.get_content(metadata_mode=MetadataMode.EMBED)) <= limit
            assert text[node.start_char_idx : node.end_char_idx] == node.text
            assert not ("Pod" in node.text and "Storage" in node.text)  # the break holds
        assert " ".join(n.text for n in nodes).split() == text.split()  # nothing lost


def test_ids_are_deterministic() -> None:
    text = " ".join(POD + STORAGE)
    chunker, _ = _chunker(TokenWindow(_words, 200))
    first = chunker.get_nodes_from_documents([Document(id_="d", text=text)])
    again = chunker.get_nodes_from_documents([Document(id_="d", text=text)])
    assert [n.node_id for n in first] == [n.node_id for n in again]
    assert [n.node_id for n in first] == [chunk_id("d", i) for i in range(len(first))]


def test_a_single_sentence_needs_no_embedding_and_empty_text_no_node() -> None:
    chunker, embed = _chunker(TokenWindow(_words, 200))
    nodes = chunker.get_nodes_from_documents(
        [Document(id_="one", text="  One pod.  "), Document(id_="none", text=" \n ")]
    )
    assert [n.text for n in nodes] == ["One pod."]
    assert embed.batches == []


# --- the real model ----------------------------------------------------------------------


@functools.cache
def _minilm() -> tuple[TokenWindow, BaseEmbedding]:
    from aof_index import build_memory

    memory = build_memory()
    return memory.window, memory.embed_model


def _section(relative: str, first_line: int, last_line: int) -> str:
    lines = (K8S_DOCS / relative).read_text(encoding="utf-8").splitlines()
    return "\n".join(lines[first_line - 1 : last_line]).strip()


@pytest.mark.slow
def test_with_minilm_the_break_lands_where_two_docs_sections_meet() -> None:
    storage = _section("concepts/storage/persistent-volumes.md", 24, 52)  # ## Introduction
    cron = _section("concepts/workloads/controllers/cron-jobs.md", 180, 238)  # ## limitations
    assert storage.startswith("## Introduction") and cron.startswith("## CronJob limitations")
    text = storage + "\n\n" + cron
    window, embed = _minilm()
    chunker = SemanticChunker(window, embed_model=embed)
    assert chunker.threshold == 0.5 and chunker.min_chunk_size == 100
    assert chunker.chunk_size == window.max_tokens  # maxChunkSize 2000, capped at 254
    nodes = chunker.get_nodes_from_documents([Document(id_="k8s", text=text)])
    assert len(nodes) >= 3
    assert len(storage) in {n.end_char_idx for n in nodes}  # a chunk ends with the section
    assert text.index("## CronJob") in {n.start_char_idx for n in nodes}
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        assert window.count(node.get_content(metadata_mode=MetadataMode.EMBED)) <= (
            window.max_tokens
        )
    again = chunker.get_nodes_from_documents([Document(id_="k8s", text=text)])
    assert [(n.node_id, n.text) for n in again] == [(n.node_id, n.text) for n in nodes]
