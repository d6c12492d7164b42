"""How the local grader turns scores into verdicts: best label, thresholds, VADER vetoes, signals.

Each rule runs on every row of the batch at once (per-conversation maxima are segment reductions over
``_Rows.bounds``); the only loop per conversation builds its verdict. VADER reads only the texts whose
score can change a label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from judge.batching import PreparedConversation
from judge.providers.local.batch import _USER, _Rows
from judge.providers.local.vectors import Indices, Mask, _compound, _sums
from judge.rubric import Analytic, Dimension, Signal
from judge.signals import SignalHit
from judge.verdict import LabelRow, StoredVerdict

DEFAULT_THRESHOLD = 0.5
"""Similarity a ``multi`` label needs when the rubric gives no threshold."""
MARGIN = 0.1
"""A multi label must also be within this of the best label for the same text: a text that matches every
label a little (long, generic) gives none of them."""
FIRST_WEIGHT = 0.5
"""Single labels without threshold: the first user message states the request, later turns add detail."""
SENTIMENT_CUTOFF = 0.05
"""VADER's documented compound-score cut-off, used when the rubric gives no threshold."""
NEGATIVE_CUTOFF = 0.2
"""A rubric's threshold sets the positive cut-off; a negative needs at most this. VADER scores courtesy
("ok thanks", "please help") as positive and support chats are full of it; negative words rarely are."""
NEGATIVE_SIGNALS = frozenset({"insult", "abandonment"})
"""A user who insults the assistant or gives up in a turn does not feel neutral in it."""
FEELINGS = frozenset({Analytic.sentiment_emotion, Analytic.implicit_feedback})
"""Analytics about what the user feels or shows: there VADER vetoes labels of the opposite polarity."""
POLAR = 0.25
"""A label whose description and examples score at least this (either sign) on VADER carries a polarity."""
VETO = 0.3
"""A text this clearly of the opposite polarity cannot show a polar label, however similar its words."""
STRONG = 0.3
"""Emotions (multi): a text this negative shows the most similar negative label below the threshold, as
long as it is at least ``FLOOR`` similar to it: similar words alone miss most negative feelings. Not for
feedback, whose labels are acts (a complaint, a retry) that a negative word does not show."""
FLOOR = 0.2


Fired = dict[Signal, SignalHit]
"""A conversation's signal hits by signal (the last hit of a signal wins)."""


def _fired(signals: list[SignalHit]) -> Fired:
    return {hit.signal: hit for hit in signals}


def _label(label: str, evidence: list[int], reason: str | None = None) -> LabelRow:
    return LabelRow(label, evidence, reason)


def _verdict(labels: list[LabelRow]) -> StoredVerdict:
    """A plain verdict tuple: a batch makes one per conversation and dimension, and building pydantic
    models for them cost as much as judging."""
    return StoredVerdict(labels, None)


def _by_signal(dimension: Dimension, fired: Fired) -> list[LabelRow]:
    if not fired:
        return []
    return [
        _label(label.id, list(fired[label.signal].evidence), f"signal {label.signal}")
        for label in dimension.labels
        if label.signal in fired
    ]


def _fallback(dimension: Dimension, by_signal: list[LabelRow]) -> StoredVerdict:
    """Nothing matched: a signal-implied label, else the default label (single) or none (multi)."""
    if dimension.kind == "multi":
        return _verdict(by_signal)
    if by_signal:
        return _verdict(by_signal[:1])
    return _verdict([_label(dimension.local.default or dimension.labels[0].id, [])])


def _segment_argmax(values: NDArray[Any], rows: _Rows) -> Indices:
    """Per conversation, the row of its largest value (the first of equals, as ``argmax``); -1 when the
    conversation has no row."""
    bounds = rows.bounds
    found = np.full(len(bounds) - 1, -1, dtype=np.intp)
    filled = np.flatnonzero(bounds[1:] > bounds[:-1])
    if not len(filled):
        return found
    starts = bounds[filled]
    largest = np.maximum.reduceat(values, starts)
    at_largest = values == np.repeat(largest, bounds[filled + 1] - starts)
    found[filled] = np.minimum.reduceat(np.where(at_largest, np.arange(len(values)), len(values)), starts)
    return found


def _single(dimension: Dimension, rows: _Rows, fired: list[Fired]) -> list[StoredVerdict]:
    if dimension.local.threshold is None:
        return _single_best(dimension, rows, fired)
    return _single_threshold(dimension, rows, fired)


