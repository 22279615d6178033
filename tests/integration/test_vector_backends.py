"""The same builder path against Chroma's server (a real `chroma run` on 127.0.0.1) and
Qdrant's local mode. There is no Qdrant server binary here; the URL path is the same
client with a URL, and an unreachable URL is tested for its error."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aof_index import build_memory, ingest_documents
from aof_index.errors import BackendUnavailableError
from aof_index.spec import load_resources
from aof_index_readers import LocalFilesReader

MANIFEST = """
apiVersion: aof.agenticops.org/v1alpha1
kind: Memory
metadata: {{name: backends}}
spec:
  semantic:
    enabled: true
    vectorStore:
{store}
    retrieval:
      hybridSearch: {{enabled: true}}
"""


def _memory(store_yaml: str):
    (resource,) = load_resources(MANIFEST.format(store=store_yaml), source="test.yaml")
    return build_memory(resource)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    port = _free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen(
        [exe, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("chroma run did not start within 60 s")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _ingest_and_search(memory, runbooks: Path) -> list[str]:
    ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
    hits = memory.retriever(top_k=3).retrieve("kubelet stopped posting node status NotReady")
    return [Path(h.node.metadata["source"]).name for h in hits]


def test_chroma_server(chroma_server: int, runbooks: Path) -> None:
    memory = _memory(
        f"      type: Chroma\n      chroma: {{host: 127.0.0.1, port: {chroma_server}, "
        "collection: kb-test}"
    )
    assert _ingest_and_search(memory, runbooks)[0] == "node-not-ready.md"
    import chromadb

    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    stored = client.get_collection("kb-test").count()
    assert stored == memory.ingest_state.counts()[1] > 6
    assert not (memory.data_dir / "chroma").exists()  # nothing embedded on disk


def test_qdrant_local_mode(runbooks: Path) -> None:
    memory = _memory("      type: Qdrant")
    assert _ingest_and_search(memory, runbooks)[0] == "node-not-ready.md"
    assert (memory.data_dir / "qdrant").is_dir()
    again = ingest_documents(memory, LocalFilesReader([runbooks]).lazy_load_data())
    assert again.chunks == 0


def test_qdrant_url_unreachable_names_the_url() -> None:
    memory = _memory("      type: Qdrant\n      qdrant: {url: 'http://127.0.0.1:9'}")
    with pytest.raises(BackendUnavailableError, match=r"http://127\.0\.0\.1:9"):
        memory.vector_store
