"""Document deduplication (``spec.processing.deduplication``).

Three methods, each keeping the first occurrence and dropping later ones:

* ``exact``: identical text.
* ``hash``: the same SHA-256 of the text lower-cased with whitespace collapsed, so
  re-wrapped or re-indented copies count as duplicates.
* ``similarity``: Jaccard similarity of word 5-shingles at or above ``threshold``.

Similarity is computed exactly on shingle sets rather than estimated with MinHash/LSH: at
the sizes a knowledge base ingests per run, exact sets are cheap and give no false
positives or misses, and need no extra dependency.  To avoid comparing every pair, candidate
pairs come from prefix filtering (the AllPairs / PPJoin idea): with shingles in one fixed
global order, two sets with Jaccard ≥ t must share a shingle within the first
``|S| - ceil(t·|S|) + 1`` of each, so only those prefixes are indexed and probed, and
each candidate is then verified exactly.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_index.core.schema import BaseNode, TransformComponent
from pydantic import Field, PrivateAttr

from aof_index.processing.flat import join_values

__all__ = [
    "DedupMethod",
    "DedupReport",
    "Deduplicator",
    "jaccard",
    "normalized_hash",
    "shingles",
]

DedupMethod = Literal["hash", "similarity", "exact"]

SHINGLE_SIZE = 5
_WORD = re.compile(r"\w+")


def normalized_hash(text: str) -> str:
    """SHA-256 (hex) of ``text`` lower-cased with runs of whitespace made one space."""
    return hashlib.sha256(" ".join(text.split()).lower().encode("utf-8")).hexdigest()


def shingles(text: str, size: int = SHINGLE_SIZE) -> frozenset[str]:
    """The set of ``size``-word shingles of ``text`` (lower-cased words, punctuation ignored).

    A text shorter than ``size`` words is one shingle of all its words.
    """
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared)


@dataclass
class DedupReport:
    """What a deduplication run kept and dropped."""

    kept: list[BaseNode] = field(default_factory=list)
    """The kept documents, in input order (first occurrences carry ``duplicates``)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Dropped document id → id of the kept document it duplicates."""


def _order(shingle: str) -> tuple[int, str]:
    # A fixed pseudo-random global order spreads prefixes over many postings lists.
    return zlib.crc32(shingle.encode("utf-8")), shingle


class Deduplicator(TransformComponent):
    """Drop duplicate documents; usable directly or as a LlamaIndex transform.

    :meth:`deduplicate` returns a :class:`DedupReport`; calling the component returns the
    kept documents and leaves the report in :attr:`last_report`.  Kept documents that had
    duplicates are copies with ``duplicates: [dropped ids]`` in their metadata; inputs are
    never mutated.
    """

    method: DedupMethod = Field(default="hash", description="hash, similarity or exact.")
    threshold: float = Field(
        default=0.95, ge=0.0, le=1.0, description="Minimum Jaccard similarity (similarity)."
    )
    _last_report: DedupReport | None = PrivateAttr(default=None)

    @property
    def last_report(self) -> DedupReport | None:
        """The report of the latest call, or ``None`` before the first."""
        return self._last_report

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        """Return the documents without duplicates (first occurrences kept)."""
        report = self.deduplicate(nodes)
        self._last_report = report
        return report.kept

    def deduplicate(self, nodes: Sequence[BaseNode]) -> DedupReport:
        """Find duplicates with the configured method and return what is kept and dropped."""
        duplicate_of = self._similar(nodes) if self.method == "similarity" else self._keyed(nodes)
        groups: dict[int, list[str]] = defaultdict(list)
        report = DedupReport()
        for i, original in duplicate_of.items():
            groups[original].append(nodes[i].node_id)
            report.dropped[nodes[i].node_id] = nodes[original].node_id
        for i, node in enumerate(nodes):
            if i in duplicate_of:
                continue
            if i in groups:
                copy = node.model_copy(deep=True)
                metadata = dict(copy.metadata)
                metadata["duplicates"] = join_values(metadata.get("duplicates"), groups[i])
                copy.metadata = metadata
                node = copy
            report.kept.append(node)
        return report

    def _keyed(self, nodes: Sequence[BaseNode]) -> dict[int, int]:
        first: dict[str, int] = {}
        duplicate_of: dict[int, int] = {}
        for i, node in enumerate(nodes):
            text = node.get_content()
            key = normalized_hash(text) if self.method == "hash" else text
            if key in first:
                duplicate_of[i] = first[key]
            else:
                first[key] = i
        return duplicate_of

    def _prefix_length(self, size: int) -> int:
        if size == 0:
            return 0
        # The epsilon keeps float error (0.95 * 20 = 19.000000000000004) from shortening it.
        return size - math.ceil(self.threshold * size - 1e-9) + 1

    def _similar(self, nodes: Sequence[BaseNode]) -> dict[int, int]:
        index: dict[str, list[int]] = defaultdict(list)  # prefix shingle -> kept doc positions
        sets: dict[int, frozenset[str]] = {}
        duplicate_of: dict[int, int] = {}
        empty_first: int | None = None
        for i, node in enumerate(nodes):
            current = shingles(node.get_content())
            if not current:  # empty texts duplicate each other only
                if empty_first is None:
                    empty_first = i
                else:
                    duplicate_of[i] = empty_first
                continue
            ordered = sorted(current, key=_order)
            prefix = ordered[: self._prefix_length(len(ordered))]
            match: int | None = None
            seen: set[int] = set()
            for shingle in prefix:
                for j in index.get(shingle, ()):
                    if j in seen:
                        continue
                    seen.add(j)
                    if jaccard(current, sets[j]) >= self.threshold and (match is None or j < match):
                        match = j
            if match is not None:
                duplicate_of[i] = match
                continue
            sets[i] = current
            for shingle in prefix:
                index[shingle].append(i)
        return duplicate_of
