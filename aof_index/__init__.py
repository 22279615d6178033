"""aof-index: the memory and knowledge layer of AOF agents, built on LlamaIndex.

Manifests in, LlamaIndex components out::

    from aof_index import AOFQueryEngine, build_memory, ingest_documents

    memory = build_memory("memory.yaml")       # or build_memory() for the embedded default
    retriever = memory.retriever(top_k=5)      # a LlamaIndex retriever
    engine = AOFQueryEngine.from_memory(memory)

Errors derive from :class:`AofIndexError`; manifest models live in :mod:`aof_index.spec`.
Importing the package points tiktoken at llama-index-core's bundled encodings and keeps
Hugging Face offline (only where the environment does not say otherwise).
"""

from aof_index.offline import configure_offline

configure_offline()

# ruff: noqa: E402

from aof_index.build.memory import MemoryComponents, Strategy, build_memory
from aof_index.engine.chat import ChatSession, ChatTurn
from aof_index.engine.filters import filters_from_mapping
from aof_index.engine.query_engine import AOFQueryEngine
from aof_index.errors import (
    AofIndexError,
    BackendUnavailableError,
    IngestError,
    LLMError,
    ManifestError,
    ManifestIssue,
    SecretNotFoundError,
    UnknownBackendError,
)
from aof_index.eval.beir import EvalResult, evaluate, load_beir
from aof_index.knowledge.ingest import IngestReport, ingest_documents
from aof_index.knowledge.pipeline import KnowledgeBasePipeline, build_knowledge_base
from aof_index.llms import llm_from_env
from aof_index.spec import KnowledgeBase, Memory, load_memory, load_resources

__version__ = "0.1.0"

__all__ = [
    "AOFQueryEngine",
    "AofIndexError",
    "BackendUnavailableError",
    "ChatSession",
    "ChatTurn",
    "EvalResult",
    "IngestError",
    "IngestReport",
    "KnowledgeBase",
    "KnowledgeBasePipeline",
    "LLMError",
    "ManifestError",
    "ManifestIssue",
    "Memory",
    "MemoryComponents",
    "SecretNotFoundError",
    "Strategy",
    "UnknownBackendError",
    "__version__",
    "build_knowledge_base",
    "build_memory",
    "evaluate",
    "filters_from_mapping",
    "ingest_documents",
    "llm_from_env",
    "load_beir",
    "load_memory",
    "load_resources",
]
