"""Vector store factories registered under ``aof_index.vector_stores``.

The manifest field is ``spec.semantic.vectorStore.type``.  Without a server address each
store runs embedded in the Memory's data folder: Chroma's persistent client (the embedded
default; fast to 100k+ vectors) and Qdrant's local mode (pure Python brute force, meant for
collections under ~20k points).  With ``chroma.host`` or ``qdrant.url`` the same code talks
to a server.
"""

from __future__ import annotations

import re
from typing import Any

from llama_index.core.vector_stores.types import BasePydanticVectorStore

from aof_index.build.context import BuildContext
from aof_index.errors import BackendUnavailableError
from aof_index.registry import missing_extra
from aof_index.spec.memory import VectorStoreConfig

__all__ = ["build_chroma", "build_qdrant", "collection_name"]


def _vector_spec(ctx: BuildContext) -> VectorStoreConfig | None:
    semantic = ctx.spec.semantic
    return semantic.vector_store if semantic is not None else None


def collection_name(ctx: BuildContext, configured: str | None) -> str:
    """The configured collection, else ``aof-<namespace>-<name>`` made safe for any store."""
    if configured:
        return configured
    raw = f"aof-{ctx.memory.metadata.namespace}-{ctx.name}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:63]


def build_chroma(ctx: BuildContext) -> BasePydanticVectorStore:
    """Chroma: ``chroma.host`` → HTTP client, else a persistent client on disk."""
    try:
        import chromadb
        from chromadb.config import Settings
        from llama_index.vector_stores.chroma import ChromaVectorStore
    except ImportError as exc:
        raise missing_extra("Chroma", "chroma") from exc
    spec = _vector_spec(ctx)
    cfg = spec.chroma if spec is not None else None
    settings = Settings(anonymized_telemetry=False)
    client: Any
    if cfg is not None and cfg.host:
        where = f"http://{cfg.host}:{cfg.port}"
        try:
            client = chromadb.HttpClient(host=cfg.host, port=cfg.port, settings=settings)
            client.heartbeat()
        except Exception as exc:
            raise BackendUnavailableError(
                f"Chroma server at {where} (spec.semantic.vectorStore.chroma.host/port) is "
                f"not reachable: {exc}. Start it (chroma run --port {cfg.port}) or fix the address."
            ) from exc
    else:
        path = (cfg.persist_directory if cfg and cfg.persist_directory else None) or str(
            ctx.data_dir / "chroma"
        )
        client = chromadb.PersistentClient(path=path, settings=settings)
    collection = client.get_or_create_collection(
        collection_name(ctx, cfg.collection if cfg else None),
        metadata={"hnsw:space": "cosine"},
    )
    return ChromaVectorStore(chroma_collection=collection)


def build_qdrant(ctx: BuildContext) -> BasePydanticVectorStore:
    """Qdrant: ``qdrant.url`` → server, else local mode in the Memory's data folder."""
    try:
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient
        from qdrant_client.http import models as rest
    except ImportError as exc:
        raise missing_extra("Qdrant", "qdrant") from exc
    spec = _vector_spec(ctx)
    cfg = spec.qdrant if spec is not None else None
    kwargs: dict[str, Any] = {}
    if cfg is not None and cfg.url:
        secret = cfg.api_key_secret_ref
        api_key = secret.resolve().get_secret_value() if secret is not None else None
        client = QdrantClient(url=cfg.url, api_key=api_key)
        try:
            client.get_collections()
        except Exception as exc:
            raise BackendUnavailableError(
                f"Qdrant server at {cfg.url} (spec.semantic.vectorStore.qdrant.url) is not "
                f"reachable: {exc}. Check the URL and API key."
            ) from exc
    else:
        path = ctx.data_dir / "qdrant"
        path.mkdir(parents=True, exist_ok=True)
        client = QdrantClient(path=str(path))
    if cfg is not None and cfg.vector_size:
        kwargs["dense_config"] = rest.VectorParams(
            size=cfg.vector_size,
            distance=rest.Distance(cfg.distance),
            on_disk=cfg.on_disk,
        )
    return QdrantVectorStore(
        collection_name=collection_name(ctx, cfg.collection if cfg else None),
        client=client,
        **kwargs,
    )
