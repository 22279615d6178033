"""Route each document to the chunker that suits its content (``strategy: auto``).

:func:`content_type` tells Markdown, HTML, source code, JSON, YAML and plain text apart by
a declared ``content_type``, the file name, or a look at the content; :data:`ROUTES` maps
each type to a chunker.  The semantic chunker is never routed to: it needs the embedding
model at chunk time, so it is chosen explicitly (``spec.chunking.strategy: semantic``).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any, ClassVar

from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from pydantic import Field, PrivateAttr

from aof_index.node_parsers.base import ChunkerBase
from aof_index.node_parsers.code import (
    CODE_LANGUAGES,
    CodeChunker,
    known_language,
    language_of_name,
    shebang_language,
)
from aof_index.node_parsers.strategies import MarkdownChunker, RecursiveChunker
from aof_index.node_parsers.window import TokenWindow

__all__ = ["CONTENT_TYPES", "ROUTES", "AutoChunker", "content_type"]

CONTENT_TYPES = ("markdown", "html", "code", "json", "yaml", "text")
"""What :func:`content_type` can answer (a declared ``content_type`` is passed through)."""

_SUFFIXES = {
    **{suffix: "markdown" for suffix in (".md", ".markdown", ".mdx")},
    **{suffix: "html" for suffix in (".html", ".htm", ".xhtml")},
    **{suffix: "json" for suffix in (".json", ".jsonl", ".ndjson", ".geojson")},
    **{suffix: "yaml" for suffix in (".yaml", ".yml")},
    **{suffix: "code" for suffix in CODE_LANGUAGES},
}
_JSON_OPENING = re.compile(
    r'\s*(?:\{\s*"[^"\n]*"\s*:|\[\s*(?:\{\s*"[^"\n]*"\s*:|"|-?\d|\[|true|false|null))'
)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n---[ \t]*\n", re.DOTALL)
_HEAD = 4000
"""Characters of a document looked at to tell its type."""
_YAML_LINE = re.compile(r"^\s*(?:- +)?(?:[\w.$/-]+|\"[^\"]*\"|'[^']*'):(?:\s|$)|^\s*- ")


def content_type(document: BaseNode) -> str:
    """``markdown``, ``html``, ``code``, ``json``, ``yaml`` or ``text``.

    In order: a declared ``content_type`` metadata; a ``language`` metadata that names a
    programming language; the extension of ``file_name`` (or ``source``); then the content
    (``#!`` line, ``<html``, JSON that parses, ``key: value`` lines, Markdown headings or
    front matter).  Content is sniffed for Markdown only when there is no file name, so a
    ``# comment`` in a ``.txt`` or ``.cfg`` file is not read as a heading.
    """
    declared = document.metadata.get("content_type")
    if declared:
        return str(declared)
    if known_language(str(document.metadata.get("language") or "")):
        return "code"
    name = str(document.metadata.get("file_name") or document.metadata.get("source") or "")
    by_suffix = _SUFFIXES.get(PurePosixPath(name.replace("\\", "/")).suffix.lower())
    if by_suffix:
        return by_suffix
    if language_of_name(name):  # Dockerfile, Makefile, Jenkinsfile
        return "code"
    head = document.get_content(metadata_mode=MetadataMode.NONE)[:_HEAD]
    return _sniff(head, named=bool(name))


def _sniff(head: str, *, named: bool) -> str:
    stripped = head.lstrip()
    lowered = stripped[:200].lower()
    if lowered.startswith(("<!doctype html", "<html")):
        return "html"
    if stripped[:1] in "{[" and stripped and _is_json(head):
        return "json"
    if shebang_language(head):
        return "code"
    # Front matter (Hugo, Jekyll) opens Markdown; a YAML stream opens with ``---`` too, so
    # what follows it decides.
    body = _FRONT_MATTER.match(head)
    rest = head[body.end() :] if body else head
    lines = [line for line in rest.splitlines()[:40] if line.strip()]
    if _looks_like_yaml(lines):
        return "yaml"
    if not named and (body or any(line.startswith("# ") for line in lines[:5])):
        return "markdown"
    return "text"


def _is_json(head: str) -> bool:
    try:
        json.loads(head)
    except ValueError:
        # JSON Lines, or a document longer than ``head``: it opens like JSON all the same.
        return bool(_JSON_OPENING.match(head))
    return True


def _looks_like_yaml(lines: list[str]) -> bool:
    """Most lines are ``key: value`` or ``- item`` (comments and ``---`` aside)."""
    body = [line for line in lines if not line.lstrip().startswith("#") and line.strip() != "---"]
    if len(body) < 3:
        return False
    return sum(1 for line in body if _YAML_LINE.match(line)) >= 0.8 * len(body)


class _JsonChunker(RecursiveChunker):
    """JSON: between blank lines, lines, then list items; never mid-string if avoidable."""

    separator_list: list[str] = Field(default_factory=lambda: ["\n\n", "\n", ", ", ",", " "])


class _YamlChunker(RecursiveChunker):
    """YAML: between documents (``---``), blank lines, then lines."""

    separator_list: list[str] = Field(default_factory=lambda: ["\n---\n", "\n\n", "\n", " "])


class _HtmlChunker(RecursiveChunker):
    """HTML: after block-level closing tags when the markup is still there; readers strip
    HTML already, and then this is the plain-text route."""

    separator_list: list[str] = Field(
        default_factory=lambda: [
            "</section>",
            "</article>",
            "</div>",
            "</p>",
            "</li>",
            "\n\n",
            "\n",
            ". ",
            " ",
        ]
    )


ROUTES: dict[str, type[ChunkerBase]] = {
    "markdown": MarkdownChunker,
    "html": _HtmlChunker,
    "code": CodeChunker,
    "json": _JsonChunker,
    "yaml": _YamlChunker,
    "text": RecursiveChunker,
}
"""Content type → chunker class; ``text`` is the fallback."""


class AutoChunker(ChunkerBase):
    """Each document chunked by the chunker its content type calls for (:data:`ROUTES`):
    Markdown by headings, code by definitions, JSON/YAML by lines, everything else by
    recursive separators.  The choice is recorded in each node's ``content_type``
    metadata, and code nodes carry their ``language``."""

    strategy: ClassVar[str] = "auto"
    _routes: dict[str, ChunkerBase] = PrivateAttr()

    def __init__(
        self,
        window: TokenWindow,
        chunk_size: int | None = None,
        chunk_overlap: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(window, chunk_size, chunk_overlap, **kwargs)
        self._routes = {
            kind: chunker(window, chunk_size, chunk_overlap) for kind, chunker in ROUTES.items()
        }

    def chunk(self, document: BaseNode) -> list[TextNode]:
        """Chunk ``document`` with the chunker its content type calls for."""
        kind = content_type(document)
        nodes = self._routes.get(kind, self._routes["text"]).chunk(document)
        for node in nodes:
            node.metadata["content_type"] = kind
            node.excluded_embed_metadata_keys.append("content_type")
            node.excluded_llm_metadata_keys.append("content_type")
        return nodes
