"""The embedded offline grader: word-embedding similarity, VADER sentiment and deterministic signals.

No network, no key, thousands of conversations a second. It reads each dimension's ``local`` hints:
``similarity`` compares the messages in ``scope`` with every label's description and examples using
wordllama's static embeddings; ``sentiment`` scores the first or last user message with VADER. A label
whose ``signal`` fires is given whatever the similarity says. It is the baseline every LLM grader must
beat on the gold set.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from judge.batching import PreparedConversation
from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Usage, register
from judge.rubric import Dimension
from judge.signals import SignalHit
from judge.verdict import ConversationVerdicts, DimensionVerdict, LabelVerdict

ALGORITHM_VERSION = 1
DEFAULT_THRESHOLD = 0.5
POSITIVE, NEGATIVE = 0.05, -0.05  # VADER's documented compound-score cut-offs
Matrix = NDArray[np.float32]


@cache
def _embedder() -> Any:
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


def _embed(texts: list[str]) -> Matrix:
    vectors: Matrix = _embedder().embed(texts, norm=True)
    return vectors


@dataclass(frozen=True)
class _Prototypes:
    """Embeddings of every label's description and examples, and which label each row belongs to."""

    vectors: Matrix
    owner: NDArray[np.int_]

    def scores(self, texts: Matrix, labels: int) -> Matrix:
        """texts x labels: each text's best similarity to any prototype of each label."""
        similarity = texts @ self.vectors.T
        out = np.full((texts.shape[0], labels), -1.0, dtype=np.float32)
        for label in range(labels):
            out[:, label] = similarity[:, self.owner == label].max(axis=1)
        return out


def _prototypes(dimension: Dimension) -> _Prototypes:
    texts, owner = [], []
    for n, label in enumerate(dimension.labels):
        for text in [label.description, *label.examples]:
            texts.append(text)
            owner.append(n)
    return _Prototypes(_embed(texts), np.array(owner))


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
        self._prototypes: dict[str, _Prototypes] = {}

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        verdicts: dict[str, ConversationVerdicts] = {c.id: {} for c in request.conversations}
        for name in request.dimensions:
            dimension = request.rubric.dimension(name)
            key = dimension.content_hash()
            if key not in self._prototypes:
                self._prototypes[key] = _prototypes(dimension)
            judge = _sentiment if dimension.local.method == "sentiment" else self._similarity
            for prepared in request.conversations:
                signals = request.signals.get(prepared.id, [])
                verdicts[prepared.id][name] = judge(dimension, self._prototypes[key], prepared, signals)
        return JudgeReply(verdicts=verdicts, usage=Usage(calls=0))

    @staticmethod
    def _similarity(
        dimension: Dimension,
        prototypes: _Prototypes,
        prepared: PreparedConversation,
        signals: list[SignalHit],
    ) -> DimensionVerdict:
        scope = dimension.local.scope
        picked = [
            (m.index, m.content)
            for m in prepared.messages
            if m.content.strip() and (scope == "all" or m.role == scope)
        ]
        fired = {hit.signal: hit for hit in signals}
        by_signal = [
            LabelVerdict(
                label=label.id, evidence=fired[label.signal].evidence, reason=f"signal {label.signal}"
            )
            for label in dimension.labels
            if label.signal in fired
        ]
        if not picked:
            return _fallback(dimension, by_signal)
        indices = [i for i, _ in picked]
        texts = [t for _, t in picked]
        if dimension.kind == "single" and dimension.local.threshold is None:
            texts.append(" ".join(texts))  # the whole scope, judged as one text
        scores = prototypes.scores(_embed(texts), len(dimension.labels))
        threshold = dimension.local.threshold
        if dimension.kind == "single":
            if threshold is None:
                best = int(scores[-1].argmax())
                evidence = [indices[int(scores[:-1, best].argmax())]]
                return DimensionVerdict(
                    labels=[LabelVerdict(label=dimension.labels[best].id, evidence=evidence)]
                )
            default = dimension.local.default
            candidates = [
                (float(scores[row, col]), col, row)
                for row in range(len(indices))
                for col in range(len(dimension.labels))
                if dimension.labels[col].id != default and scores[row, col] >= threshold
            ]
            if not candidates:
                return _fallback(dimension, by_signal)
            _, col, row = max(candidates)
            return DimensionVerdict(
                labels=[LabelVerdict(label=dimension.labels[col].id, evidence=[indices[row]])]
            )
        limit = DEFAULT_THRESHOLD if threshold is None else threshold
        found = {v.label: v for v in by_signal}
        for col, label in enumerate(dimension.labels):
            rows = [indices[r] for r in np.flatnonzero(scores[:, col] >= limit)]
            if rows and label.id not in found:
                found[label.id] = LabelVerdict(label=label.id, evidence=rows)
        ordered = [found[label.id] for label in dimension.labels if label.id in found]
        return DimensionVerdict(labels=ordered)


def _fallback(dimension: Dimension, by_signal: list[LabelVerdict]) -> DimensionVerdict:
    """Nothing matched: a signal-implied label, else the default label (single) or none (multi)."""
    if dimension.kind == "multi":
        return DimensionVerdict(labels=by_signal)
    if by_signal:
        return DimensionVerdict(labels=by_signal[:1])
    default = dimension.local.default or dimension.labels[0].id
    return DimensionVerdict(labels=[LabelVerdict(label=default)])


def _sentiment(
    dimension: Dimension, prototypes: _Prototypes, prepared: PreparedConversation, signals: list[SignalHit]
) -> DimensionVerdict:
    users = [m for m in prepared.messages if m.role == "user" and m.content.strip()]
    if not users:
        return DimensionVerdict(labels=[LabelVerdict(label="neutral")])
    message = users[0] if dimension.local.position == "start" else users[-1]
    compound = float(_vader().polarity_scores(message.content)["compound"])
    label = "positive" if compound >= POSITIVE else "negative" if compound <= NEGATIVE else "neutral"
    return DimensionVerdict(
        labels=[LabelVerdict(label=label, evidence=[message.index], reason=f"VADER compound {compound:+.2f}")]
    )
