"""``spec.processing`` → the LlamaIndex transforms that run before chunking."""

from __future__ import annotations

from llama_index.core.llms import LLM
from llama_index.core.schema import TransformComponent

from aof_index.processing.dedup import Deduplicator
from aof_index.processing.extraction import TextExtractor
from aof_index.processing.metadata import MetadataExtractor
from aof_index.spec.knowledge_base import Processing

__all__ = ["build_processing"]

# Keys whose sources (front matter, <head>) text extraction removes.
_HEADER_KEYS = {"title", "author", "date", "tags"}


def build_processing(
    processing_spec: Processing | None, llm: LLM | None = None
) -> list[TransformComponent]:
    """Build the transforms of ``spec.processing``, in order extraction → metadata → dedup.

    A section that is absent gets its defaults where the spec has them: extraction
    (``stripHtml``) and deduplication (``hash``) run unless configured off; metadata runs
    only when ``extract`` or ``custom`` asks for something.  ``deduplication.enabled:
    false`` leaves deduplication out.  ``llm`` writes summaries; asking for ``summary``
    without one raises :class:`~aof_index.errors.LLMError`.
    """
    spec = processing_spec or Processing()
    transforms: list[TransformComponent] = []

    metadata = spec.metadata
    wants_metadata = metadata is not None and bool(metadata.extract or metadata.custom)
    extraction = spec.extraction
    if extraction is None or extraction.strip_html or extraction.strip_markdown:
        keep_header = bool(
            wants_metadata and metadata is not None and _HEADER_KEYS & set(metadata.extract or [])
        )
        if extraction is None:
            transforms.append(TextExtractor(keep_header=keep_header))
        else:
            transforms.append(
                TextExtractor(
                    strip_html=extraction.strip_html,
                    strip_markdown=extraction.strip_markdown,
                    preserve_code_blocks=extraction.preserve_code_blocks,
                    preserve_links=extraction.preserve_links,
                    keep_header=keep_header,
                )
            )

    if wants_metadata and metadata is not None:
        transforms.append(
            MetadataExtractor(extract=metadata.extract or [], custom=metadata.custom, llm=llm)
        )

    dedup = spec.deduplication
    if dedup is None:
        transforms.append(Deduplicator())
    elif dedup.enabled:
        transforms.append(Deduplicator(method=dedup.method, threshold=dedup.threshold))
    return transforms
