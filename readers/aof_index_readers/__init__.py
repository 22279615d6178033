"""LlamaIndex readers for AOF KnowledgeBase sources.

Plain LlamaIndex components: they depend on llama-index-core and their sources' SDKs only.

Example:
    >>> from aof_index_readers import LocalFilesReader
    >>> documents = LocalFilesReader(["docs/"]).load_data()  # doctest: +SKIP
"""

from aof_index_readers.local_files import LocalFilesReader, SkippedFile, document_id

__all__ = ["LocalFilesReader", "SkippedFile", "document_id"]
