"""The embedded offline grader: word-embedding similarity, VADER sentiment and deterministic signals.

No network, no key, thousands of conversations a second. It reads each dimension's ``local`` hints:
``similarity`` compares the messages in ``scope``, and each sentence of the longer ones, with every
label's description and examples using wordllama's static embeddings; ``sentiment`` scores the first or
last user turn with VADER. A label with a ``signal`` is given by that signal alone. For the analytics about
feelings, VADER also vetoes labels of the opposite polarity. Everything is computed once per batch, with
numpy, not once per conversation. It is the baseline every LLM grader must beat on the gold set.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from judge.batching import PreparedConversation
from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Usage, register
from judge.rubric import Analytic, Dimension
from judge.signals import SignalHit
from judge.verdict import ConversationVerdicts, DimensionVerdict, LabelVerdict

ALGORITHM_VERSION = 2
Matrix = NDArray[np.float32]
Indices = NDArray[np.intp]
Mask = NDArray[np.bool_]

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
EMPTY_MESSAGE = "empty reply"
"""Stands in for a blank assistant message so a label that describes empty replies can match it."""
CACHE_WORDS = 200_000
"""Distinct words kept with their vectors (~200 MB at 256 dimensions) before the cache starts over."""

_PUNCTUATION = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")
_ANSWER = re.compile(
    r"(^|[.!?]\s+)(?:no|nope|nah|nothing(?: else| more)?)\b(?!\s+(?:problems?|worries)\b)[\s,.!]*",
    re.IGNORECASE,
)
_USER, _ASSISTANT, _OTHER = 0, 1, 2
_ROLES = {"user": _USER, "assistant": _ASSISTANT}


@cache
def _model() -> Any:
    """Load wordllama from the weights inside its wheel, with the tokenizer where ``load`` looks for it."""
    import wordllama
    from wordllama import WordLlama

    package = Path(wordllama.__file__).parent
    cache_dir = Path(tempfile.gettempdir()) / "judge-wordllama"
    target = cache_dir / "tokenizers" / "l2_supercat_tokenizer_config.json"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / "tokenizers" / target.name, target)
    return WordLlama.load(cache_dir=cache_dir, disable_download=True)


@cache
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=65_536)
def _compound(text: str) -> float:
    """VADER's compound score, without the answer particles that open a sentence: to VADER "No thank
    you, goodbye" is negative (a negated thanks), in a chat it is a polite answer to "anything else?".
    Cached, as chats repeat their courtesies a lot."""
    return float(_vader().polarity_scores(_ANSWER.sub(r"\1", text))["compound"])


@cache
def _negative_words() -> frozenset[str]:
    """Words that can make VADER's score negative: its negative lexicon entries and its negations."""
    from vaderSentiment.vaderSentiment import NEGATE

    lexicon: dict[str, float] = _vader().lexicon
    return frozenset({word for word, valence in lexicon.items() if valence < 0} | set(NEGATE))


@dataclass(frozen=True)
class _Encoded:
    vectors: Matrix
    """Unnormalised: sums of token vectors, so the vector of a concatenation is the sum of its parts'."""
    negative: Mask
    """Whether the text has a word VADER could score negative (so VADER is worth running on it)."""


