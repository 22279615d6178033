"""Cut a text range into chunks that fit a token budget, at the best boundaries available.

Everything works on ``(start, end)`` character ranges of the source text, never on copies,
so every chunk is an exact slice of its document: offsets are exact and no text can be
lost or altered.  Token counts come from the document's token spans, computed once.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_SEPARATORS", "Ranges", "TokenIndex", "pack", "split_range", "trim"]

DEFAULT_SEPARATORS = ("\n\n", "\n", ". ", " ")
Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class TokenIndex:
    """Token spans of one text, for counting the tokens of any range by bisection."""

    starts: Sequence[int]
    ends: Sequence[int]

    @classmethod
    def of(cls, spans: Sequence[tuple[int, int]]) -> TokenIndex:
        """Index ``(start, end)`` token spans (in text order)."""
        return cls([s for s, _ in spans], [e for _, e in spans])

    def count(self, start: int, end: int) -> int:
        """Tokens that start inside ``[start, end)``."""
        return bisect.bisect_left(self.starts, end) - bisect.bisect_left(self.starts, start)

    def windows(self, start: int, end: int, size: int) -> Ranges:
        """Consecutive ranges of at most ``size`` tokens covering ``[start, end)``."""
        first = bisect.bisect_left(self.starts, start)
        last = bisect.bisect_left(self.starts, end)
        out: Ranges = []
        cursor = start
        for i in range(first, last, max(1, size)):
            j = min(i + size, last) - 1
            stop = end if j == last - 1 else self.ends[j]
            out.append((cursor, stop))
            cursor = stop
        if not out and start < end:
            out.append((start, end))
        return out

    def back(self, position: int, tokens: int, floor: int) -> int:
        """The start of the token ``tokens`` tokens before ``position`` (not before ``floor``)."""
        i = bisect.bisect_left(self.starts, position) - tokens
        i = max(i, bisect.bisect_left(self.starts, floor))
        return self.starts[i] if i < len(self.starts) else position


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` to exclude leading and trailing white space."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _parts(text: str, start: int, end: int, separator: str) -> Ranges:
    """Split at ``separator``, keeping it at the end of the part before it."""
    parts: Ranges = []
    cursor = start
    while True:
        found = text.find(separator, cursor, end)
        if found < 0:
            break
        parts.append((cursor, found + len(separator)))
        cursor = found + len(separator)
    if cursor < end:
        parts.append((cursor, end))
    return parts


def split_range(
    text: str,
    start: int,
    end: int,
    budget: int,
    tokens: TokenIndex,
    separators: Sequence[str] = DEFAULT_SEPARATORS,
) -> Ranges:
    """Ranges of at most ``budget`` tokens covering ``[start, end)``.

    Tries each separator in order (paragraphs, lines, sentences, words); a part still too
    large is split with the next separator, and as a last resort into token windows.
    Small neighbouring parts are packed back together up to the budget.
    """
    if tokens.count(start, end) <= budget:
        return [(start, end)]
    for i, separator in enumerate(separators):
        if not separator:  # "" matches everywhere (and never advances); token windows follow
            continue
        parts = _parts(text, start, end, separator)
        if len(parts) > 1:
            pieces: Ranges = []
            for part_start, part_end in parts:
                pieces.extend(
                    split_range(text, part_start, part_end, budget, tokens, separators[i + 1 :])
                )
            return pack(text, pieces, budget, tokens)
    return tokens.windows(start, end, budget)


def pack(text: str, ranges: Ranges, budget: int, tokens: TokenIndex) -> Ranges:
    """Merge consecutive ranges separated by nothing but white space, greedily, while the
    merge fits ``budget``."""
    out: Ranges = []
    for start, end in ranges:
        adjacent = bool(out) and not text[out[-1][1] : start].strip()
        if adjacent and tokens.count(out[-1][0], end) <= budget:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
