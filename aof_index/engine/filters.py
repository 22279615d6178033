"""Metadata filters from the manifest/API form to LlamaIndex ``MetadataFilters``.

The manifests and the HTTP API write filters as a mapping: ``{"metadata.type": "runbook"}``
for equality, ``{"metadata.team": ["sre", "platform"]}`` for "any of".  The ``metadata.``
prefix is optional.  All entries must hold (AND).
"""

from __future__ import annotations

from collections.abc import Mapping

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["filters_from_mapping"]

Scalar = str | int | float | bool


def filters_from_mapping(
    mapping: Mapping[str, Scalar | list[Scalar]] | None,
) -> MetadataFilters | None:
    """Convert ``{"metadata.key": value | [values]}`` into ``MetadataFilters`` (AND)."""
    if not mapping:
        return None
    filters: list[MetadataFilter | MetadataFilters] = []
    for raw_key, value in mapping.items():
        key = raw_key.removeprefix("metadata.")
        if not key:
            raise ValueError(f"filter key {raw_key!r} names no metadata field")
        if isinstance(value, list):
            filters.append(MetadataFilter(key=key, value=value, operator=FilterOperator.IN))
        else:
            filters.append(MetadataFilter(key=key, value=value, operator=FilterOperator.EQ))
    return MetadataFilters(filters=filters, condition=FilterCondition.AND)
