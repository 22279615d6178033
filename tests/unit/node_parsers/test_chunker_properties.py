"""Property-based tests of the chunkers: whatever the input, chunks fit the model's window,
are exact slices at their offsets, lose no text, have stable unique ids and keep order.

Inputs are random documents assembled from adversarial blocks (no newlines, one giant word,
a giant fenced code block, combining characters and emoji, CRLF, only white space, headings
inside code fences, unclosed fences, front matter, tables) and plain random text.  Each
property runs with a whitespace tokenizer (fast, many examples) and with the real
all-MiniLM-L6-v2 tokenizer (fewer examples: word pieces are where boundary bugs hide).
The bugs these properties found are kept below as explicit regression tests.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core import Document
from llama_index.core.schema import MetadataMode, TextNode

from aof_index.node_parsers.auto import ROUTES, AutoChunker, content_type
from aof_index.node_parsers.base import ChunkerBase
from aof_index.node_parsers.markdown_sections import split_front_matter
from aof_index.node_parsers.strategies import FixedChunker, MarkdownChunker, RecursiveChunker
from aof_index.node_parsers.window import TokenWindow


def _words(text: str) -> Sequence[int]:
    """A whitespace tokenizer: one token per word (a stand-in for a model's tokenizer)."""
    return [hash(w) for w in text.split()]


WORDS = TokenWindow(_words, 40)


@functools.cache
def minilm() -> TokenWindow:
    """The real window of the embedded default (all-MiniLM-L6-v2), loaded once."""
    from aof_index.build.memory import build_memory

    return build_memory().window


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REAL = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- documents -------------------------------------------------------------------------

_LETTERS = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), exclude_characters="#`~|-"
)
_word = st.text(_LETTERS, min_size=1, max_size=10)
_ODD = [
    "e\u0301",  # combining acute accent
    "a\u0308\u0323",  # two combining marks
    "👍🏽",  # emoji with skin tone
    "👩\u200d👩\u200d👧",  # ZWJ sequence
    "🇫🇷",  # flag (regional indicators)
    "漢字",  # CJK: one word piece per character
    "שלום",  # right to left
    "\u200b",  # zero-width space (not white space to Python)
    "\ufeff",  # byte order mark
    "ﬁ",  # ligature (NFKC changes it)
    "İ",  # lower-casing changes its length
    "\x00",
    "\t",
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
]


def _sentence(words: list[str]) -> str:
    return " ".join(words) + "."


