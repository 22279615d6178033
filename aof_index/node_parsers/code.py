"""Syntax-aware chunks of source code, on tree-sitter parse trees.

Each top-level definition (function, class, type, impl block...) is a piece of its own with
``language`` and ``symbol`` metadata (``def bar``, ``class Foo``, ``func (s *Server)
Start``); the code between definitions (imports, module-level statements) is a piece too.
A definition larger than the chunk size that holds member definitions (a class, an impl
block, a trait) is split into its header, its members (``class Foo / def bar``) and the
code between them.  Comments and attributes directly above a definition belong to it.

Grammars come from the per-language PyPI wheels (``tree-sitter-python``,
``tree-sitter-go``...: compiled parsers inside the wheel, loaded with no network access).
``tree-sitter-language-pack`` is deliberately not used: its recent versions download
parsers on first use.  When there is no grammar for a language, or the source does not
parse, the chunker falls back to blank-line and line boundaries and records why in each
node's ``chunker_fallback`` metadata.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.schema import BaseNode
from pydantic import Field

from aof_index.node_parsers.base import ChunkerBase, Piece, metadata_header

if TYPE_CHECKING:
    from tree_sitter import Language, Node

__all__ = [
    "CODE_LANGUAGES",
    "CodeChunker",
    "grammar_languages",
    "known_language",
    "language_of",
    "language_of_name",
    "shebang_language",
]

logger = logging.getLogger(__name__)

CODE_SEPARATORS = ("\n\n", "\n")
"""Where an oversized definition, or code without a grammar, is cut: blank lines, lines."""

CODE_LANGUAGES: Mapping[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".go": "go",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".java": "java",
    ".rs": "rust",
    ".sh": "bash",
    ".bash": "bash",
    ".zsh": "zsh",
    ".ps1": "powershell",
    ".rb": "ruby",
    ".php": "php",
    ".kt": "kotlin",
    ".kts": "kotlin",
    ".scala": "scala",
    ".swift": "swift",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".lua": "lua",
    ".r": "r",
    ".sql": "sql",
    ".tf": "hcl",
    ".hcl": "hcl",
    ".proto": "protobuf",
    ".graphql": "graphql",
    ".dockerfile": "dockerfile",
}
"""File extension → language, for source files (with or without a grammar here)."""

_CODE_NAMES: Mapping[str, str] = {
    "dockerfile": "dockerfile",
    "makefile": "make",
    "jenkinsfile": "groovy",
}
_LANGUAGE_ALIASES: Mapping[str, str] = {
    "py": "python",
    "golang": "go",
    "js": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "sh": "bash",
    "shell": "bash",
    "rs": "rust",
}
_SHEBANG = re.compile(r"#![ \t]*(\S+)((?:[ \t]+\S+)*)")
_SHEBANG_LANGUAGES: Mapping[str, str] = {
    "python": "python",
    "bash": "bash",
    "sh": "bash",
    "zsh": "zsh",
    "node": "javascript",
    "ruby": "ruby",
    "perl": "perl",
}


def language_of(document: BaseNode) -> str | None:
    """The programming language of ``document``: its ``language`` metadata, else its file
    name (``file_name`` or ``source``: extension, ``Dockerfile``...), else a ``#!`` line;
    ``None`` if none of them tells."""
    declared = document.metadata.get("language")
    if declared:
        name = str(declared).strip().lower()
        return _LANGUAGE_ALIASES.get(name, name)
    file_name = str(document.metadata.get("file_name") or document.metadata.get("source") or "")
    return language_of_name(file_name) or shebang_language(document.get_content()[:200])


def language_of_name(file_name: str) -> str | None:
    """Language of a source file from its name (``main.go`` → ``go``), or ``None``."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    return CODE_LANGUAGES.get(path.suffix.lower()) or _CODE_NAMES.get(path.name.lower())


def known_language(name: str) -> str | None:
    """``name`` as this module spells it (``golang`` → ``go``) if it is a programming
    language this module knows, else ``None`` (``en`` is a natural language)."""
    key = name.strip().lower()
    key = _LANGUAGE_ALIASES.get(key, key)
    known = {*CODE_LANGUAGES.values(), *_CODE_NAMES.values(), *_GRAMMARS}
    return key if key in known else None


def shebang_language(head: str) -> str | None:
    """Language named by a ``#!`` first line (``#!/usr/bin/env python3`` → ``python``)."""
    match = _SHEBANG.match(head)
    if not match:
        return None
    words = [match.group(1).rsplit("/", 1)[-1], *match.group(2).split()]
    if words[0] == "env":  # #!/usr/bin/env [-S] python3
        words = [w for w in words[1:] if not w.startswith("-") and "=" not in w] or [""]
    interpreter = re.match(r"[a-z]*", words[0])
    return _SHEBANG_LANGUAGES.get(interpreter.group(0) if interpreter else "")


