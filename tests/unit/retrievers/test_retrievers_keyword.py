"""BM25Index and BM25Retriever over a small SRE corpus."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from llama_index.core.schema import (
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from aof_index_retrievers import BM25Index, BM25Retriever
from aof_index_retrievers import keyword as keyword_module


def ids(results: list[NodeWithScore]) -> list[str]:
    return [r.node.node_id for r in results]


def pairs(results: list[NodeWithScore]) -> list[tuple[str, float | None]]:
    return [(r.node.node_id, r.score) for r in results]


QUERIES = [
    "dns resolution",
    "pods crashloop restart",
    "certificate renewal ingress",
    "node disk pressure eviction",
    "slow etcd",
]


# ---------------------------------------------------------------------- ranking


def test_dns_query_ranks_dns_doc_first(bm25: BM25Index) -> None:
    results = bm25.query("dns resolution", top_k=3)
    assert ids(results)[0] == "dns"
    assert "dns-external" in ids(results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert all(s is not None and s > 0 for s in scores)


def test_stemming_matches_word_forms(
    bm25: BM25Index, fresh_nodes: Callable[[], list[TextNode]]
) -> None:
    # "certificates expiring" shares no surface form with "certificate expired"
    assert ids(bm25.query("certificates expiring", top_k=1)) == ["cert"]
    unstemmed = BM25Index(stemmer_language=None)
    unstemmed.add(fresh_nodes())
    assert "cert" not in ids(unstemmed.query("expiring renewing", top_k=5))
    assert ids(bm25.query("expiring renewing", top_k=1)) == ["cert"]


def test_top_k_limits_and_only_matching_docs_return(bm25: BM25Index) -> None:
    assert len(bm25.query("pods", top_k=2)) == 2
    everything = bm25.query("pods", top_k=100)
    assert 2 < len(everything) < len(bm25)  # only documents that contain the word
    assert all("pod" in r.node.get_content(MetadataMode.EMBED).lower() for r in everything)


@pytest.mark.parametrize("query", ["", "   ", "the and of", "zzzz qqqq", "a"])
def test_empty_stopword_and_unknown_queries_return_nothing(bm25: BM25Index, query: str) -> None:
    assert bm25.query(query, top_k=5) == []


def test_empty_index_returns_nothing() -> None:
    index = BM25Index()
    assert index.query("dns", top_k=5) == []
    assert index.batch_query(["dns", "pods"], top_k=5) == [[], []]
    assert len(index) == 0


def test_top_k_zero_and_larger_than_corpus(bm25: BM25Index) -> None:
    assert bm25.query("dns", top_k=0) == []
    assert len(bm25.query("the kubelet restarts pods", top_k=1000)) <= len(bm25)


def test_batch_query_equals_single_queries(bm25: BM25Index) -> None:
    batched = bm25.batch_query([*QUERIES, "the"], top_k=4, n_threads=2)
    assert batched[-1] == []
    for query, got in zip(QUERIES, batched, strict=False):
        assert pairs(got) == pairs(bm25.query(query, top_k=4))


def test_metadata_mode_none_indexes_text_only(nodes: list[TextNode]) -> None:
    # "security" appears only in the cert node's metadata (team: security)
    with_metadata = BM25Index()
    with_metadata.add(nodes)
    assert ids(with_metadata.query("security", top_k=3)) == ["cert"]
    text_only = BM25Index(metadata_mode=MetadataMode.NONE)
    text_only.add(nodes)
    assert text_only.query("security", top_k=3) == []


def test_custom_stopwords(nodes: list[TextNode]) -> None:
    index = BM25Index(stopwords=["kubelet"])
    index.add(nodes)
    assert index.query("kubelet", top_k=5) == []
    assert ids(index.query("the", top_k=1)) != []  # "the" is no longer a stopword


# ---------------------------------------------------------------------- upsert / delete


def test_upsert_by_id_replaces(bm25: BM25Index) -> None:
    size = len(bm25)
    assert ids(bm25.query("coredns", top_k=1)) == ["dns"]
    bm25.add([TextNode(id_="dns", text="Quota exceeded in namespace payments")])
    bm25.add([TextNode(id_="dns", text="Quota exceeded in namespace payments")])
    assert len(bm25) == size
    assert bm25.node_ids().count("dns") == 1
    assert "dns" not in ids(bm25.query("coredns", top_k=5))
    assert ids(bm25.query("quota", top_k=5)) == ["dns"]


def test_delete_and_delete_ref_doc(bm25: BM25Index) -> None:
    size = len(bm25)
    assert bm25.delete(["cert", "not-there"]) == 1
    assert "cert" not in bm25 and bm25.get("cert") is None
    assert bm25.query("certificate", top_k=5) == []
    assert bm25.delete("cert") == 0
    assert bm25.delete_ref_doc("runbook-dns") == 2
    assert len(bm25) == size - 3
    assert bm25.query("dns", top_k=5) == []
    assert bm25.delete_ref_doc("runbook-dns") == 0
    # an upsert that moves a node to another source document updates the mapping
    moved = TextNode(id_="pods", text="pods moved")
    moved.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="other-doc")
    bm25.add([moved])
    assert bm25.delete_ref_doc("runbook-pods") == 1  # only "oom" is left there
    assert bm25.delete_ref_doc("other-doc") == 1


def test_index_keeps_its_own_copies(nodes: list[TextNode]) -> None:
    nodes[0].embedding = [0.1] * 8
    index = BM25Index()
    index.add(nodes)
    nodes[0].metadata["team"] = "changed"
    stored = index.get("pods")
    assert stored is not None
    assert stored.embedding is None
    assert stored.metadata["team"] == "platform"
    hit = index.query("crashloopbackoff", top_k=1)[0]
    hit.node.metadata["team"] = "mutated"
    assert index.get("pods").metadata["team"] == "platform"  # type: ignore[union-attr]


# ---------------------------------------------------------------------- filters


def test_filters_apply_before_ranking(bm25: BM25Index) -> None:
    # Unfiltered, "dns" (team network) is the best hit for this query. With top_k=1 and a
    # filter excluding it, pre-filtering still finds the best *matching* node;
    # post-filtering the top 1 would return nothing.
    assert ids(bm25.query("dns resolution", top_k=1)) == ["dns"]
    platform = MetadataFilters(filters=[MetadataFilter(key="team", value="platform")])
    assert ids(bm25.query("dns resolution", top_k=1, filters=platform)) == ["dns-external"]
    results = bm25.query("pods kubelet container", top_k=10, filters=platform)
    assert results and all(r.node.metadata["team"] == "platform" for r in results)


def test_filter_on_ref_doc_id_like_vector_stores(bm25: BM25Index) -> None:
    only_dns = MetadataFilters(filters=[MetadataFilter(key="doc_id", value="runbook-dns")])
    assert set(ids(bm25.query("check logs pods", top_k=10, filters=only_dns))) <= {
        "dns",
        "dns-external",
    }
    assert ids(bm25.query("external", top_k=10, filters=only_dns)) == ["dns-external"]


def test_filter_matching_nothing(bm25: BM25Index) -> None:
    none = MetadataFilters(filters=[MetadataFilter(key="team", value="nobody")])
    assert bm25.query("dns", top_k=5, filters=none) == []
    assert bm25.batch_query(["dns", "pods"], top_k=5, filters=none) == [[], []]


def test_filter_mask_follows_index_changes(bm25: BM25Index) -> None:
    security = MetadataFilters(filters=[MetadataFilter(key="team", value="security")])
    assert ids(bm25.query("ingress", top_k=5, filters=security)) == ["cert"]
    bm25.add([TextNode(id_="waf", text="ingress WAF rule blocks", metadata={"team": "security"})])
    assert set(ids(bm25.query("ingress", top_k=5, filters=security))) == {"cert", "waf"}
    bm25.add([TextNode(id_="cert", text="ingress cert", metadata={"team": "platform"})])
    assert ids(bm25.query("ingress", top_k=5, filters=security)) == ["waf"]


def test_filters_with_operators_and_lists(bm25: BM25Index) -> None:
    severe = MetadataFilters(
        filters=[
            MetadataFilter(key="severity", value=1, operator=FilterOperator.LTE),
            MetadataFilter(key="tags", value=["dns", "tls"], operator=FilterOperator.ANY),
        ]
    )
    assert set(ids(bm25.query("check the ingress dns", top_k=10, filters=severe))) == {
        "dns",
        "cert",
    }


# ---------------------------------------------------------------------- persistence


def test_constructor_does_no_io(tmp_path: Path) -> None:
    target = tmp_path / "bm25"
    BM25Index(target)
    assert not target.exists()


def test_persist_load_round_trip(tmp_path: Path, bm25: BM25Index, nodes: list[TextNode]) -> None:
    expected = [pairs(bm25.query(q, top_k=5)) for q in QUERIES]  # model built: saved too
    bm25.persist(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.persist_dir == tmp_path / "bm25"
    assert loaded.params == bm25.params
    assert loaded.node_ids() == bm25.node_ids()
    assert [pairs(loaded.query(q, top_k=5)) for q in QUERIES] == expected
    node = loaded.get("dns")
    assert node is not None and node.ref_doc_id == "runbook-dns"
    assert node.metadata == nodes[2].metadata
    # the tokenizer vocabulary survived: new nodes use the same token ids
    for index in (bm25, loaded):
        index.add([TextNode(id_="new", text="CoreDNS resolution broken again")])
    assert pairs(loaded.query("dns resolution", top_k=5)) == pairs(
        bm25.query("dns resolution", top_k=5)
    )
    assert loaded.delete_ref_doc("runbook-dns") == 2


def test_persist_with_stale_model_rebuilds_on_load(tmp_path: Path, nodes: list[TextNode]) -> None:
    index = BM25Index(tmp_path / "bm25", k1=1.2, b=0.5, stopwords=None)
    index.add(nodes)  # never queried: no model yet
    index.persist()
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.params == index.params
    for query in [*QUERIES, "the"]:
        assert pairs(loaded.query(query, top_k=5)) == pairs(index.query(query, top_k=5))


def test_persist_empty_index(tmp_path: Path) -> None:
    BM25Index(tmp_path / "e").persist()
    loaded = BM25Index.load(tmp_path / "e")
    assert len(loaded) == 0 and loaded.query("dns", top_k=3) == []


def test_persist_needs_a_directory(bm25: BM25Index) -> None:
    with pytest.raises(ValueError, match="persist_dir"):
        bm25.persist()


def test_persist_replaces_previous_version(tmp_path: Path, bm25: BM25Index) -> None:
    target = tmp_path / "bm25"
    bm25.persist(target)
    bm25.delete(["dns"])
    bm25.persist(target)
    assert "dns" not in BM25Index.load(target)
    # only the live version and its pointer remain
    assert sorted(p.name.split("-")[0] for p in target.iterdir()) == ["CURRENT", "v"]


def test_failed_persist_leaves_previous_index_intact(
    tmp_path: Path, bm25: BM25Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "bm25"
    bm25.persist(target)
    before = [pairs(bm25.query(q, top_k=5)) for q in QUERIES]
    bm25.delete(["dns", "cert"])
    bm25.add([TextNode(id_="extra", text="dns certificate everything")])

    real_write_tokens = keyword_module._write_tokens

    def crash_midway(directory: Path, tokens: object) -> None:
        real_write_tokens(directory, tokens)  # type: ignore[arg-type]
        (directory / "tokens.npy").write_bytes(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(keyword_module, "_write_tokens", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        bm25.persist(target)
    loaded = BM25Index.load(target)
    assert "dns" in loaded and "extra" not in loaded
    assert [pairs(loaded.query(q, top_k=5)) for q in QUERIES] == before
    assert not [p for p in target.iterdir() if p.name.startswith(".tmp")]

    # A crash right before the commit point (replacing CURRENT) changes nothing either.
    monkeypatch.setattr(keyword_module, "_write_tokens", real_write_tokens)
    real_fsync = keyword_module._fsync_file

    def crash_before_commit(path: Path) -> None:
        if "CURRENT" in path.name:
            raise OSError("power cut")
        real_fsync(path)

    monkeypatch.setattr(keyword_module, "_fsync_file", crash_before_commit)
    with pytest.raises(OSError, match="power cut"):
        bm25.persist(target)
    assert "extra" not in BM25Index.load(target)
    monkeypatch.setattr(keyword_module, "_fsync_file", real_fsync)
    bm25.persist(target)  # a later persist succeeds and sweeps the leftovers
    assert "extra" in BM25Index.load(target)
    assert not [p for p in target.iterdir() if p.name.startswith(".tmp")]


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no BM25 index"):
        BM25Index.load(tmp_path / "nothing")


def test_load_or_create(tmp_path: Path, nodes: list[TextNode]) -> None:
    target = tmp_path / "bm25"
    created = BM25Index.load_or_create(target, k1=1.2)
    assert len(created) == 0 and created.params["k1"] == 1.2
    created.add(nodes)
    created.persist()
    loaded = BM25Index.load_or_create(target)
    assert len(loaded) == len(nodes)
    assert pairs(loaded.query("dns", top_k=3)) == pairs(created.query("dns", top_k=3))
    # scoring parameters may change (rebuilt from the saved tokens) ...
    retuned = BM25Index.load_or_create(target, k1=2.0, b=0.3)
    assert retuned.params["k1"] == 2.0
    reference = BM25Index(k1=2.0, b=0.3)
    reference.add(nodes)
    assert pairs(retuned.query("dns pods", top_k=5)) == pairs(reference.query("dns pods", top_k=5))
    # ... tokenisation may not
    with pytest.raises(ValueError, match="stemmer_language"):
        BM25Index.load_or_create(target, stemmer_language=None)
    with pytest.raises(ValueError, match="stopwords"):
        BM25Index.load_or_create(target, stopwords=None)
    BM25Index.load_or_create(target, stopwords="english")  # same list as "en"


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="stemmer_language"):
        BM25Index(stemmer_language="klingon")
    with pytest.raises(ValueError, match="method"):
        BM25Index(method="tfidf")
    with pytest.raises(ValueError, match="window=-1"):
        BM25Index(window=-1)


# ---------------------------------------------------------------------- window


def _chunks(doc: str, *texts: str) -> list[TextNode]:
    """Chunks of one document, linked previous/next as LlamaIndex node parsers link them."""
    nodes = [TextNode(id_=f"{doc}-{i}", text=text) for i, text in enumerate(texts)]
    for node in nodes:
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    for before, after in itertools.pairwise(nodes):
        before.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id=after.node_id)
        after.relationships[NodeRelationship.PREVIOUS] = RelatedNodeInfo(node_id=before.node_id)
    return nodes


WINDOWED = [
    *_chunks(
        "runbook",
        "The etcd cluster lost quorum after the upgrade.",
        "Restore the snapshot taken before the upgrade.",
        "Then restart every kube-apiserver instance.",
        "Unrelated closing remarks about dashboards.",
    ),
    *_chunks("other", "Snapshot restore of a Postgres volume.", "Quorum in Kafka clusters."),
]


def test_window_scores_a_chunk_with_its_neighbours() -> None:
    # The answer chunk says "snapshot"; "etcd" is only in the chunk before it.
    plain, windowed = BM25Index(), BM25Index(window=1)
    plain.add(WINDOWED)
    windowed.add(WINDOWED)
    query = "etcd snapshot restore"
    assert ids(plain.query(query, top_k=1)) == ["other-0"]
    # Chunks 0 and 1 both hold every word of the query in their windows.
    assert sorted(ids(windowed.query(query, top_k=2))) == ["runbook-0", "runbook-1"]
    # Neighbours of another document never count; nor do chunks beyond the window.
    assert "runbook-3" not in ids(windowed.query("etcd", top_k=10))
    assert ids(BM25Index(window=3).query("etcd", top_k=1)) == []  # empty index
    wide = BM25Index(window=3)
    wide.add(WINDOWED)
    assert "runbook-3" in ids(wide.query("etcd", top_k=10))
    assert "other-1" not in ids(wide.query("etcd", top_k=10))
    # The node returned is the chunk itself, not the window's text.
    texts = {node.node_id: node.get_content() for node in WINDOWED}
    for hit in windowed.query(query, top_k=5):
        assert hit.node.get_content() == texts[hit.node.node_id]


def test_window_follows_deleted_neighbours_and_survives_persistence(tmp_path: Path) -> None:
    index = BM25Index(tmp_path / "bm25", window=1)
    index.add(WINDOWED)
    index.delete("runbook-0")  # the only chunk that says etcd
    assert "runbook-1" not in ids(index.query("etcd", top_k=10))
    index.add(WINDOWED[:1])
    index.persist()
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.params["window"] == 1
    assert "runbook-1" in ids(loaded.query("etcd", top_k=10))
    # A different window applies on load (rebuilt from the saved tokens).
    narrowed = BM25Index.load_or_create(tmp_path / "bm25", window=0)
    assert ids(narrowed.query("etcd", top_k=10)) == ["runbook-0"]


# ---------------------------------------------------------------------- retriever


def test_retriever_applies_top_k_and_filters(bm25: BM25Index) -> None:
    platform = MetadataFilters(filters=[MetadataFilter(key="team", value="platform")])
    retriever = BM25Retriever(bm25, similarity_top_k=2, filters=platform)
    sync = retriever.retrieve("dns resolution")
    assert ids(sync)[0] == "dns-external" and len(sync) <= 2


async def test_retriever_async_equals_sync(bm25: BM25Index) -> None:
    retriever = BM25Retriever(bm25, similarity_top_k=4)
    for query in QUERIES:
        assert pairs(await retriever.aretrieve(query)) == pairs(retriever.retrieve(query))


def test_importing_the_retrievers_leaves_logging_levels_to_the_application() -> None:
    """bm25s sets its logger to DEBUG on import; after our import it inherits the root's."""
    script = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "import aof_index_retrievers\n"
        "print(logging.getLogger('bm25s').getEffectiveLevel())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(logging.WARNING)
