"""The code chunker: definitions found by tree-sitter, symbols, the code between them,
large classes cut into methods, the model's window, and the line-based fallback."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import llama_index.core.node_parser.text.sentence as sentence_module
import pytest
from llama_index.core import Document
from llama_index.core.schema import MetadataMode, TextNode

from aof_index.node_parsers import code
from aof_index.node_parsers.base import chunk_id
from aof_index.node_parsers.code import CodeChunker, grammar_languages, language_of
from aof_index.node_parsers.window import TokenWindow


def _words(text: str) -> Sequence[int]:
    """A whitespace tokenizer: one token per word (a stand-in for a model's tokenizer)."""
    return [hash(w) for w in text.split()]


WINDOW = TokenWindow(_words, 200)


def _chunk(text: str, file_name: str, window: TokenWindow = WINDOW, **meta: Any) -> list[TextNode]:
    doc = Document(id_=file_name, text=text, metadata={"file_name": file_name, **meta})
    nodes = CodeChunker(window, pack_tokens=0).chunk(doc)  # one chunk per definition
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        assert node.metadata["strategy"] == "code"
    return nodes


def _symbols(nodes: list[TextNode]) -> list[str | None]:
    return [n.metadata.get("symbol") for n in nodes]


PYTHON = '''"""Tools for pods."""
import os

LIMIT = 3


# Restart a pod.
@retry(times=LIMIT)
def restart(pod):
    return os.system(f"kubectl delete pod {pod}")


class Scaler(Base):
    """Scales deployments."""

    replicas = 2

    def up(self):
        self.replicas += 1

    # Down, never below one.
    @staticmethod
    def down(n):
        return max(1, n - 1)


if __name__ == "__main__":
    restart("web")
'''


def test_python_definitions_are_pieces_with_symbols_and_gaps_between() -> None:
    nodes = _chunk(PYTHON, "tools.py")
    assert _symbols(nodes) == [None, "def restart", "class Scaler", None]
    assert nodes[0].text == '"""Tools for pods."""\nimport os\n\nLIMIT = 3'
    # The comment and decorator right above a definition belong to it.
    assert nodes[1].text.startswith("# Restart a pod.\n@retry(times=LIMIT)\ndef restart(pod):")
    assert nodes[2].text.startswith("class Scaler(Base):") and nodes[2].text.endswith("n - 1)")
    assert nodes[3].text.startswith('if __name__ == "__main__":')
    assert {n.metadata["language"] for n in nodes} == {"python"}
    assert "chunker_fallback" not in nodes[0].metadata
    # The LLM sees the symbol and the language; the embedder sees only the code.
    assert "symbol: def restart" in nodes[1].get_content(metadata_mode=MetadataMode.LLM)
    assert nodes[1].get_content(metadata_mode=MetadataMode.EMBED) == nodes[1].text


def test_a_class_larger_than_the_chunk_is_cut_into_its_methods() -> None:
    nodes = _chunk(PYTHON, "tools.py", TokenWindow(_words, 12))
    symbols = _symbols(nodes)
    assert "class Scaler / def up" in symbols and "class Scaler / def down" in symbols
    header = next(n for n in nodes if n.metadata.get("symbol") == "class Scaler")
    assert header.text == 'class Scaler(Base):\n    """Scales deployments."""\n\n    replicas = 2'
    down = next(n for n in nodes if n.metadata.get("symbol") == "class Scaler / def down")
    assert down.text.startswith("# Down, never below one.\n    @staticmethod\n    def down(n):")
    for node in nodes:
        assert WINDOW.count(node.text) <= 12


GO = """package main

import (
\t"fmt"
\t"net/http"
)

// Server serves pods.
type Server struct {
\taddr string
}

// Start listens.
func (s *Server) Start() error {
\treturn http.ListenAndServe(s.addr, nil)
}

var version = "1.0"

func main() {
\tfmt.Println(version)
}
"""


def test_go_functions_methods_and_types() -> None:
    nodes = _chunk(GO, "main.go")
    assert _symbols(nodes) == [
        None,
        "type Server",
        "func (s *Server) Start",
        None,
        "func main",
    ]
    assert nodes[0].text.startswith("package main") and nodes[0].text.endswith(")")
    assert nodes[2].text.startswith("// Start listens.\nfunc (s *Server) Start() error {")
    assert nodes[3].text == 'var version = "1.0"'
    assert [n.metadata["start_line"] for n in nodes] == [1, 8, 13, 18, 20]


JS = """import express from "express";

// Handles health checks.
export function health(req, res) {
  res.send("ok");
}

export default class Router extends Base {
  constructor(app) {
    super(app);
    this.routes = [];
  }

  add(path, handler) {
    this.routes.push({ path, handler });
  }
}

const port = 8080;
const listen = (app) => app.listen(port);
"""


def test_javascript_functions_classes_and_function_constants() -> None:
    nodes = _chunk(JS, "server.js")
    assert _symbols(nodes) == [None, "function health", "class Router", None, "const listen"]
    assert nodes[1].text.startswith("// Handles health checks.\nexport function health")
    assert nodes[3].text == "const port = 8080;"  # a plain constant is module code
    small = _chunk(JS, "server.js", TokenWindow(_words, 12))
    assert _symbols(small)[2:5] == [
        "class Router",
        "class Router / method constructor",
        "class Router / method add",
    ]
    # The closing brace of the class joins its last method instead of being a chunk.
    assert small[4].text.endswith("}\n}") and not any(n.text == "}" for n in small)


@pytest.mark.parametrize(
    ("file_name", "source", "symbols"),
    [
        (
            "api.ts",
            "import { x } from './x';\ninterface Pod { name: string }\n"
            "type Phase = 'Running' | 'Failed';\n"
            "export abstract class Store implements Pod { name = ''; get(): void {} }\n"
            "enum Mode { A, B }\n",
            [None, "interface Pod", "type Phase", "abstract class Store", "enum Mode"],
        ),
        (
            "App.tsx",
            "export function App() { return <div>pods</div>; }\n",
            ["function App"],
        ),
        (
            "Main.java",
            "package a;\nimport b.C;\n/** A pod. */\n@Entity\npublic class Pod {\n"
            "  public Pod() {}\n  void run() {}\n}\ninterface Runner { void run(); }\n",
            [None, "class Pod", "interface Runner"],
        ),
        (
            "lib.rs",
            "use std::fmt;\n/// A pod.\n#[derive(Debug)]\npub struct Pod { name: String }\n"
            "impl fmt::Display for Pod { fn fmt(&self) {} }\nimpl Pod { fn new() {} }\n"
            "trait Run { fn run(&self); }\nfn main() {}\n",
            [None, "struct Pod", "impl fmt::Display for Pod", "impl Pod", "trait Run", "fn main"],
        ),
        (
            "deploy.sh",
            '#!/bin/bash\nset -euo pipefail\n\nrollout() {\n  kubectl rollout status "$1"\n}\n'
            "function main {\n  rollout web\n}\nmain\n",
            [None, "function rollout", "function main", None],
        ),
    ],
)
def test_other_languages(file_name: str, source: str, symbols: list[str | None]) -> None:
    nodes = _chunk(source, file_name)
    assert _symbols(nodes) == symbols
    assert "chunker_fallback" not in nodes[0].metadata


def test_rust_doc_comments_and_attributes_belong_to_the_item_below() -> None:
    source = "use std::fmt;\n/// A pod.\n#[derive(Debug)]\npub struct Pod;\n"
    nodes = _chunk(source, "lib.rs")
    assert nodes[1].text == "/// A pod.\n#[derive(Debug)]\npub struct Pod;"


def test_a_blank_line_parts_a_comment_from_the_definition_below() -> None:
    source = "import os\n\n# About this module.\n\ndef f():\n    return os.sep\n"
    nodes = _chunk(source, "m.py")
    assert [n.text for n in nodes] == [
        "import os\n\n# About this module.",
        "def f():\n    return os.sep",
    ]


def test_offsets_stay_exact_with_non_ascii_source() -> None:
    # tree-sitter reports UTF-8 byte offsets; nodes must carry character offsets.
    source = (
        '"""Pods — ünïcödé 🚀."""\n\n\ndef größe():\n    return "ß"\n\n\ndef nächste():\n    pass\n'
    )
    nodes = _chunk(source, "u.py")
    assert [n.text for n in nodes] == [
        '"""Pods — ünïcödé 🚀."""',
        'def größe():\n    return "ß"',
        "def nächste():\n    pass",
    ]
    assert _symbols(nodes) == [None, "def größe", "def nächste"]


def test_language_comes_from_metadata_the_extension_or_a_shebang() -> None:
    def doc(text: str = "x = 1\n", **meta: Any) -> Document:
        return Document(text=text, metadata=meta)

    assert language_of(doc(file_name="a/b/handler.TS")) == "typescript"
    assert language_of(doc(source="https://git.example/repo/blob/main/cmd/main.go")) == "go"
    assert language_of(doc(file_name="Dockerfile")) == "dockerfile"
    assert language_of(doc(file_name="run", language="Golang")) == "go"
    assert language_of(doc("#!/usr/bin/env python3\nprint(1)\n", file_name="run")) == "python"
    assert language_of(doc("#!/bin/sh\necho\n")) == "bash"
    assert language_of(doc(file_name="notes.txt")) is None
    nodes = _chunk("def f():\n    pass\n", "script", language="python")
    assert _symbols(nodes) == ["def f"] and nodes[0].metadata["language"] == "python"
    assert {"python", "go", "javascript", "typescript", "java", "rust", "bash"} <= set(
        grammar_languages()
    )


# --- the fallback ------------------------------------------------------------------------

RUBY = "\n".join(f"def handler_{i}\n  puts 'pod {i} ' + 'restarted ' * 3\nend\n" for i in range(12))


def test_without_a_grammar_code_is_cut_at_lines_and_the_reason_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="aof_index.node_parsers.code"):
        nodes = _chunk(RUBY, "app.rb", TokenWindow(_words, 20))
    assert len(nodes) > 3
    for node in nodes:
        assert node.metadata["chunker_fallback"] == "no tree-sitter grammar for ruby"
        assert node.metadata["language"] == "ruby"
        assert "symbol" not in node.metadata
        # Line-based: every chunk starts at a line start and ends at a line end.
        assert node.start_char_idx == 0 or RUBY[node.start_char_idx - 1] == "\n"
        assert RUBY[node.end_char_idx : node.end_char_idx + 1] in {"", "\n"}
        assert WINDOW.count(node.text) <= 20
    assert "no tree-sitter grammar for ruby" in caplog.text
    assert "app.rb" in caplog.text  # the document id


