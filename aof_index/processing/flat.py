"""Flat metadata values: vector stores (Chroma, Pinecone, LlamaIndex's own checks) accept
only ``str``, ``int``, ``float`` and ``None``, so lists are stored as comma-separated text.

>>> join_values("a, b", ["b", "c"])
'a, b, c'
>>> flat_value(["kubelet", "eviction"]), flat_value({"tier": 1})
('kubelet, eviction', '{"tier": 1}')
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["SEPARATOR", "flat_value", "join_values", "split_values"]

SEPARATOR = ", "
"""What separates the items of a list-valued metadata field."""


def split_values(value: object) -> list[str]:
    """The items of a comma-separated metadata value (``None`` or ``""``: none)."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def join_values(existing: object, new: Iterable[str]) -> str:
    """``existing`` items followed by the ``new`` ones not already there, comma-separated."""
    return SEPARATOR.join(dict.fromkeys([*split_values(existing), *new]))


def flat_value(value: object) -> str | int | float | None:
    """``value`` as a flat metadata value: lists joined, mappings as JSON, scalars kept."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list | tuple | set):
        return SEPARATOR.join(str(v) for v in value)
    return json.dumps(value, sort_keys=True, default=str)
