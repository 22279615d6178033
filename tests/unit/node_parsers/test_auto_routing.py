"""Content-type routing: what ``content_type`` answers and which chunker each type gets."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.schema import MetadataMode, TextNode

from aof_index.node_parsers import code
from aof_index.node_parsers.auto import ROUTES, AutoChunker, content_type
from aof_index.node_parsers.code import CodeChunker
from aof_index.node_parsers.strategies import MarkdownChunker, RecursiveChunker
from aof_index.node_parsers.window import TokenWindow

K8S_DOCS = Path(__file__).resolve().parents[4] / "shared" / "data" / "k8s-docs"


def _words(text: str) -> Sequence[int]:
    """A whitespace tokenizer: one token per word (a stand-in for a model's tokenizer)."""
    return [hash(w) for w in text.split()]


WINDOW = TokenWindow(_words, 40)


def _doc(text: str = "hello world\n", **metadata: Any) -> Document:
    return Document(text=text, metadata=metadata)


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("pods.md", "markdown"),
        ("guide.MDX", "markdown"),
        ("index.html", "html"),
        ("page.htm", "html"),
        ("main.go", "code"),
        ("src/app.tsx", "code"),
        ("lib.rs", "code"),
        ("deploy.sh", "code"),
        ("app.rb", "code"),  # code even without a grammar: the code chunker falls back
        ("Dockerfile", "code"),
        ("values.yaml", "yaml"),
        ("deploy.yml", "yaml"),
        ("config.json", "json"),
        ("events.jsonl", "json"),
        ("notes.txt", "text"),
        ("settings.cfg", "text"),
        ("LICENSE", "text"),
    ],
)
def test_content_type_from_the_file_name(file_name: str, expected: str) -> None:
    assert content_type(_doc(file_name=file_name)) == expected
    assert content_type(_doc(source=f"/repo/{file_name}")) == expected


def test_declared_metadata_wins_and_only_programming_languages_mean_code() -> None:
    assert content_type(_doc(file_name="x.py", content_type="text")) == "text"
    assert content_type(_doc(file_name="snippet", language="python")) == "code"
    assert content_type(_doc(file_name="snippet", language="Golang")) == "code"
    assert content_type(_doc(file_name="pods.md", language="en")) == "markdown"


MANIFEST = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!DOCTYPE html>\n<html><body><p>Pods</p></body></html>", "html"),
        ("  <html lang='en'><p>x</p></html>", "html"),
        ('{"kind": "Pod", "spec": {"containers": []}}', "json"),
        ('[{"name": "a"}, {"name": "b"}]', "json"),
        ('{"event": "start"}\n{"event": "stop"}\n', "json"),  # JSON Lines
        ('{"items": [' + ", ".join(['{"n": 1}'] * 2000) + "]}", "json"),  # longer than the head
        (MANIFEST, "yaml"),
        ("---\n" + MANIFEST + "---\n" + MANIFEST, "yaml"),
        ("# Kubernetes manifest\n" + MANIFEST, "yaml"),  # a YAML comment, not a heading
        ("---\ntitle: Pods\n---\n# Pods\n\nPods are the smallest units.\n", "markdown"),
        ("# Pods\n\nPods are the smallest deployable units.\n", "markdown"),
        ("#!/usr/bin/env bash\nset -e\nkubectl get pods\n", "code"),
        ("{{< note >}}\nShortcodes are not JSON.\n{{< /note >}}\n", "text"),
        ("[INFO] pod web started\n[WARN] pod web restarted\n", "text"),
        ("Pods are the smallest deployable units.\nThey run containers.\n", "text"),
    ],
)
def test_content_type_sniffed_from_the_content(text: str, expected: str) -> None:
    assert content_type(_doc(text)) == expected


def test_markdown_is_sniffed_only_without_a_file_name() -> None:
    text = "# a comment in a config file\nkey = value\n"
    assert content_type(_doc(text)) == "markdown"
    assert content_type(_doc(text, file_name="app.conf")) == "text"


def test_routes_cover_every_type() -> None:
    assert ROUTES["code"] is CodeChunker
    assert ROUTES["markdown"] is MarkdownChunker
    assert ROUTES["text"] is RecursiveChunker
    for kind in ("json", "yaml", "html"):
        assert issubclass(ROUTES[kind], RecursiveChunker)
    assert "semantic" not in ROUTES  # it needs embeddings at chunk time