@dataclass(frozen=True)
class _Grammar:
    """How to read one language's tree: which nodes are definitions and what to call them."""

    module: str
    definitions: Mapping[str, str]
    """Definition node type → keyword of its symbol (``function_definition`` → ``def``)."""
    function: str = "language"
    wrappers: Mapping[str, str] = field(default_factory=dict)
    """Node types wrapping a definition (decorators, ``export``) → the wrapped field."""
    bodies: frozenset[str] = frozenset()
    """Node types of a container's body whose children are member definitions."""
    attached: frozenset[str] = frozenset({"comment"})
    """Node types that belong to the definition right below them (comments, attributes)."""
    functions_only: frozenset[str] = frozenset()
    """Definition types that count only when they bind a function or class
    (``const handler = () => ...``, not ``const x = 1``)."""


_JS_DEFINITIONS = {
    "function_declaration": "function",
    "generator_function_declaration": "function*",
    "class_declaration": "class",
    "lexical_declaration": "",
    "variable_declaration": "var",
    "method_definition": "method",
}
_TS_DEFINITIONS = {
    **_JS_DEFINITIONS,
    "abstract_class_declaration": "abstract class",
    "interface_declaration": "interface",
    "type_alias_declaration": "type",
    "enum_declaration": "enum",
}
_JS_FUNCTION_VALUES = frozenset(
    {"arrow_function", "function_expression", "function", "generator_function", "class"}
)

_GRAMMARS: Mapping[str, _Grammar] = {
    "python": _Grammar(
        "tree_sitter_python",
        {"function_definition": "def", "class_definition": "class"},
        wrappers={"decorated_definition": "definition"},
        bodies=frozenset({"block"}),
    ),
    "go": _Grammar(
        "tree_sitter_go",
        {"function_declaration": "func", "method_declaration": "func", "type_declaration": "type"},
    ),
    "javascript": _Grammar(
        "tree_sitter_javascript",
        _JS_DEFINITIONS,
        wrappers={"export_statement": "declaration"},
        bodies=frozenset({"class_body"}),
        functions_only=frozenset({"lexical_declaration", "variable_declaration"}),
    ),
    "typescript": _Grammar(
        "tree_sitter_typescript",
        _TS_DEFINITIONS,
        function="language_typescript",
        wrappers={"export_statement": "declaration"},
        bodies=frozenset({"class_body"}),
        functions_only=frozenset({"lexical_declaration", "variable_declaration"}),
    ),
    "tsx": _Grammar(
        "tree_sitter_typescript",
        _TS_DEFINITIONS,
        function="language_tsx",
        wrappers={"export_statement": "declaration"},
        bodies=frozenset({"class_body"}),
        functions_only=frozenset({"lexical_declaration", "variable_declaration"}),
    ),
    "java": _Grammar(
        "tree_sitter_java",
        {
            "class_declaration": "class",
            "interface_declaration": "interface",
            "enum_declaration": "enum",
            "record_declaration": "record",
            "annotation_type_declaration": "@interface",
            "method_declaration": "method",
            "constructor_declaration": "constructor",
        },
        bodies=frozenset({"class_body", "interface_body"}),
        attached=frozenset({"line_comment", "block_comment"}),
    ),
    "rust": _Grammar(
        "tree_sitter_rust",
        {
            "function_item": "fn",
            "function_signature_item": "fn",
            "struct_item": "struct",
            "enum_item": "enum",
            "union_item": "union",
            "trait_item": "trait",
            "impl_item": "impl",
            "mod_item": "mod",
            "macro_definition": "macro_rules!",
        },
        bodies=frozenset({"declaration_list"}),
        attached=frozenset({"line_comment", "block_comment", "attribute_item"}),
    ),
    "bash": _Grammar("tree_sitter_bash", {"function_definition": "function"}),
}


def grammar_languages() -> list[str]:
    """Languages this chunker has a grammar table for (installed or not)."""
    return sorted(_GRAMMARS)


class _NoGrammarError(Exception):
    """No usable tree-sitter grammar: the message is the fallback reason."""


@functools.cache
def _language(name: str) -> Language:
    """The compiled grammar of ``name``, from its PyPI wheel (no network, ever)."""
    grammar = _GRAMMARS.get(name)
    if grammar is None:
        raise _NoGrammarError(f"no tree-sitter grammar for {name}")
    try:
        from tree_sitter import Language
    except ImportError as exc:
        raise _NoGrammarError(
            "tree-sitter is not installed (pip install 'aof-index[code]')"
        ) from exc
    try:
        module = importlib.import_module(grammar.module)
    except ImportError as exc:
        package = grammar.module.replace("_", "-")
        raise _NoGrammarError(
            f"no tree-sitter grammar for {name} ({package} is not installed; "
            "pip install 'aof-index[code]')"
        ) from exc
    try:
        return Language(getattr(module, grammar.function)())
    except (AttributeError, TypeError, ValueError) as exc:
        raise _NoGrammarError(f"tree-sitter grammar for {name} failed to load: {exc}") from exc


