"""ConversationRecall on real stores: Chroma on disk, the BM25 index, local MiniLM."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aof_index.build.memory import MemoryComponents, build_memory
from aof_index.memory.recall import ConversationRecall, RecallOptions, Turn, node_id

pytestmark = pytest.mark.slow  # loads the local embedding model

ALPHA = [
    Turn("alpha", "D1:1", "Ana", "Morning! Did you watch the match last night?", 1, "2 May 2024"),
    Turn(
        "alpha",
        "D1:2",
        "Bo",
        "I did! And what did you decide about the ingress timeout?",
        1,
        "2 May 2024",
        1,
    ),
    Turn(
        "alpha", "D1:3", "Ana", "Sixty seconds, and we roll it out on Monday.", 1, "2 May 2024", 2
    ),
    Turn("alpha", "D1:4", "Bo", "Great, I'll update the Helm chart.", 1, "2 May 2024", 3),
    Turn(
        "alpha",
        "D1:5",
        "Ana",
        "Thanks. The checkout pods keep timing out under load too.",
        1,
        "2 May 2024",
        4,
    ),
    Turn("alpha", "D1:6", "Bo", "I'll look at their readiness probes.", 1, "2 May 2024", 5),
    Turn(
        "alpha",
        "D2:1",
        "Ana",
        "I adopted a puppy last weekend, her name is Coco!",
        2,
        "9 June 2024",
    ),
    Turn(
        "alpha",
        "D2:2",
        "Bo",
        "I adopted a kitten last weekend, his name is Milo!",
        2,
        "9 June 2024",
        1,
    ),
    Turn(
        "alpha",
        "D2:3",
        "Ana",
        "Look at her!",
        2,
        "9 June 2024",
        2,
        image_caption="a photo of a dog on a sofa",
    ),
]
BETA = [
    Turn("beta", "D1:1", "Cy", "We raised the ingress timeout to ninety seconds.", 1, "3 May 2024"),
    Turn("beta", "D1:2", "Di", "Good, the ingress timeout was far too short.", 1, "3 May 2024", 1),
]


@pytest.fixture
def memory(tmp_path: Path) -> MemoryComponents:
    return build_memory(home=tmp_path)


@pytest.fixture
def recall(memory: MemoryComponents) -> ConversationRecall:
    recall = ConversationRecall.from_memory(memory)
    recall.add_turns([*ALPHA, *BETA])
    return recall


def test_recall_stays_within_its_conversation(recall: ConversationRecall) -> None:
    for conversation in ("alpha", "beta"):
        hits = recall.recall("ingress timeout", conversation, top_k=20)
        assert hits and {h.conversation for h in hits} == {conversation}
    assert len(recall.recall("ingress timeout", "beta", top_k=20)) == len(BETA)
    assert recall.recall("ingress timeout", "gamma") == []


def test_hits_describe_the_turn(recall: ConversationRecall) -> None:
    hit = recall.recall("When do we roll out the sixty seconds?", "alpha")[0]
    assert (hit.dialog_id, hit.speaker, hit.date) == ("D1:3", "Ana", "2 May 2024")
    assert hit.text == "Sixty seconds, and we roll it out on Monday."
    assert (hit.session, hit.turn_index) == (1, 2)
    scores = [h.score for h in recall.recall("ingress timeout", "alpha", top_k=9)]
    assert scores == sorted(scores, reverse=True)


def test_views_carry_speaker_date_neighbours_and_photos(recall: ConversationRecall) -> None:
    views = {
        n.metadata["view"]: n.text for n in recall.nodes(ALPHA) if n.metadata["dialog_id"] == "D1:3"
    }
    assert views["vector:turn"] == "Ana: Sixty seconds, and we roll it out on Monday."
    # One turn before and after in the vector context; two before and one after for BM25.
    assert views["vector:context"].splitlines() == [
        "Bo: I did! And what did you decide about the ingress timeout?",
        "Ana: Sixty seconds, and we roll it out on Monday.",
        "Bo: Great, I'll update the Helm chart.",
    ]
    assert views["keyword:context"].splitlines()[:2] == [
        "2 May 2024",
        "Ana: Morning! Did you watch the match last night?",
    ]
    assert views["keyword:turn"] == "2 May 2024\nAna: Sixty seconds, and we roll it out on Monday."
    photo = [n for n in recall.nodes(ALPHA) if n.metadata["dialog_id"] == "D2:3"]
    by_view = {n.metadata["view"]: n.text for n in photo}
    assert by_view["keyword:turn"].endswith("Ana: Look at her! [shares a photo of a dog on a sofa]")
    assert "[shares a photo" not in by_view["vector:turn"]
    # Neighbours never cross a session boundary.
    first_of_session_2 = [n for n in recall.nodes(ALPHA) if n.metadata["dialog_id"] == "D2:1"]
    context = {n.metadata["view"]: n.text for n in first_of_session_2}["keyword:context"]
    assert "readiness probes" not in context


def test_the_answer_is_found_through_the_question_it_replies_to(
    recall: ConversationRecall,
) -> None:
    query = "What was decided about the ingress timeout?"
    with_context = [h.dialog_id for h in recall.recall(query, "alpha", top_k=3)]
    assert "D1:3" in with_context[:2]
    turns_only = dataclasses.replace(
        recall.options, weights={"vector:turn": 1.0, "keyword:turn": 0.5}
    )
    ranked = recall.rank(recall.candidates(query, "alpha"), turns_only)
    alone = [str(n.metadata["dialog_id"]) for n, _ in ranked]
    # The answer shares no word with the question: alone it ranks below the question.
    assert alone.index("D1:3") > alone.index("D1:2")
    assert with_context.index("D1:3") < alone.index("D1:3")


def test_the_named_speaker_gets_the_boost(recall: ConversationRecall) -> None:
    query = "What pet did Bo adopt?"
    candidates = recall.candidates(query, "alpha")
    boosted = dict((n.metadata["dialog_id"], s) for n, s in recall.rank(candidates))
    plain_options = dataclasses.replace(recall.options, speaker_boost=0.0)
    plain = dict((n.metadata["dialog_id"], s) for n, s in recall.rank(candidates, plain_options))
    for dialog_id, score in boosted.items():
        speaker = next(t.speaker for t in ALPHA if t.dialog_id == dialog_id)
        expected = recall.options.speaker_boost if speaker == "Bo" else 0.0
        assert score - plain[dialog_id] == pytest.approx(expected)
    assert recall.recall(query, "alpha", top_k=1)[0].dialog_id == "D2:2"
    # Naming both speakers (or none) boosts nobody.
    both = recall.candidates("What pets did Ana and Bo adopt?", "alpha")
    assert recall.rank(both) == recall.rank(both, plain_options)


def test_the_session_date_is_searchable(recall: ConversationRecall) -> None:
    found = recall.candidates("June 2024", "alpha")
    assert found.ranked("keyword:turn")[:3] == ["D2:1", "D2:2", "D2:3"] or {
        found.turns[d].metadata["date"] for d in found.ranked("keyword:turn")[:3]
    } == {"9 June 2024"}


def test_ids_are_deterministic_and_adding_again_is_an_upsert(
    memory: MemoryComponents, recall: ConversationRecall
) -> None:
    ids = {n.node_id for n in recall.nodes(ALPHA)}
    assert node_id("alpha", "D1:3", "vector:turn") in ids
    assert ids == {n.node_id for n in ConversationRecall.from_memory(memory).nodes(ALPHA)}
    count = memory.vector_store.client.count()  # type: ignore[attr-defined]
    keywords = len(memory.keyword_index)
    assert count == keywords == 2 * (len(ALPHA) + len(BETA))

    assert recall.add_turns(ALPHA) == 0  # nothing changed: nothing embedded again
    changed = [
        dataclasses.replace(t, text="Ninety seconds after all.") if t.dialog_id == "D1:3" else t
        for t in ALPHA
    ]
    # The turn's own views, and the context views of its neighbours, are re-indexed.
    assert recall.add_turns(changed) > 0
    assert memory.vector_store.client.count() == count  # type: ignore[attr-defined]
    assert len(memory.keyword_index) == keywords
    texts = {h.dialog_id: h.text for h in recall.recall("ninety seconds", "alpha", top_k=9)}
    assert texts["D1:3"] == "Ninety seconds after all."

    # A new instance over the persisted stores answers the same.
    reopened = ConversationRecall.from_memory(build_memory(home=memory.home))
    assert [h.dialog_id for h in reopened.recall("ninety seconds", "alpha")] == [
        h.dialog_id for h in recall.recall("ninety seconds", "alpha")
    ]


def test_options_turn_off_views(recall: ConversationRecall) -> None:
    keyword_only = RecallOptions(weights={"keyword:turn": 1.0, "keyword:context": 1.0})
    found = recall.candidates("Helm chart", "alpha", query_embedding=None)
    assert set(found.scores) == {"vector:turn", "vector:context", "keyword:turn", "keyword:context"}
    only = ConversationRecall(
        recall.embed_model, recall.vector_store, recall.keyword_index, keyword_only
    ).candidates("Helm chart", "alpha")
    assert set(only.scores) == {"keyword:turn", "keyword:context"}
    assert only.ranked("keyword:turn")[0] == "D1:4"


async def test_as_a_llamaindex_retriever(recall: ConversationRecall) -> None:
    query = "What was decided about the ingress timeout?"
    retriever = recall.as_retriever("alpha", top_k=3)
    hits = retriever.retrieve(query)
    assert [h.node.metadata["dialog_id"] for h in hits] == [
        h.dialog_id for h in recall.recall(query, "alpha", top_k=3)
    ]
    assert (
        hits[0].node.get_content()
        == "Bo: I did! And what did you decide about the ingress timeout?"
    )
    assert [h.node.node_id for h in await retriever.aretrieve(query)] == [
        h.node.node_id for h in hits
    ]
