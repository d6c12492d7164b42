"""One embedding pass over a batch: every message and sentence with its vector, and each dimension's
view of them (the rows its labels are scored on)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from judge.batching import PreparedConversation
from judge.providers.local.vectors import Indices, Mask, Matrix, _Prototypes, _unit, _WordVectors
from judge.rubric import Dimension

EMPTY_MESSAGE = "empty reply"
"""Stands in for a blank assistant message so a label that describes empty replies can match it."""

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")

_USER, _ASSISTANT, _OTHER = 0, 1, 2
_ROLES = {"user": _USER, "assistant": _ASSISTANT}


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
