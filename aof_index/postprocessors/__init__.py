"""LlamaIndex node postprocessors: rerankers, adaptive top-k, the context budget, and
second-stage re-scoring of retrieved nodes (see docs/retrieval.md)."""

from aof_index.postprocessors.adaptive import AdaptiveTopK, choose_top_k
from aof_index.postprocessors.context import (
    BuiltContext,
    ContextBuilder,
    ContextStrategy,
    Passage,
    dedupe_nodes,
    passage_source,
    tiktoken_counter,
)
from aof_index.postprocessors.rerank import (
    COHERE_MODEL_ALIASES,
    CohereReranker,
    CrossEncoderReranker,
    LLMReranker,
    MMRReranker,
    ScoreFilterReranker,
    reranker_from_spec,
)
from aof_index.postprocessors.sentence import (
    TUNED_SENTENCE_RERANK,
    PostprocessedRetriever,
    SentenceSimilarityReranker,
    split_sentences,
)

__all__ = [
    "COHERE_MODEL_ALIASES",
    "TUNED_SENTENCE_RERANK",
    "AdaptiveTopK",
    "BuiltContext",
    "CohereReranker",
    "ContextBuilder",
    "ContextStrategy",
    "CrossEncoderReranker",
    "LLMReranker",
    "MMRReranker",
    "Passage",
    "PostprocessedRetriever",
    "ScoreFilterReranker",
    "SentenceSimilarityReranker",
    "choose_top_k",
    "dedupe_nodes",
    "passage_source",
    "reranker_from_spec",
    "split_sentences",
    "tiktoken_counter",
]
