"""Document processing before chunking (``spec.processing`` of a KnowledgeBase).

Each step is a LlamaIndex ``TransformComponent`` over documents, so the list drops into an
``IngestionPipeline`` in front of any chunker::

    from llama_index.core.ingestion import IngestionPipeline

    from aof_index.llms import llm_from_env
    from aof_index.processing import build_processing

    spec = knowledge_base.spec.processing        # aof_index.spec.knowledge_base.Processing
    pipeline = IngestionPipeline(
        transformations=[*build_processing(spec, llm=llm_from_env()), chunker]
    )
    nodes = pipeline.run(documents=documents)

* :class:`TextExtractor` (``extraction``): HTML → light Markdown, Markdown → plain text.
* :class:`MetadataExtractor` (``metadata``): title, author, date, tags, LLM summary, constants.
* :class:`Deduplicator` (``deduplication``): hash, exact or similarity.

The steps never mutate their input documents: changed documents are copies with the same
``id_``.
"""

from __future__ import annotations

from aof_index.processing.dedup import Deduplicator, DedupReport, jaccard, normalized_hash, shingles
from aof_index.processing.extraction import (
    HEADER_KEY,
    TextExtractor,
    html_to_text,
    is_html,
    is_markdown,
    markdown_to_text,
)
from aof_index.processing.factory import build_processing
from aof_index.processing.metadata import (
    SUMMARY_PROMPT,
    MetadataExtractor,
    normalize_date,
    split_front_matter,
)

__all__ = [
    "HEADER_KEY",
    "SUMMARY_PROMPT",
    "DedupReport",
    "Deduplicator",
    "MetadataExtractor",
    "TextExtractor",
    "build_processing",
    "html_to_text",
    "is_html",
    "is_markdown",
    "jaccard",
    "markdown_to_text",
    "normalize_date",
    "normalized_hash",
    "shingles",
    "split_front_matter",
]
