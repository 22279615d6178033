"""LlamaIndex readers for AOF KnowledgeBase sources.

Plain LlamaIndex components: they depend on llama-index-core and their sources' SDKs only.
Every reader lists documents cheaply (stable id and version marker, for incremental sync)
and loads them as a stream; see :mod:`aof_index_readers.base`.

Example:
    >>> from aof_index_readers import LocalFilesReader
    >>> documents = LocalFilesReader(["docs/"]).load_data()  # doctest: +SKIP
"""

from aof_index_readers.api import APIReader
from aof_index_readers.base import DocumentRef, Skipped, SourceReader, stable_id
from aof_index_readers.confluence import ConfluenceReader
from aof_index_readers.database import DatabaseReader
from aof_index_readers.errors import (
    BlockedAddressError,
    SourceAuthError,
    SourceError,
    SourceLimitError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceRateLimitError,
    SourceUnavailableError,
)
from aof_index_readers.git import ChangeSet, GitReader
from aof_index_readers.github import GitHubReader
from aof_index_readers.gitlab import GitLabReader
from aof_index_readers.local_files import LocalFilesReader, document_id
from aof_index_readers.notion import NotionReader
from aof_index_readers.s3 import S3Reader
from aof_index_readers.url import URLReader

__all__ = [
    "APIReader",
    "BlockedAddressError",
    "ChangeSet",
    "ConfluenceReader",
    "DatabaseReader",
    "DocumentRef",
    "GitHubReader",
    "GitLabReader",
    "GitReader",
    "LocalFilesReader",
    "NotionReader",
    "S3Reader",
    "Skipped",
    "SourceAuthError",
    "SourceError",
    "SourceLimitError",
    "SourceNotFoundError",
    "SourcePermissionError",
    "SourceRateLimitError",
    "SourceReader",
    "SourceUnavailableError",
    "URLReader",
    "document_id",
    "stable_id",
]
