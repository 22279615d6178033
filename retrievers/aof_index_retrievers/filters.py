"""Evaluate LlamaIndex :class:`MetadataFilters` against a metadata dict in pure Python.

The keyword index has no server to push filters to, so it evaluates them here. The
semantics follow LlamaIndex's reference implementation, the filter function of
``SimpleVectorStore`` (``llama_index.core.vector_stores.utils.build_metadata_filter_fn``),
so that a filter selects the same nodes on the keyword side as on the vector side. Where
that implementation raises or is undefined, this module makes the following choices:

* **Nested filters** (a ``MetadataFilters`` inside ``filters``) are evaluated recursively
  with their own ``condition``; ``SimpleVectorStore`` rejects them, server stores (Qdrant,
  Chroma, PostgreSQL) support them with the same meaning.
* **Empty filters**: a ``MetadataFilters`` with no filters, at any level, matches every
  node (no constraint), as ``SimpleVectorStore`` does at the top level.
* **Conditions**: ``and`` = all match, ``or`` = any matches, ``not`` = none matches
  (``not (a or b)``, as in ``SimpleVectorStore`` and Qdrant's ``must_not``). A missing
  condition means ``and``.
* **Missing key or ``None`` value**: only ``!=`` (``NE``) and ``nin`` (``NIN``) match, and
  ``is_empty`` (``IS_EMPTY``) matches; every other operator does not.
* **Incomparable types** (``"abc" > 3``, ``contains`` on a number, ``text_match`` on a
  non-string): the filter does not match, instead of raising ``TypeError`` as
  ``SimpleVectorStore`` does, which is what a server-side store answers.
* **Scalar value with a list operator** (``in``, ``nin``, ``any``, ``all`` given a single
  value): the value is treated as a one-element list, never iterated character by
  character.
* ``in``/``nin`` test the metadata value's membership in the filter's list (a list-valued
  metadata field is not unpacked); ``contains`` tests the filter value's membership in
  the metadata value (element of a list, or substring of a string); ``any``/``all`` test
  whether any/all of the filter's values are members of the metadata value; ``all`` with an
  empty list matches.
* ``is_empty`` matches a missing key, ``None``, ``""`` and ``[]``.
* ``text_match`` is a case-sensitive substring test, ``text_match_insensitive`` a
  case-insensitive one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["matches"]

_LIST_OPERATORS = frozenset(
    {FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL}
)


def matches(metadata: Mapping[str, Any], filters: MetadataFilters | None) -> bool:
    """Return whether ``metadata`` satisfies ``filters`` (``None`` matches everything).

    See the module docstring for the exact semantics of each operator and condition.
    """
    if filters is None:
        return True
    return _match_filters(metadata, filters)


def _match_filters(metadata: Mapping[str, Any], filters: MetadataFilters) -> bool:
    if not filters.filters:
        return True
    results = (
        _match_filters(metadata, f) if isinstance(f, MetadataFilters) else _match_one(metadata, f)
        for f in filters.filters
    )
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return all(results)
    if condition == FilterCondition.OR:
        return any(results)
    if condition == FilterCondition.NOT:
        return not any(results)
    raise ValueError(f"Invalid filter condition: {condition!r}")


def _match_one(metadata: Mapping[str, Any], metadata_filter: MetadataFilter) -> bool:
    operator = FilterOperator(metadata_filter.operator)
    actual = metadata.get(metadata_filter.key)
    if operator == FilterOperator.IS_EMPTY:
        return actual is None or actual == "" or actual == []
    if actual is None:
        return operator in (FilterOperator.NE, FilterOperator.NIN)
    expected: Any = metadata_filter.value
    if operator in _LIST_OPERATORS and not isinstance(expected, list):
        expected = [expected]
    try:
        return _apply(operator, expected, actual)
    except TypeError:
        return False


def _apply(operator: FilterOperator, expected: Any, actual: Any) -> bool:
    if operator == FilterOperator.EQ:
        return bool(actual == expected)
    if operator == FilterOperator.NE:
        return bool(actual != expected)
    if operator == FilterOperator.GT:
        return bool(actual > expected)
    if operator == FilterOperator.GTE:
        return bool(actual >= expected)
    if operator == FilterOperator.LT:
        return bool(actual < expected)
    if operator == FilterOperator.LTE:
        return bool(actual <= expected)
    if operator == FilterOperator.IN:
        return actual in expected
    if operator == FilterOperator.NIN:
        return actual not in expected
    if operator == FilterOperator.CONTAINS:
        return bool(expected in actual)
    if operator == FilterOperator.TEXT_MATCH:
        return isinstance(expected, str) and isinstance(actual, str) and expected in actual
    if operator == FilterOperator.TEXT_MATCH_INSENSITIVE:
        return (
            isinstance(expected, str)
            and isinstance(actual, str)
            and expected.lower() in actual.lower()
        )
    if operator == FilterOperator.ANY:
        return any(value in actual for value in expected)
    if operator == FilterOperator.ALL:
        return all(value in actual for value in expected)
    raise ValueError(f"Invalid filter operator: {operator!r}")