class _Offsets:
    """Byte offsets of the UTF-8 source (what tree-sitter reports) → character offsets."""

    def __init__(self, text: str) -> None:
        self._ascii = text.isascii()
        self._byte_starts: list[int] = []
        if not self._ascii:
            position = 0
            for ch in text:
                self._byte_starts.append(position)
                position += len(ch.encode("utf-8", "surrogatepass"))

    def __call__(self, byte: int) -> int:
        return byte if self._ascii else bisect.bisect_left(self._byte_starts, byte)


class CodeChunker(ChunkerBase):
    """One chunk per definition of source code, found with tree-sitter.

    Nodes carry ``language`` and ``symbol`` metadata (the LLM sees both; the embedder sees
    only the code).  The language comes from ``document.metadata["language"]``, the file
    name (:func:`language_of`) or a ``#!`` line.  Without a grammar, or when the source does
    not parse, code is cut at blank lines and lines, ``chunker_fallback`` says why, and a
    log line names the document.

    Python, Go, JavaScript, TypeScript/TSX, Java, Rust and Bash are parsed when their
    grammar wheels are installed (``pip install 'aof-index[code]'``).
    """

    strategy: ClassVar[str] = "code"
    pack_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Neighbouring definitions are merged into one chunk while together they "
        "hold at most this many tokens (default: half the chunk size; 0: one chunk per "
        "definition).",
    )

    def separators(self) -> Sequence[str]:
        """Blank lines, then lines."""
        return CODE_SEPARATORS

    def pieces(self, text: str, document: BaseNode) -> list[Piece]:
        """Definitions and the code between them; one line-cut piece when unparsed."""
        language = language_of(document)
        base: dict[str, Any] = {"language": language} if language else {}
        if language is None:
            return self._fallback(text, document, base, "no language detected")
        try:
            compiled = _language(language)
        except _NoGrammarError as exc:
            return self._fallback(text, document, base, str(exc))
        from tree_sitter import Parser  # importable: _language imported it

        tree = Parser(compiled).parse(text.encode("utf-8", "surrogatepass"))
        if tree.root_node.has_error:
            return self._fallback(
                text, document, base, f"tree-sitter found syntax errors in the {language} source"
            )
        budget = self._budget(document)
        walker = _Walker(text, _GRAMMARS[language], base, budget, self.window.count)
        pieces = walker.split(tree.root_node, 0, len(text), ())
        limit = budget // 2 if self.pack_tokens is None else min(self.pack_tokens, budget)
        return pack_small_pieces(pieces, text, limit, self.window.count) if limit else pieces

    def _budget(self, document: BaseNode) -> int:
        """Tokens a chunk of this document may hold besides its metadata header."""
        return self.chunk_size - self.window.count(metadata_header(document.metadata))

    @staticmethod
    def _fallback(text: str, document: BaseNode, base: dict[str, Any], reason: str) -> list[Piece]:
        logger.info(
            "code chunker: %s; cutting document %s at blank lines and lines",
            reason,
            document.node_id,
        )
        return [Piece(0, len(text), {**base, "chunker_fallback": reason}, CODE_SEPARATORS)]


def pack_small_pieces(
    pieces: Sequence[Piece], text: str, limit: int, count: Callable[[str], int]
) -> list[Piece]:
    """Merge runs of neighbouring pieces while together they hold at most ``limit`` tokens.

    Three one-line functions make one chunk, not three chunks of a few tokens each; the
    merged piece's ``symbol`` lists its definitions (``def a, def b``).  A piece larger
    than ``limit`` stays on its own.
    """
    out: list[Piece] = []
    for piece in pieces:
        if out:
            last = out[-1]
            if count(text[last.start : piece.end]) <= limit:
                out[-1] = Piece(
                    last.start, piece.end, _merged(last.metadata, piece.metadata), last.separators
                )
                continue
        out.append(piece)
    return out


