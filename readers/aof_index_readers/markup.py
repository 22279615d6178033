"""HTML to Markdown-ish text, and the Markdown building blocks the readers share.

:class:`HtmlToMarkdown` walks a BeautifulSoup tree and writes what a reader of the page sees,
in Markdown: ``#`` headings, paragraphs, nested ``-``/``1.`` lists, fenced code blocks (with
the language from a ``language-x`` class), ``>`` quotes, pipe tables (the header row from
``<th>`` cells), ``[text](url)`` links, ``**bold**``, ``*italic*`` and ``code``. Scripts,
styles, images and form controls are dropped. Malformed markup gives its best-effort text,
never an exception; nesting deeper than ``max_depth`` is flattened to its plain text rather
than recursed into. Subclasses add elements of their own dialect by overriding
:meth:`HtmlToMarkdown.block` and :meth:`HtmlToMarkdown.inline` (the Confluence reader does
for its ``ac:``/``ri:`` storage-format elements).

The helpers (:func:`fenced`, :func:`pipe_table`, :func:`list_item`, :func:`quoted`,
:func:`emphasis`, :func:`code_span`, :func:`link`) build the same Markdown from structured
content (Notion blocks) so every reader writes it alike.

Example:
    >>> HtmlToMarkdown().convert("<h2>Setup</h2><p>Run <code>make</code>.</p>")
    '## Setup\\n\\nRun `make`.'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from bs4 import BeautifulSoup, Tag
    from bs4.element import PageElement

__all__ = [
    "HtmlToMarkdown",
    "code_span",
    "emphasis",
    "fenced",
    "join_blocks",
    "link",
    "list_item",
    "parse_html",
    "pipe_table",
    "quoted",
]

_SPACE = re.compile(r"[ \t\r\n\f\v\u00a0]+")
_BACKTICKS = re.compile(r"`+")
_LINK_SCHEMES = ("http://", "https://", "mailto:")


# --- Markdown building blocks -------------------------------------------------------------


def fenced(code: str, language: str = "") -> str:
    """``code`` as a fenced block, the fence longer than any backtick run inside it."""
    runs = [len(run) for run in _BACKTICKS.findall(code)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{language.strip()}\n{code.strip(chr(10))}\n{fence}"


def code_span(text: str) -> str:
    """``text`` as inline code (double backticks when it holds one)."""
    if not text:
        return ""
    if "`" in text:
        return f"`` {text} ``"
    return f"`{text}`"


def emphasis(text: str, marker: str) -> str:
    """``text`` wrapped in ``marker`` (``**``, ``*``, ``~~``), surrounding spaces kept outside.

    ``emphasis("bold ", "**")`` is ``"**bold** "``: Markdown does not close a marker that
    follows a space.
    """
    return _surround(text, marker, marker)


def link(text: str, url: str | None) -> str:
    """``[text](url)`` for web and mail links; just the text (or the URL) otherwise."""
    if not url or not url.startswith(_LINK_SCHEMES):
        return text
    if not text.strip() or text.strip() == url:
        return url
    return _surround(text, "[", f"]({url})")


def _surround(text: str, left: str, right: str) -> str:
    """``left + text + right`` with ``text``'s surrounding spaces moved outside."""
    core = text.strip()
    if not core:
        return text
    start = text.index(core[0])
    return f"{text[:start]}{left}{core}{right}{text[start + len(core) :]}"


def list_item(marker: str, body: str) -> str:
    """A list item: ``marker`` before the first line, later lines indented to match it."""
    pad = " " * len(marker)
    lines = body.split("\n")
    rest = [f"{pad}{line}" if line.strip() else "" for line in lines[1:]]
    return "\n".join([f"{marker}{lines[0]}", *rest])


def quoted(body: str) -> str:
    """``body`` as a block quote (``> `` before every line)."""
    return "\n".join(f"> {line}" if line.strip() else ">" for line in body.split("\n"))


def pipe_table(rows: Sequence[Sequence[str]], *, header: bool) -> str:
    """A Markdown pipe table; without a ``header`` row the header cells are left empty.

    Cells are put on one line and their ``|`` escaped; short rows are padded.
    """
    cleaned = [[_cell(cell) for cell in row] for row in rows]
    width = max((len(row) for row in cleaned), default=0)
    if width == 0:
        return ""
    padded = [row + [""] * (width - len(row)) for row in cleaned]
    head = padded.pop(0) if header else [""] * width
    lines = [_row(head), _row(["---"] * width), *(_row(row) for row in padded)]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return _SPACE.sub(" ", text).strip().replace("|", "\\|")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def join_blocks(blocks: Iterable[str], separator: str = "\n\n") -> str:
    """Non-empty ``blocks`` joined by ``separator``."""
    return separator.join(block for block in blocks if block.strip())


