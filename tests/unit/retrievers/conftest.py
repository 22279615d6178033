"""Fixtures for the retriever tests: a small SRE corpus and a deterministic embedding.

``HashEmbedding`` is a real (if crude) embedding model, a test double for a neural one:
bag of words hashed into 64 dimensions, L2-normalised, so texts sharing words are close.
It counts its calls so tests can tell whether a query was embedded.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.storage.storage_context import StorageContext
from llama_index.core.vector_stores.simple import SimpleVectorStore

from aof_index_retrievers import BM25Index

DIM = 64
_WORD = re.compile(r"[a-z0-9]+")


class HashEmbedding(BaseEmbedding):
    """Bag-of-words hashed to ``DIM`` dimensions; deterministic across processes."""

    _query_calls: int = PrivateAttr(default=0)
    _text_calls: int = PrivateAttr(default=0)

    @property
    def query_calls(self) -> int:
        return self._query_calls

    @property
    def text_calls(self) -> int:
        return self._text_calls

    def reset(self) -> None:
        self._query_calls = 0
        self._text_calls = 0

    @staticmethod
    def vector(text: str) -> list[float]:
        out = [0.0] * DIM
        for word in _WORD.findall(text.lower()):
            digest = hashlib.md5(word.encode()).digest()
            out[digest[0] % DIM] += 1.0 if digest[1] % 2 else -1.0
        norm = math.sqrt(sum(v * v for v in out)) or 1.0
        return [v / norm for v in out]

    def _get_query_embedding(self, query: str) -> list[float]:
        self._query_calls += 1
        return self.vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        self._query_calls += 1
        return self.vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        self._text_calls += 1
        return self.vector(text)


# (id, text, metadata, source document)
CORPUS: list[tuple[str, str, dict[str, object], str]] = [
    (
        "pods",
        "Pods stuck in CrashLoopBackOff: the container exits and the kubelet restarts it "
        "with growing back-off; read the previous container logs.",
        {"team": "platform", "severity": 2, "tags": ["kubernetes", "pods"]},
        "runbook-pods",
    ),
    (
        "oom",
        "OOMKilled pods: the container exceeded its memory limit; raise the limit or fix the leak.",
        {"team": "platform", "severity": 3, "tags": ["kubernetes", "memory"]},
        "runbook-pods",
    ),
    (
        "dns",
        "DNS resolution fails inside the cluster: check CoreDNS pods, the kube-dns service "
        "and the resolv.conf search domains. DNS lookups time out.",
        {"team": "network", "severity": 1, "tags": ["dns", "network"]},
        "runbook-dns",
    ),
    (
        "dns-external",
        "External DNS records are not updated after an ingress change; check the "
        "external-dns controller logs.",
        {"team": "platform", "severity": 3, "tags": ["dns"]},
        "runbook-dns",
    ),
    (
        "cert",
        "TLS certificate expired on the ingress: cert-manager failed to renew the "
        "certificate; check the ACME challenge.",
        {"team": "security", "severity": 1, "tags": ["tls", "ingress"]},
        "runbook-tls",
    ),
    (
        "disk",
        "Node disk pressure: the kubelet evicts pods when the node filesystem fills up; "
        "prune images and logs.",
        {"team": "platform", "severity": 2, "tags": ["node"]},
        "runbook-node",
    ),
    (
        "latency",
        "High p99 latency on the checkout service after deploy; compare traces before and "
        "after the rollout.",
        {"team": "payments", "severity": 2, "tags": ["latency"]},
        "runbook-latency",
    ),
    (
        "hpa",
        "The HorizontalPodAutoscaler does not scale: metrics-server is unavailable, so CPU "
        "metrics are missing.",
        {"team": "platform", "severity": 3, "tags": ["autoscaling"]},
        "runbook-scaling",
    ),
    (
        "pvc",
        "PersistentVolumeClaim stays Pending: no storage class matches or the provisioner is down.",
        {"team": "storage", "severity": 2, "tags": ["storage"]},
        "runbook-storage",
    ),
    (
        "imagepull",
        "ImagePullBackOff: the registry rejects the pull secret or the image tag does not exist.",
        {"team": "platform", "severity": 3, "tags": ["registry"]},
        "runbook-images",
    ),
    (
        "netpol",
        "A NetworkPolicy blocks traffic between namespaces; connections time out instead "
        "of being refused.",
        {"team": "network", "severity": 2, "tags": ["network"]},
        "runbook-network",
    ),
    (
        "etcd",
        "etcd reports slow disk sync and leader elections; the API server becomes slow.",
        {"team": "platform", "severity": 1, "tags": ["etcd", "control-plane"]},
        "runbook-etcd",
    ),
]


def make_nodes() -> list[TextNode]:
    """Fresh nodes of the corpus (each call returns new objects)."""
    nodes = []
    for node_id, text, metadata, ref in CORPUS:
        node = TextNode(id_=node_id, text=text, metadata=dict(metadata))
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=ref)
        nodes.append(node)
    return nodes


@pytest.fixture
def nodes() -> list[TextNode]:
    return make_nodes()


@pytest.fixture
def fresh_nodes() -> Callable[[], list[TextNode]]:
    """A factory of new node objects of the corpus."""
    return make_nodes


@pytest.fixture
def embed_model() -> HashEmbedding:
    return HashEmbedding()


@pytest.fixture
def bm25(nodes: list[TextNode]) -> BM25Index:
    index = BM25Index()
    index.add(nodes)
    return index


@pytest.fixture
def vector_index(nodes: list[TextNode], embed_model: HashEmbedding) -> VectorStoreIndex:
    storage = StorageContext.from_defaults(vector_store=SimpleVectorStore())
    index = VectorStoreIndex(nodes, storage_context=storage, embed_model=embed_model)
    embed_model.reset()
    return index
