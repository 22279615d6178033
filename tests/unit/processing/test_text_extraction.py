"""TextExtractor, html_to_text and markdown_to_text on realistic HTML and Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core import Document
from llama_index.core.schema import MetadataMode

from aof_index.processing import HEADER_KEY, TextExtractor, html_to_text, markdown_to_text
from aof_index.processing.extraction import is_html, is_markdown

K8S_DOC = Path("/work/shared/data/k8s-docs/concepts/overview/components.md")

RUNBOOK_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <title>Runbook: Redis failover</title>
  <meta name="author" content="SRE Team">
  <style>body { font-family: sans-serif; }</style>
  <script>window.analytics = {};</script>
</head>
<body>
  <h1>Redis failover</h1>
  <p>When the primary is lost, follow the
     <a href="https://redis.io/docs/management/sentinel/">Sentinel guide</a>
     and check <code>INFO replication</code>.</p>
  <h2>Promote a replica</h2>
  <pre><code class="language-bash">kubectl exec -it redis-1 -- redis-cli
  REPLICAOF NO ONE</code></pre>
  <h3>Ports</h3>
  <table>
    <thead><tr><th>Service</th><th>Port</th></tr></thead>
    <tbody>
      <tr><td>redis</td><td>6379</td></tr>
      <tr><td>sentinel</td><td>26379</td></tr>
    </tbody>
  </table>
  <ul><li>Page the on-call</li><li>Open an incident</li></ul>
</body>
</html>
"""

RUNBOOK_MD = """---
title: Redis failover
tags: [redis, ha]
---

# Redis failover

When the primary is **lost**, follow the [Sentinel guide](https://redis.io/docs/sentinel/)
and check `INFO *replication*`. See also _the_ [wiki][w].

## Promote a replica

```bash
kubectl exec -it redis-1 -- redis-cli
REPLICAOF NO ONE
```

> **Note:** keep the old primary fenced.

| Service | Port |
|---------|------|
| redis   | 6379 |

* Page the on-call
---

[w]: https://wiki.example.com/redis
"""


def html_doc(text: str = RUNBOOK_HTML, **meta: object) -> Document:
    return Document(id_="doc-html", text=text, metadata={"file_name": "runbook.html", **meta})


def md_doc(text: str = RUNBOOK_MD) -> Document:
    return Document(
        id_="doc-md", text=text, metadata={"file_name": "runbook.md", "file_type": "md"}
    )


# --- html_to_text -----------------------------------------------------------------------


def test_html_headings_become_markdown_and_head_is_dropped() -> None:
    text = html_to_text(RUNBOOK_HTML)
    assert text.startswith("# Redis failover")
    assert "\n## Promote a replica\n" in text
    assert "\n### Ports\n" in text
    for gone in ("<", "font-family", "analytics", "Runbook: Redis failover"):
        assert gone not in text


def test_html_table_becomes_pipe_rows() -> None:
    text = html_to_text(RUNBOOK_HTML)
    assert "| Service | Port |\n| --- | --- |\n| redis | 6379 |\n| sentinel | 26379 |" in text


def test_html_lists_become_items() -> None:
    text = html_to_text(RUNBOOK_HTML)
    assert "- Page the on-call\n- Open an incident" in text
    nested = html_to_text("<ol><li>one<ul><li>sub</li></ul></li><li>two</li></ol>")
    assert nested == "1. one\n  - sub\n2. two"


@pytest.mark.parametrize("preserve", [True, False])
def test_html_preserve_links(preserve: bool) -> None:
    text = html_to_text(RUNBOOK_HTML, preserve_links=preserve)
    link = "[Sentinel guide](https://redis.io/docs/management/sentinel/)"
    assert (link in text) is preserve
    assert "Sentinel guide" in text
    assert ("https://redis.io" in text) is preserve


@pytest.mark.parametrize("preserve", [True, False])
def test_html_preserve_code_blocks(preserve: bool) -> None:
    text = html_to_text(RUNBOOK_HTML, preserve_code_blocks=preserve)
    fenced = "```bash\nkubectl exec -it redis-1 -- redis-cli\n  REPLICAOF NO ONE\n```"
    assert (fenced in text) is preserve  # indentation inside the block survives
    assert ("REPLICAOF" in text) is preserve
    # Inline code keeps its text either way; backticks only when preserving.
    assert ("`INFO replication`" in text) is preserve
    assert "INFO replication" in text


def test_html_fragment_without_body() -> None:
    assert html_to_text("<p>Hello <b>world</b></p><p>again</p>") == "Hello world\n\nagain"


# --- markdown_to_text -------------------------------------------------------------------


def test_markdown_markup_removed() -> None:
    text = markdown_to_text(RUNBOOK_MD)
    assert text.startswith("Redis failover\n")
    assert "title:" not in text  # front matter dropped
    assert "**" not in text and "#" not in text and "> " not in text
    assert "When the primary is lost" in text
    assert "INFO *replication*" in text  # code spans keep their characters, lose backticks
    assert "See also the wiki." in text
    assert "Note: keep the old primary fenced." in text
    assert "Service | Port\nredis | 6379" in text
    assert "- Page the on-call" in text
    assert "---" not in text