# --- HTML ---------------------------------------------------------------------------------


def _tags(names: str) -> frozenset[str]:
    return frozenset(names.split())


def parse_html(markup: str) -> BeautifulSoup:
    """``markup`` parsed leniently by Python's ``html.parser`` (tag names lower-cased).

    Raises:
        ImportError: beautifulsoup4 is not installed.
    """
    try:
        from bs4 import BeautifulSoup
    except ImportError as exc:  # pragma: no cover - extra missing
        raise ImportError(
            "reading HTML needs beautifulsoup4: pip install 'aof-index[files]'"
        ) from exc
    return BeautifulSoup(markup, "html.parser")


class HtmlToMarkdown:
    """Convert HTML (a string or a parsed tree) to Markdown-ish text.

    Args:
        max_depth: elements nested deeper than this are flattened to their plain text.

    Example:
        >>> HtmlToMarkdown().convert("<ul><li>a<ul><li>b</li></ul></li></ul>")
        '- a\\n  - b'
    """

    BLOCK_TAGS: ClassVar[frozenset[str]] = _tags(
        "address article aside blockquote body center dd details dialog div dl dt fieldset "
        "figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr html li main nav ol "
        "p pre section summary table tbody td tfoot th thead tr ul"
    )
    """Elements that start a new block (everything else flows inline)."""
    DROP_TAGS: ClassVar[frozenset[str]] = _tags(
        "audio button canvas embed head iframe img input link meta noscript object option "
        "picture script select source style svg template textarea title video"
    )
    """Elements whose content is not text a reader sees."""

    def __init__(self, *, max_depth: int = 100) -> None:
        self.max_depth = max_depth

    def convert(self, markup: str | Tag) -> str:
        """The Markdown text of ``markup``."""
        tree = parse_html(markup) if isinstance(markup, str) else markup
        return join_blocks(self.blocks(tree, 0)).strip()

    # --- the walk ---------------------------------------------------------------------

    def blocks(self, node: Tag, depth: int) -> list[str]:
        """The blocks of ``node``'s children: runs of inline content become paragraphs."""
        if depth > self.max_depth:
            return [self.plain(node)]
        return self.blocks_of(node.children, depth)

    def blocks_of(self, nodes: Iterable[PageElement], depth: int) -> list[str]:
        """The blocks of a run of sibling ``nodes`` (see :meth:`blocks`)."""
        out: list[str] = []
        line: list[str] = []
        for child in nodes:
            if self.is_block(child):
                out.append(self.paragraph("".join(line)))
                line = []
                out.extend(self.block(child, depth + 1))  # type: ignore[arg-type]
            else:
                line.append(self.inline(child, depth + 1))
        out.append(self.paragraph("".join(line)))
        return [block for block in out if block.strip()]

    def is_block(self, node: PageElement) -> bool:
        """Whether ``node`` is a block: a block tag, or an inline tag holding blocks."""
        from bs4 import Tag

        if not isinstance(node, Tag) or self.tag_name(node) in self.DROP_TAGS:
            return False
        name = self.tag_name(node)
        if name in self.BLOCK_TAGS:
            return True
        return any(
            isinstance(child, Tag) and self.tag_name(child) in self.BLOCK_TAGS
            for child in node.children
        )

    def block(self, tag: Tag, depth: int) -> list[str]:
        """The blocks of one block element (override to add elements)."""
        name = self.tag_name(tag)
        if len(name) == 2 and name[0] == "h" and name[1] in "123456":
            return self.heading_blocks(tag, int(name[1]), depth)
        if name in {"ul", "ol"}:
            return [self.list_block(tag, depth)]
        if name == "pre":
            return [fenced(tag.get_text(), self.code_language(tag))]
        if name == "blockquote":
            return [quoted(join_blocks(self.blocks(tag, depth)))]
        if name == "table":
            return [self.table(tag, depth)]
        if name == "hr":
            return ["---"]
        return self.blocks(tag, depth)

    def inline(self, node: PageElement, depth: int) -> str:
        """The inline Markdown of one node (override to add elements)."""
        from bs4.element import CData, NavigableString, PreformattedString, Tag

        if isinstance(node, CData):
            return str(node)
        if isinstance(node, PreformattedString):  # comments, doctypes, declarations
            return ""
        if isinstance(node, NavigableString):
            return _SPACE.sub(" ", str(node))
        if not isinstance(node, Tag):
            return ""
        return self.inline_tag(node, depth)

    def inline_tag(self, tag: Tag, depth: int) -> str:
        """The inline Markdown of a tag (bold, italic, code, links, line breaks)."""
        name = self.tag_name(tag)
        if name in self.DROP_TAGS:
            return ""
        if name == "br":
            return "\n"
        if name in {"code", "kbd", "samp", "tt"}:
            return code_span(_SPACE.sub(" ", tag.get_text()))
        if name == "time" and not tag.get_text().strip():
            return str(tag.get("datetime") or "")
        text = self.inline_text(tag, depth)
        if name in {"strong", "b"}:
            return emphasis(text, "**")
        if name in {"em", "i"}:
            return emphasis(text, "*")
        if name in {"s", "del", "strike"}:
            return emphasis(text, "~~")
        if name == "a":
            return link(text, str(tag.get("href") or ""))
        return text

    def inline_text(self, tag: Tag, depth: int) -> str:
        """The inline Markdown of ``tag``'s children, blocks inside it run together."""
        if depth > self.max_depth:
            return self.plain(tag)
        parts = []
        for child in tag.children:
            if self.is_block(child):
                parts.append(" " + " ".join(self.block(child, depth + 1)) + " ")  # type: ignore[arg-type]
            else:
                parts.append(self.inline(child, depth + 1))
        return "".join(parts)

    # --- elements -----------------------------------------------------------------------

    @staticmethod
    def paragraph(text: str) -> str:
        """Inline text as a paragraph: spaces collapsed, each line trimmed, blank lines gone."""
        lines = (_SPACE.sub(" ", line).strip() for line in text.split("\n"))
        return "\n".join(line for line in lines if line)

    def heading_blocks(self, tag: Tag, level: int, depth: int) -> list[str]:
        """A heading from the inline content that starts ``tag``; blocks after it follow it.

        An unclosed heading (``<h2>Title<p>text``) swallows what follows it in the parse
        tree; that content is kept as blocks of its own rather than run into the title.
        """
        children = list(tag.children)
        split = next((i for i, c in enumerate(children) if self.is_block(c)), len(children))
        title = "".join(self.inline(child, depth + 1) for child in children[:split])
        return [self.heading(level, title), *self.blocks_of(children[split:], depth)]

    @staticmethod
    def heading(level: int, text: str) -> str:
        """``## text`` (one line)."""
        title = _SPACE.sub(" ", text).strip()
        return f"{'#' * level} {title}" if title else ""

    def list_block(self, tag: Tag, depth: int) -> str:
        """A ``ul``/``ol``: one item per ``li``, nested lists indented under their item."""
        from bs4 import Tag

        ordered = self.tag_name(tag) == "ol"
        start = _int(tag.get("start"), 1)
        items: list[str] = []
        for child in tag.children:
            if isinstance(child, Tag) and self.tag_name(child) == "li":
                body = join_blocks(self.blocks(child, depth + 1), "\n")
            else:  # stray content between items
                body = self.paragraph(self.inline(child, depth + 1))
            if body.strip():
                marker = f"{start + len(items)}. " if ordered else "- "
                items.append(list_item(marker, body))
        return "\n".join(items)

    def table(self, tag: Tag, depth: int) -> str:
        """A pipe table; its first row is the header when it is made of ``th`` cells."""
        rows: list[list[str]] = []
        header = False
        for index, row in enumerate(self.table_rows(tag)):
            cells = [c for c in row.children if self.tag_name(c) in {"td", "th"}]
            if index == 0:
                header = bool(cells) and all(self.tag_name(c) == "th" for c in cells)
            rows.append([" ".join(self.blocks(cell, depth + 1)) for cell in cells])  # type: ignore[arg-type]
        return pipe_table(rows, header=header)

    def table_rows(self, table: Tag) -> list[Tag]:
        """The ``tr`` rows of ``table``, not those of tables nested in its cells."""
        return [
            row
            for row in table.find_all("tr")
            if row.find_parent(lambda t: self.tag_name(t) == "table") is table
        ]

    @staticmethod
    def code_language(tag: Tag) -> str:
        """The language named by a ``language-x``/``lang-x`` class on ``pre`` or its ``code``."""
        code = tag.find("code")
        for element in (tag, code):
            classes = element.get("class") if element is not None else None
            for name in classes or ():
                for prefix in ("language-", "lang-"):
                    if str(name).startswith(prefix):
                        return str(name)[len(prefix) :]
        return ""

    @staticmethod
    def plain(node: Tag) -> str:
        """``node``'s text without structure (walked iteratively: safe at any depth)."""
        return " ".join(node.stripped_strings)

    @staticmethod
    def tag_name(node: PageElement) -> str:
        """The element's lower-cased name (``""`` for text)."""
        return str(getattr(node, "name", None) or "").lower()


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default
