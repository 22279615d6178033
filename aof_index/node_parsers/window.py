"""The embedding model's window: how it counts tokens and how many it reads.

Chunkers size chunks with the model's own tokenizer so no chunk is silently truncated at
embedding time (all-MiniLM-L6-v2 reads 256 word pieces, two of them special tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llama_index.core.base.embeddings.base import BaseEmbedding

from aof_index.offline import configure_offline

__all__ = ["TokenWindow", "token_window"]

HOSTED_CHUNK_TOKENS = 512
# Hosted models' input limits, in their tokenizer's tokens.
_HOSTED_LIMITS = {"OpenAIEmbedding": 8191, "CohereEmbedding": 512}


@dataclass(frozen=True)
class TokenWindow:
    """A tokenizer and the number of content tokens the embedding model reads."""

    tokenize: Callable[[str], Sequence[int]]
    max_tokens: int
    chunk_tokens: int = 0
    spans_of: Callable[[str], Sequence[tuple[int, int]]] | None = None
    """Character span of each token, when the tokenizer can tell (fast HF tokenizers,
    tiktoken); chunkers use it to cut exactly at token boundaries."""
    """Preferred chunk size (0: the whole window).  Hosted models read thousands of tokens,
    but passages of a few hundred retrieve better and fit more of them in a prompt."""

    @property
    def target(self) -> int:
        """Tokens a chunk should aim for: ``chunk_tokens`` capped at the window."""
        return min(self.chunk_tokens or self.max_tokens, self.max_tokens)

    def count(self, text: str) -> int:
        """Tokens of ``text`` in this model's tokenizer."""
        return len(self.tokenize(text))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character span of every token of ``text``.

        Falls back to whitespace-separated words when the tokenizer gives no offsets (an
        over-estimate is impossible there, so callers still verify with :meth:`count`).
        """
        if self.spans_of is not None:
            return [(int(a), int(b)) for a, b in self.spans_of(text)]
        return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def token_window(embed_model: BaseEmbedding) -> TokenWindow:
    """The window of ``embed_model``: its own tokenizer for local models, tiktoken otherwise."""
    from aof_index.embeddings.local import LocalEmbedding

    if isinstance(embed_model, LocalEmbedding):
        tokenizer = embed_model.tokenizer

        def tokenize(text: str) -> Sequence[int]:
            ids: list[int] = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            return ids

        def spans_of(text: str) -> Sequence[tuple[int, int]]:
            encoded = tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            spans: list[tuple[int, int]] = encoded["offset_mapping"]
            return spans

        # [CLS] and [SEP] take two of the model's positions.
        return TokenWindow(tokenize, embed_model.max_tokens - 2, spans_of=spans_of)

    from llama_index.core.utils import get_tokenizer

    limit = _HOSTED_LIMITS.get(type(embed_model).__name__, 512)
    return TokenWindow(
        get_tokenizer(), limit, chunk_tokens=HOSTED_CHUNK_TOKENS, spans_of=_tiktoken_spans
    )


def _tiktoken_spans(text: str) -> list[tuple[int, int]]:
    configure_offline()
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base")
    tokens = encoding.encode(text, disallowed_special=())
    _, starts = encoding.decode_with_offsets(tokens)
    ends = [*starts[1:], len(text)]
    return list(zip(starts, ends, strict=True))
