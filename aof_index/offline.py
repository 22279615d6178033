"""Process-wide settings that keep the library offline.

tiktoken downloads its encodings unless ``TIKTOKEN_CACHE_DIR`` points at a folder holding
them; llama-index-core ships cl100k/o200k in ``llama_index/core/_static/tiktoken_cache``.
Hugging Face libraries try the hub unless ``HF_HUB_OFFLINE`` is set.  Both are set only when
the user has not set them already.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

__all__ = ["configure_offline"]


def configure_offline() -> None:
    """Point tiktoken at llama-index-core's bundled cache and keep Hugging Face offline."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        spec = find_spec("llama_index.core")
        if spec is not None and spec.origin is not None:
            cache = Path(spec.origin).parent / "_static" / "tiktoken_cache"
            if cache.is_dir():
                os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb's posthog client
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
