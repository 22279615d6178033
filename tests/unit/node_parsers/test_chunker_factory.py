"""``spec.chunking`` → chunker: each strategy, its sizes, the cap at the model's window."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import MetadataMode

from aof_index.errors import AofIndexError
from aof_index.node_parsers.auto import AutoChunker
from aof_index.node_parsers.factory import AUTO_OVERLAP, CHUNKING_STRATEGIES, build_chunker
from aof_index.node_parsers.strategies import FixedChunker, MarkdownChunker, RecursiveChunker
from aof_index.node_parsers.window import TokenWindow
from aof_index.spec import KnowledgeBase, load_resources
from aof_index.spec.knowledge_base import Chunking

FULL_MANIFEST = (
    Path(__file__).resolve().parents[1] / "spec" / "manifests" / "knowledgebase-full.yaml"
)


def _words(text: str) -> Sequence[int]:
    """A whitespace tokenizer: one token per word (a stand-in for a model's tokenizer)."""
    return [hash(w) for w in text.split()]


LARGE = TokenWindow(_words, 8191, chunk_tokens=512)  # a hosted model: sizes fit as written
MINILM_SIZED = TokenWindow(_words, 254)  # all-MiniLM-L6-v2's 254 content tokens


def _chunking(path_or_text: str | Path) -> Chunking:
    (resource,) = load_resources(path_or_text)
    assert isinstance(resource, KnowledgeBase)
    assert resource.spec.chunking is not None
    return resource.spec.chunking


def _manifest(chunking_yaml: str) -> Chunking:
    return _chunking(
        "apiVersion: aof.agenticops.org/v1alpha1\n"
        "kind: KnowledgeBase\n"
        "metadata: {name: kb}\n"
        "spec:\n"
        "  sources: []\n"
        "  chunking:\n" + "".join(f"    {line}\n" for line in chunking_yaml.splitlines())
    )


@pytest.fixture
def full() -> Chunking:
    """``spec.chunking`` of the full example manifest (every section set)."""
    return _chunking(FULL_MANIFEST)


def test_the_manifest_strategy_picks_the_chunker(full: Chunking) -> None:
    assert full.strategy == "markdown"
    chunker = build_chunker(full, LARGE)
    assert type(chunker) is MarkdownChunker
    assert chunker.chunk_size == 1200
    assert chunker.respect_headers and chunker.respect_code_blocks


@pytest.mark.parametrize(
    ("strategy", "cls", "size", "overlap"),
    [
        ("fixed", FixedChunker, 800, 100),
        ("recursive", RecursiveChunker, 900, 120),
        ("markdown", MarkdownChunker, 1200, 0),
        ("auto", AutoChunker, 512, AUTO_OVERLAP),
    ],
)
def test_each_strategy_maps_to_its_class_and_sizes(
    full: Chunking, strategy: str, cls: type, size: int, overlap: int
) -> None:
    chunker = build_chunker(full, LARGE, strategy=strategy)
    assert type(chunker) is cls
    assert (chunker.chunk_size, chunker.chunk_overlap) == (size, overlap)
    assert chunker.window is LARGE


def test_recursive_uses_the_manifest_separators(full: Chunking) -> None:
    chunker = build_chunker(full, LARGE, strategy="recursive")
    assert isinstance(chunker, RecursiveChunker)
    assert chunker.separator_list == ["\n## ", "\n\n", "\n"]


def test_markdown_flags_come_from_the_manifest() -> None:
    chunking = _manifest(
        "strategy: markdown\n"
        "markdown: {respectHeaders: false, respectCodeBlocks: false, maxChunkSize: 100}"
    )
    chunker = build_chunker(chunking, LARGE)
    assert isinstance(chunker, MarkdownChunker)
    assert (chunker.respect_headers, chunker.respect_code_blocks) == (False, False)
    assert chunker.chunk_size == 100


def test_semantic_maps_threshold_and_sizes(full: Chunking) -> None:
    from aof_index.node_parsers.semantic import SemanticChunker

    embed = MockEmbedding(embed_dim=8)
    chunker = build_chunker(full, LARGE, embed, strategy="semantic")
    assert isinstance(chunker, SemanticChunker)
    assert chunker.threshold == 0.6
    assert (chunker.min_chunk_size, chunker.max_chunk_size, chunker.chunk_size) == (150, 1800, 1800)
    assert chunker.embed_model is embed


def test_semantic_is_capped_at_the_window_too(full: Chunking) -> None:
    chunker = build_chunker(full, MINILM_SIZED, MockEmbedding(embed_dim=8), strategy="semantic")
    assert chunker.chunk_size == 254
    assert getattr(chunker, "min_chunk_size", None) == 150


def test_semantic_without_an_embedding_model_names_the_field(full: Chunking) -> None:
    with pytest.raises(AofIndexError, match=r"spec\.chunking\.strategy.*embedding model"):
        build_chunker(full, LARGE, strategy="semantic")


def test_crd_defaults_are_capped_at_the_window_and_the_cap_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # chunkSize 1000 / overlap 200 (the CRD's defaults) exceed MiniLM's 254-token window.
    chunking = _manifest("strategy: fixed\nfixed: {chunkSize: 1000, overlap: 200}")
    with caplog.at_level(logging.INFO, logger="aof_index.node_parsers.factory"):
        chunker = build_chunker(chunking, MINILM_SIZED)
    assert (chunker.chunk_size, chunker.chunk_overlap) == (254, 50)  # overlap kept at 20%
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "spec.chunking.fixed.chunkSize 1000" in record.getMessage()
    assert "254" in record.getMessage()


def test_missing_sections_use_the_crd_defaults() -> None:
    for strategy, size in [("fixed", 1000), ("recursive", 1000), ("markdown", 1500)]:
        chunker = build_chunker(_manifest(f"strategy: {strategy}"), LARGE)
        assert chunker.chunk_size == size
    assert build_chunker(_manifest("strategy: fixed"), LARGE).chunk_overlap == 200


def test_sizes_within_the_window_are_kept_and_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chunking = _manifest("strategy: recursive\nrecursive: {chunkSize: 200, overlap: 40}")
    with caplog.at_level(logging.INFO, logger="aof_index.node_parsers.factory"):
        chunker = build_chunker(chunking, MINILM_SIZED)
    assert (chunker.chunk_size, chunker.chunk_overlap) == (200, 40)
    assert not caplog.records


def test_capped_chunks_keep_all_text_and_fit_the_window() -> None:
    chunking = _manifest("strategy: fixed\nfixed: {chunkSize: 1000, overlap: 200}")
    chunker = build_chunker(chunking, MINILM_SIZED)
    text = " ".join(f"w{i}" for i in range(2000))
    nodes = chunker.get_nodes_from_documents([Document(id_="d", text=text)])
    assert all(
        MINILM_SIZED.count(n.get_content(metadata_mode=MetadataMode.EMBED)) <= 254 for n in nodes
    )
    assert {w for n in nodes for w in n.get_content().split()} == set(text.split())


def test_no_chunking_section_means_auto() -> None:
    chunker = build_chunker(None, MINILM_SIZED)
    assert type(chunker) is AutoChunker
    assert (chunker.chunk_size, chunker.chunk_overlap) == (254, AUTO_OVERLAP)


def test_an_empty_chunking_section_means_the_crd_default_semantic() -> None:
    from aof_index.node_parsers.semantic import SemanticChunker

    chunking = Chunking()
    assert chunking.strategy == "semantic"
    chunker = build_chunker(chunking, LARGE, MockEmbedding(embed_dim=8))
    assert isinstance(chunker, SemanticChunker)


def test_the_strategy_argument_overrides_the_manifest(full: Chunking) -> None:
    assert type(build_chunker(full, LARGE, strategy="fixed")) is FixedChunker
    assert type(build_chunker(None, LARGE, strategy="recursive")) is RecursiveChunker


def test_chunk_size_argument_overrides_and_is_capped(caplog: pytest.LogCaptureFixture) -> None:
    full = _chunking(FULL_MANIFEST)
    assert build_chunker(full, LARGE, strategy="fixed", chunk_size=64).chunk_size == 64
    assert build_chunker(None, LARGE, chunk_size=64).chunk_size == 64
    with caplog.at_level(logging.INFO, logger="aof_index.node_parsers.factory"):
        chunker = build_chunker(None, MINILM_SIZED, chunk_size=5000)
    assert chunker.chunk_size == 254
    assert "requested chunk size 5000" in caplog.text


def test_custom_is_a_clear_error_naming_the_field(full: Chunking) -> None:
    chunking = _manifest("strategy: custom\ncustom: {prompt: one chunk per step}")
    for args in ((chunking, MINILM_SIZED), (full, MINILM_SIZED, None, "custom")):
        with pytest.raises(AofIndexError) as info:
            build_chunker(*args)  # type: ignore[arg-type]
        message = str(info.value)
        assert message.startswith("spec.chunking.strategy: ")
        assert "LLM" in message and "not implemented" in message
        assert "(got 'custom')" in message


def test_an_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(AofIndexError, match=r"spec\.chunking\.strategy") as info:
        build_chunker(None, LARGE, strategy="sentences")
    assert "'sentences'" in str(info.value)
    for name in CHUNKING_STRATEGIES:
        assert name in str(info.value)
