"""Embedding models LlamaIndex lacks: the lazy, offline local sentence-transformers model."""
