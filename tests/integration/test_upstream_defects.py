"""Upstream defects the design works around (DESIGN.md), each shown to be gone."""

from __future__ import annotations

from pathlib import Path

from llama_index.core.schema import MetadataMode

from aof_index import build_memory
from aof_index_readers import LocalFilesReader

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_minilm_never_truncates_a_chunk_of_the_k8s_docs() -> None:
    """MiniLM reads 256 word pieces; LlamaIndex's default chunk is 1024 tokens."""
    memory = build_memory()
    window = memory.window
    assert window.max_tokens == 254  # 256 positions minus [CLS] and [SEP]
    docs = list(LocalFilesReader([SHARED_DATA / "k8s-docs"], exclude=["*.sha256"]).load_data())
    nodes = memory.node_parser().get_nodes_from_documents(docs)
    sizes = [window.count(n.get_content(metadata_mode=MetadataMode.EMBED)) for n in nodes]
    assert len(docs) >= 155 and len(nodes) > 2000
    assert max(sizes) <= 254
    from llama_index.core.node_parser import SentenceSplitter

    default = SentenceSplitter().get_nodes_from_documents(docs[:20])
    truncated = [n for n in default if window.count(n.get_content()) > 254]
    assert truncated  # what the default splitter would have lost


def test_tiktoken_works_offline_from_the_bundled_cache(monkeypatch) -> None:
    import socket

    def refuse(*args, **kwargs):  # any download attempt fails the test
        raise AssertionError("tiktoken tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    import tiktoken

    assert Path(__import__("os").environ["TIKTOKEN_CACHE_DIR"]).is_dir()
    assert len(tiktoken.get_encoding("cl100k_base").encode("kubectl get pods")) > 0