_paragraph = st.lists(st.lists(_word, min_size=1, max_size=12), min_size=1, max_size=6).map(
    lambda sentences: " ".join(_sentence(s) for s in sentences)
)
_giant_word = st.one_of(
    st.integers(100, 1500).map(lambda n: "x" * n),
    st.text(st.sampled_from("ab.,-/:_=()[]{}"), min_size=100, max_size=1500),
    st.integers(50, 600).map(lambda n: "漢" * n),
    st.integers(30, 300).map(lambda n: "e\u0301" * n),
    st.integers(20, 300).map(lambda n: "👍🏽" * n),
)
_no_newlines = st.lists(_word, min_size=50, max_size=400).map(" ".join)
_odd_text = st.lists(st.one_of(st.sampled_from(_ODD), _word), min_size=1, max_size=80).map(
    lambda parts: " ".join(parts)
)
_whitespace = st.text(st.sampled_from(" \t\n\r\u00a0\u2003\u3000\x0b\x0c"), max_size=40)
_heading = st.builds(
    lambda level, words: "#" * level + " " + " ".join(words),
    st.integers(1, 7),
    st.lists(_word, min_size=1, max_size=6),
)
_code_line = st.one_of(
    _word,
    _heading,  # a comment that looks like a heading, inside the fence
    st.just("```"),  # a shorter fence inside a longer one
    st.just(""),
    st.lists(_word, max_size=8).map(" ".join),
)
_fence = st.builds(
    lambda marker, lang, lines, closed: (
        marker + lang + "\n" + "\n".join(lines) + ("\n" + marker if closed else "")
    ),
    st.sampled_from(["```", "````", "~~~"]),
    st.sampled_from(["", "python", "yaml", "shell"]),
    st.lists(_code_line, max_size=25),
    st.booleans(),  # unclosed fences run to the end of the document
)
_giant_fence = st.builds(
    lambda n, word: "```\n" + "\n".join(f"{word} = {i}  # {word} {i}" for i in range(n)) + "\n```",
    st.integers(60, 300),
    _word,
)
_table = st.builds(
    lambda rows: "| a | b |\n|---|---|\n" + "\n".join(f"| {x} | {y} |" for x, y in rows),
    st.lists(st.tuples(_word, _word), min_size=1, max_size=60),
)
_random = st.text(max_size=300)
_long_heading = st.lists(_word, min_size=20, max_size=400).map(lambda w: "## " + " ".join(w))
_block = st.one_of(
    _long_heading,
    _paragraph,
    _paragraph,
    _heading,
    _fence,
    _table,
    _giant_word,
    _no_newlines,
    _odd_text,
    _whitespace,
    _random,
    _giant_fence,
)
_front_matter = st.builds(
    lambda title, extra: f"---\ntitle: {title}\nweight: 3\n{extra}---\n",
    st.sampled_from(["Pods", "'Pod: lifecycle'", "Ünïcode 👍"]),
    st.sampled_from(["", "tags: [a, b]\n", "description: >\n  folded text\n"]),
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A random document built from adversarial blocks."""
    blocks = draw(st.lists(_block, max_size=8))
    separators = draw(
        st.lists(
            st.sampled_from(["\n\n", "\n", "\r\n", "\r\n\r\n", " ", ""]),
            min_size=len(blocks),
            max_size=len(blocks),
        )
    )
    text = "".join(b + s for b, s in zip(blocks, separators, strict=True))
    if draw(st.booleans()):
        text = draw(_front_matter) + text
    if draw(st.integers(0, 5)) == 0:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return text


_metadata = st.fixed_dictionaries(
    {},
    optional={
        "title": st.one_of(st.none(), st.sampled_from(["", "Pods", "Débogage 👍", "a b c"])),
        "file_name": st.sampled_from(
            ["notes.md", "notes.txt", "script.py", "main.go", "data.json", "conf.yaml", "README"]
        ),
        "heading": st.sampled_from(["", "Intro"]),
    },
)

# --- chunkers --------------------------------------------------------------------------

_separators = st.lists(
    st.sampled_from(["\n\n", "\n", ". ", " ", "|", "", "\n## ", "```"]), max_size=5
)


def _make(cls: type[ChunkerBase], window: TokenWindow, **fields: Any) -> ChunkerBase:
    """Construct through ``ChunkerBase.__init__`` (the window first)."""
    return cls(window, **fields)


def chunkers(window: TokenWindow) -> st.SearchStrategy[ChunkerBase]:
    """Every chunker, with random sizes (some above the window) and overlaps."""
    size = st.one_of(st.none(), st.integers(1, window.max_tokens + 50))
    overlap = st.integers(0, 40)
    return st.one_of(
        st.builds(
            lambda s, o: _make(FixedChunker, window, chunk_size=s, chunk_overlap=o), size, overlap
        ),
        st.builds(
            lambda s, o, seps: _make(
                RecursiveChunker, window, chunk_size=s, chunk_overlap=o, separator_list=seps
            ),
            size,
            overlap,
            _separators,
        ),
        st.builds(
            lambda s, h, c: _make(
                MarkdownChunker, window, chunk_size=s, respect_headers=h, respect_code_blocks=c
            ),
            size,
            st.booleans(),
            st.booleans(),
        ),
        st.builds(
            lambda s, o: _make(AutoChunker, window, chunk_size=s, chunk_overlap=o), size, overlap
        ),
    )


# --- the properties --------------------------------------------------------------------


def _chunk(chunker: ChunkerBase, text: str, metadata: dict[str, Any]) -> list[TextNode]:
    """Chunk through LlamaIndex's entry point (``get_nodes_from_documents``)."""
    document = Document(id_="doc-1", text=text, metadata=dict(metadata))
    nodes = chunker.get_nodes_from_documents([document])
    assert all(isinstance(n, TextNode) for n in nodes)
    return [n for n in nodes if isinstance(n, TextNode)]


def _body_start(chunker: ChunkerBase, text: str, metadata: dict[str, Any]) -> int:
    """Where the indexed text starts: after the front matter for Markdown, else 0."""
    cls: type[ChunkerBase] = type(chunker)
    if isinstance(chunker, AutoChunker):
        kind = content_type(Document(text=text, metadata=metadata))
        cls = ROUTES.get(kind, ROUTES["text"])
    return split_front_matter(text)[1] if issubclass(cls, MarkdownChunker) else 0


def check_properties(
    chunker: ChunkerBase, text: str, metadata: dict[str, Any], window: TokenWindow
) -> list[TextNode]:
    """Assert properties (a) to (e) of the module docstring; return the nodes."""
    nodes = _chunk(chunker, text, metadata)
    spans = []
    for node in nodes:
        start, end = node.start_char_idx, node.end_char_idx
        assert start is not None and end is not None
        # (b) every chunk is the exact slice of the document at its offsets
        assert text[start:end] == node.get_content(metadata_mode=MetadataMode.NONE)
        assert node.get_content().strip()
        # (a) what the embedder sees, metadata header included, fits the window
        embedded = node.get_content(metadata_mode=MetadataMode.EMBED)
        assert window.count(embedded) <= window.max_tokens, (start, end, embedded[:200])
        spans.append((start, end))
    # (e) document order
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s1 <= s2 and e1 < e2, spans
    # (c) no text lost: every non-space character (after any front matter) is in a chunk
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\x01" * (end - start)
    body = _body_start(chunker, text, metadata)
    assert all(start >= body for start, _ in spans), "front matter indexed as text"
    lost = [i for i in range(body, len(text)) if not covered[i] and not text[i].isspace()]
    assert not lost, f"characters lost at {lost[:10]}: {[text[i] for i in lost[:10]]}"
    # (d) ids are unique and the same on a second run
    ids = [n.node_id for n in nodes]
    assert len(set(ids)) == len(ids)
    assert [n.node_id for n in _chunk(chunker, text, metadata)] == ids
    return nodes


@FAST
@given(chunker=chunkers(WORDS), text=documents(), metadata=_metadata)
def test_properties_hold_with_a_whitespace_tokenizer(
    chunker: ChunkerBase, text: str, metadata: dict[str, Any]
) -> None:
    check_properties(chunker, text, metadata, WORDS)


@FAST
@given(chunker=chunkers(WORDS), text=st.text(max_size=2000), metadata=_metadata)
def test_properties_hold_on_arbitrary_text(
    chunker: ChunkerBase, text: str, metadata: dict[str, Any]
) -> None:
    check_properties(chunker, text, metadata, WORDS)


@pytest.mark.slow
@REAL
@given(data=st.data(), text=documents(), metadata=_metadata)
def test_properties_hold_with_the_minilm_tokenizer(
    data: st.DataObject, text: str, metadata: dict[str, Any]
) -> None:
    window = minilm()
    chunker = data.draw(chunkers(window), label="chunker")
    check_properties(chunker, text, metadata, window)


@pytest.mark.slow
@REAL
@given(data=st.data(), text=st.text(max_size=3000), metadata=_metadata)
def test_properties_hold_with_the_minilm_tokenizer_on_arbitrary_text(
    data: st.DataObject, text: str, metadata: dict[str, Any]
) -> None:
    window = minilm()
    chunker = data.draw(chunkers(window), label="chunker")
    check_properties(chunker, text, metadata, window)


# --- every adversarial input, every chunker, both tokenizers -----------------------------

_FENCED_CODE = "```python\n" + "\n".join(
    f"value_{i} = compute({i})  # step {i}" for i in range(400)
)
ADVERSARIAL = {
    "empty": "",
    "only whitespace": " \t\n\r\n\u00a0\u3000\n\n   ",
    "no newlines": " ".join(f"word{i}" for i in range(3000)),
    "one giant word": "x" * 20000,
    "giant punctuation run": "a.b-c/d:" * 2000,
    "giant CJK run": "漢字仮名" * 1500,
    "giant fenced code block": _FENCED_CODE + "\n```\n",
    "unclosed fence": "# Title\n\ntext\n\n" + _FENCED_CODE + "\n# not a heading\n" * 50,
    "headings inside code fences": (
        "# Real\n\n~~~\n# fake\n## fake too\n~~~\n\n## Also real\n\nend\n"
    ),
    "combining characters and emoji": "e\u0301a\u0308\u0323 👩\u200d👩\u200d👧 🇫🇷 👍🏽 " * 800,
    "CRLF": "# Title\r\n\r\n" + "line of text here\r\n" * 600 + "```\r\ncode\r\n```\r\n",
    "front matter": "---\ntitle: Pods\ntags: [a, b]\n---\n# Pods\n\n" + "Pods run. " * 400,
    "table": "| name | value |\n|---|---|\n" + "".join(f"| n{i} | {i} |\n" for i in range(800)),
    "long heading": "# " + " ".join(f"h{i}" for i in range(600)) + "\n\nbody\n",
    "long front matter title": "---\ntitle: " + "t " * 600 + "\n---\nbody text\n",
    "repeated text": ("same line again\n" * 200 + "\n") * 6,
    "control characters": "a\x00b\x01c\x7f " * 500 + "\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029 end",
}
_NAMES = [None, "doc.md", "doc.txt", "doc.py", "doc.json", "doc.yaml"]


def _all_chunkers(window: TokenWindow) -> list[ChunkerBase]:
    return [
        _make(FixedChunker, window, chunk_overlap=8),
        _make(RecursiveChunker, window, chunk_size=window.max_tokens + 100, chunk_overlap=20),
        _make(RecursiveChunker, window, separator_list=["", "|", "\n## "]),
        _make(MarkdownChunker, window),
        _make(MarkdownChunker, window, respect_headers=False, respect_code_blocks=False),
        _make(AutoChunker, window, chunk_overlap=32),
    ]


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_with_a_whitespace_tokenizer(name: str) -> None:
    for chunker, file_name in itertools.product(_all_chunkers(WORDS), _NAMES):
        metadata = {"file_name": file_name} if file_name else {}
        check_properties(chunker, ADVERSARIAL[name], metadata, WORDS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_with_the_minilm_tokenizer(name: str) -> None:
    window = minilm()
    for chunker, file_name in itertools.product(_all_chunkers(window), _NAMES):
        metadata = {"file_name": file_name} if file_name else {}
        check_properties(chunker, ADVERSARIAL[name], metadata, window)


# --- the bugs these properties found, kept as explicit examples --------------------------


def test_offsets_stay_exact_when_a_chunk_repeats_earlier_text() -> None:
    """LlamaIndex re-located nodes with ``str.find`` after ``get_nodes_from_documents``:
    the second ``a b`` got the offsets of the first one."""
    text = "x x x x x x a b a b"
    nodes = _chunk(_make(FixedChunker, WORDS, chunk_size=8), text, {})
    assert [(n.start_char_idx, n.end_char_idx) for n in nodes] == [(0, 15), (16, 19)]


def test_empty_metadata_values_do_not_reach_the_embedder() -> None:
    """``title: None`` was printed in EMBED mode but not counted: 41 tokens in a 40 window."""
    text = " ".join(["w"] * 40)
    for title in ("", None):
        document = Document(id_="d", text=text, metadata={"title": title})
        nodes = _make(FixedChunker, WORDS).get_nodes_from_documents([document])
        embedded = nodes[0].get_content(metadata_mode=MetadataMode.EMBED)
        assert embedded == text
        assert all(
            WORDS.count(n.get_content(metadata_mode=MetadataMode.EMBED)) <= 40 for n in nodes
        )


def test_an_empty_separator_does_not_hang() -> None:
    """``separators: [""]`` (allowed by the CRD) looped forever: "" is found at every
    position without advancing."""
    nodes = _make(RecursiveChunker, WORDS, chunk_size=8, separator_list=[""]).chunk(
        Document(id_="d", text=" ".join(["w"] * 39))
    )
    assert [WORDS.count(n.text) for n in nodes] == [8, 8, 8, 8, 7]


def test_a_long_markdown_heading_shortens_the_metadata_not_the_text() -> None:
    """A heading (or front-matter title) longer than the window raised ValueError for the
    whole document; now the metadata copy is cut and ends in "…"."""
    heading = "# " + " ".join(f"h{i}" for i in range(100))
    text = heading + "\n\nbody text\n"
    nodes = _make(MarkdownChunker, WORDS).chunk(Document(id_="d", text=text))
    assert nodes[0].metadata["heading"].endswith("…")
    assert WORDS.count("heading: " + nodes[0].metadata["heading"]) <= 10
    assert "".join(n.text for n in nodes).count("h99") == 1  # the text is all there
    front = "---\ntitle: " + "t " * 100 + "\n---\nbody\n"
    (node,) = _make(MarkdownChunker, WORDS).chunk(Document(id_="f", text=front))
    assert node.metadata["title"].endswith("…") and node.text == "body"


def test_front_matter_with_crlf_or_a_byte_order_mark_is_metadata_not_text() -> None:
    """Front matter written with CRLF line ends (or after a BOM) was indexed as text and
    its title was lost."""
    for text in (
        "---\r\ntitle: Pods\r\nweight: 3\r\n---\r\n# Pods\r\n\r\nPods run.\r\n",
        "\ufeff---\ntitle: Pods\nweight: 3\n---\n# Pods\n\nPods run.\n",
    ):
        nodes = _make(MarkdownChunker, WORDS).chunk(Document(id_="d", text=text))
        assert [n.text for n in nodes] == [
            "# Pods\r\n\r\nPods run." if "\r" in text else "# Pods\n\nPods run."
        ]
        assert nodes[0].metadata["title"] == "Pods"


@pytest.mark.slow
def test_overlap_never_reaches_back_past_a_chunk_recut_to_fit() -> None:
    """With word pieces, an overlap starting inside ``0DF0002`` counts more tokens than the
    document's spans say; the re-cut chunk then came after the next chunk's start:
    ``(379, 835), (836, 887), (832, 1339)``."""
    window = minilm()
    text = "\n```\r\n" + "".join(f"0DF0002 = {i}  # 0DF0002 {i}\r\n" for i in range(60))
    text += "```\r\n\r\n"
    nodes = check_properties(_make(FixedChunker, window, chunk_overlap=27), text, {}, window)
    spans = [(n.start_char_idx, n.end_char_idx) for n in nodes]
    assert spans == sorted(spans) and len(spans) == 4