def _single_best(dimension: Dimension, rows: _Rows, fired: list[Fired]) -> list[StoredVerdict]:
    """The label closest to the whole scope read as one text, plus the first user message once more."""
    batch = rows.batch
    low = rows.bounds[:-1]
    filled = rows.bounds[1:] > low
    if not filled.any():
        return [_fallback(dimension, _by_signal(dimension, f)) for f in fired]
    messages = rows.source[rows.source >= 0]
    per_conversation = np.bincount(batch.conversation[messages], minlength=batch.size)
    # Added in order, as np.add.at adds them: the same float32 sums.
    whole_scores = rows.prototypes.scores(_sums(batch.vectors, messages, per_conversation))
    conversations = np.arange(batch.size)
    first = np.where(filled, low, 0)
    users = np.flatnonzero(rows.role == _USER)
    if len(users):
        at = np.minimum(np.searchsorted(rows.conversation[users], conversations), len(users) - 1)
        first = np.where(rows.conversation[users[at]] == conversations, users[at], first)
    combined = whole_scores + FIRST_WEIGHT * rows.scores[first]
    best = combined.argmax(axis=1)
    evidence = rows.evidence[
        _segment_argmax(rows.scores[np.arange(len(rows.scores)), best[rows.conversation]], rows)
    ]
    ids = dimension.label_ids
    out = []
    for n, (ok, label, cited, score) in enumerate(
        zip(
            filled.tolist(),
            best.tolist(),
            evidence.tolist(),
            combined[conversations, best].tolist(),
            strict=True,
        )
    ):
        if ok:
            out.append(_verdict([_label(ids[label], [cited], _similar(score))]))
        else:
            out.append(_fallback(dimension, _by_signal(dimension, fired[n])))
    return out


def _single_threshold(dimension: Dimension, rows: _Rows, fired: list[Fired]) -> list[StoredVerdict]:
    """The best non-default label that clears the threshold on a text it fits better than any other
    label (the default included); else a signal-implied label, else the default."""
    threshold = dimension.local.threshold
    assert threshold is not None
    if not len(rows.scores):
        return [_fallback(dimension, _by_signal(dimension, f)) for f in fired]
    ids = dimension.label_ids
    best = rows.scores.argmax(axis=1)
    top = rows.scores.max(axis=1)
    eligible = top >= threshold
    if dimension.local.default in ids:
        eligible &= best != ids.index(dimension.local.default)
    if dimension.analytic in FEELINGS:
        polarities = rows.prototypes.polarity
        # VADER can only veto a polar label: other candidates keep their place without being read.
        for candidate in np.flatnonzero(eligible & (np.abs(polarities) >= POLAR)[best]):
            compound = _compound(rows.text(int(candidate)))
            polarity = polarities[best[candidate]]
            eligible[candidate] = not (
                abs(polarity) >= POLAR and polarity * compound < 0 and abs(compound) >= VETO
            )
    ranked = np.where(eligible, top, -2.0)
    chosen = _segment_argmax(ranked, rows)
    found = chosen >= 0
    found[found] = ranked[chosen[found]] >= threshold
    labels, evidence, scores = best[chosen].tolist(), rows.evidence[chosen].tolist(), top[chosen].tolist()
    out = []
    for n, ok in enumerate(found.tolist()):
        if ok:
            out.append(_verdict([_label(ids[labels[n]], [evidence[n]], _similar(scores[n]))]))
        else:
            out.append(_fallback(dimension, _by_signal(dimension, fired[n])))
    return out


def _multi(dimension: Dimension, rows: _Rows, fired: list[Fired]) -> list[StoredVerdict]:
    """Every label that some text in scope matches well, and better (or nearly) than the other labels.
    A label with a signal is left to its signal: similar words do not show a rephrasing or an insult."""
    threshold = DEFAULT_THRESHOLD if dimension.local.threshold is None else dimension.local.threshold
    scores = rows.scores
    signalled = np.array([label.signal is not None for label in dimension.labels])
    hits = (scores >= threshold) & (scores >= scores.max(axis=1, keepdims=True) - MARGIN)
    if dimension.analytic in FEELINGS:
        hits = _feelings(rows, hits, dimension.analytic is Analytic.sentiment_emotion, ~signalled)
    hits[:, signalled] = False
    row, col = np.nonzero(hits)
    conversation = rows.conversation[row]
    order = np.lexsort((rows.evidence[row], col, conversation))
    row, col, conversation = row[order], col[order], conversation[order]
    evidence = rows.evidence[row]
    group = np.flatnonzero(np.diff(conversation, prepend=-1) | np.diff(col, prepend=-1))
    best = np.maximum.reduceat(scores[row, col], group) if len(group) else np.zeros(0, dtype=np.float32)
    distinct = np.ones(len(row), dtype=bool)
    distinct[1:] = evidence[1:] != evidence[:-1]
    distinct[group] = True
    ends = [*group[1:].tolist(), len(row)] if len(group) else []
    similar: dict[int, list[LabelRow]] = {}
    ids = dimension.label_ids
    kept = np.cumsum(distinct).tolist()
    unique = evidence[distinct].tolist()
    for start, end, n, label, score in zip(
        group.tolist(), ends, conversation[group].tolist(), col[group].tolist(), best.tolist(), strict=True
    ):
        cited = unique[kept[start] - 1 : kept[end - 1]]
        similar.setdefault(n, []).append(_label(ids[label], cited, _similar(score)))
    signals = bool(signalled.any())
    out = []
    for n in range(len(rows.bounds) - 1):
        by_signal = _by_signal(dimension, fired[n]) if signals else []
        mine = similar.get(n)
        if mine and by_signal:
            found = {v.label: v for v in [*by_signal, *mine]}
            mine = [found[i] for i in ids if i in found]
        out.append(_verdict(mine or by_signal))
    return out


