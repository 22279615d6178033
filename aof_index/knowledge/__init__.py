"""Ingestion of documents into a Memory and the record of what was ingested.

- :func:`aof_index.knowledge.ingest.ingest_documents`: chunk, embed and store documents;
  unchanged ones are skipped.
- :func:`aof_index.knowledge.pipeline.build_knowledge_base`: a KnowledgeBase manifest's
  processing and chunking, and the Memory its ``memoryRef`` names (also exported from
  :mod:`aof_index`).

The submodules are imported by path: the Memory builder uses :mod:`.state`, so this package
imports nothing itself.
"""
