"""LlamaIndex retrievers for aof-index: a BM25 keyword index, rank fusion, hybrid retrieval,
query enhancement (HyDE, decomposition, expansion, multi-query) with any LlamaIndex LLM.

Plain LlamaIndex components, usable in any LlamaIndex application; they depend on
llama-index-core, bm25s, PyStemmer and numpy only.

Example::

    from llama_index.core import VectorStoreIndex
    from aof_index_retrievers import BM25Index, HybridRetriever

    vector_index = VectorStoreIndex(nodes)              # any vector store
    keyword_index = BM25Index.load_or_create("./bm25")  # BM25 over the same nodes
    keyword_index.add(nodes)                            # upsert by node id
    keyword_index.persist()                             # atomic

    retriever = HybridRetriever(
        vector_index,
        keyword_index,
        similarity_top_k=5,
        semantic_weight=0.7,
        keyword_weight=0.3,
        fusion="linear",  # or "rrf", "maximal"
    )
    for hit in retriever.retrieve("pods stuck in CrashLoopBackOff"):
        print(hit.score, hit.node.node_id)
"""

from aof_index_retrievers.filters import matches
from aof_index_retrievers.fusion import (
    FusionMethod,
    Normalization,
    fuse,
    linear_fusion,
    max_fusion,
    reciprocal_rank_fusion,
)
from aof_index_retrievers.hybrid import TUNED_HYBRID, HybridRetriever
from aof_index_retrievers.keyword import BM25Index, BM25Retriever
from aof_index_retrievers.query_enhancement import (
    MANIFEST_METHODS,
    EnhancementMethod,
    QueryEnhancementEvent,
    QueryEnhancementTrace,
    QueryEnhancingRetriever,
    parse_list,
    parse_terms,
)

__all__ = [
    "MANIFEST_METHODS",
    "TUNED_HYBRID",
    "BM25Index",
    "BM25Retriever",
    "EnhancementMethod",
    "FusionMethod",
    "HybridRetriever",
    "Normalization",
    "QueryEnhancementEvent",
    "QueryEnhancementTrace",
    "QueryEnhancingRetriever",
    "fuse",
    "linear_fusion",
    "matches",
    "max_fusion",
    "parse_list",
    "parse_terms",
    "reciprocal_rank_fusion",
]
