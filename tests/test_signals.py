"""Deterministic signals on hand-written conversations whose feedback is plain from the text."""

from __future__ import annotations

import random
from difflib import SequenceMatcher

import pytest

from judge.conversation import Conversation
from judge.signals import REPHRASE_SIMILARITY, _at_least, _common_subsequence, _comparable, detect


def chat(*turns: tuple[str, str]) -> Conversation:
    return Conversation.model_validate(
        {"id": "c", "messages": [{"role": role, "content": text} for role, text in turns]}
    )


def signals(conversation: Conversation) -> dict[str, list[int]]:
    return {hit.signal.value: hit.evidence for hit in detect(conversation)}


def test_insult_is_found_in_the_user_turn_that_has_it():
    found = signals(
        chat(("user", "where is my parcel"), ("assistant", "It ships tomorrow."), ("user", "you stupid bot"))
    )
    assert found["insult"] == [2]


@pytest.mark.parametrize("text", ["c'est de la merde", "what a piece of crap", "du Vollidiot"])
def test_insults_in_several_languages(text: str):
    assert "insult" in signals(chat(("user", text)))


def test_a_place_named_like_an_insult_word_with_a_possessive_is_not_an_insult():
    assert "insult" not in signals(chat(("user", "Can you tell me if Clown's Cafe allows dogs?")))


def test_a_near_copy_of_the_previous_question_is_a_rephrase():
    found = signals(
        chat(
            ("user", "Is hunting requeres an license?"),
            ("assistant", "I like hunting too."),
            ("user", "Is hunting requires an license?"),
        )
    )
    assert found["rephrase_retry"] == [0, 2]


def test_asking_again_after_the_assistant_did_not_understand_is_a_retry():
    found = signals(
        chat(
            ("user", "Hallo, ich möchte mein Abo kündigen"),
            ("assistant", "Sorry, I only understand English."),
            ("user", "Abo kündigen bitte!! wie geht das??"),
        )
    )
    assert found["rephrase_retry"] == [0, 2]


def test_a_correction_that_repeats_the_request_is_a_retry():
    found = signals(
        chat(
            ("user", "cancel the order i placed an hour ago"),
            ("assistant", "Here is your tracking link."),
            ("user", "i dont want to track it, i want to CANCEL it"),
        )
    )
    assert "rephrase_retry" in found


def test_a_new_question_after_a_good_answer_is_not_a_retry():
    found = signals(
        chat(
            ("user", "what are your opening hours?"),
            ("assistant", "We are open 9 to 5."),
            ("user", "do you ship to Canada?"),
        )
    )
    assert "rephrase_retry" not in found


def test_the_same_question_asked_again_later_is_repeated():
    question = "How much does the premium plan cost per month?"
    found = signals(
        chat(
            ("user", question),
            ("assistant", "It has 4K and HDR."),
            ("user", "ok and what about downloads"),
            ("assistant", "Up to 25 downloads."),
            ("user", question),
        )
    )
    assert found["repeated_question"] == [0, 4]


def test_giving_up_is_abandonment_at_the_last_user_turn():
    found = signals(
        chat(
            ("user", "my app won't load"), ("assistant", "Have you tried restarting?"), ("user", "forget it")
        )
    )
    assert found["abandonment"] == [2]


def test_leaving_after_an_error_without_thanks_is_abandonment():
    found = signals(
        chat(
            ("user", "app keeps crashing when i open my watchlist"),
            ("assistant", "An error occurred, please try again later."),
            ("user", "useless piece of junk"),
        )
    )
    assert found["abandonment"] == [2]


def test_thanking_after_an_answer_is_not_abandonment():
    found = signals(
        chat(
            ("user", "can I get a refund?"),
            ("assistant", "I'm sorry, I don't know."),
            ("user", "where do I find the form then?"),
            ("assistant", "Under My account > Refunds."),
            ("user", "ok thanks"),
        )
    )
    assert "abandonment" not in found


def test_a_polite_conversation_has_only_gratitude():
    conversation = chat(
        ("user", "hi, where is my order NW-48213?"),
        ("assistant", "It shipped on Oct 31 and arrives Thursday."),
        ("user", "great, thank you"),
    )
    assert [(hit.signal.value, hit.evidence) for hit in detect(conversation)] == [("gratitude", [2])]


def test_thanks_in_other_languages_is_gratitude():
    for thanks in (
        "vielen Dank!",
        "merci beaucoup",
        "muchas gracias",
        "obrigada",
        "grazie mille",
        "dankjewel",
    ):
        conversation = chat(("user", "ma commande?"), ("assistant", "Elle arrive demain."), ("user", thanks))
        assert [hit.signal.value for hit in detect(conversation)] == ["gratitude"], thanks


def test_the_fast_bounds_never_change_the_similarity_decision():
    rng = random.Random(7)
    words = ["cancel", "my", "order", "the", "plan", "please", "refund", "now", "i", "want", "a"]
    for _ in range(400):
        a = _comparable(" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))))
        b = _comparable(" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))))
        exact = SequenceMatcher(None, a, b, autojunk=False).ratio()
        fast = _at_least(a, b, REPHRASE_SIMILARITY)
        assert (fast is not None) == (exact >= REPHRASE_SIMILARITY)
        if fast is not None:
            assert fast == pytest.approx(exact)


def _lcs(a: str, b: str) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_common_subsequence_matches_dynamic_programming():
    rng = random.Random(3)
    for _ in range(300):
        a = "".join(rng.choice("abcd ") for _ in range(rng.randint(0, 25)))
        b = "".join(rng.choice("abcd ") for _ in range(rng.randint(0, 25)))
        assert _common_subsequence(a, b) == _lcs(a, b)
