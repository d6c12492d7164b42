"""Deterministic implicit-feedback signals, computed for every conversation whatever the grader.

They are cheap, explainable and never hallucinate, so they are stored beside the grader's labels:
- ``rephrase_retry``: a user turn that closely repeats the previous user turn (the answer missed it);
- ``repeated_question``: the same question asked again anywhere later in the conversation;
- ``abandonment``: the user gives up ("forget it", "I'll call instead") or leaves right after a retry;
- ``insult``: insults or profanity from a multilingual lexicon.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from difflib import SequenceMatcher
from functools import cache
from itertools import pairwise

import yaml
from pydantic import BaseModel

from judge.conversation import Conversation, Role
from judge.resources import PACKAGE_DIR
from judge.rubric import Signal

REPHRASE_SIMILARITY = 0.72
REPEAT_SIMILARITY = 0.85
MIN_WORDS = 3


class SignalHit(BaseModel):
    """A signal found in a conversation, with the messages that show it and its strength (0..1)."""

    signal: Signal
    evidence: list[int]
    score: float


@cache
def _lexicon(name: str) -> re.Pattern[str]:
    words: list[str] = yaml.safe_load((PACKAGE_DIR / "data" / "lexicons.yaml").read_text("utf-8"))[name]
    alternatives = "|".join(re.escape(_normalise(w)) for w in sorted(set(words), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return re.sub(r"\s+", " ", text).strip()


def _comparable(text: str) -> str:
    return re.sub(r"[^\w\s]", "", _normalise(text))


def similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, _comparable(a), _comparable(b), autojunk=False).ratio()


def _user_turns(conversation: Conversation) -> list[tuple[int, str]]:
    return [(i, m.content) for i, m in enumerate(conversation.messages) if m.role is Role.user]


def _rephrases(turns: list[tuple[int, str]]) -> Iterable[tuple[int, int, float]]:
    for (i, a), (j, b) in pairwise(turns):
        if len(_comparable(b).split()) >= MIN_WORDS:
            score = similarity(a, b)
            if score >= REPHRASE_SIMILARITY:
                yield i, j, score


def _repeated_questions(turns: list[tuple[int, str]]) -> Iterable[tuple[int, int, float]]:
    questions = [(i, t) for i, t in turns if "?" in t and len(_comparable(t).split()) >= MIN_WORDS]
    for n, (i, a) in enumerate(questions):
        for j, b in questions[n + 1 :]:
            score = similarity(a, b)
            if score >= REPEAT_SIMILARITY and j - i > 2:
                yield i, j, score


def detect(conversation: Conversation) -> list[SignalHit]:
    """All signals present in ``conversation``; an absent signal is simply not listed."""
    turns = _user_turns(conversation)
    hits: list[SignalHit] = []
    rephrases = list(_rephrases(turns))
    if rephrases:
        hits.append(_hit(Signal.rephrase_retry, rephrases))
    repeats = list(_repeated_questions(turns))
    if repeats:
        hits.append(_hit(Signal.repeated_question, repeats))
    insults = [i for i, text in turns if _lexicon("insult").search(_normalise(text))]
    if insults:
        hits.append(SignalHit(signal=Signal.insult, evidence=insults, score=1.0))
    abandoned = _abandonment(conversation, turns, {j for _, j, _ in rephrases})
    if abandoned is not None:
        hits.append(SignalHit(signal=Signal.abandonment, evidence=[abandoned], score=1.0))
    return hits


def _hit(signal: Signal, pairs: list[tuple[int, int, float]]) -> SignalHit:
    evidence = sorted({i for pair in pairs for i in pair[:2]})
    return SignalHit(signal=signal, evidence=evidence, score=round(max(p[2] for p in pairs), 3))


def _abandonment(conversation: Conversation, turns: list[tuple[int, str]], retries: set[int]) -> int | None:
    """Index of the user turn where the user gave up, if they did."""
    if not turns:
        return None
    last_index, last_text = turns[-1]
    normalised = _normalise(last_text)
    if _lexicon("give_up").search(normalised):
        return last_index
    thanked = _lexicon("thanks").search(normalised)
    ends_on_user = last_index == len(conversation.messages) - 1
    if last_index in retries and not thanked and not ends_on_user:
        return last_index
    return None
