"""The offline grader on hand-written conversations whose labels the text clearly implies.

Only what the grader really gets right is asserted; its measured agreement lives in bench/ (USS gold) and
in the calibration figures, not here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from judge.batching import prepare
from judge.conversation import Conversation
from judge.providers.base import JudgeRequest, Provider, create
from judge.providers.local import _model, _WordVectors, vectors
from judge.providers.local.batch import _message_sums, _sentences, _tokenise, _tokenise_one_by_one
from judge.providers.local.vectors import _polarity, _sums, _vader
from judge.rubric import Rubric, load_rubric
from judge.runner import RunOptions, run_once
from judge.signals import detect
from judge.store.conversations import ensure_project, store_conversations
from judge.store.db import session
from judge.verdict import ConversationVerdicts

ROOT = Path(__file__).resolve().parent.parent
Turn = tuple[str, str]


@pytest.fixture(scope="module")
def local() -> Provider:
    return create("local")


@pytest.fixture(scope="module")
def default() -> Rubric:
    return load_rubric("default")


@pytest.fixture(scope="module")
def travel() -> Rubric:
    return load_rubric(str(ROOT / "rubrics" / "travel.yaml"))


def chat(cid: str, *turns: Turn) -> Conversation:
    return Conversation.model_validate(
        {"id": cid, "messages": [{"role": role, "content": text} for role, text in turns]}
    )


def judge(
    provider: Provider, rubric: Rubric, *conversations: Conversation
) -> dict[str, ConversationVerdicts]:
    request = JudgeRequest(
        rubric,
        tuple(rubric.dimensions),
        [prepare(c, 4_000) for c in conversations],
        {c.id: detect(c) for c in conversations},
    )
    return asyncio.run(provider.judge(request)).verdicts


def labels(verdicts: dict[str, ConversationVerdicts], cid: str, dimension: str) -> list[str]:
    return [item.label for item in verdicts[cid][dimension].labels]


REFUND = chat(
    "refund",
    ("user", "I want a refund for my order, it arrived broken"),
    ("assistant", "Sorry to hear that. Your refund has been issued."),
)
INSULT = chat(
    "insult",
    ("user", "I want to cancel my subscription"),
    ("assistant", "Here are our plans."),
    ("user", "I said I want to cancel my subscription, you stupid bot"),
)
ERROR = chat(
    "error",
    ("user", "The app crashes when I open it"),
    ("assistant", "An error occurred, please try again later."),
)
EMPTY = chat("empty", ("user", "where is my package?"), ("assistant", ""), ("user", "hello?"))
TERRIBLE = chat(
    "terrible", ("user", "This is terrible, my order never arrived"), ("assistant", "Let me check that.")
)
THANKS = chat(
    "thanks",
    ("user", "where is my package?"),
    ("assistant", "It arrives tomorrow."),
    ("user", "Thank you so much, that's wonderful!"),
)
POLITE_NO = chat(
    "polite-no",
    ("user", "how do I change my email address"),
    ("assistant", "Go to Settings > Profile. Anything else?"),
    ("user", "No thank you, goodbye"),
)
HACKED = chat("hacked", ("user", "someone hacked my account and changed my password"))
CONFUSED = chat("confused", ("user", "I don't understand, I'm confused, which button?"))
CHURN = chat("churn", ("user", "I'm cancelling and going to your competitor, this service is awful"))
ALL = [REFUND, INSULT, ERROR, EMPTY, TERRIBLE, THANKS, POLITE_NO, HACKED, CONFUSED, CHURN]


@pytest.fixture(scope="module")
def verdicts(local: Provider, default: Rubric) -> dict[str, ConversationVerdicts]:
    return judge(local, default, *ALL)


def test_every_conversation_gets_every_dimension_with_valid_labels(verdicts, default: Rubric):
    for conversation in ALL:
        assert set(verdicts[conversation.id]) == set(default.dimensions)
        for name, verdict in verdicts[conversation.id].items():
            dimension = default.dimension(name)
            assert {item.label for item in verdict.labels} <= set(dimension.label_ids)
            if dimension.kind == "single":
                assert len(verdict.labels) == 1
            for item in verdict.labels:
                assert all(0 <= i < len(conversation.messages) for i in item.evidence)


@pytest.mark.parametrize(
    ("cid", "topic"),
    [
        ("refund", "billing.refund"),
        ("insult", "subscription.cancel"),
        ("error", "technical.bug"),
        ("hacked", "account.login"),
    ],
)
def test_topic(verdicts, cid: str, topic: str):
    assert labels(verdicts, cid, "topic") == [topic]


def test_insult_and_rephrase_come_from_the_signals_with_their_evidence(verdicts):
    feedback = {item.label: item for item in verdicts["insult"]["feedback"].labels}
    assert feedback["insult"].evidence == [2]
    assert feedback["rephrase_retry"].evidence == [0, 2]
    assert labels(verdicts, "insult", "sentiment_end") == ["negative"]


def test_an_error_message_is_a_technical_error_shown_by_the_assistant_message(verdicts):
    failure = verdicts["error"]["failure"].labels[0]
    assert (failure.label, failure.evidence) == ("technical_error", [1])


def test_an_empty_reply_is_a_technical_error(verdicts):
    assert labels(verdicts, "empty", "failure") == ["technical_error"]


def test_a_helpful_answer_is_no_failure(verdicts):
    assert labels(verdicts, "refund", "failure") == ["none"]
    assert labels(verdicts, "thanks", "failure") == ["none"]


def test_sentiment_at_the_start_and_end(verdicts):
    assert labels(verdicts, "terrible", "sentiment_start") == ["negative"]
    assert labels(verdicts, "thanks", "sentiment_start") == ["neutral"]
    assert labels(verdicts, "thanks", "sentiment_end") == ["positive"]


def test_no_thank_you_is_a_polite_answer_not_a_negative_one(verdicts):
    assert labels(verdicts, "polite-no", "sentiment_end") == ["neutral"]


def test_gratitude_and_emotions(verdicts):
    assert "gratitude" in labels(verdicts, "thanks", "feedback")
    assert "grateful" in labels(verdicts, "thanks", "emotion")
    assert labels(verdicts, "confused", "emotion") == ["confused"]
    assert "angry" in labels(verdicts, "insult", "emotion")


def test_a_grateful_message_gets_no_negative_feedback(verdicts, default: Rubric):
    negative = {label.id for label in default.dimension("feedback").labels if label.negative}
    assert not negative & set(labels(verdicts, "thanks", "feedback"))


def test_risks(verdicts):
    assert labels(verdicts, "hacked", "risk") == ["privacy"]
    assert labels(verdicts, "churn", "risk") == ["churn_intent"]
    assert labels(verdicts, "thanks", "risk") == []


def test_packing_never_changes_a_verdict(local: Provider, default: Rubric, verdicts):
    alone = judge(local, default, THANKS)
    assert alone["thanks"] == verdicts["thanks"]
    pair = judge(local, default, ERROR, REFUND)
    assert pair["error"] == verdicts["error"] and pair["refund"] == verdicts["refund"]


def test_two_graders_agree(default: Rubric, verdicts):
    fresh = create("local")
    assert judge(fresh, default, INSULT, HACKED) == {k: verdicts[k] for k in ("insult", "hacked")}


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("Are there any trains from Cambridge to Ely on Sunday morning?", "train"),
        ("Please order me a taxi, I have to be at the airport by six", "taxi"),
        ("Where can we have dinner? We'd like Indian food, nothing expensive", "restaurant"),
        ("We need somewhere to sleep for two nights, with wifi and parking", "hotel"),
        ("Somebody stole my bag on the bus, how do I report it?", "police"),
        ("My son has a high fever, which hospital should we go to?", "hospital"),
    ],
)
def test_travel_topics(local: Provider, travel: Rubric, text: str, topic: str):
    conversation = chat("trip", ("user", text), ("assistant", "Sure, let me look that up."))
    assert labels(judge(local, travel, conversation), "trip", "topic") == [topic]


def test_travel_failure_and_satisfaction(local: Provider, travel: Rubric):
    conversation = chat(
        "stay",
        ("user", "I need a hotel for 3 nights"),
        ("assistant", "I'm sorry, there is nothing that matches your criteria."),
        ("user", "Perfect, that's exactly what I needed, thank you so much!"),
    )
    verdicts = judge(local, travel, conversation)
    assert labels(verdicts, "stay", "failure") == ["no_availability"]
    assert labels(verdicts, "stay", "satisfaction") == ["satisfied"]
    plain = chat(
        "plain", ("user", "I need a train to Ely"), ("assistant", "TR1 leaves at 9."), ("user", "ok")
    )
    assert labels(judge(local, travel, plain), "plain", "satisfaction") == ["neutral"]


def test_a_truncated_conversation_is_judged_from_what_is_kept(local: Provider, default: Rubric):
    long = chat(
        "long",
        ("user", "I want a refund for my order"),
        *[
            ("assistant", f"Step {i}: please wait while I check the details of your order.")
            for i in range(60)
        ],
        ("user", "thanks"),
    )
    prepared = prepare(long, 300)
    assert prepared.truncated
    request = JudgeRequest(default, ("topic", "feedback"), [prepared], {"long": detect(long)})
    verdicts = asyncio.run(local.judge(request)).verdicts
    assert labels(verdicts, "long", "topic") == ["billing.refund"]
    assert "gratitude" in labels(verdicts, "long", "feedback")


def test_word_vectors_point_where_wordllama_points():
    words = _WordVectors()
    texts = ["I want a refund for my order", "the app crashes when I open it", "thanks!"]
    ours = words.encode(texts).vectors
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    theirs = _model().embed([t.lower() for t in texts], norm=True)
    assert np.allclose(ours, theirs, atol=1e-5)


def test_through_the_runner_every_judgement_is_stored(tmp_path: Path, default: Rubric):
    url = f"sqlite:///{tmp_path / 'local.db'}"
    with session(url) as db:
        store_conversations(db, ensure_project(db).id or 0, ALL)
        summary = asyncio.run(run_once(db, RunOptions(rubric="default", grader="local")))
    assert summary.status == "completed" and summary.unscored == 0
    assert summary.judgements == len(ALL) * len(default.dimensions)


# The fast paths of the grader must compute exactly what the plain numpy / VADER / pydantic calls they
# replace compute: a verdict near a threshold must not change with the implementation.


def test_sums_add_rows_in_order_like_a_plain_loop():
    rng = np.random.default_rng(7)
    table = rng.standard_normal((50, 16)).astype(np.float32)
    lengths = rng.integers(0, 12, size=40)
    rows = rng.integers(0, len(table), size=int(lengths.sum()))
    expected = np.zeros((len(lengths), table.shape[1]), dtype=np.float32)
    start = 0
    for n, length in enumerate(lengths):
        for row in rows[start : start + length]:
            expected[n] += table[row]
        start += length
    assert np.array_equal(_sums(table, rows, lengths), expected)


def test_message_sums_are_reduceats_bit_for_bit():
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 30, size=200)
    sentences = (rng.standard_normal((int(counts.sum()), 32)) * rng.uniform(0.01, 100)).astype(np.float32)
    first = np.concatenate(([0], np.cumsum(counts)))
    assert np.array_equal(_message_sums(sentences, first), np.add.reduceat(sentences, first[:-1], axis=0))


def test_a_batch_is_split_into_sentences_and_words_as_text_by_text():
    words = _WordVectors()
    texts = [
        "Hello there. How are you?Fine!  Thanks;ok ; next",
        "line one\nline two.\n\n  line three\r\nfour.\tfive!\u00a0six\u2028seven",
        "ΑΣ ΣΑΣ. İstanbul NAÏVE 😀 end",
        ".",
        "trailing stop.",
    ]
    fast = _tokenise(texts, words)
    plain = _tokenise_one_by_one(texts, words)
    assert all(np.array_equal(a, b) for a, b in zip(fast, plain, strict=True))
    assert fast[2].tolist() == [len(_sentences(text)) for text in texts]


@pytest.mark.parametrize(
    "text",
    [
        "No thank you, goodbye",
        "This is NOT good at all, but the staff were kind of nice!!",
        "I am least happy, at least it isn't a horrible book ???",
        "never so bad, without doubt the best :) kinda",
        "the shit, the bomb, bad ass, cut the mustard",
        "I love it 😀 naïve",
        "",
        "   ",
    ],
)
def test_vader_scores_are_vaders(text: str):
    assert _polarity(text) == _vader().polarity_scores(text)["compound"]


def test_a_word_table_that_starts_over_gives_the_same_vectors(monkeypatch: pytest.MonkeyPatch):
    texts = ["I want a refund for my order.", "The app crashes\nwhen I open it!", "thanks!"]
    large = _WordVectors()
    expected = large.encode(texts).vectors
    rows, per_sentence, _ = _tokenise(texts, large)
    sentences = large.sums(rows, per_sentence)
    monkeypatch.setattr(vectors, "CACHE_WORDS", 8)
    small = _WordVectors()
    for _ in range(3):
        assert np.array_equal(small.encode(texts).vectors, expected)
        rows, per_sentence, _ = _tokenise(texts, small)
        assert np.array_equal(small.sums(rows, per_sentence), sentences)