class _WordVectors:
    """wordllama's text vector is the mean of its token vectors, and its tokenizer never merges across a
    space, so a text's direction is the sum of its words' token vectors. Each distinct word is tokenised
    once and cached: the tokenizer, not the arithmetic, is the slow part."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        model = _model()
        tokens = np.asarray(model.embedding, dtype=np.float32)
        self._tokens: Matrix = np.vstack([tokens, np.zeros((1, tokens.shape[1]), dtype=np.float32)])
        """The token vectors, and an all-zero row last for padding."""
        self._tokenizer = Tokenizer.from_str(model.tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.dimensions = int(self._tokens.shape[1])
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[str, int] = {"": 0}
        self._words: Matrix = np.zeros((1024, self.dimensions), dtype=np.float32)
        self._negative = np.zeros(1024, dtype=np.int32)

    def _learn(self, words: list[str]) -> None:
        if len(self._rows) + len(words) > CACHE_WORDS:
            self._reset()
        start = len(self._rows)
        needed = start + len(words)
        if needed > len(self._words):
            size = max(needed, 2 * len(self._words))
            self._words = np.concatenate([self._words, np.zeros((size - len(self._words), self.dimensions))])
            self._words = self._words.astype(np.float32, copy=False)
            self._negative = np.concatenate([self._negative, np.zeros(size - len(self._negative), np.int32)])
        encodings = self._tokenizer.encode_batch(words, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.intp, count=len(words))
        flat = np.fromiter((i for e in encodings for i in e.ids), dtype=np.intp, count=int(lengths.sum()))
        padding = len(self._tokens) - 1
        np.clip(flat, 0, padding - 1, out=flat)
        self._words[start:needed] = _segment_sums(self._tokens, flat, lengths, padding)
        negative = _negative_words()
        self._negative[start:needed] = [w in negative or w.strip(_PUNCTUATION) in negative for w in words]
        self._rows.update(zip(words, range(start, needed), strict=True))

    def encode(self, texts: Sequence[str]) -> _Encoded:
        split = [text.lower().split() for text in texts]
        new = {word for words in split for word in words if word not in self._rows}
        if new:
            self._learn(sorted(new))
        rows = self._rows
        lengths = np.fromiter((len(words) for words in split), dtype=np.intp, count=len(split))
        flat = np.fromiter(
            (rows[w] for words in split for w in words), dtype=np.intp, count=int(lengths.sum())
        )
        negative = np.zeros(len(texts), dtype=bool)
        filled = lengths > 0
        if filled.any():
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[filled]
            negative[filled] = np.add.reduceat(self._negative[flat], starts) > 0
        return _Encoded(_segment_sums(self._words, flat, lengths, 0), negative)


def _segment_sums(table: Matrix, flat: Indices, lengths: Indices, padding: int) -> Matrix:
    """Row sums of ``table[flat]`` per segment, segments of similar length padded together (with row
    ``padding``, which is all zeros): numpy's ``add.reduceat`` over many short segments is much slower."""
    out = np.zeros((len(lengths), table.shape[1]), dtype=np.float32)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.intp)
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    low, width = int(np.searchsorted(sorted_lengths, 1)), 4
    while low < len(order):
        high = int(np.searchsorted(sorted_lengths, width, side="right"))
        if high > low:
            members = order[low:high]
            widest = int(sorted_lengths[high - 1])
            columns = np.arange(widest)
            inside = columns[None, :] < lengths[members][:, None]
            padded = np.full((len(members), widest), padding, dtype=np.intp)
            padded[inside] = flat[(starts[members][:, None] + columns[None, :])[inside]]
            step = max(1, 32_768 // widest)
            for first in range(0, len(members), step):
                out[members[first : first + step]] = table[padded[first : first + step]].sum(axis=1)
        low, width = high, width * 2
    return out


def _unit(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: Matrix = vectors / np.maximum(norms, 1e-9)
    return normalised


@dataclass(frozen=True)
class _Prototypes:
    """Every label's description and examples as unit vectors (rows grouped by label), and its polarity."""

    vectors: Matrix
    starts: Indices
    polarity: NDArray[np.float64]
    """Mean VADER compound of each label's description and examples."""

    def scores(self, texts: Matrix) -> Matrix:
        """texts x labels: each text's best similarity to any prototype of each label."""
        return self.labels(_unit(texts) @ self.vectors.T)

    def labels(self, similarity: Matrix) -> Matrix:
        """texts x prototypes similarities -> texts x labels (the best prototype of each label)."""
        if len(similarity) == 0:
            return np.zeros((0, len(self.starts)), dtype=np.float32)
        best: Matrix = np.maximum.reduceat(similarity, self.starts, axis=1)
        return best


def _prototypes(dimension: Dimension, words: _WordVectors) -> _Prototypes:
    texts: list[str] = []
    starts: list[int] = []
    polarity: list[float] = []
    for label in dimension.labels:
        own = [label.description, *label.examples]
        starts.append(len(texts))
        texts.extend(own)
        polarity.append(float(np.mean([_compound(text) for text in own])))
    return _Prototypes(
        _unit(words.encode(texts).vectors), np.array(starts, dtype=np.intp), np.array(polarity)
    )


class _Batch:
    """Every message and sentence of a batch with its vector, from one embedding pass over the batch.

    Sentences are embedded; a message's vector is the sum of its sentences' (exact, see ``_WordVectors``),
    so a long message is judged whole and sentence by sentence for the price of one pass."""

    def __init__(self, conversations: Sequence[PreparedConversation], words: _WordVectors) -> None:
        sentences: list[str] = []
        owners: list[int] = []
        self.texts: list[str] = []
        conversation: list[int] = []
        index: list[int] = []
        role: list[int] = []
        for position, prepared in enumerate(conversations):
            for message in prepared.messages:
                text = message.content.strip() or (EMPTY_MESSAGE if message.role == "assistant" else "")
                if message.omitted or not text:
                    continue
                parts = [p for p in _SENTENCE.split(text) if p] if _SENTENCE.search(text) else [text]
                owners.extend([len(self.texts)] * len(parts))
                sentences.extend(parts)
                self.texts.append(text)
                conversation.append(position)
                index.append(message.index)
                role.append(_ROLES.get(message.role, _OTHER))
        self.size = len(conversations)
        self.conversation = np.array(conversation, dtype=np.intp)
        self.index = np.array(index, dtype=np.intp)
        self.role = np.array(role, dtype=np.intp)
        self.sentence_texts = sentences
        self.sentence_owner = np.array(owners, dtype=np.intp)
        encoded = words.encode(sentences)
        self.sentences = encoded.vectors
        self.sentence_negative = encoded.negative
        starts = np.flatnonzero(np.diff(self.sentence_owner, prepend=-1))
        self.vectors: Matrix = np.zeros((len(self.texts), words.dimensions), dtype=np.float32)
        self.negative = np.zeros(len(self.texts), dtype=bool)
        if len(starts):
            self.vectors = np.add.reduceat(self.sentences, starts, axis=0)
            self.negative = np.logical_or.reduceat(self.sentence_negative, starts)
        counts = np.bincount(self.sentence_owner, minlength=len(self.texts))
        self.split = counts[self.sentence_owner] > 1
        """Sentences of messages that have more than one: judged on their own too."""
        self._split_rows = np.flatnonzero(self.split)
        self.split_position = np.full(len(sentences), -1, dtype=np.intp)
        self.split_position[self._split_rows] = np.arange(len(self._split_rows))
        self.message_similarity: Matrix = np.zeros((len(self.texts), 0), dtype=np.float32)
        self.sentence_similarity: Matrix = np.zeros((len(self._split_rows), 0), dtype=np.float32)

    def compare(self, prototypes: Matrix) -> None:
        """Similarity of every message and split sentence to every prototype of every dimension, in two
        matrix products per batch: small products cost more in thread start-up than in arithmetic."""
        self.message_similarity = _unit(self.vectors) @ prototypes.T
        self.sentence_similarity = _unit(self.sentences[self._split_rows]) @ prototypes.T


@dataclass
class _Rows:
    """A dimension's view of a batch: its in-scope messages, then the sentences of the multi-sentence
    ones, grouped by conversation (``bounds``), with their label scores."""

    scores: Matrix
    bounds: list[int]
    evidence: Indices
    """Message index of each row."""
    negative: Mask
    roles: list[list[int]]
    """Per conversation, the role of each in-scope message: they are its first rows."""
    source: Indices
    """Where each row's text is: a message (>= 0) or sentence ``~source`` (< 0)."""
    batch: _Batch
    prototypes: _Prototypes

    def text(self, row: int) -> str:
        source = int(self.source[row])
        return self.batch.texts[source] if source >= 0 else self.batch.sentence_texts[~source]


def _rows(dimension: Dimension, prototypes: _Prototypes, batch: _Batch, columns: slice) -> _Rows:
    """The dimension's labels scored on every in-scope message and sentence (``columns``: where its
    prototypes are in the batch's similarity matrices)."""
    scope = dimension.local.scope
    in_scope = np.ones(len(batch.texts), dtype=bool) if scope == "all" else batch.role == _ROLES[scope]
    messages = np.flatnonzero(in_scope)
    sentences = np.flatnonzero(batch.split & in_scope[batch.sentence_owner])
    owner = batch.sentence_owner[sentences]
    conversation = np.concatenate([batch.conversation[messages], batch.conversation[owner]])
    order = np.argsort(conversation, kind="stable")
    similarity = np.concatenate(
        [
            batch.message_similarity[messages, columns],
            batch.sentence_similarity[batch.split_position[sentences], columns],
        ]
    )[order]
    first_per = np.searchsorted(batch.conversation[messages], np.arange(batch.size + 1)).tolist()
    roles = batch.role[messages].tolist()
    return _Rows(
        scores=prototypes.labels(similarity),
        bounds=np.searchsorted(conversation[order], np.arange(batch.size + 1)).tolist(),
        evidence=np.concatenate([batch.index[messages], batch.index[owner]])[order],
        negative=np.concatenate([batch.negative[messages], batch.sentence_negative[sentences]])[order],
        roles=[roles[first_per[n] : first_per[n + 1]] for n in range(batch.size)],
        source=np.concatenate([messages, ~sentences])[order],
        batch=batch,
        prototypes=prototypes,
    )


@register("local")
class LocalProvider:
    default_batch_size = 256

    def __init__(self, model: str = "wordllama-l2-256+vader", **params: Any) -> None:
        self.spec = GraderSpec(
            provider="local",
            model=model,
            params=dict(params),
            prompt_name="local",
            prompt_version=ALGORITHM_VERSION,
            prompt_hash=f"local-v{ALGORITHM_VERSION}",
        )
        self._words: _WordVectors | None = None
        self._prototypes: dict[str, _Prototypes] = {}

    def _word_vectors(self) -> _WordVectors:
        if self._words is None:
            self._words = _WordVectors()
        return self._words

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        conversations = request.conversations
        verdicts: dict[str, ConversationVerdicts] = {c.id: {} for c in conversations}
        signals = [request.signals.get(c.id, []) for c in conversations]
        dimensions = [(name, request.rubric.dimension(name)) for name in request.dimensions]
        similar = {name: self._prototypes_of(d) for name, d in dimensions if d.local.method == "similarity"}
        columns: dict[str, slice] = {}
        batch = _Batch(conversations, self._word_vectors()) if similar else None
        if batch is not None:
            for name, prototypes in similar.items():
                start = sum(s.stop - s.start for s in columns.values())
                columns[name] = slice(start, start + len(prototypes.vectors))
            batch.compare(np.concatenate([p.vectors for p in similar.values()]))
        for name, dimension in dimensions:
            if batch is None or name not in similar:
                for prepared, hits in zip(conversations, signals, strict=True):
                    verdicts[prepared.id][name] = _sentiment(dimension, prepared, hits)
                continue
            rows = _rows(dimension, similar[name], batch, columns[name])
            decide = _multi if dimension.kind == "multi" else _single
            for prepared, verdict in zip(conversations, decide(dimension, rows, signals), strict=True):
                verdicts[prepared.id][name] = verdict
        return JudgeReply(verdicts=verdicts, usage=Usage(calls=0))

    def _prototypes_of(self, dimension: Dimension) -> _Prototypes:
        key = dimension.content_hash()
        if key not in self._prototypes:
            self._prototypes[key] = _prototypes(dimension, self._word_vectors())
        return self._prototypes[key]


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
