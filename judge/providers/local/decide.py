"""How the local grader turns scores into verdicts: best label, thresholds, VADER vetoes, signals."""

from __future__ import annotations

import numpy as np

from judge.batching import PreparedConversation
from judge.providers.local.batch import _USER, _Rows
from judge.providers.local.vectors import Mask, _compound
from judge.rubric import Analytic, Dimension
from judge.signals import SignalHit
from judge.verdict import DimensionVerdict, LabelVerdict

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


def _label(label: str, evidence: list[int], reason: str | None = None) -> LabelVerdict:
    return LabelVerdict.model_construct(label=label, evidence=evidence, reason=reason)


def _verdict(labels: list[LabelVerdict]) -> DimensionVerdict:
    return DimensionVerdict.model_construct(labels=labels, suggestion=None)


def _by_signal(dimension: Dimension, signals: list[SignalHit]) -> list[LabelVerdict]:
    fired = {hit.signal: hit for hit in signals}
    return [
        _label(label.id, list(fired[label.signal].evidence), f"signal {label.signal}")
        for label in dimension.labels
        if label.signal in fired
    ]


def _fallback(dimension: Dimension, by_signal: list[LabelVerdict]) -> DimensionVerdict:
    """Nothing matched: a signal-implied label, else the default label (single) or none (multi)."""
    if dimension.kind == "multi":
        return _verdict(by_signal)
    if by_signal:
        return _verdict(by_signal[:1])
    return _verdict([_label(dimension.local.default or dimension.labels[0].id, [])])


def _single(dimension: Dimension, rows: _Rows, signals: list[list[SignalHit]]) -> list[DimensionVerdict]:
    if dimension.local.threshold is None:
        return _single_best(dimension, rows, signals)
    return _single_threshold(dimension, rows, signals)


def _single_best(dimension: Dimension, rows: _Rows, signals: list[list[SignalHit]]) -> list[DimensionVerdict]:
    """The label closest to the whole scope read as one text, plus the first user message once more."""
    batch = rows.batch
    messages = rows.source[rows.source >= 0]
    wholes = np.zeros((batch.size, batch.vectors.shape[1]), dtype=np.float32)
    np.add.at(wholes, batch.conversation[messages], batch.vectors[messages])
    whole_scores = rows.prototypes.scores(wholes)
    out = []
    for n, roles in enumerate(rows.roles):
        low = rows.bounds[n]
        if not roles:
            out.append(_fallback(dimension, _by_signal(dimension, signals[n])))
            continue
        first = low + next((k for k, role in enumerate(roles) if role == _USER), 0)
        combined = whole_scores[n] + FIRST_WEIGHT * rows.scores[first]
        best = int(combined.argmax())
        evidence = int(rows.evidence[low + int(rows.scores[low : rows.bounds[n + 1], best].argmax())])
        out.append(_verdict([_label(dimension.labels[best].id, [evidence], _similar(float(combined[best])))]))
    return out


def _single_threshold(
    dimension: Dimension, rows: _Rows, signals: list[list[SignalHit]]
) -> list[DimensionVerdict]:
    """The best non-default label that clears the threshold on a text it fits better than any other
    label (the default included); else a signal-implied label, else the default."""
    threshold = dimension.local.threshold
    assert threshold is not None
    ids = dimension.label_ids
    best = rows.scores.argmax(axis=1) if len(rows.scores) else np.zeros(0, dtype=np.intp)
    top = rows.scores.max(axis=1) if len(rows.scores) else np.zeros(0, dtype=np.float32)
    eligible = top >= threshold
    if dimension.local.default in ids:
        eligible &= best != ids.index(dimension.local.default)
    if dimension.analytic in FEELINGS:
        for candidate in np.flatnonzero(eligible):
            compound = _compound(rows.text(int(candidate)))
            polarity = rows.prototypes.polarity[best[candidate]]
            eligible[candidate] = not (
                abs(polarity) >= POLAR and polarity * compound < 0 and abs(compound) >= VETO
            )
    ranked = np.where(eligible, top, -2.0)
    out = []
    for n in range(len(rows.roles)):
        low, high = rows.bounds[n], rows.bounds[n + 1]
        row = low + int(ranked[low:high].argmax()) if high > low else -1
        if row < 0 or ranked[row] < threshold:
            out.append(_fallback(dimension, _by_signal(dimension, signals[n])))
            continue
        label = _label(ids[int(best[row])], [int(rows.evidence[row])], _similar(float(top[row])))
        out.append(_verdict([label]))
    return out


