"""Rerankers that call a model: Cohere Rerank and a sentence-transformers CrossEncoder.

Cohere: the hosted API cannot be reached from tests, so ``openai_stub.OpenAIStub`` stands
in for it, answering Cohere's documented ``POST /v2/rerank`` (request ``model``, ``query``,
``documents``, ``top_n``; response ``results`` of ``index`` and ``relevance_score``); the
reranker talks to it through the real ``cohere`` SDK.

CrossEncoder: no trained weights exist offline, so the test builds a tiny randomly
initialised BERT sequence-classification model, saves it to a folder and loads it through
the reranker's own loading code; assertions hold for any weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, TextNode
from openai_stub import OpenAIStub, hashed_vector

from aof_index.errors import BackendUnavailableError, ManifestError
from aof_index.postprocessors.rerank import CohereReranker, CrossEncoderReranker, reranker_from_spec
from aof_index.spec.agent import AgentRag

PASSAGES = [
    "Scale the deployment with kubectl scale.",
    "Renew the expired TLS certificate with cert-manager.",
    "CoreDNS answers DNS queries inside the cluster.",
    "Check the certificate expiry date with openssl.",
]
QUERY = "expired TLS certificate renew"


def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t), score=1.0 - i / 10) for i, t in enumerate(PASSAGES)
    ]


def cosine(a: str, b: str) -> float:
    return sum(x * y for x, y in zip(hashed_vector(a), hashed_vector(b), strict=True))


# -- Cohere --------------------------------------------------------------------------------


def test_cohere_rerank_from_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHERE_API_KEY", "co-test-key")
    rag = AgentRag.model_validate(
        {"retrieval": {"rerank": {"enabled": True, "model": "cohere-rerank-v3", "topK": 2}}}
    )
    with OpenAIStub() as stub:
        monkeypatch.setenv("CO_API_URL", stub.base_url.removesuffix("/v1"))
        reranker = reranker_from_spec(rag)
        assert isinstance(reranker, CohereReranker)
        out = reranker.postprocess_nodes(nodes(), query_str=QUERY)
    (call,) = [r for r in stub.requests if r["path"].endswith("/v2/rerank")]
    assert call["auth"] == "Bearer co-test-key"
    assert call["body"]["model"] == "rerank-english-v3.0"  # the manifest alias, resolved
    assert call["body"]["query"] == QUERY
    assert call["body"]["documents"] == PASSAGES and call["body"]["top_n"] == 2
    expected = sorted(PASSAGES, key=lambda p: -cosine(QUERY, p))[:2]
    assert [n.node.get_content() for n in out] == expected
    assert out[0].score == pytest.approx(cosine(QUERY, expected[0]))


async def test_cohere_rerank_async(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIStub() as stub:
        reranker = CohereReranker(
            model="rerank-v3.5", api_key="co-async", base_url=stub.base_url.removesuffix("/v1")
        )
        out = await reranker.apostprocess_nodes(nodes(), query_str=QUERY)
    assert len(out) == len(PASSAGES)
    assert out[0].node.get_content() == PASSAGES[1]
    assert stub.requests[0]["auth"] == "Bearer co-async"


def test_cohere_failure_names_backend_and_what_to_check() -> None:
    with OpenAIStub() as stub:
        closed = stub.base_url.removesuffix("/v1")
    # The stub is stopped: nothing listens on its port any more.
    reranker = CohereReranker(api_key="k", base_url=closed, timeout_s=5)
    with pytest.raises(BackendUnavailableError) as info:
        reranker.postprocess_nodes(nodes(), query_str=QUERY)
    message = str(info.value)
    assert "Cohere rerank" in message and "rerank-v3.5" in message
    assert "rag.retrieval.rerank.model" in message


# -- CrossEncoder --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with one output, random weights, and a small word-piece vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    words = sorted({w.lower().strip(".") for p in [*PASSAGES, QUERY] for w in p.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,  # type: ignore[call-arg]  # a PretrainedConfig kwarg
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_cross_encoder_scores_come_from_the_model(tiny_cross_encoder: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rag = AgentRag.model_validate(
        {"retrieval": {"rerank": {"model": f"cross-encoder:{tiny_cross_encoder}", "topK": 3}}}
    )
    reranker = reranker_from_spec(rag)
    assert isinstance(reranker, CrossEncoderReranker)
    out = reranker.postprocess_nodes(nodes(), query_str=QUERY)
    assert len(out) == 3  # topK

    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    with torch.no_grad():
        batch = tokenizer([QUERY] * len(PASSAGES), PASSAGES, padding=True, return_tensors="pt")
        expected = torch.sigmoid(model(**batch).logits[:, 0]).tolist()
    by_text = dict(zip(PASSAGES, expected, strict=True))
    for hit in out:
        assert hit.score == pytest.approx(by_text[hit.node.get_content()], abs=1e-5)
    assert [h.score for h in out] == sorted(by_text.values(), reverse=True)[:3]


def test_cross_encoder_missing_folder_names_the_field(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    reranker = CrossEncoderReranker(model_path=str(missing))  # no I/O in the constructor
    with pytest.raises(ManifestError) as info:
        reranker.postprocess_nodes(nodes(), query_str=QUERY)
    message = str(info.value)
    assert "rag.retrieval.rerank.model" in message and str(missing) in message
    assert "does not exist" in message and "cross-encoder:<path>" in message
