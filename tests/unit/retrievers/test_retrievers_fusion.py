"""Fusion of ranked lists, checked against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from aof_index_retrievers import (
    fuse,
    linear_fusion,
    max_fusion,
    reciprocal_rank_fusion,
)


def hit(node_id: str, score: float | None, text: str | None = None) -> NodeWithScore:
    return NodeWithScore(node=TextNode(id_=node_id, text=text or f"text of {node_id}"), score=score)


def ranked(*items: tuple[str, float | None]) -> list[NodeWithScore]:
    return [hit(node_id, score) for node_id, score in items]


def ids(results: list[NodeWithScore]) -> list[str]:
    return [r.node.node_id for r in results]


def scores(results: list[NodeWithScore]) -> dict[str, float]:
    return {r.node.node_id: r.score for r in results}  # type: ignore[misc]


L1 = ranked(("a", 10.0), ("b", 6.0), ("c", 2.0))
L2 = ranked(("c", 0.9), ("d", 0.5), ("a", 0.1))


# ---------------------------------------------------------------------- rrf


def test_rrf_hand_computed() -> None:
    out = reciprocal_rank_fusion([L1, L2], k=60)
    assert ids(out) == ["a", "c", "b", "d"]
    expected = {
        "a": 1 / 61 + 1 / 63,
        "b": 1 / 62,
        "c": 1 / 63 + 1 / 61,
        "d": 1 / 62,
    }
    assert scores(out) == pytest.approx(expected)
    # a and c tie; both have best rank 1: node id decides. b and d tie, best rank 2.


def test_rrf_weights_are_honoured() -> None:
    assert ids(reciprocal_rank_fusion([L1, L2], weights=[1, 0])) == ["a", "b", "c"]
    assert ids(reciprocal_rank_fusion([L1, L2], weights=[0, 1])) == ["c", "d", "a"]
    first = ranked(("x", 1.0), ("y", 0.5))
    second = ranked(("y", 1.0), ("x", 0.5))
    assert ids(reciprocal_rank_fusion([first, second])) == ["x", "y"]  # tie: by id
    weighted = reciprocal_rank_fusion([first, second], weights=[1, 3], k=60)
    assert ids(weighted) == ["y", "x"]
    assert scores(weighted) == pytest.approx({"y": 1 / 62 + 3 / 61, "x": 1 / 61 + 3 / 62})


def test_rrf_ignores_scores_and_accepts_none() -> None:
    out = reciprocal_rank_fusion([ranked(("a", None), ("b", None))], k=0)
    assert scores(out) == pytest.approx({"a": 1.0, "b": 0.5})


# ---------------------------------------------------------------------- linear


def test_linear_minmax_hand_computed() -> None:
    # L1 minmax: a=1, b=0.5, c=0.  L2 minmax: c=1, d=0.5, a=0.  Missing counts 0.
    out = linear_fusion([L1, L2], weights=[0.7, 0.3], normalization="minmax")
    assert ids(out) == ["a", "b", "c", "d"]
    assert scores(out) == pytest.approx({"a": 0.7, "b": 0.35, "c": 0.3, "d": 0.15})


def test_linear_zscore_hand_computed() -> None:
    # Both lists have z-scores (+r, 0, -r) with r = 4 / sqrt(32/3) = sqrt(1.5);
    # a node missing from a list counts that list's minimum, -r.
    r = math.sqrt(1.5)
    out = linear_fusion([L1, L2], weights=[0.7, 0.3], normalization="zscore")
    assert ids(out) == ["a", "b", "c", "d"]
    assert scores(out) == pytest.approx(
        {
            "a": 0.7 * r + 0.3 * -r,
            "b": 0.7 * 0 + 0.3 * -r,
            "c": 0.7 * -r + 0.3 * r,
            "d": 0.7 * -r + 0.3 * 0,
        }
    )


def test_linear_dbsf_hand_computed() -> None:
    # Distribution-based: mean ± 3·std onto [0, 1]. Both lists have mean m and std sd with
    # scores m + r·sd, m, m - r·sd (r = sqrt(1.5)), so they map to 0.5 ± r/6; missing = 0.
    r = math.sqrt(1.5)
    hi, mid, lo = 0.5 + r / 6, 0.5, 0.5 - r / 6
    out = linear_fusion([L1, L2], weights=[0.7, 0.3], normalization="dbsf")
    assert ids(out) == ["a", "c", "b", "d"]
    assert scores(out) == pytest.approx(
        {"a": 0.7 * hi + 0.3 * lo, "b": 0.7 * mid, "c": 0.7 * lo + 0.3 * hi, "d": 0.3 * mid}
    )
    # Not z-score in disguise: a missing node counts the lower edge (0), not the list's min.
    zscore = linear_fusion([L1, L2], weights=[0.7, 0.3], normalization="zscore")
    assert ids(zscore) != ids(out)


def test_dbsf_maps_three_sigma_to_unit_interval_and_handles_degenerate_lists() -> None:
    scores_ = [float(s) for s in range(1, 101)]
    out = linear_fusion(
        [ranked(*((f"n{i}", s) for i, s in enumerate(scores_)))], normalization="dbsf"
    )
    values = sorted(r.score or 0.0 for r in out)
    assert 0.0 < values[0] < 0.3 and 0.7 < values[-1] < 1.0
    assert values[49] == pytest.approx(0.5 - 0.5 / (6 * math.sqrt((100**2 - 1) / 12)))
    single = ranked(("a", 3.0))
    equal = ranked(("b", 2.0), ("c", 2.0))
    assert scores(linear_fusion([single, equal], normalization="dbsf")) == {
        "a": 0.5 + 0.0,
        "b": 0.0 + 0.5,
        "c": 0.0 + 0.5,
    }


def test_linear_none_uses_raw_scores_and_list_minimum_for_missing() -> None:
    out = linear_fusion([L1, L2], weights=[1, 1], normalization="none")
    assert scores(out) == pytest.approx(
        {"a": 10.0 + 0.1, "b": 6.0 + 0.1, "c": 2.0 + 0.9, "d": 2.0 + 0.5}
    )


def test_linear_degenerate_lists_do_not_divide_by_zero() -> None:
    single = ranked(("a", 3.0))
    equal = ranked(("b", 2.0), ("c", 2.0))
    out = linear_fusion([single, equal], normalization="minmax")
    assert scores(out) == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert ids(out) == ["a", "b", "c"]
    out = linear_fusion([single, equal], normalization="zscore")
    assert scores(out) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert linear_fusion([[], []]) == []
    assert linear_fusion([]) == []


def test_linear_weights_are_honoured() -> None:
    assert ids(linear_fusion([L1, L2], weights=[0, 1])) == ["c", "d", "a"]
    assert ids(linear_fusion([L1, L2], weights=[0.2, 0.8])) == ["c", "d", "a", "b"]


def test_linear_needs_scores() -> None:
    with pytest.raises(ValueError, match="no score"):
        linear_fusion([ranked(("a", None))])


# ---------------------------------------------------------------------- maximal


def test_max_fusion_hand_computed() -> None:
    out = max_fusion([L1, L2], weights=[0.7, 0.3], normalization="minmax")
    # a: max(0.7*1, 0.3*0)=0.7  b: 0.35  c: max(0, 0.3)=0.3  d: 0.15
    assert scores(out) == pytest.approx({"a": 0.7, "b": 0.35, "c": 0.3, "d": 0.15})
    out = max_fusion([L1, L2], weights=[0.4, 0.6], normalization="minmax")
    # a: max(0.4, 0)=0.4  b: 0.2  c: max(0, 0.6)=0.6  d: 0.3
    assert ids(out) == ["c", "a", "d", "b"]
    assert scores(out) == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.6, "d": 0.3})


# ---------------------------------------------------------------------- common rules


@pytest.mark.parametrize("method", ["rrf", "linear", "maximal"])
def test_dedupe_by_id_never_by_text(method: str) -> None:
    same_text_1 = hit("n1", 0.9, text="identical text")
    same_text_2 = hit("n2", 0.8, text="identical text")
    other = hit("n1", 5.0, text="the same id from another retriever")
    out = fuse([[same_text_1, same_text_2], [other]], method)  # type: ignore[arg-type]
    assert sorted(ids(out)) == ["n1", "n2"]
    n1 = next(r for r in out if r.node.node_id == "n1")
    assert n1.node is same_text_1.node  # the first list's node object is kept


@pytest.mark.parametrize("method", ["rrf", "linear", "maximal"])
def test_inputs_untouched_and_results_fresh(method: str) -> None:
    first = ranked(("a", 10.0), ("b", 6.0))
    second = ranked(("b", 0.9), ("a", 0.1))
    out = fuse([first, second], method)  # type: ignore[arg-type]
    assert [h.score for h in first] == [10.0, 6.0]
    assert [h.score for h in second] == [0.9, 0.1]
    assert not {id(r) for r in out} & {id(h) for h in first + second}


def test_duplicate_inside_one_list_counts_once() -> None:
    dup = ranked(("a", 1.0), ("a", 0.5), ("b", 0.4))
    out = reciprocal_rank_fusion([dup], k=0)
    assert scores(out) == pytest.approx({"a": 1.0, "b": 0.5})


def test_ties_break_by_best_rank_then_id() -> None:
    # k=0: z = 1/1, y = 1/1, b = 1/2 + 1/2 = 1: a three-way tie on score.
    first = ranked(("z", 1.0), ("b", 0.5))
    second = ranked(("y", 1.0), ("b", 0.5))
    out = reciprocal_rank_fusion([first, second], k=0)
    assert scores(out) == {"z": 1.0, "y": 1.0, "b": 1.0}
    # y and z have best rank 1 (id decides between them); b's best rank is 2, so it
    # comes last although its id is the smallest.
    assert ids(out) == ["y", "z", "b"]


def test_zero_weight_list_is_skipped() -> None:
    three = ranked(("q", 3.0), ("b", 2.0), ("x", 1.0))
    out = linear_fusion([three, ranked(("z", 9.0), ("b", 0.0))], weights=[1, 0])
    assert ids(out) == ["q", "b", "x"]
    assert scores(out) == {"q": 1.0, "b": 0.5, "x": 0.0}


def test_top_n() -> None:
    assert ids(fuse([L1, L2], "rrf", top_n=2)) == ["a", "c"]
    assert fuse([L1, L2], "linear", top_n=0) == []


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="weights"):
        fuse([L1, L2], "rrf", weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        fuse([L1, L2], "linear", weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="fusion method"):
        fuse([L1, L2], "borda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalization"):
        fuse([L1, L2], "linear", normalization="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_n"):
        fuse([L1], "rrf", top_n=-1)
    with pytest.raises(ValueError, match="k must"):
        reciprocal_rank_fusion([L1], k=-1)


def test_fuse_dispatches() -> None:
    assert scores(fuse([L1, L2], "rrf", k=10)) == scores(reciprocal_rank_fusion([L1, L2], k=10))
    assert scores(fuse([L1, L2], "linear", normalization="zscore")) == scores(
        linear_fusion([L1, L2], normalization="zscore")
    )
    assert scores(fuse([L1, L2], "maximal", weights=[2, 1])) == scores(
        max_fusion([L1, L2], weights=[2, 1])
    )
