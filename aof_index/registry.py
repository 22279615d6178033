"""The backend registry: manifest names (``Chroma``, ``SQLite``, ``Local``...) to factories.

Backends register through entry points, and the built-in ones use the same mechanism
(see ``[project.entry-points]`` in pyproject.toml), so a plugin package adds a backend by
declaring, for example::

    [project.entry-points."aof_index.vector_stores"]
    Milvus = "my_package.milvus:build_milvus"

A factory is a callable taking a :class:`aof_index.build.context.BuildContext` and returning
the LlamaIndex component.  YAML only ever names the registry key, never an import path.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from aof_index.errors import BackendUnavailableError, UnknownBackendError

__all__ = ["GROUPS", "Group", "available", "get_factory", "missing_extra"]

Group = Literal["chat_stores", "vector_stores", "embeddings", "readers"]
GROUPS: tuple[Group, ...] = ("chat_stores", "vector_stores", "embeddings", "readers")

# Names the manifest schema allows but that no built-in implements yet, with the reason,
# so the error says more than "unknown".
_NOT_BUILT_IN: dict[str, str] = {
    "Pinecone": "no Pinecone backend is installed (a plugin may register one)",
    "Milvus": "no Milvus backend is installed (a plugin may register one)",
    "Weaviate": "no Weaviate backend is installed (a plugin may register one)",
    "S3": "S3 is an archival target, not a chat store",
    "Vector": "a vector store is configured under spec.semantic.vectorStore",
}


@cache
def _entry_points(group: Group) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=f"aof_index.{group}")}


def available(group: Group) -> list[str]:
    """Names registered in ``group``, sorted."""
    return sorted(_entry_points(group))


def get_factory(group: Group, name: str, *, field: str) -> Callable[..., Any]:
    """Return the factory registered as ``name`` in ``group``.

    ``field`` is the manifest field that named it, used in the error message.
    """
    eps = _entry_points(group)
    ep = eps.get(name)
    if ep is None:
        # Manifests are case-sensitive, but a near miss deserves a hint.
        known = sorted(eps)
        hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        reason = _NOT_BUILT_IN.get(name, "")
        msg = f"{field}: no backend named {name!r} is registered"
        if reason:
            msg += f" ({reason})"
        msg += f". Registered: {', '.join(known) or 'none'}."
        if hint:
            msg += f" Did you mean {hint[0]!r}?"
        if not known:
            msg += " Is aof-index installed (pip install -e .)? Its entry points are missing."
        raise UnknownBackendError(msg)
    try:
        factory: Callable[..., Any] = ep.load()
    except ImportError as exc:  # the module imports an SDK from an extra
        raise BackendUnavailableError(
            f"{field}: backend {name!r} cannot be imported ({exc}). "
            f"Install its extra, e.g. pip install 'aof-index[{_extra_hint(name)}]'."
        ) from exc
    return factory


def missing_extra(backend: str, extra: str) -> BackendUnavailableError:
    """The error for a backend whose SDK is not installed, naming the extra that brings it."""
    return BackendUnavailableError(
        f"{backend} needs the {extra} extra: pip install 'aof-index[{extra}]'"
    )


def _extra_hint(name: str) -> str:
    return {
        "Local": "local",
        "HuggingFace": "local",
        "Chroma": "chroma",
        "Qdrant": "qdrant",
        "OpenAI": "openai",
        "Cohere": "cohere",
        "Redis": "redis",
        "PostgreSQL": "postgres",
        "URL": "web",
        "S3": "s3",
        "API": "api",
        "Database": "database",
    }.get(name, "all")
