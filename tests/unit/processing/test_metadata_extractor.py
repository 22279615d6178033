"""MetadataExtractor: sources, precedence, no-overwrite, dates, summaries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.base.llms.types import CompletionResponse
from llama_index.core.llms import MockLLM
from pydantic import PrivateAttr

from aof_index.errors import AofIndexError, LLMError
from aof_index.processing import (
    HEADER_KEY,
    MetadataExtractor,
    TextExtractor,
    normalize_date,
    split_front_matter,
)

K8S_DOC = Path("/work/shared/data/k8s-docs/concepts/overview/kubernetes-api.md")

BLOG_HTML = """<!DOCTYPE html>
<html><head>
  <title>Scaling etcd | Ops Blog</title>
  <meta name="author" content="Dana Kim">
  <meta name="keywords" content="etcd, kubernetes , storage">
  <meta property="article:published_time" content="2024-02-29T08:30:00Z">
</head><body><article><p>etcd stores all cluster state.</p></article></body></html>
"""

FRONT_MATTER_MD = """---
title: Node Pressure Eviction
authors: [Ana, Ben]
date: 2023-07-04
tags: [kubelet, eviction]
keywords: memory, eviction
categories: operations
---

# A different heading

Body text.

```bash
# not a heading
```
"""


def run(extractor: MetadataExtractor, doc: Document) -> dict[str, Any]:
    [out] = extractor([doc])
    return dict(out.metadata)


def test_front_matter_wins() -> None:
    meta = run(
        MetadataExtractor(extract=["title", "author", "date", "tags"]),
        Document(text=FRONT_MATTER_MD, metadata={"file_name": "eviction.md"}),
    )
    assert meta["title"] == "Node Pressure Eviction"
    assert meta["author"] == "Ana, Ben"
    assert meta["date"] == "2023-07-04"
    assert meta["tags"] == "kubelet, eviction, memory, operations"


def test_real_k8s_doc_title_from_front_matter() -> None:
    doc = Document(
        text=K8S_DOC.read_text(encoding="utf-8"),
        metadata={"file_name": K8S_DOC.name, "last_modified": "2025-01-02T03:04:05+00:00"},
    )
    meta = run(MetadataExtractor(extract=["title", "date", "tags"]), doc)
    assert meta["title"] == "The Kubernetes API"
    assert meta["date"] == "2025-01-02T03:04:05+00:00"  # no date in front matter
    assert "tags" not in meta  # nothing to find: key not set


def test_title_falls_back_to_heading_then_html_title_then_file_name() -> None:
    extractor = MetadataExtractor(extract=["title"])
    heading = "Intro\n\n```\n# comment in code\n```\n\n# Real Heading\n"
    assert run(extractor, Document(text=heading))["title"] == "Real Heading"
    html = Document(text=BLOG_HTML, metadata={"file_type": "html"})
    assert run(extractor, html)["title"] == "Scaling etcd | Ops Blog"
    named = Document(text="no title here", metadata={"file_name": "notes.txt"})
    assert run(extractor, named)["title"] == "notes.txt"
    sourced = Document(text="x", metadata={"source": "/srv/docs/guide.rst"})
    assert run(extractor, sourced)["title"] == "guide.rst"


def test_html_meta_tags() -> None:
    meta = run(
        MetadataExtractor(extract=["author", "date", "tags"]),
        Document(text=BLOG_HTML, metadata={"file_type": "html"}),
    )
    assert meta["author"] == "Dana Kim"
    assert meta["date"] == "2024-02-29T08:30:00+00:00"
    assert meta["tags"] == "etcd, kubernetes, storage"


def test_html_meta_name_date_beats_published_time() -> None:
    html = BLOG_HTML.replace("</head>", '<meta name="date" content="March 3, 2024"></head>')
    meta = run(MetadataExtractor(extract=["date"]), Document(text=html))
    assert meta["date"] == "2024-03-03"


def test_metadata_survives_html_extraction_through_the_header() -> None:
    doc = Document(id_="blog", text=BLOG_HTML, metadata={"file_type": "html"})
    [converted] = TextExtractor(keep_header=True)([doc])
    [out] = MetadataExtractor(extract=["title", "author", "tags"])([converted])
    assert out.metadata["title"] == "Scaling etcd | Ops Blog"
    assert out.metadata["author"] == "Dana Kim"
    assert HEADER_KEY not in out.metadata  # consumed
    assert HEADER_KEY not in out.excluded_embed_metadata_keys
    assert HEADER_KEY in converted.metadata  # the input is untouched


def test_metadata_survives_markdown_stripping_through_the_header() -> None:
    doc = Document(text=FRONT_MATTER_MD, metadata={"file_type": "md"})
    [converted] = TextExtractor(strip_markdown=True, keep_header=True)([doc])
    assert "Node Pressure Eviction" not in converted.get_content()
    [out] = MetadataExtractor(extract=["title", "date"])([converted])
    assert out.metadata["title"] == "Node Pressure Eviction"
    assert out.metadata["date"] == "2023-07-04"


def test_only_requested_keys_and_no_overwrite() -> None:
    doc = Document(
        id_="d1",
        text=FRONT_MATTER_MD,
        metadata={"title": "Set by reader", "team": "platform"},
    )
    before = doc.model_dump()
    [out] = MetadataExtractor(extract=["title", "tags"], custom={"team": "sre", "env": "prod"})(
        [doc]
    )
    assert out.metadata == {
        "title": "Set by reader",
        "team": "platform",
        "env": "prod",
        "tags": "kubelet, eviction, memory, operations",
    }
    assert "author" not in out.metadata and "date" not in out.metadata
    assert out.id_ == "d1"
    assert doc.model_dump() == before


def test_custom_only() -> None:
    meta = run(
        MetadataExtractor(custom={"source_system": "confluence", "tier": 1}), Document(text="x")
    )
    assert meta == {"source_system": "confluence", "tier": 1}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.date(2024, 3, 1), "2024-03-01"),
        (dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC), "2024-03-01T10:00:00+00:00"),
        ("2024-03-01", "2024-03-01"),
        ("2024-03-01T10:00:00Z", "2024-03-01T10:00:00+00:00"),
        ("2024-03-01 10:00", "2024-03-01T10:00:00"),
        ("Fri, 01 Mar 2024 10:00:00 +0100", "2024-03-01T10:00:00+01:00"),
        ("March 1, 2024", "2024-03-01"),
        ("1 Mar 2024", "2024-03-01"),
        ("2024/03/01", "2024-03-01"),
        ("soon", None),
        ("", None),
        (None, None),
        (20240301, None),
    ],
)
def test_normalize_date(value: object, expected: str | None) -> None:
    assert normalize_date(value) == expected


def test_unreadable_front_matter_date_falls_through() -> None:
    text = "---\ndate: someday\nlastmod: 2022-12-31T23:59:59Z\n---\nbody"
    meta = run(MetadataExtractor(extract=["date"]), Document(text=text))
    assert meta["date"] == "2022-12-31T23:59:59+00:00"


def test_split_front_matter() -> None:
    assert split_front_matter("---\na: 1\n---\nbody") == ({"a": 1}, "body")
    assert split_front_matter("---\n: [bad\n---\nbody") == ({}, "body")
    assert split_front_matter("no front matter") == ({}, "no front matter")


# --- summary ----------------------------------------------------------------------------


class RecordingLLM(MockLLM):
    """MockLLM that records prompts and answers with a fixed summary."""

    _prompts: list[str] = PrivateAttr(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        return self._prompts

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._prompts.append(prompt)
        return CompletionResponse(text="  etcd keeps state. It needs quorum.  ")


def test_summary_without_llm_is_an_error() -> None:
    with pytest.raises(LLMError) as info:
        MetadataExtractor(extract=["title", "summary"])
    assert isinstance(info.value, AofIndexError)
    message = str(info.value)
    assert "spec.processing.metadata.extract" in message
    assert "LLM" in message and "AOF_INDEX_LLM_BASE_URL" in message


def test_summary_with_mock_llm_echo() -> None:
    # MockLLM without max_tokens echoes the prompt: the summary is the prompt itself.
    [out] = MetadataExtractor(extract=["summary"], llm=MockLLM())(
        [Document(text="etcd stores all cluster state.")]
    )
    summary = out.metadata["summary"]
    assert "etcd stores all cluster state." in summary
    assert "2 short sentences" in summary


def test_summary_one_call_per_document_and_not_overwritten() -> None:
    llm = RecordingLLM(max_tokens=None)
    docs = [
        Document(text=FRONT_MATTER_MD),
        Document(text="etcd stores all cluster state."),
        Document(text="already summarised", metadata={"summary": "kept"}),
    ]
    out = MetadataExtractor(extract=["summary"], llm=llm)(docs)
    assert len(llm.prompts) == 2
    assert "Body text." in llm.prompts[0]
    assert "title: Node Pressure Eviction" not in llm.prompts[0]  # front matter left out
    assert "etcd stores all cluster state." in llm.prompts[1]
    assert out[0].metadata["summary"] == "etcd keeps state. It needs quorum."
    assert out[2].metadata["summary"] == "kept"
    assert "summary" not in docs[0].metadata


async def test_summary_async() -> None:
    [out] = await MetadataExtractor(extract=["summary"], llm=MockLLM(max_tokens=3)).acall(
        [Document(text="etcd stores all cluster state.")]
    )
    assert out.metadata["summary"] == "text text text"


def test_unknown_key_rejected() -> None:
    with pytest.raises(ValueError, match="unknown metadata keys"):
        MetadataExtractor(extract=["colour"])  # type: ignore[list-item]
