"""Deterministic implicit-feedback signals, computed for every conversation whatever the grader.

They are cheap, explainable and never hallucinate, so they are stored beside the grader's labels:
- ``rephrase_retry``: a user turn that closely repeats the previous user turn, or that tries the same
  request again right after the assistant failed (an error, an empty reply, "I can't", "I don't
  understand") or with a correction ("I said", "again"); the answer missed it;
- ``repeated_question``: the same question asked again anywhere later in the conversation;
- ``abandonment``: the user gives up ("forget it", "I'll call instead"), leaves right after a retry, or
  has the last word right after the assistant failed, without thanking it;
- ``insult``: insults or profanity from a multilingual lexicon.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from difflib import SequenceMatcher
from functools import cache, lru_cache
from itertools import pairwise

import yaml
from pydantic import BaseModel

from judge.conversation import Conversation, Role
from judge.resources import PACKAGE_DIR
from judge.rubric import Signal

REPHRASE_SIMILARITY = 0.72
REPEAT_SIMILARITY = 0.85
MIN_WORDS = 3
CONTENT_WORD = 4
"""Words at least this long count as content when a retry is checked for asking about the same thing."""


class SignalHit(BaseModel):
    """A signal found in a conversation, with the messages that show it and its strength (0..1)."""

    signal: Signal
    evidence: list[int]
    score: float


@cache
def _lexicons() -> dict[str, list[str]]:
    """Every word list in ``data/lexicons.yaml``, read once."""
    text = (PACKAGE_DIR / "data" / "lexicons.yaml").read_text("utf-8")
    lexicons: dict[str, list[str]] = yaml.safe_load(text)
    return lexicons


@cache
def _lexicon(name: str) -> re.Pattern[str]:
    words = _lexicons()[name]
    alternatives = "|".join(re.escape(_normalise(w)) for w in sorted(set(words), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


@cache
def _word_list(name: str) -> frozenset[str]:
    return frozenset(_comparable(w) for w in _lexicons()[name])


_SPACES = re.compile(r"\s+")
_PUNCTUATION = re.compile(r"[^\w\s]")


@lru_cache(maxsize=8192)
def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return _SPACES.sub(" ", text).strip()


def _comparable(text: str) -> str:
    return _PUNCTUATION.sub("", _normalise(text))


def similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, _comparable(a), _comparable(b), autojunk=False).ratio()


def _at_least(a: str, b: str, threshold: float) -> float | None:
    """``similarity`` of two comparable texts if it reaches ``threshold``, else None. Upper bounds of
    difflib's ratio (from the lengths, the letters shared, the longest common subsequence) reject most
    pairs before the quadratic matcher runs: the answer is the same, only faster."""
    total = len(a) + len(b)
    if not total or 2 * min(len(a), len(b)) < threshold * total:
        return None
    if 2 * (_letters(a) & _letters(b)).total() < threshold * total:
        return None
    if 2 * _common_subsequence(a, b) < threshold * total:
        return None
    score = SequenceMatcher(None, a, b, autojunk=False).ratio()
    return score if score >= threshold else None


def _common_subsequence(a: str, b: str) -> int:
    """Length of the longest common subsequence (bit-parallel, Hyyrö 2004): difflib's matching blocks
    form a common subsequence, so this bounds its ratio far more tightly than shared letters do."""
    masks: dict[str, int] = {}
    for position, letter in enumerate(a):
        masks[letter] = masks.get(letter, 0) | (1 << position)
    full = (1 << len(a)) - 1
    row = full
    for letter in b:
        matched = row & masks.get(letter, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(a) - row.bit_count()


@lru_cache(maxsize=4096)
def _letters(text: str) -> Counter[str]:
    return Counter(text)


def _content(comparable: str) -> set[str]:
    """The words of a comparable text that say what it is about."""
    common = _word_list("stopwords")
    return {word for word in comparable.split() if len(word) >= CONTENT_WORD and word not in common}


def _user_turns(conversation: Conversation) -> list[tuple[int, str]]:
    return [(i, m.content) for i, m in enumerate(conversation.messages) if m.role is Role.user]


def _failed(text: str) -> bool:
    """The assistant message shows that it failed: empty, an error, a refusal or not understanding."""
    return not text.strip() or bool(_lexicon("bot_failure").search(_normalise(text)))


def _rephrases(conversation: Conversation, turns: list[tuple[int, str]]) -> Iterable[tuple[int, int, float]]:
    comparable = [(i, _comparable(t)) for i, t in turns]
    asked: set[str] = set()
    for (i, a), (j, b) in pairwise(comparable):
        asked |= _content(a)
        if len(b.split()) >= MIN_WORDS:
            score = _at_least(a, b, REPHRASE_SIMILARITY)
            if score is not None:
                yield i, j, score
                continue
        if _content(b) & asked and _retrying(conversation, j):
            yield i, j, REPHRASE_SIMILARITY


def _retrying(conversation: Conversation, j: int) -> bool:
    """User turn ``j`` comes right after a failed answer or corrects the assistant: a second try."""
    previous = conversation.messages[j - 1] if j > 0 else None
    if previous is not None and previous.role is Role.assistant and _failed(previous.content):
        return True
    return bool(_lexicon("correction").search(_normalise(conversation.messages[j].content)))


def _repeated_questions(turns: list[tuple[int, str]]) -> Iterable[tuple[int, int, float]]:
    questions = [(i, _comparable(t)) for i, t in turns if "?" in t]
    questions = [(i, t) for i, t in questions if len(t.split()) >= MIN_WORDS]
    for n, (i, a) in enumerate(questions):
        for j, b in questions[n + 1 :]:
            if j - i > 2:
                score = _at_least(a, b, REPEAT_SIMILARITY)
                if score is not None:
                    yield i, j, score


def detect(conversation: Conversation) -> list[SignalHit]:
    """All signals present in ``conversation``; an absent signal is simply not listed."""
    turns = _user_turns(conversation)
    hits: list[SignalHit] = []
    rephrases = list(_rephrases(conversation, turns))
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
    thanks = [i for i, text in turns if _lexicon("thanks").search(_normalise(text))]
    if thanks:
        hits.append(SignalHit(signal=Signal.gratitude, evidence=thanks, score=1.0))
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
    if _lexicon("thanks").search(normalised):
        return None
    messages = conversation.messages
    ends_on_user = last_index == len(messages) - 1
    if last_index in retries and not ends_on_user:
        return last_index
    answers = [m for m in messages[:last_index] if m.role is Role.assistant]
    if ends_on_user and answers and _failed(answers[-1].content) and len(turns) > 1:
        return last_index
    return None
