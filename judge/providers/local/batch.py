"""One embedding pass over a batch: every message and sentence with its vector, and each dimension's
view of them (the rows its labels are scored on)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from judge.batching import PreparedConversation
from judge.providers.local.vectors import (
    Indices,
    Mask,
    Matrix,
    _Prototypes,
    _sums,
    _unit,
    _WordVectors,
)
from judge.rubric import Dimension

EMPTY_MESSAGE = "empty reply"
"""Stands in for a blank assistant message so a label that describes empty replies can match it."""

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")
"""Where a text breaks into sentences. ``_tokenise`` applies the same rule word by word (its stops are
``SENTENCE_STOPS``), and falls back on this pattern text by text."""

_USER, _ASSISTANT, _OTHER = 0, 1, 2
_ROLES = {"user": _USER, "assistant": _ASSISTANT}


class _Batch:
    """Every message and sentence of a batch with its vector, from one embedding pass over the batch.

    Sentences are embedded; a message's vector is the sum of its sentences' (exact, see ``_WordVectors``),
    so a long message is judged whole and sentence by sentence for the price of one pass."""

    def __init__(self, conversations: Sequence[PreparedConversation], words: _WordVectors) -> None:
        self.texts: list[str] = []
        conversation: list[int] = []
        index: list[int] = []
        role: list[int] = []
        for position, prepared in enumerate(conversations):
            for message in prepared.messages:
                text = message.content.strip() or (EMPTY_MESSAGE if message.role == "assistant" else "")
                if message.omitted or not text:
                    continue
                self.texts.append(text)
                conversation.append(position)
                index.append(message.index)
                role.append(_ROLES.get(message.role, _OTHER))
        self.size = len(conversations)
        self.conversation = np.array(conversation, dtype=np.intp)
        self.index = np.array(index, dtype=np.intp)
        self.role = np.array(role, dtype=np.intp)
        rows, per_sentence, per_message = _tokenise(self.texts, words)
        self.sentence_owner = np.repeat(np.arange(len(self.texts)), per_message)
        self._first = np.zeros(len(self.texts) + 1, dtype=np.intp)
        np.cumsum(per_message, out=self._first[1:])
        self._parts: dict[int, list[str]] = {}
        self._scopes: dict[str, _Scope] = {}
        self.sentences = words.sums(rows, per_sentence)
        self.sentence_negative = np.zeros(len(per_sentence), dtype=bool)
        negative_words = words.negative(rows)
        self.sentence_negative[np.repeat(np.arange(len(per_sentence)), per_sentence)[negative_words]] = True
        self.negative = np.zeros(len(self.texts), dtype=bool)
        self.negative[self.sentence_owner[self.sentence_negative]] = True
        self.vectors = _message_sums(self.sentences, self._first)
        self.split = per_message[self.sentence_owner] > 1
        """Sentences of messages that have more than one: judged on their own too."""
        self._split_rows = np.flatnonzero(self.split)
        self.split_position = np.full(len(per_sentence), -1, dtype=np.intp)
        self.split_position[self._split_rows] = np.arange(len(self._split_rows))
        self.message_similarity: Matrix = np.zeros((len(self.texts), 0), dtype=np.float32)
        self.sentence_similarity: Matrix = np.zeros((len(self._split_rows), 0), dtype=np.float32)

    def sentence_text(self, sentence: int) -> str:
        """A sentence's text, split from its message when first asked for: few are ever read."""
        owner = int(self.sentence_owner[sentence])
        parts = self._parts.get(owner)
        if parts is None:
            parts = self._parts[owner] = _sentences(self.texts[owner])
        return parts[sentence - int(self._first[owner])]

    def scope(self, scope: str) -> _Scope:
        """The rows of ``scope`` ("user", "assistant" or "all")."""
        if scope not in self._scopes:
            self._scopes[scope] = _scope(self, scope)
        return self._scopes[scope]

    def compare(self, prototypes: Matrix) -> None:
        """Similarity of every message and split sentence to every prototype of every dimension, in two
        matrix products per batch rather than small ones per dimension."""
        self.message_similarity = _unit(self.vectors) @ prototypes.T
        self.sentence_similarity = _unit(self.sentences[self._split_rows]) @ prototypes.T


def _sentences(text: str) -> list[str]:
    return [p for p in _SENTENCE.split(text) if p] if _SENTENCE.search(text) else [text]


_LINE, _MESSAGE = "\x01", "\x02"
"""Control characters (not spaces to ``split``) that stand for line breaks and message ends in the text of
a whole batch."""


def _tokenise(texts: list[str], words: _WordVectors) -> tuple[Indices, Indices, Indices]:
    """The word-table rows of the lower-cased words of every sentence of ``texts``, the number of words
    of each sentence, and the number of sentences of each text.

    ``_SENTENCE`` breaks a text at a run of spaces after a stop (``.!?;``) or with a line break in it,
    so, word by word: a word ends its sentence when it ends with a stop, is followed by a line break or
    is the last of its text. Lower-casing and splitting into words are done once on the whole batch,
    joined with marks for the line breaks and text ends (looked up like words, then taken out): two calls
    on one string rather than a regular expression and two calls per text. Neither ``lower`` nor
    ``split`` looks past a space, so the words are those of text by text. A batch whose texts contain a
    mark is split text by text."""
    joined = _MESSAGE.join(texts)
    if not texts or _LINE in joined or joined.count(_MESSAGE) != len(texts) - 1:
        return _tokenise_one_by_one(texts, words)
    tokens = joined.replace("\n", f" {_LINE} ").replace(_MESSAGE, f" {_MESSAGE} ").lower().split()
    tokens += [_LINE, _MESSAGE]  # in the same look-up: the rows of an earlier one may have been forgotten
    rows = words.rows(tokens)
    line, message = rows[-2:].tolist()
    rows = rows[:-2]
    ends_text = rows == message
    mark = ends_text | (rows == line)
    at = np.flatnonzero(~mark)
    rows = rows[at]
    stops = np.flatnonzero(words.stops(rows) | np.append(mark[1:], True)[at])
    per_sentence = np.diff(stops, prepend=-1)
    text = np.cumsum(ends_text)[at[stops]]
    return rows, per_sentence, np.bincount(text, minlength=len(texts))


