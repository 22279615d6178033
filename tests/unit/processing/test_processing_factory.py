"""build_processing: spec.processing → ordered transforms honouring every field."""

from __future__ import annotations

import pytest
from llama_index.core import Document
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter

from aof_index.errors import AofIndexError
from aof_index.processing import Deduplicator, MetadataExtractor, TextExtractor, build_processing
from aof_index.spec.knowledge_base import Processing

HTML = (
    "<html><head><title>Ingress</title><meta name='author' content='Net Team'></head><body>"
    "<h2>Ingress</h2><p>Routes <a href='https://k8s.io'>HTTP</a> traffic.</p>"
    "<pre><code>kubectl get ingress</code></pre></body></html>"
)


def spec(data: dict[str, object]) -> Processing:
    return Processing.model_validate(data)


def test_defaults_without_spec() -> None:
    steps = build_processing(None)
    assert [type(s) for s in steps] == [TextExtractor, Deduplicator]
    extractor, dedup = steps
    assert isinstance(extractor, TextExtractor) and isinstance(dedup, Deduplicator)
    assert extractor.strip_html and not extractor.strip_markdown and not extractor.keep_header
    assert dedup.method == "hash" and dedup.threshold == 0.95


def test_every_field_honoured_in_order() -> None:
    steps = build_processing(
        spec(
            {
                "extraction": {
                    "stripHtml": False,
                    "stripMarkdown": True,
                    "preserveCodeBlocks": False,
                    "preserveLinks": False,
                },
                "metadata": {"extract": ["title", "summary"], "custom": {"team": "net"}},
                "deduplication": {"method": "similarity", "threshold": 0.8},
            }
        ),
        llm=MockLLM(max_tokens=2),
    )
    assert [type(s) for s in steps] == [TextExtractor, MetadataExtractor, Deduplicator]
    extractor, metadata, dedup = steps
    assert isinstance(extractor, TextExtractor)
    assert (extractor.strip_html, extractor.strip_markdown) == (False, True)
    assert (extractor.preserve_code_blocks, extractor.preserve_links) == (False, False)
    assert extractor.keep_header  # title must survive stripping
    assert isinstance(metadata, MetadataExtractor)
    assert metadata.extract == ["title", "summary"] and metadata.custom == {"team": "net"}
    assert metadata.llm is not None
    assert isinstance(dedup, Deduplicator)
    assert (dedup.method, dedup.threshold) == ("similarity", 0.8)


def test_dedup_disabled_and_extraction_off() -> None:
    steps = build_processing(
        spec(
            {
                "extraction": {"stripHtml": False, "stripMarkdown": False},
                "deduplication": {"enabled": False, "method": "exact"},
            }
        )
    )
    assert steps == []


def test_summary_only_needs_no_header() -> None:
    steps = build_processing(spec({"metadata": {"extract": ["summary"]}}), llm=MockLLM())
    assert isinstance(steps[0], TextExtractor) and not steps[0].keep_header


def test_summary_without_llm_raises() -> None:
    with pytest.raises(AofIndexError, match=r"spec\.processing\.metadata\.extract"):
        build_processing(spec({"metadata": {"extract": ["summary"]}}))


def test_pipeline_end_to_end() -> None:
    steps = build_processing(
        spec(
            {
                "extraction": {"preserveLinks": False},
                "metadata": {"extract": ["title", "author"], "custom": {"kb": "networking"}},
            }
        )
    )
    docs = [
        Document(id_="one", text=HTML, metadata={"file_name": "ingress.html"}),
        Document(id_="two", text=HTML, metadata={"file_name": "ingress-copy.html"}),
    ]
    pipeline = IngestionPipeline(
        transformations=[*steps, SentenceSplitter(chunk_size=256, chunk_overlap=0)]
    )
    nodes = pipeline.run(documents=docs)
    assert len(nodes) == 1
    node = nodes[0]
    assert node.ref_doc_id == "one"
    assert "## Ingress" in node.get_content()
    assert "Routes HTTP traffic." in node.get_content()
    assert "```\nkubectl get ingress\n```" in node.get_content()
    assert node.metadata["title"] == "Ingress"  # the <h2> is not a "# heading"; <title> wins
    assert node.metadata["author"] == "Net Team"
    assert node.metadata["kb"] == "networking"
    assert node.metadata["duplicates"] == "two"
    assert node.metadata["extracted"] == "html"
    assert "source_header" not in node.metadata
    assert docs[0].text == HTML
