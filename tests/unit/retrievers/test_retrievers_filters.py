"""``matches``: every operator and condition, and agreement with SimpleVectorStore."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

from aof_index_retrievers import matches

META: dict[str, Any] = {
    "team": "platform",
    "severity": 2,
    "score": 0.5,
    "tags": ["kubernetes", "pods"],
    "title": "Pods stuck in CrashLoopBackOff",
    "empty_str": "",
    "empty_list": [],
    "nothing": None,
}


def one(key: str, value: Any, op: FilterOperator) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])


OP = FilterOperator

CASES: list[tuple[str, Any, FilterOperator, bool]] = [
    # EQ / NE
    ("team", "platform", OP.EQ, True),
    ("team", "network", OP.EQ, False),
    ("severity", 2, OP.EQ, True),
    ("severity", 2.0, OP.EQ, True),
    ("team", "network", OP.NE, True),
    ("team", "platform", OP.NE, False),
    # ordering
    ("severity", 1, OP.GT, True),
    ("severity", 2, OP.GT, False),
    ("severity", 2, OP.GTE, True),
    ("severity", 3, OP.GTE, False),
    ("severity", 3, OP.LT, True),
    ("severity", 2, OP.LT, False),
    ("severity", 2, OP.LTE, True),
    ("severity", 1, OP.LTE, False),
    ("score", 0.25, OP.GT, True),
    ("team", "a", OP.GT, True),  # strings compare lexicographically
    ("team", 3, OP.GT, False),  # incomparable types: no match (SimpleVectorStore raises)
    # IN / NIN
    ("team", ["platform", "network"], OP.IN, True),
    ("team", ["network"], OP.IN, False),
    ("severity", [1, 2], OP.IN, True),
    ("team", "platform", OP.IN, True),  # scalar value is a one-element list
    ("team", "plat", OP.IN, False),  # ... not a substring test
    ("team", ["network"], OP.NIN, True),
    ("team", ["platform"], OP.NIN, False),
    # CONTAINS
    ("tags", "pods", OP.CONTAINS, True),
    ("tags", "dns", OP.CONTAINS, False),
    ("title", "CrashLoop", OP.CONTAINS, True),
    ("severity", 2, OP.CONTAINS, False),  # a number contains nothing
    # TEXT_MATCH
    ("title", "CrashLoop", OP.TEXT_MATCH, True),
    ("title", "crashloop", OP.TEXT_MATCH, False),
    ("title", "crashloop", OP.TEXT_MATCH_INSENSITIVE, True),
    ("title", "oomkilled", OP.TEXT_MATCH_INSENSITIVE, False),
    ("severity", "2", OP.TEXT_MATCH, False),  # non-string metadata: no match
    # ANY / ALL
    ("tags", ["dns", "pods"], OP.ANY, True),
    ("tags", ["dns", "tls"], OP.ANY, False),
    ("tags", ["kubernetes", "pods"], OP.ALL, True),
    ("tags", ["kubernetes", "dns"], OP.ALL, False),
    ("tags", "pods", OP.ANY, True),  # scalar value is a one-element list
    ("tags", "kube", OP.ANY, False),  # ... never iterated character by character
    # IS_EMPTY
    ("missing", None, OP.IS_EMPTY, True),
    ("nothing", None, OP.IS_EMPTY, True),
    ("empty_str", None, OP.IS_EMPTY, True),
    ("empty_list", None, OP.IS_EMPTY, True),
    ("team", None, OP.IS_EMPTY, False),
    ("tags", None, OP.IS_EMPTY, False),
    # a missing key (or None) matches only NE and NIN
    ("missing", "x", OP.EQ, False),
    ("missing", "x", OP.NE, True),
    ("missing", 1, OP.GT, False),
    ("missing", ["x"], OP.IN, False),
    ("missing", ["x"], OP.NIN, True),
    ("missing", "x", OP.CONTAINS, False),
    ("missing", "x", OP.TEXT_MATCH, False),
    ("missing", ["x"], OP.ANY, False),
    ("nothing", "x", OP.NE, True),
]


@pytest.mark.parametrize(("key", "value", "op", "expected"), CASES)
def test_each_operator(key: str, value: Any, op: FilterOperator, expected: bool) -> None:
    assert matches(META, one(key, value, op)) is expected


def test_every_operator_is_covered() -> None:
    assert {op for _, _, op, _ in CASES} == set(FilterOperator)


def test_none_and_empty_filters_match_everything() -> None:
    assert matches(META, None)
    assert matches(META, MetadataFilters(filters=[]))
    assert matches({}, MetadataFilters(filters=[], condition=FilterCondition.OR))


def test_conditions() -> None:
    yes = MetadataFilter(key="team", value="platform")
    no = MetadataFilter(key="team", value="network")
    assert matches(META, MetadataFilters(filters=[yes, yes]))
    assert not matches(META, MetadataFilters(filters=[yes, no]))
    assert matches(META, MetadataFilters(filters=[yes, no], condition=FilterCondition.OR))
    assert not matches(META, MetadataFilters(filters=[no, no], condition=FilterCondition.OR))
    # NOT: none of the filters matches
    assert matches(META, MetadataFilters(filters=[no], condition=FilterCondition.NOT))
    assert not matches(META, MetadataFilters(filters=[yes, no], condition=FilterCondition.NOT))
    assert matches(META, MetadataFilters(filters=[yes], condition=None))  # None means AND


def test_nested_filters() -> None:
    # team == platform AND (severity >= 3 OR tags contains "pods")
    nested = MetadataFilters(
        filters=[
            MetadataFilter(key="team", value="platform"),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="severity", value=3, operator=OP.GTE),
                    MetadataFilter(key="tags", value="pods", operator=OP.CONTAINS),
                ],
                condition=FilterCondition.OR,
            ),
        ]
    )
    assert matches(META, nested)
    assert not matches({**META, "tags": ["dns"]}, nested)
    assert matches({**META, "tags": ["dns"], "severity": 3}, nested)
    assert not matches({**META, "team": "network"}, nested)
    # NOT around a nested group
    negated = MetadataFilters(filters=[nested], condition=FilterCondition.NOT)
    assert not matches(META, negated)
    assert matches({**META, "team": "network"}, negated)


# Agreement with LlamaIndex's own in-memory vector store on flat filters, wherever that
# implementation gives an answer (it raises on incomparable types and nested filters).
GRID_METADATA: list[dict[str, Any]] = [
    META,
    {"team": "network", "severity": 1, "tags": ["dns"], "title": "DNS fails"},
    {"team": "platform", "severity": 3},
    {},
]
GRID_FILTERS: list[MetadataFilter] = [
    MetadataFilter(key=key, value=value, operator=op)
    for key, value, op, _ in CASES
    if not (op in (OP.IN, OP.NIN, OP.ANY, OP.ALL) and not isinstance(value, list))
]


def _simple_vector_store_answer(metadata: dict[str, Any], filters: MetadataFilters) -> bool | None:
    fn = build_metadata_filter_fn(lambda _: metadata, filters)
    try:
        return fn("node")
    except TypeError:
        return None


@pytest.mark.parametrize(
    "condition", [FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT]
)
def test_agrees_with_simple_vector_store(condition: FilterCondition) -> None:
    compared = 0
    for metadata in GRID_METADATA:
        for pair in itertools.combinations(GRID_FILTERS, 2):
            filters = MetadataFilters(filters=list(pair), condition=condition)
            expected = _simple_vector_store_answer(metadata, filters)
            if expected is None:
                continue
            assert matches(metadata, filters) is expected, (metadata, filters)
            compared += 1
    assert compared > 1000
