"""Evaluation Memories: like the user's Memory, but never touching its data."""

from __future__ import annotations

import hashlib
import json

from aof_index.build.memory import MemoryComponents
from aof_index.spec import Memory

__all__ = ["isolated_memory"]


def isolated_memory(memory: MemoryComponents, label: str, *key: object) -> MemoryComponents:
    """A Memory like ``memory`` (same embedding, chunker and store kinds) for one dataset.

    It lives in the ``eval`` namespace under ``<label>-<hash>``, with its own collection;
    the hash covers ``key`` and what shapes the stored index (embedding and vector store
    settings, not retrieval settings), so a new model gets a new index and runs with the
    same settings reuse it.
    """
    semantic = memory.resource.spec.semantic
    stored = [semantic.embedding, semantic.vector_store] if semantic is not None else [None, None]
    digest = hashlib.sha256(
        json.dumps(
            [*key, [s.model_dump(mode="json", by_alias=True) if s else None for s in stored]],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:10]
    data = memory.resource.model_dump(by_alias=True, exclude_unset=True)
    data["metadata"] = {"name": f"{label}-{digest}", "namespace": "eval"}
    semantic_data = data.get("spec", {}).get("semantic") or {}
    for store in (semantic_data.get("vectorStore") or {}).values():
        if isinstance(store, dict) and "collection" in store:
            store["collection"] = f"aof-eval-{label}-{digest}"
    return MemoryComponents(Memory.model_validate(data), memory.home)