def _multi(dimension: Dimension, rows: _Rows, signals: list[list[SignalHit]]) -> list[DimensionVerdict]:
    """Every label that some text in scope matches well, and better (or nearly) than the other labels.
    A label with a signal is left to its signal: similar words do not show a rephrasing or an insult."""
    threshold = DEFAULT_THRESHOLD if dimension.local.threshold is None else dimension.local.threshold
    scores = rows.scores
    hits = (scores >= threshold) & (scores >= scores.max(axis=1, keepdims=True) - MARGIN)
    if dimension.analytic in FEELINGS:
        hits = _feelings(rows, hits, boost=dimension.analytic is Analytic.sentiment_emotion)
    hits[:, [label.signal is not None for label in dimension.labels]] = False
    out = []
    for n in range(len(rows.roles)):
        low, high = rows.bounds[n], rows.bounds[n + 1]
        found = {v.label: v for v in _by_signal(dimension, signals[n])}
        for col in np.flatnonzero(hits[low:high].any(axis=0)) if high > low else []:
            matched = low + np.flatnonzero(hits[low:high, col])
            evidence = sorted({int(e) for e in rows.evidence[matched]})
            label = dimension.labels[int(col)].id
            found[label] = _label(label, evidence, _similar(float(scores[matched, col].max())))
        out.append(_verdict([found[label.id] for label in dimension.labels if label.id in found]))
    return out


def _feelings(rows: _Rows, hits: Mask, boost: bool) -> Mask:
    """Let VADER veto a polar label on a text of the opposite polarity, and let a clearly negative text
    show the most similar negative label: similar words are weak evidence of a feeling, VADER stronger.
    VADER is slow next to the rest, so it only reads texts with a hit or a word that could be negative."""
    polarity = rows.prototypes.polarity
    polar = np.abs(polarity) >= POLAR
    negative: Mask = (polarity <= -POLAR) & boost
    hit: Mask = np.asarray(hits.any(axis=1))
    for row in np.flatnonzero(hit | (rows.negative & negative.any())):
        compound = _compound(rows.text(int(row)))
        if hit[row]:
            hits[row] &= ~(polar & (polarity * compound < 0) & (abs(compound) >= VETO))
        if compound <= -STRONG and negative.any():
            candidates = np.where(negative, rows.scores[row], -1.0)
            col = int(candidates.argmax())
            hits[row, col] |= bool(candidates[col] >= FLOOR)
    return hits


def _similar(score: float) -> str:
    return f"similarity {score:.2f}"


def _user_turn(prepared: PreparedConversation, position: str) -> list[tuple[int, str]]:
    """The first or last run of consecutive user messages: one turn often spans several messages."""
    runs: list[list[tuple[int, str]]] = []
    open_run = False
    for message in prepared.messages:
        if message.role == "user" and message.content.strip():
            if not open_run:
                runs.append([])
            runs[-1].append((message.index, message.content))
            open_run = True
        elif message.role == "assistant" or message.omitted:
            open_run = False
    if not runs:
        return []
    return runs[0] if position == "start" else runs[-1]


def _scale(dimension: Dimension) -> tuple[str, str, str]:
    """The labels that mean negative, neutral and positive: those ids when the rubric uses them, else
    its first three labels in that order (a satisfaction scale: dissatisfied, neutral, satisfied)."""
    ids = dimension.label_ids
    if {"negative", "neutral", "positive"} <= set(ids):
        return "negative", "neutral", "positive"
    negative, neutral, positive, *_ = [*ids, ids[-1], ids[-1]]
    return negative, neutral, positive


def _sentiment(
    dimension: Dimension, prepared: PreparedConversation, signals: list[SignalHit]
) -> DimensionVerdict:
    """VADER on the first or last user turn, cut at the rubric's threshold; an insult or giving up in that
    turn makes it negative whatever the words score."""
    negative, neutral, positive = _scale(dimension)
    turn = _user_turn(prepared, dimension.local.position)
    if not turn:
        return _verdict([_label(neutral, [])])
    indices = [i for i, _ in turn]
    for hit in signals:
        if hit.signal.value in NEGATIVE_SIGNALS and set(hit.evidence) & set(indices):
            return _verdict([_label(negative, indices, f"signal {hit.signal.value}")])
    cutoff = SENTIMENT_CUTOFF if dimension.local.threshold is None else abs(dimension.local.threshold)
    compound = _compound(" ".join(text for _, text in turn))
    if compound >= cutoff:
        label = positive
    elif compound <= -min(cutoff, NEGATIVE_CUTOFF):
        label = negative
    else:
        label = neutral
    return _verdict([_label(label, indices, f"VADER compound {compound:+.2f}")])
