"""A KnowledgeBase manifest → the pipeline that ingests its documents.

:func:`build_knowledge_base` reads ``spec.chunking`` and ``spec.processing`` and resolves
``spec.indexing.memoryRef`` to the Memory that stores the chunks::

    from aof_index import build_knowledge_base
    from aof_index_readers import LocalFilesReader

    kb = build_knowledge_base("knowledge-base.yaml")
    report = kb.ingest(LocalFilesReader(["runbooks/"]).lazy_load_data())
    print(kb.chunker.strategy, report.chunks)

Outside a cluster, ``memoryRef`` names a Memory in the same file or directory as the
KnowledgeBase; without one (or when it names ``default`` and the file has no Memory of that
name) the embedded default Memory is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llama_index.core.llms import LLM
from llama_index.core.schema import Document, TransformComponent

from aof_index.build.defaults import default_memory
from aof_index.build.memory import MemoryComponents
from aof_index.errors import ManifestError, ManifestIssue
from aof_index.knowledge.ingest import IngestReport, Progress, ingest_documents
from aof_index.node_parsers.base import ChunkerBase
from aof_index.node_parsers.factory import build_chunker
from aof_index.processing import build_processing
from aof_index.spec import KnowledgeBase, Memory
from aof_index.spec.loader import load_knowledge_base, load_resources

__all__ = ["KnowledgeBasePipeline", "build_knowledge_base", "resolve_memory"]


@dataclass(frozen=True)
class KnowledgeBasePipeline:
    """The processing steps and chunker of one KnowledgeBase, and the Memory it fills."""

    resource: KnowledgeBase
    memory: MemoryComponents
    transforms: Sequence[TransformComponent]
    """``spec.processing``: extraction → metadata → deduplication."""
    chunker: ChunkerBase
    """``spec.chunking``, sized to the Memory's embedding window."""

    def ingest(
        self, documents: Iterable[Document], *, progress: Progress | None = None
    ) -> IngestReport:
        """Process, chunk, embed and store ``documents``; unchanged ones are skipped."""
        return ingest_documents(
            self.memory,
            documents,
            chunker=self.chunker,
            transforms=self.transforms,
            progress=progress,
            batch_size=self.resource.spec.indexing.batch_size
            if self.resource.spec.indexing is not None
            else 256,
        )


def build_knowledge_base(
    source: KnowledgeBase | str | os.PathLike[str],
    *,
    name: str | None = None,
    memory: MemoryComponents | None = None,
    home: Path | None = None,
    llm: LLM | None = None,
) -> KnowledgeBasePipeline:
    """Build the ingestion pipeline of a KnowledgeBase.

    Args:
        source: a ``KnowledgeBase`` model, or a manifest file or directory.
        name: which KnowledgeBase, when the file holds several.
        memory: the Memory to fill (default: :func:`resolve_memory` of ``memoryRef``).
        home: data root for the Memory (default ``$AOF_INDEX_HOME``).
        llm: writes summaries when ``processing.metadata.extract`` asks for ``summary``.

    Raises:
        ManifestError: the manifest is invalid or ``memoryRef`` names no Memory.
        AofIndexError: the chunking section cannot be built (its message names the field).
    """
    if isinstance(source, KnowledgeBase):
        resource, where = source, None
    else:
        resource, where = load_knowledge_base(source, name=name), Path(source)
    target = memory or MemoryComponents(resolve_memory(resource, where), home)
    chunker = build_chunker(resource.spec.chunking, target.window, target.embed_model)
    return KnowledgeBasePipeline(
        resource, target, build_processing(resource.spec.processing, llm=llm), chunker
    )


def resolve_memory(resource: KnowledgeBase, where: Path | None) -> Memory:
    """The Memory ``spec.indexing.memoryRef`` names, looked up beside the KnowledgeBase.

    ``where`` is the KnowledgeBase's file or directory; the Memory comes from that file (or
    from the directory's manifests).  No ``memoryRef``, or ``default`` with no Memory of
    that name, gives the embedded default.
    """
    indexing = resource.spec.indexing
    ref = indexing.memory_ref if indexing is not None else None
    fallback = default_memory()
    if ref is None:
        return fallback
    found = [r for r in load_resources(where) if isinstance(r, Memory)] if where else []
    named = [m for m in found if m.metadata.name == ref]
    if named:
        return named[0]
    if ref == fallback.metadata.name:
        return fallback
    names = ", ".join(m.metadata.name for m in found) or "none"
    raise ManifestError(
        str(where or "<KnowledgeBase>"),
        [
            ManifestIssue(
                "spec.indexing.memoryRef",
                f"no Memory named `{ref}` beside this KnowledgeBase (Memories found: {names}); "
                f"add that Memory to the file or directory, or remove memoryRef to use the "
                f"embedded default",
                value=ref,
            )
        ],
    )
