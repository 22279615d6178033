"""Text extraction: HTML and Markdown markup turned into clean text before chunking.

:func:`html_to_text` renders HTML as light Markdown (headings as ``#`` lines, ``<pre>``
blocks as fenced code, links as ``[text](href)``, tables as pipe rows), so the Markdown
chunker can still split it by section.  :func:`markdown_to_text` removes Markdown markup
(emphasis, heading marks, link syntax) and leaves plain text.  :class:`TextExtractor` is the
LlamaIndex ``TransformComponent`` that applies them to the right documents
(``spec.processing.extraction``).

Markdown is stripped with a small line-based converter rather than a Markdown parser: the
goal is plain text for embedding, not faithful rendering, and rendering to HTML and
stripping that again would lose the code-block and link choices made here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bs4 import BeautifulSoup, Tag
from bs4.element import NavigableString
from llama_index.core.schema import BaseNode, TransformComponent
from pydantic import Field

from aof_index.processing.flat import join_values

__all__ = [
    "HEADER_KEY",
    "TextExtractor",
    "html_to_text",
    "is_html",
    "is_markdown",
    "markdown_to_text",
]

HEADER_KEY = "source_header"
"""Metadata key where :class:`TextExtractor` (with ``keep_header``) hands the part of the
source that extraction removes (an HTML ``<head>``, a Markdown front matter block) to the
:class:`~aof_index.processing.metadata.MetadataExtractor`, which consumes and removes it."""

_HTML_TYPES = {"html", "htm", "xhtml", "text/html", "application/xhtml+xml"}
_MARKDOWN_TYPES = {"md", "markdown", "mdx", "text/markdown", "text/x-markdown"}
_HTML_SNIFF = re.compile(r"<!doctype\s+html|<html[\s>]|<body[\s>]", re.IGNORECASE)
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_WS = re.compile(r"\s+")
_SKIPPED_TAGS = {"script", "style", "noscript", "template", "head", "title", "meta", "link"}
_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "figure",
    "figcaption", "dl", "dt", "dd", "form", "fieldset", "address", "details", "summary", "hr",
}  # fmt: skip


def _declared_types(node: BaseNode) -> set[str]:
    meta = node.metadata
    values = (meta.get("content_type"), meta.get("file_type"))
    return {str(v).lower().lstrip(".") for v in values if v}


def is_html(node: BaseNode) -> bool:
    """Whether a document is HTML: by ``content_type``/``file_type`` metadata, else by sniffing.

    Either declared type may say HTML (``html``, ``text/html``...); declared types that do
    not win over the content, so a Markdown file that embeds ``<body>`` in an example is
    left alone.
    """
    declared = _declared_types(node)
    if declared:
        return bool(declared & _HTML_TYPES)
    return bool(_HTML_SNIFF.search(node.get_content()[:2048]))


def is_markdown(node: BaseNode) -> bool:
    """Whether a document is Markdown: by ``content_type``/``file_type``, else by a look.

    Without a declared type, front matter, an ATX heading or a code fence marks Markdown.
    """
    declared = _declared_types(node)
    if declared:
        return bool(declared & _MARKDOWN_TYPES)
    text = node.get_content()
    if _HTML_SNIFF.search(text[:2048]):
        return False
    return bool(_FRONT_MATTER.match(text) or re.search(r"^(#{1,6} \S|```|~~~)", text, re.MULTILINE))


# --- HTML -------------------------------------------------------------------------------


class _HtmlRenderer:
    """Walks a BeautifulSoup tree and writes light Markdown."""

    def __init__(self, *, preserve_code_blocks: bool, preserve_links: bool) -> None:
        self.preserve_code_blocks = preserve_code_blocks
        self.preserve_links = preserve_links
        self.code_blocks: list[str] = []

    def render(self, root: Tag) -> str:
        text = self._children(root)
        lines = [line.strip() for line in text.split("\n")]
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip().replace("\x01", " ")
        # Code blocks go in last so their indentation and blank lines survive the clean-up.
        for i, block in enumerate(self.code_blocks):
            text = text.replace(f"\x00{i}\x00", block)
        return text

    def inline(self, el: Tag) -> str:
        return _WS.sub(" ", self._children(el)).strip()

    def _children(self, el: Tag) -> str:
        return "".join(self._node(child) for child in el.children)

    def _node(self, node: Any) -> str:
        if isinstance(node, NavigableString):
            # Comments, doctypes, CDATA and processing instructions are subclasses: skip them.
            return _WS.sub(" ", str(node)) if type(node) is NavigableString else ""
        if not isinstance(node, Tag):
            return ""
        name = node.name.lower()
        if name in _SKIPPED_TAGS:
            return ""
        if re.fullmatch(r"h[1-6]", name):
            title = self.inline(node)
            return f"\n\n{'#' * int(name[1])} {title}\n\n" if title else ""
        if name == "pre":
            return self._pre(node)
        if name == "code":
            code = node.get_text()
            return f"`{code}`" if self.preserve_code_blocks and code.strip() else code
        if name == "a":
            return self._link(node)
        if name == "br":
            return "\n"
        if name == "table":
            return self._table(node)
        if name in {"ul", "ol"}:
            return self._list(node, ordered=name == "ol")
        if name == "li":  # a stray <li> outside a list
            return f"\n- {self.inline(node)}\n"
        if name == "blockquote":
            inner = self.render_block(node)
            return "\n\n" + "\n".join(f"> {line}" for line in inner.split("\n")) + "\n\n"
        if name == "img":
            return str(node.get("alt") or "")
        if name in _BLOCK_TAGS:
            return f"\n\n{self._children(node)}\n\n"
        return self._children(node)

    def render_block(self, el: Tag) -> str:
        text = self._children(el)
        return re.sub(r"\n{2,}", "\n", "\n".join(line.strip() for line in text.split("\n"))).strip()

    def _pre(self, pre: Tag) -> str:
        if not self.preserve_code_blocks:
            return "\n\n"
        code = pre.get_text().strip("\n")
        language = ""
        for el in (pre, pre.find("code")):
            if isinstance(el, Tag):
                for cls in el.get("class") or []:
                    if cls.startswith(("language-", "lang-")):
                        language = cls.split("-", 1)[1]
                        break
            if language:
                break
        self.code_blocks.append(f"```{language}\n{code}\n```")
        return f"\n\n\x00{len(self.code_blocks) - 1}\x00\n\n"

    def _link(self, a: Tag) -> str:
        text = self.inline(a)
        href = str(a.get("href") or "").strip()
        if not self.preserve_links or not text or not href or href.startswith("javascript:"):
            return text
        return f"[{text}]({href})"

    def _list(self, el: Tag, *, ordered: bool) -> str:
        items = []
        for n, li in enumerate(el.find_all("li", recursive=False), start=1):
            # \x01 marks indentation, which line clean-up would strip; render() restores it.
            body = self.render_block(li).replace("\n", "\n\x01\x01")
            items.append(f"{n}. {body}" if ordered else f"- {body}")
        return "\n\n" + "\n".join(items) + "\n\n"

    def _table(self, table: Tag) -> str:
        rows: list[list[str]] = []
        header_rows = 0
        for tr in table.find_all("tr"):
            if tr.find_parent("table") is not table:
                continue  # a row of a nested table
            cells = tr.find_all(["th", "td"], recursive=False)
            rows.append([self.inline(c).replace("|", "\\|") for c in cells])
            if (
                rows
                and len(rows) == header_rows + 1
                and cells
                and all(c.name == "th" for c in cells)
            ):
                header_rows += 1
        if not rows:
            return ""
        width = max(len(r) for r in rows)
        lines = []
        for i, row in enumerate(rows):
            lines.append("| " + " | ".join(row + [""] * (width - len(row))) + " |")
            if i == max(header_rows, 1) - 1:
                lines.append("|" + " --- |" * width)
        return "\n\n" + "\n".join(lines) + "\n\n"


def html_to_text(
    html: str, *, preserve_code_blocks: bool = True, preserve_links: bool = True
) -> str:
    """Convert HTML to text, keeping its structure as light Markdown.

    Headings become ``#`` lines, lists ``-``/``1.`` items, tables pipe rows (the first row
    is the header).  ``<pre>`` blocks become fenced code (with the ``language-*`` class as
    the fence's language) when ``preserve_code_blocks``, and are dropped otherwise; inline
    ``<code>`` keeps its text either way (in backticks when preserving).  Links become
    ``[text](href)`` when ``preserve_links``, their text otherwise.  ``<head>``, scripts and
    styles are dropped.
    """
    soup = BeautifulSoup(html, "html.parser")
    root = soup.body if soup.body is not None else soup
    renderer = _HtmlRenderer(
        preserve_code_blocks=preserve_code_blocks, preserve_links=preserve_links
    )
    try:
        return renderer.render(root)
    except RecursionError:  # pathologically deep nesting: plain text beats failing the run
        return re.sub(r"\n{3,}", "\n\n", root.get_text("\n")).strip()


# --- Markdown ---------------------------------------------------------------------------

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^\s{0,3}#{1,6}(?:\s+|$)(.*?)(?:\s+#+)?\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_=])(\s*\1){2,}\s*$")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_REF_DEFINITION = re.compile(r"^\s{0,3}\[([^\]]+)\]:\s*(\S+)(?:\s+[\"'(].*[\"')])?\s*$")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_AUTOLINK = re.compile(r"<((?:https?|mailto|ftp):[^>\s]+)>")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_EMPHASIS = [
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
    re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?!\*)"),
    re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"),
]
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _strip_inline(line: str, *, preserve_links: bool) -> str:
    spans: list[str] = []

    def stash(match: re.Match[str]) -> str:
        spans.append(match.group(2).strip())
        return f"\x00{len(spans) - 1}\x00"

    line = _INLINE_CODE.sub(stash, line)  # code spans keep their asterisks and underscores
    line = _IMAGE.sub(r"\1", line)
    line = _LINK.sub(r"\1 (\2)" if preserve_links else r"\1", line)
    line = _REF_LINK.sub(r"\1", line)
    line = _AUTOLINK.sub(r"\1", line)
    for pattern in _EMPHASIS:
        previous = None
        while previous != line:  # nested emphasis: ***both***
            previous = line
            line = pattern.sub(lambda m: m.group(m.lastindex or 1), line)
    for i, span in enumerate(spans):
        line = line.replace(f"\x00{i}\x00", span)
    return line


def markdown_to_text(
    md: str, *, preserve_code_blocks: bool = True, preserve_links: bool = True
) -> str:
    """Convert Markdown to plain text.

    Front matter, HTML comments, heading marks, emphasis, blockquote marks, rules and table
    separator rows are removed.  Fenced code blocks keep their contents (without the fences)
    when ``preserve_code_blocks`` and are dropped otherwise.  Links become ``text (url)``
    when ``preserve_links`` and ``text`` otherwise (reference definitions likewise); images
    become their alt text.
    """
    body = md[m.end() :] if (m := _FRONT_MATTER.match(md)) else md
    body = _HTML_COMMENT.sub("", body)
    out: list[str] = []
    fence: str | None = None
    for raw in body.splitlines():
        if fence is not None:
            stripped = raw.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            elif preserve_code_blocks:
                out.append(raw)
            continue
        if opening := _FENCE.match(raw):
            fence = opening.group(1)
            continue
        line = raw.rstrip()
        if _RULE.match(line) or (_TABLE_SEPARATOR.match(line) and "|" in line):
            continue
        if ref := _REF_DEFINITION.match(line):
            if preserve_links:
                out.append(f"{ref.group(1)}: {ref.group(2)}")
            continue
        line = re.sub(r"^\s{0,3}(>\s?)+", "", line)
        if heading := _ATX.match(line):
            line = heading.group(1)
        line = re.sub(r"^(\s*)[*+](\s+)", r"\1-\2", line)  # one bullet style
        if line.strip().startswith("|"):
            line = " | ".join(c.strip() for c in line.strip().strip("|").split("|"))
        out.append(_strip_inline(line, preserve_links=preserve_links))
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --- the transform ----------------------------------------------------------------------


class TextExtractor(TransformComponent):
    """``spec.processing.extraction`` as a LlamaIndex transform over documents.

    HTML documents (see :func:`is_html`) are converted with :func:`html_to_text` when
    ``strip_html``; Markdown documents (see :func:`is_markdown`) with
    :func:`markdown_to_text` when ``strip_markdown``.  Inputs are never mutated: a converted
    document is a copy with the same ``id_`` and metadata plus ``extracted`` (e.g.
    ``["html"]``); other documents are passed through as they are.

    With ``keep_header``, the part of the source that conversion removes (the HTML
    ``<head>``, the Markdown front matter) is kept under :data:`HEADER_KEY`, hidden from
    embedding and the LLM, for a following ``MetadataExtractor`` to read titles, authors,
    dates and tags from; :func:`~aof_index.processing.build_processing` sets it when one
    follows.
    """

    strip_html: bool = Field(default=True, description="Convert HTML documents to text.")
    strip_markdown: bool = Field(default=False, description="Convert Markdown to plain text.")
    preserve_code_blocks: bool = Field(default=True, description="Keep code blocks.")
    preserve_links: bool = Field(default=True, description="Keep link targets.")
    keep_header: bool = Field(
        default=False, description=f"Keep removed front matter / <head> under {HEADER_KEY!r}."
    )

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        """Return the documents with markup converted (new objects where converted)."""
        return [self.extract(node) for node in nodes]

    def extract(self, node: BaseNode) -> BaseNode:
        """Convert one document, or return it unchanged when nothing applies."""
        text = node.get_content()
        options = {
            "preserve_code_blocks": self.preserve_code_blocks,
            "preserve_links": self.preserve_links,
        }
        if self.strip_html and is_html(node):
            kind, converted = "html", html_to_text(text, **options)
            soup_head = BeautifulSoup(text, "html.parser").head if self.keep_header else None
            header = str(soup_head) if soup_head is not None else ""
        elif self.strip_markdown and is_markdown(node):
            kind, converted = "markdown", markdown_to_text(text, **options)
            front = _FRONT_MATTER.match(text) if self.keep_header else None
            header = front.group(0) if front else ""
        else:
            return node
        copy = node.model_copy(deep=True)
        copy.set_content(converted)
        metadata = dict(copy.metadata)
        metadata["extracted"] = join_values(metadata.get("extracted"), [kind])
        if header:
            metadata[HEADER_KEY] = header
            for excluded in (copy.excluded_embed_metadata_keys, copy.excluded_llm_metadata_keys):
                if HEADER_KEY not in excluded:
                    excluded.append(HEADER_KEY)
        copy.metadata = metadata
        return copy