@pytest.mark.parametrize("preserve", [True, False])
def test_markdown_preserve_links(preserve: bool) -> None:
    text = markdown_to_text(RUNBOOK_MD, preserve_links=preserve)
    assert "[Sentinel guide]" not in text
    assert "Sentinel guide" in text
    assert ("Sentinel guide (https://redis.io/docs/sentinel/)" in text) is preserve
    assert ("w: https://wiki.example.com/redis" in text) is preserve


@pytest.mark.parametrize("preserve", [True, False])
def test_markdown_preserve_code_blocks(preserve: bool) -> None:
    text = markdown_to_text(RUNBOOK_MD, preserve_code_blocks=preserve)
    assert "```" not in text
    assert ("kubectl exec -it redis-1 -- redis-cli\nREPLICAOF NO ONE" in text) is preserve


def test_markdown_real_k8s_doc() -> None:
    source = K8S_DOC.read_text(encoding="utf-8")
    text = markdown_to_text(source)
    assert "reviewers:" not in text and "content_type:" not in text
    assert "<!--" not in text
    assert "\nControl Plane Components\n" in text
    assert "## " not in text
    assert "Creating Highly Available clusters with kubeadm (/docs/" in text


# --- detection --------------------------------------------------------------------------


def test_detection_by_metadata_and_sniffing() -> None:
    assert is_html(Document(text="<p>x</p>", metadata={"file_type": "html"}))
    assert is_html(Document(text="<p>x</p>", metadata={"content_type": "text/html"}))
    assert is_html(Document(text="<html><body>x</body></html>"))
    assert not is_html(Document(text="<p>just a fragment</p>"))
    # A declared non-HTML type wins over the content.
    assert not is_html(Document(text="Example: <body>x</body>", metadata={"file_type": "md"}))
    assert is_markdown(md_doc())
    assert is_markdown(Document(text="# Title\n\nbody"))
    assert not is_markdown(Document(text="plain words"))


# --- TextExtractor ----------------------------------------------------------------------


def test_extractor_converts_html_and_marks_it() -> None:
    original = html_doc(last_modified="2024-01-01")
    before = original.model_dump()
    [out] = TextExtractor()([original])
    assert out is not original
    assert out.id_ == "doc-html"
    assert out.get_content() == html_to_text(RUNBOOK_HTML)
    assert out.metadata == {
        "file_name": "runbook.html",
        "last_modified": "2024-01-01",
        "extracted": "html",
    }
    assert original.model_dump() == before  # input not mutated


def test_extractor_sniffs_html_without_metadata() -> None:
    [out] = TextExtractor()([Document(text=RUNBOOK_HTML)])
    assert out.metadata["extracted"] == "html"
    assert out.get_content().startswith("# Redis failover")


def test_strip_html_off_leaves_html() -> None:
    doc = html_doc()
    [out] = TextExtractor(strip_html=False)([doc])
    assert out.get_content() == RUNBOOK_HTML
    assert "extracted" not in out.metadata


def test_markdown_untouched_by_default_and_stripped_when_asked() -> None:
    doc = md_doc()
    [kept] = TextExtractor()([doc])
    assert kept.get_content() == RUNBOOK_MD
    [stripped] = TextExtractor(strip_markdown=True, preserve_links=False)([doc])
    assert stripped.get_content() == markdown_to_text(RUNBOOK_MD, preserve_links=False)
    assert stripped.metadata["extracted"] == "markdown"
    assert doc.text == RUNBOOK_MD


def test_extractor_flags_reach_the_functions() -> None:
    [out] = TextExtractor(preserve_code_blocks=False, preserve_links=False)([html_doc()])
    assert "REPLICAOF" not in out.get_content() and "https://" not in out.get_content()


def test_plain_text_passes_through() -> None:
    doc = Document(text="just text", metadata={"file_type": "txt"})
    [out] = TextExtractor(strip_markdown=True)([doc])
    assert out is doc


def test_keep_header_hands_over_head_and_front_matter() -> None:
    [html_out] = TextExtractor(keep_header=True)([html_doc()])
    assert "<title>Runbook: Redis failover</title>" in html_out.metadata[HEADER_KEY]
    assert HEADER_KEY in html_out.excluded_embed_metadata_keys
    assert HEADER_KEY in html_out.excluded_llm_metadata_keys
    assert HEADER_KEY not in html_out.get_content(metadata_mode=MetadataMode.EMBED)
    [md_out] = TextExtractor(strip_markdown=True, keep_header=True)([md_doc()])
    assert md_out.metadata[HEADER_KEY].startswith("---\ntitle: Redis failover\n")
    [plain] = TextExtractor()([html_doc()])
    assert HEADER_KEY not in plain.metadata


def test_either_declared_type_counts() -> None:
    # A reader may copy Hugo's ``content_type: concept`` into metadata; file_type still says md.
    doc = Document(text="# T\n\n**b**", metadata={"content_type": "concept", "file_type": "md"})
    assert is_markdown(doc) and not is_html(doc)
    [out] = TextExtractor(strip_markdown=True)([doc])
    assert out.get_content() == "T\n\nb"


def test_deeply_nested_html_does_not_fail() -> None:
    html = "<html><body>" + "<div>" * 3000 + "deep text" + "</div>" * 3000 + "</body></html>"
    assert html_to_text(html) == "deep text"