def test_source_that_does_not_parse_falls_back_with_the_reason() -> None:
    nodes = _chunk("def broken(:\n    pass\n\nclass Fine:\n    pass\n", "bad.py")
    assert {n.metadata["chunker_fallback"] for n in nodes} == {
        "tree-sitter found syntax errors in the python source"
    }


def test_unknown_language_falls_back() -> None:
    nodes = _chunk("some text\n\nmore text\n", "notes.unknownext")
    assert nodes[0].metadata["chunker_fallback"] == "no language detected"
    assert "language" not in nodes[0].metadata


@pytest.fixture
def uninstall(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Make a module look uninstalled, as far as imports can tell."""
    code._language.cache_clear()
    yield lambda module: monkeypatch.setitem(sys.modules, module, None)
    code._language.cache_clear()


def test_a_missing_grammar_package_falls_back_and_names_what_to_install(
    uninstall: Callable[[str], None],
) -> None:
    uninstall("tree_sitter_go")
    nodes = _chunk(GO, "main.go")
    reason = nodes[0].metadata["chunker_fallback"]
    assert "tree-sitter-go is not installed" in reason and "aof-index[code]" in reason
    assert _chunk(PYTHON, "tools.py")[1].metadata["symbol"] == "def restart"  # others work


def test_without_tree_sitter_every_language_falls_back(uninstall: Callable[[str], None]) -> None:
    uninstall("tree_sitter")
    nodes = _chunk(PYTHON, "tools.py")
    assert {n.metadata["chunker_fallback"] for n in nodes} == {
        "tree-sitter is not installed (pip install 'aof-index[code]')"
    }


# --- the real model's window --------------------------------------------------------------


@functools.cache
def _minilm() -> TokenWindow:
    from aof_index import build_memory

    return build_memory().window


def _long_go() -> str:
    funcs = "\n\n".join(
        f"// Handle{i} reconciles pod {i}.\n"
        f"func (r *Reconciler) Handle{i}(ctx context.Context) error {{\n"
        + "".join(
            f'\tif err := r.client.Get(ctx, types.NamespacedName{{Name: "pod-{i}-{j}"}}, &pod); '
            f'err != nil {{\n\t\treturn fmt.Errorf("get pod-{i}-{j}: %w", err)\n\t}}\n'
            for j in range(3 if i % 4 else 40)  # every fourth function is far too large
        )
        + "\treturn nil\n}"
        for i in range(12)
    )
    return f'package controller\n\nimport (\n\t"context"\n\t"fmt"\n)\n\n{funcs}\n'


def _long_js() -> str:
    methods = "\n\n".join(
        f"  async sync{i}(pod) {{\n"
        + "".join(
            f"    await this.api.patch(`/pods/${{pod}}/{j}`, {{ step: {j} }});\n" for j in range(25)
        )
        + "  }"
        for i in range(6)
    )
    return f"import {{ Api }} from './api.js';\n\nexport class Syncer {{\n{methods}\n}}\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("file_name", "source"),
    [
        ("sentence.py", Path(sentence_module.__file__).read_text(encoding="utf-8")),
        ("controller.go", _long_go()),
        ("syncer.js", _long_js()),
    ],
)
def test_with_minilm_no_chunk_exceeds_the_window(file_name: str, source: str) -> None:
    window = _minilm()
    doc = Document(
        id_=file_name, text=source, metadata={"file_name": file_name, "title": file_name}
    )
    chunker = CodeChunker(window, chunk_overlap=16)
    nodes = chunker.get_nodes_from_documents([doc])
    assert len(nodes) > 5
    for node in nodes:
        assert source[node.start_char_idx : node.end_char_idx] == node.text
        assert window.count(node.get_content(metadata_mode=MetadataMode.EMBED)) <= window.max_tokens
        assert "chunker_fallback" not in node.metadata
    again = chunker.get_nodes_from_documents([doc])
    assert [n.node_id for n in again] == [chunk_id(file_name, i) for i in range(len(nodes))]
    assert [(n.text, n.metadata) for n in again] == [(n.text, n.metadata) for n in nodes]
    symbols = set(_symbols(nodes))
    if file_name == "sentence.py":
        assert {"class _Split", "class SentenceSplitter / def _merge"} <= symbols
        assert "class SentenceSplitter / def from_defaults" in symbols
    elif file_name == "controller.go":
        assert "func (r *Reconciler) Handle0" in symbols
        big = [n for n in nodes if n.metadata.get("symbol") == "func (r *Reconciler) Handle0"]
        assert len(big) > 1  # cut between lines, each part under the window
        assert all(n.text.endswith(("{", "}", ";", ")")) for n in big)
    else:
        assert {f"class Syncer / method sync{i}" for i in range(6)} <= symbols


def test_small_neighbouring_definitions_share_a_chunk() -> None:
    source = "import os\n\n\ndef a():\n    return 1\n\n\ndef b():\n    return 2\n\n\n" + (
        "def big():\n" + "".join(f"    x{i} = {i}\n" for i in range(40))
    )
    doc = Document(id_="small.py", text=source, metadata={"file_name": "small.py"})
    packed = CodeChunker(WINDOW).chunk(doc)
    assert _symbols(packed) == ["def a, def b", "def big"]  # imports, a and b: one chunk
    assert packed[0].text == source[: source.index("def big")].rstrip()
    limited = CodeChunker(WINDOW, pack_tokens=4).chunk(doc)  # "import os" + a is 6 words
    assert len(limited) > len(packed)
    assert len(CodeChunker(WINDOW, pack_tokens=0).chunk(doc)) == 4