def _route(doc: Document, window: TokenWindow = WINDOW, **kwargs: Any) -> list[TextNode]:
    nodes = AutoChunker(window, **kwargs).chunk(doc)
    text = doc.get_content(metadata_mode=MetadataMode.NONE)
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        assert "content_type" not in node.get_content(metadata_mode=MetadataMode.EMBED)
    return nodes


def test_code_is_chunked_by_definitions_with_language_and_content_type() -> None:
    source = "import os\n\n\ndef up(n):\n    return n + 1\n\n\nclass Pod:\n    pass\n"
    nodes = _route(_doc(source, file_name="pods.py"), chunk_size=30, chunk_overlap=4)
    # Small neighbouring definitions share a chunk (up to half the chunk size).
    assert [n.metadata.get("symbol") for n in nodes] == ["def up, class Pod"]
    for node in nodes:
        assert node.metadata["content_type"] == "code"
        assert node.metadata["language"] == "python"
        assert node.metadata["strategy"] == "code"


def test_code_without_a_grammar_records_the_fallback() -> None:
    nodes = _route(_doc("def up\n  1\nend\n", file_name="pods.rb"))
    assert nodes[0].metadata["content_type"] == "code"
    assert nodes[0].metadata["language"] == "ruby"
    assert nodes[0].metadata["chunker_fallback"] == "no tree-sitter grammar for ruby"


def test_yaml_documents_are_cut_at_their_separators() -> None:
    first = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80"
    second = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3"
    text = first + "\n---\n" + second + "\n"
    nodes = _route(_doc(text, file_name="web.yaml"), TokenWindow(_words, 20))
    assert [n.text for n in nodes] == [first + "\n---", second]
    assert {n.metadata["content_type"] for n in nodes} == {"yaml"}


def test_minified_json_is_cut_between_items() -> None:
    text = json.dumps({"items": [{"name": f"pod-{i}", "phase": "Running"} for i in range(30)]})
    nodes = _route(_doc(text, file_name="pods.json"), TokenWindow(_words, 20))
    assert len(nodes) > 3
    for node in nodes[:-1]:
        assert node.text.endswith(",")
        assert WINDOW.count(node.text) <= 20
    assert {n.metadata["content_type"] for n in nodes} == {"json"}


def test_html_with_markup_is_cut_after_block_tags() -> None:
    paragraphs = [
        f"<p>Pod {i} runs on node {i} and restarts when its probe fails.</p>" for i in range(8)
    ]
    text = "<html><body>" + "".join(paragraphs) + "</body></html>"
    nodes = _route(_doc(text, file_name="pods.html"), TokenWindow(_words, 30))
    assert len(nodes) > 2
    assert all(n.text.endswith("</p>") for n in nodes[:-1])
    assert {n.metadata["content_type"] for n in nodes} == {"html"}


def test_builder_signature_is_unchanged() -> None:
    chunker = AutoChunker(WINDOW, chunk_size=30, chunk_overlap=5)
    assert (chunker.chunk_size, chunker.chunk_overlap) == (30, 5)
    for route in chunker._routes.values():
        assert (route.chunk_size, route.chunk_overlap) == (30, 5)


# --- the real model's window ------------------------------------------------------------


@functools.cache
def _minilm() -> TokenWindow:
    from aof_index import build_memory

    return build_memory().window


@pytest.mark.slow
def test_with_minilm_every_route_keeps_chunks_inside_the_window() -> None:
    window = _minilm()
    docs = {
        "code": Document(
            id_="py",
            text=Path(code.__file__).read_text(encoding="utf-8"),
            metadata={"file_name": "code.py"},
        ),
        "markdown": Document(
            id_="md",
            text=(K8S_DOCS / "concepts/workloads/pods/pod-lifecycle.md").read_text("utf-8"),
            metadata={"file_name": "pod-lifecycle.md"},
        ),
        "yaml": Document(id_="yaml", text=("---\n" + MANIFEST) * 60),
        "json": Document(
            id_="json",
            text=json.dumps([{"pod": f"web-{i}", "node": f"n{i}"} for i in range(400)]),
        ),
    }
    chunker = AutoChunker(window, chunk_overlap=16)
    for kind, doc in docs.items():
        nodes = chunker.chunk(doc)
        assert len(nodes) > 3, kind
        for node in nodes:
            assert node.metadata["content_type"] == kind
            assert doc.text[node.start_char_idx : node.end_char_idx] == node.text
            embedded = node.get_content(metadata_mode=MetadataMode.EMBED)
            assert window.count(embedded) <= window.max_tokens
