"""Word vectors for the local grader: wordllama's static embeddings, one cached vector per distinct word,
and each label's prototypes (its description and examples) as unit vectors; VADER's compound score."""

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

from judge.rubric import Dimension

Matrix = NDArray[np.float32]
Indices = NDArray[np.intp]
Mask = NDArray[np.bool_]

CACHE_WORDS = 200_000
"""Distinct words kept with their vectors (~200 MB at 256 dimensions) before the cache starts over."""

_PUNCTUATION = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'

_ANSWER = re.compile(
    r"(^|[.!?]\s+)(?:no|nope|nah|nothing(?: else| more)?)\b(?!\s+(?:problems?|worries)\b)[\s,.!]*",
    re.IGNORECASE,
)


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