def _merged(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    symbols = [m["symbol"] for m in (first, second) if m.get("symbol")]
    merged = {**first, **second}
    if symbols:
        merged["symbol"] = ", ".join(dict.fromkeys(symbols))
    return merged


@dataclass
class _Walker:
    """Turns one parse tree into pieces (state shared by the recursive calls)."""

    text: str
    grammar: _Grammar
    base: dict[str, Any]
    budget: int
    count: Callable[[str], int]
    """The window's token counter."""
    offsets: _Offsets = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = _Offsets(self.text)

    def split(self, parent: Node, start: int, end: int, path: tuple[str, ...]) -> list[Piece]:
        """Pieces of ``text[start:end]``, whose definitions are ``parent``'s children.

        The code before, between and after definitions gets the enclosing symbol
        (``path``); a tail with no words (a closing brace) joins the last definition.
        """
        gap_meta = {**self.base, "symbol": " / ".join(path)} if path else dict(self.base)
        pieces: list[Piece] = []
        cursor = start
        for node_start, node_end, node, symbol in self._definitions(parent):
            if node_start > cursor:
                pieces.append(Piece(cursor, node_start, gap_meta, CODE_SEPARATORS))
            pieces.extend(self._definition(node, node_start, node_end, (*path, symbol)))
            cursor = node_end
        if cursor < end:
            tail = self.text[cursor:end]
            if pieces and path and not any(ch.isalnum() for ch in tail):
                last = pieces[-1]
                pieces[-1] = Piece(last.start, end, last.metadata, last.separators)
            else:
                pieces.append(Piece(cursor, end, gap_meta, CODE_SEPARATORS))
        return pieces

    def _definition(self, node: Node, start: int, end: int, path: tuple[str, ...]) -> list[Piece]:
        """One piece, or header + members when a container is larger than the budget."""
        meta = {**self.base, "symbol": " / ".join(path)}
        if self.count(self.text[start:end]) > self.budget:
            body = self._body(node)
            if body is not None and self._definitions(body):
                return self.split(body, start, end, path)
        return [Piece(start, end, meta, CODE_SEPARATORS)]

    def _body(self, node: Node) -> Node | None:
        inner = self._unwrap(node)
        for child in inner.named_children:
            if child.type in self.grammar.bodies:
                return child
        return None

    def _unwrap(self, node: Node) -> Node:
        field_name = self.grammar.wrappers.get(node.type)
        if field_name is None:
            return node
        inner = node.child_by_field_name(field_name)
        return inner if inner is not None else node

    def _definitions(self, parent: Node) -> list[tuple[int, int, Node, str]]:
        """``(start, end, node, symbol)`` of each definition among ``parent``'s children,
        ``start`` moved up over the comments and attributes directly above it."""
        out: list[tuple[int, int, Node, str]] = []
        children = parent.named_children
        for i, child in enumerate(children):
            symbol = self._symbol(self._unwrap(child))
            if symbol is None:
                continue
            start = self.offsets(child.start_byte)
            j = i - 1
            floor = out[-1][1] if out else -1
            while j >= 0 and children[j].type in self.grammar.attached:
                above_end = self.offsets(children[j].end_byte)
                # A blank line between a comment and the definition parts them.
                if above_end <= floor or self.text[above_end - 1 : start].count("\n") > 1:
                    break
                start = self.offsets(children[j].start_byte)
                j -= 1
            out.append((start, self.offsets(child.end_byte), child, symbol))
        return out

    def _symbol(self, node: Node) -> str | None:
        """``def bar``, ``class Foo``, ``func (s *Server) Start``; ``None`` if ``node``
        is not a definition."""
        keyword = self.grammar.definitions.get(node.type)
        if keyword is None:
            return None
        name = node.child_by_field_name("name")
        if node.type in self.grammar.functions_only:
            declarator = next(
                (c for c in node.named_children if c.type == "variable_declarator"), None
            )
            value = declarator.child_by_field_name("value") if declarator else None
            if declarator is None or value is None or value.type not in _JS_FUNCTION_VALUES:
                return None
            name = declarator.child_by_field_name("name")
            keyword = keyword or _text(node.children[0])  # const / let
        elif node.type == "method_declaration" and (
            receiver := node.child_by_field_name("receiver")
        ):
            keyword = f"{keyword} {_text(receiver)}"  # Go: func (s *Server) Start
        elif node.type == "impl_item":
            trait, target = node.child_by_field_name("trait"), node.child_by_field_name("type")
            label = f"{_text(trait)} for {_text(target)}" if trait else _text(target)
            return f"impl {label}".strip()
        elif name is None:  # Go: type Foo struct (the name is inside its type_spec)
            spec = next((c for c in node.named_children if c.child_by_field_name("name")), None)
            name = spec.child_by_field_name("name") if spec else None
        return f"{keyword} {_text(name)}".strip()


def _text(node: Node | None) -> str:
    """The source of ``node`` with white space collapsed (``""`` for ``None``)."""
    if node is None or node.text is None:
        return ""
    return " ".join(node.text.decode("utf-8", "replace").split())
