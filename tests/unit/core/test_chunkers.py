"""The chunkers: Markdown sections, the model's window, deterministic ids, exact offsets."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from llama_index.core import Document
from llama_index.core.schema import MetadataMode

from aof_index.node_parsers.auto import AutoChunker
from aof_index.node_parsers.base import chunk_id
from aof_index.node_parsers.markdown_sections import split_front_matter, split_sections
from aof_index.node_parsers.strategies import FixedChunker, MarkdownChunker, RecursiveChunker
from aof_index.node_parsers.window import TokenWindow


def _words(text: str) -> Sequence[int]:
    """A whitespace tokenizer: one token per word (a stand-in for a model's tokenizer)."""
    return [hash(w) for w in text.split()]


WINDOW = TokenWindow(_words, 40)

MARKDOWN = """---
title: Pods
weight: 10
---
# Pods

Pods are the smallest deployable units.

## Lifecycle

A pod moves through Pending, Running, Succeeded or Failed.

```yaml
# not a heading: inside a code block
apiVersion: v1
kind: Pod
```

## Probes

Liveness probes restart containers.
"""


def test_sections_follow_headings_and_skip_code_block_comments() -> None:
    front, start = split_front_matter(MARKDOWN)
    assert front == {"title": "Pods", "weight": 10}
    sections = split_sections(MARKDOWN, start)
    assert [s.heading_path for s in sections] == ["Pods", "Pods / Lifecycle", "Pods / Probes"]
    assert "# not a heading" in sections[1].text
    for s in sections:
        assert MARKDOWN[s.start : s.start + len(s.text)] == s.text


def test_markdown_chunks_carry_title_heading_and_source_offsets() -> None:
    doc = Document(id_="doc-1", text=MARKDOWN, metadata={"file_name": "pods.md"})
    nodes = AutoChunker(WINDOW, chunk_overlap=4).get_nodes_from_documents([doc])
    headings = [n.metadata.get("heading") for n in nodes]
    assert headings == ["Pods", "Pods / Lifecycle", "Pods / Probes"]
    for node in nodes:
        assert node.metadata["title"] == "Pods"
        assert node.ref_doc_id == "doc-1"
        assert MARKDOWN[node.start_char_idx : node.end_char_idx] == node.text
        embedded = node.get_content(metadata_mode=MetadataMode.EMBED)
        assert embedded.startswith("title: Pods\nheading: ")
        assert "file_name" not in embedded
    assert "weight: 10" not in "".join(n.text for n in nodes)  # front matter is not indexed


def test_no_chunk_exceeds_the_window_even_without_sentence_breaks() -> None:
    text = " ".join(f"word{i}" for i in range(1000))  # no punctuation, no newlines
    doc = Document(id_="long", text=text, metadata={"title": "a title of four words"})
    nodes = AutoChunker(WINDOW, chunk_overlap=4).get_nodes_from_documents([doc])
    assert len(nodes) > 20
    for node in nodes:
        assert WINDOW.count(node.get_content(metadata_mode=MetadataMode.EMBED)) <= 40
    covered = set()
    for node in nodes:
        covered.update(node.text.split())
    assert covered == set(text.split())  # nothing lost


def test_ids_are_deterministic_and_differ_between_documents() -> None:
    parser = AutoChunker(WINDOW, chunk_overlap=4)
    first = parser.get_nodes_from_documents([Document(id_="a", text=MARKDOWN)])
    again = parser.get_nodes_from_documents([Document(id_="a", text=MARKDOWN)])
    other = parser.get_nodes_from_documents([Document(id_="b", text=MARKDOWN)])
    assert [n.node_id for n in first] == [n.node_id for n in again]
    assert not {n.node_id for n in first} & {n.node_id for n in other}
    assert first[0].node_id == chunk_id("a", 0)


def test_plain_text_is_not_split_at_hash_comments() -> None:
    code = "# comment\nx = 1\n# another\ny = 2\n"
    doc = Document(id_="c", text=code, metadata={"file_name": "script.py"})
    nodes = AutoChunker(WINDOW, chunk_overlap=4).get_nodes_from_documents([doc])
    assert len(nodes) == 1
    assert "heading" not in nodes[0].metadata


def test_fixed_windows_overlap_and_are_exact_slices() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    doc = Document(id_="f", text=text)
    nodes = FixedChunker(WINDOW, chunk_size=20, chunk_overlap=5).get_nodes_from_documents([doc])
    assert len(nodes) > 5
    for a, b in itertools.pairwise(nodes):
        assert b.start_char_idx < a.end_char_idx  # overlap
        shared = set(a.text.split()) & set(b.text.split())
        assert 1 <= len(shared) <= 5
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        assert WINDOW.count(node.text) <= 20
        assert node.metadata["strategy"] == "fixed"


def test_recursive_prefers_the_configured_separators() -> None:
    text = "alpha beta gamma; delta epsilon zeta; eta theta iota; kappa lambda mu"
    doc = Document(id_="r", text=text)
    nodes = RecursiveChunker(WINDOW, chunk_size=6, separator_list=["; "]).get_nodes_from_documents(
        [doc]
    )
    assert [n.text for n in nodes] == [
        "alpha beta gamma; delta epsilon zeta;",
        "eta theta iota; kappa lambda mu",
    ]
    assert [n.metadata["start_line"] for n in nodes] == [1, 1]


def test_markdown_keeps_a_code_block_whole_when_it_fits() -> None:
    block = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(8)) + "\n```\n"
    text = "# Title\n\n" + "words " * 12 + "\n\n" + block + "\nafter the block\n"
    doc = Document(id_="m", text=text, metadata={"file_name": "x.md"})
    nodes = MarkdownChunker(WINDOW, chunk_size=30).get_nodes_from_documents([doc])
    holding = [n for n in nodes if "```python" in n.text]
    assert len(holding) == 1 and holding[0].text.rstrip().endswith("```")
    assert holding[0].metadata["start_line"] < holding[0].metadata["end_line"]