def _tokenise_one_by_one(texts: list[str], words: _WordVectors) -> tuple[Indices, Indices, Indices]:
    tokens: list[str] = []
    per_sentence: list[int] = []
    per_message: list[int] = []
    for text in texts:
        parts = _sentences(text)
        per_message.append(len(parts))
        for part in parts:
            split = part.lower().split()
            per_sentence.append(len(split))
            tokens.extend(split)
    return (
        words.rows(tokens),
        np.array(per_sentence, dtype=np.intp),
        np.array(per_message, dtype=np.intp),
    )


PAIRWISE = 8
"""numpy adds up to this many terms one after the other; from there on, pairwise."""


def _message_sums(sentences: Matrix, first: Indices) -> Matrix:
    """Each message's vector: its sentences' summed as ``np.add.reduceat`` sums them, bit for bit (the
    first sentence plus numpy's sum of the others, which adds fewer than ``PAIRWISE`` in order), without
    its many small inner loops; reduceat itself is only called on messages of very many sentences."""
    counts = np.diff(first)
    vectors: Matrix = sentences[first[:-1]]
    short = np.flatnonzero((counts > 1) & (counts <= PAIRWISE))
    if len(short):
        in_short = np.zeros(len(counts), dtype=bool)
        in_short[short] = True
        others = np.repeat(in_short, counts)
        others[first[:-1]] = False
        vectors[short] += _sums(sentences, np.flatnonzero(others), counts[short] - 1)
    for message in np.flatnonzero(counts > PAIRWISE):
        vectors[message] = np.add.reduceat(sentences[first[message] : first[message + 1]], [0], axis=0)[0]
    return vectors


@dataclass(frozen=True)
class _Scope:
    """The rows of one scope (user, assistant or all messages): its in-scope messages, then the sentences
    of the multi-sentence ones, grouped by conversation. The same for every dimension of that scope, so
    worked out once per batch."""

    messages: Indices
    sentences: Indices
    order: Indices
    """Messages then sentences -> rows grouped by conversation (its messages first)."""
    bounds: Indices
    """Conversation ``n``'s rows are ``bounds[n]:bounds[n + 1]``."""
    conversation: Indices
    """Conversation of each row."""
    evidence: Indices
    """Message index of each row."""
    negative: Mask
    role: Indices
    """Role of each row that is a message (its first rows in a conversation); -1 for a sentence."""
    source: Indices
    """Where each row's text is: a message (>= 0) or sentence ``~source`` (< 0)."""


@dataclass(frozen=True)
class _Rows(_Scope):
    """A dimension's view of a batch: the rows of its scope with their label scores."""

    scores: Matrix
    batch: _Batch
    prototypes: _Prototypes

    def text(self, row: int) -> str:
        source = int(self.source[row])
        return self.batch.texts[source] if source >= 0 else self.batch.sentence_text(~source)


def _rows(dimension: Dimension, prototypes: _Prototypes, batch: _Batch, columns: slice) -> _Rows:
    """The dimension's labels scored on every in-scope message and sentence (``columns``: where its
    prototypes are in the batch's similarity matrices)."""
    scope = batch.scope(dimension.local.scope)
    similarity = np.concatenate(
        [
            batch.message_similarity[scope.messages, columns],
            batch.sentence_similarity[batch.split_position[scope.sentences], columns],
        ]
    )[scope.order]
    return _Rows(**vars(scope), scores=prototypes.labels(similarity), batch=batch, prototypes=prototypes)


def _scope(batch: _Batch, scope: str) -> _Scope:
    in_scope = np.ones(len(batch.texts), dtype=bool) if scope == "all" else batch.role == _ROLES[scope]
    messages = np.flatnonzero(in_scope)
    sentences = np.flatnonzero(batch.split & in_scope[batch.sentence_owner])
    owner = batch.sentence_owner[sentences]
    conversation = np.concatenate([batch.conversation[messages], batch.conversation[owner]])
    order = np.argsort(conversation, kind="stable")
    conversation = conversation[order]
    return _Scope(
        messages=messages,
        sentences=sentences,
        order=order,
        bounds=np.searchsorted(conversation, np.arange(batch.size + 1)),
        conversation=conversation,
        evidence=np.concatenate([batch.index[messages], batch.index[owner]])[order],
        negative=np.concatenate([batch.negative[messages], batch.sentence_negative[sentences]])[order],
        role=np.concatenate([batch.role[messages], np.full(len(sentences), -1, dtype=np.intp)])[order],
        source=np.concatenate([messages, ~sentences])[order],
    )