def _feelings(rows: _Rows, hits: Mask, boost: bool, kept: Mask) -> Mask:
    """Let VADER veto a polar label on a text of the opposite polarity, and let a clearly negative text
    show the most similar negative label: similar words are weak evidence of a feeling, VADER stronger.
    VADER is slow next to the rest, so it only reads texts with a hit or a word that could be negative,
    and of those only the ones where its score could change a label that is ``kept`` (the others are
    given by signals)."""
    polarity = rows.prototypes.polarity
    polar = np.abs(polarity) >= POLAR
    negative: Mask = (polarity <= -POLAR) & boost
    hit: Mask = np.asarray(hits.any(axis=1))
    read = hit | (rows.negative & negative.any())
    vetoable = (hits & (polar & kept)).any(axis=1)
    candidates = np.where(negative, rows.scores, -1.0)
    strongest = candidates.argmax(axis=1) if len(candidates) else np.zeros(0, dtype=np.intp)
    boosted = candidates[np.arange(len(candidates)), strongest] >= FLOOR
    if negative.any():
        vetoable |= kept[strongest] & boosted
    for row in np.flatnonzero(read & vetoable):
        compound = _compound(rows.text(int(row)))
        if hit[row]:
            hits[row] &= ~(polar & (polarity * compound < 0) & (abs(compound) >= VETO))
        if compound <= -STRONG and negative.any():
            hits[row, strongest[row]] |= bool(boosted[row])
    return hits


def _similar(score: float) -> str:
    return f"similarity {score:.2f}"


def _user_turn(prepared: PreparedConversation, position: str) -> list[tuple[int, str]]:
    """The first or last run of consecutive user messages: one turn often spans several messages. Read
    from that end, up to the assistant message (or cut) that closes it."""
    messages = prepared.messages if position == "start" else reversed(prepared.messages)
    turn: list[tuple[int, str]] = []
    for message in messages:
        if message.role == "user" and message.content.strip():
            turn.append((message.index, message.content))
        elif turn and (message.role == "assistant" or message.omitted):
            break
    return turn if position == "start" else turn[::-1]


def _scale(dimension: Dimension) -> tuple[str, str, str]:
    """The labels that mean negative, neutral and positive: those ids when the rubric uses them, else
    its first three labels in that order (a satisfaction scale: dissatisfied, neutral, satisfied)."""
    ids = dimension.label_ids
    if {"negative", "neutral", "positive"} <= set(ids):
        return "negative", "neutral", "positive"
    negative, neutral, positive, *_ = [*ids, ids[-1], ids[-1]]
    return negative, neutral, positive


def _sentiment(
    dimension: Dimension, conversations: Sequence[PreparedConversation], signals: list[list[SignalHit]]
) -> list[StoredVerdict]:
    """VADER on the first or last user turn, cut at the rubric's threshold; an insult or giving up in that
    turn makes it negative whatever the words score."""
    scale = _scale(dimension)
    cutoff = SENTIMENT_CUTOFF if dimension.local.threshold is None else abs(dimension.local.threshold)
    position = dimension.local.position
    return [
        _turn_sentiment(_user_turn(prepared, position), hits, cutoff, scale)
        for prepared, hits in zip(conversations, signals, strict=True)
    ]


def _turn_sentiment(
    turn: list[tuple[int, str]], signals: list[SignalHit], cutoff: float, scale: tuple[str, str, str]
) -> StoredVerdict:
    negative, neutral, positive = scale
    if not turn:
        return _verdict([_label(neutral, [])])
    indices = [i for i, _ in turn]
    for hit in signals:
        if hit.signal.value in NEGATIVE_SIGNALS and set(hit.evidence) & set(indices):
            return _verdict([_label(negative, indices, f"signal {hit.signal.value}")])
    compound = _compound(" ".join(text for _, text in turn))
    if compound >= cutoff:
        label = positive
    elif compound <= -min(cutoff, NEGATIVE_CUTOFF):
        label = negative
    else:
        label = neutral
    return _verdict([_label(label, indices, f"VADER compound {compound:+.2f}")])
