"""Word vectors for the local grader: wordllama's static embeddings, one cached vector per distinct word,
and each label's prototypes (its description and examples) as unit vectors; VADER's compound score."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import repeat
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
SENTENCE_STOPS = (".", "!", "?", ";")
"""Marks that end a sentence when a space follows them."""

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
    return _polarity(_ANSWER.sub(r"\1", text))


def _polarity(text: str) -> float:
    """``polarity_scores(text)["compound"]``, the same number for less work: an ASCII text has no emoji
    to translate (VADER rebuilds it character by character to find them), a word outside the lexicon
    scores 0 without ``sentiment_valence``, a text without a scored word is 0, and a scored word is shown
    only the words VADER reads around it (its checks lower-case the whole text for each word)."""
    from vaderSentiment.vaderSentiment import BOOSTER_DICT, SentiText

    vader = _vader()
    if not text.isascii() or _ascii_emojis():
        return float(vader.polarity_scores(text)["compound"])
    text = text.strip()
    sentitext = SentiText(text)
    words: list[str] = sentitext.words_and_emoticons
    lexicon: dict[str, float] = vader.lexicon
    sentiments: list[float] = []
    last = len(words) - 1
    for i, item in enumerate(words):
        lower = item.lower()
        if (
            lower not in lexicon
            or lower in BOOSTER_DICT
            or (lower == "kind" and i < last and words[i + 1].lower() == "of")
        ):
            sentiments.append(0)
            continue
        start = max(0, i - _BEFORE)
        nearby = _Nearby(words[start : i + _AFTER + 1], sentitext.is_cap_diff)
        sentiments = vader.sentiment_valence(0, nearby, item, i - start, sentiments)
    if not any(sentiments):
        return 0.0
    sentiments = vader._but_check(words, sentiments)
    return float(vader.score_valence(sentiments, text)["compound"])


_BEFORE, _AFTER = 3, 2
"""``sentiment_valence`` reads at most 3 words before the scored one and 2 after it (and whether the
next one is the last)."""


@dataclass(frozen=True)
class _Nearby:
    """The part of a ``SentiText`` that ``sentiment_valence`` reads, for the words around one word."""

    words_and_emoticons: list[str]
    is_cap_diff: bool


@cache
def _ascii_emojis() -> bool:
    """Whether VADER's emoji lexicon has an ASCII entry (it has none): then every text goes the long way."""
    return any(emoji.isascii() for emoji in _vader().emojis)


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
    once and cached: the tokenizer, not the arithmetic, is the slow part.

    Sums are sparse-times-dense products (``_sums``): they add the rows in order, one after the other, as
    the plain loop does, so the vectors are bit for bit those of the plain sums, in a fraction of the time
    of gathering the rows with numpy."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        model = _model()
        self._tokens: Matrix = np.array(model.embedding, dtype=np.float32)
        """A copy: read now, while loading, not page by page in the first batches."""
        self._tokenizer = Tokenizer.from_str(model.tokenizer.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.dimensions = int(self._tokens.shape[1])
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[str, int] = {"": 0}
        self._words: Matrix = np.zeros((1024, self.dimensions), dtype=np.float32)
        self._negative = np.zeros(1024, dtype=bool)
        self._stops = np.zeros(1024, dtype=bool)

    def _learn(self, words: list[str]) -> None:
        start = len(self._rows)
        needed = start + len(words)
        if needed > len(self._words):
            size = max(needed, 2 * len(self._words))
            grown = np.zeros((size, self.dimensions), dtype=np.float32)
            grown[:start] = self._words[:start]
            self._words = grown
            self._negative = np.concatenate([self._negative, np.zeros(size - len(self._negative), bool)])
            self._stops = np.concatenate([self._stops, np.zeros(size - len(self._stops), bool)])
        # One call for every word: a pre-tokenised input is normalised and tokenised word by word, as
        # separate calls would be, without an ``Encoding`` object per word.
        encoding = self._tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        ids = np.asarray(encoding.ids, dtype=np.intp)
        np.clip(ids, 0, len(self._tokens) - 1, out=ids)
        lengths = np.bincount(np.asarray(encoding.word_ids, dtype=np.intp), minlength=len(words))
        self._words[start:needed] = _sums(self._tokens, ids, lengths)
        negative = _negative_words()
        self._negative[start:needed] = [w in negative or w.strip(_PUNCTUATION) in negative for w in words]
        self._stops[start:needed] = [w.endswith(SENTENCE_STOPS) for w in words]
        self._rows.update(zip(words, range(start, needed), strict=True))

    def rows(self, words: list[str]) -> Indices:
        """Each word's row in the word table, learning the words not seen yet. The rows are valid until
        the next call, which may start the table over (``CACHE_WORDS``)."""
        known = self._rows
        rows = np.fromiter(map(known.get, words, repeat(-1)), dtype=np.intp, count=len(words))
        missing = np.flatnonzero(rows < 0).tolist()
        if not missing:
            return rows
        new = {words[i] for i in missing}
        if len(known) + len(new) > CACHE_WORDS:
            self._reset()
            self._learn(sorted(set(words) - {""}))
            return np.fromiter(map(self._rows.__getitem__, words), dtype=np.intp, count=len(words))
        self._learn(sorted(new))
        rows[missing] = [known[words[i]] for i in missing]
        return rows

    def sums(self, rows: Indices, lengths: Indices) -> Matrix:
        """The sum of the word vectors of each run of ``lengths`` consecutive ``rows``."""
        return _sums(self._words, rows, lengths)

    def negative(self, rows: Indices) -> Mask:
        """Whether each word could make VADER's score negative."""
        flags: Mask = self._negative[rows]
        return flags

    def stops(self, rows: Indices) -> Mask:
        """Whether each word ends with a full stop, ``!``, ``?`` or ``;`` (the same, lower-cased)."""
        flags: Mask = self._stops[rows]
        return flags

    def encode(self, texts: Sequence[str]) -> _Encoded:
        split = [text.lower().split() for text in texts]
        lengths = np.fromiter((len(words) for words in split), dtype=np.intp, count=len(split))
        rows = self.rows([w for words in split for w in words])
        owner = np.repeat(np.arange(len(texts)), lengths)
        negative = np.zeros(len(texts), dtype=bool)
        negative[owner[self.negative(rows)]] = True
        return _Encoded(self.sums(rows, lengths), negative)


def _sums(table: Matrix, rows: Indices, lengths: Indices) -> Matrix:
    """Row sums of ``table[rows]`` per run of ``lengths``, each added in order from zero (as
    ``((0 + a) + b) + c``): a sparse matrix of ones times ``table`` does exactly that, row after row."""
    from scipy.sparse import csr_matrix

    indptr = np.zeros(len(lengths) + 1, dtype=np.intp)
    np.cumsum(lengths, out=indptr[1:])
    ones = np.ones(len(rows), dtype=np.float32)
    selection = csr_matrix((ones, rows, indptr), shape=(len(lengths), len(table)))
    summed: Matrix = np.asarray(selection @ table, dtype=np.float32)
    return summed


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
        """texts x prototypes similarities -> texts x labels (the best prototype of each label), column by
        column: ``np.maximum.reduceat`` along rows runs one small inner loop per text and label."""
        best: Matrix = np.empty((len(similarity), len(self.starts)), dtype=np.float32)
        ends = [*self.starts[1:].tolist(), len(self.vectors)]
        for label, (start, end) in enumerate(zip(self.starts.tolist(), ends, strict=True)):
            column = best[:, label]
            np.copyto(column, similarity[:, start])
            for prototype in range(start + 1, end):
                np.maximum(column, similarity[:, prototype], out=column)
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
