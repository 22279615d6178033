"""The embedding model's window: how it counts tokens and how many it reads.

Chunkers size chunks with the model's own tokenizer so no chunk is silently truncated at
embedding time (all-MiniLM-L6-v2 reads 256 word pieces, two of them special tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llama_index.core.base.embeddings.base import BaseEmbedding

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
    """Preferred chunk size (0: the whole window).  Hosted models read thousands of tokens,
    but passages of a few hundred retrieve better and fit more of them in a prompt."""

    @property
    def target(self) -> int:
        """Tokens a chunk should aim for: ``chunk_tokens`` capped at the window."""
        return min(self.chunk_tokens or self.max_tokens, self.max_tokens)

    def count(self, text: str) -> int:
        """Tokens of ``text`` in this model's tokenizer."""
        return len(self.tokenize(text))


def token_window(embed_model: BaseEmbedding) -> TokenWindow:
    """The window of ``embed_model``: its own tokenizer for local models, tiktoken otherwise."""
    from aof_index.embeddings.local import LocalEmbedding

    if isinstance(embed_model, LocalEmbedding):
        tokenizer = embed_model.model.tokenizer

        def tokenize(text: str) -> Sequence[int]:
            ids: list[int] = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            return ids

        # [CLS] and [SEP] take two of the model's positions.
        return TokenWindow(tokenize, embed_model.max_tokens - 2)

    from llama_index.core.utils import get_tokenizer

    limit = _HOSTED_LIMITS.get(type(embed_model).__name__, 512)
    return TokenWindow(get_tokenizer(), limit, chunk_tokens=HOSTED_CHUNK_TOKENS)
