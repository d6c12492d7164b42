"""The embedded offline grader: word-embedding similarity, VADER sentiment and deterministic signals.

No network, no key, thousands of conversations a second. It reads each dimension's ``local`` hints:
``similarity`` compares the messages in ``scope``, and each sentence of the longer ones, with every
label's description and examples using wordllama's static embeddings; ``sentiment`` scores the first or
last user turn with VADER. A label with a ``signal`` is given by that signal alone. For the analytics about
feelings, VADER also vetoes labels of the opposite polarity. Everything is computed once per batch, with
numpy, not once per conversation. It is the baseline every LLM grader must beat on the gold set.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache
from typing import Any

import numpy as np

from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Usage, register
from judge.providers.local.batch import _Batch, _rows
from judge.providers.local.decide import _fired, _multi, _sentiment, _single
from judge.providers.local.vectors import _model, _Prototypes, _prototypes, _WordVectors
from judge.rubric import Dimension
from judge.verdict import ConversationVerdicts

ALGORITHM_VERSION = 2

__all__ = ["ALGORITHM_VERSION", "LocalProvider", "_WordVectors", "_model"]


@register("local")
class LocalProvider:
    default_batch_size = 256
    counts_tokens = False
    """No context window: conversations are judged whole, and batches are not packed by tokens."""
    uses_signals = True

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
        self._hashes: dict[int, tuple[Dimension, str]] = {}
        """Dimension object -> its content hash: hashing the rubric on every batch cost more than judging."""

    def _word_vectors(self) -> _WordVectors:
        if self._words is None:
            self._words = _WordVectors()
        return self._words

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        with _one_blas_thread():
            return self._judge(request)

    def _judge(self, request: JudgeRequest) -> JudgeReply:
        conversations = request.conversations
        verdicts: dict[str, ConversationVerdicts] = {c.id: {} for c in conversations}
        ids = [c.id for c in conversations]
        signals = [request.signals.get(c.id, []) for c in conversations]
        fired = [_fired(hits) for hits in signals]
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
                judged = _sentiment(dimension, conversations, signals)
            else:
                rows = _rows(dimension, similar[name], batch, columns[name])
                judged = (_multi if dimension.kind == "multi" else _single)(dimension, rows, fired)
            for cid, verdict in zip(ids, judged, strict=True):
                verdicts[cid][name] = verdict
        return JudgeReply(verdicts=verdicts, usage=Usage(calls=0))

    def _prototypes_of(self, dimension: Dimension) -> _Prototypes:
        known = self._hashes.get(id(dimension))
        if known is None or known[0] is not dimension:
            known = self._hashes[id(dimension)] = (dimension, dimension.content_hash())
        key = known[1]
        if key not in self._prototypes:
            self._prototypes[key] = _prototypes(dimension, self._word_vectors())
        return self._prototypes[key]


def _one_blas_thread() -> AbstractContextManager[object]:
    """numpy's BLAS on one thread while judging. Its products here take milliseconds: a second thread
    saves little, and when the other cores are busy (the runner, a database, another job) waiting for
    it halved the grader's throughput. The results are the same: BLAS shares rows among its threads, not
    the sums."""
    limited: AbstractContextManager[object] = _threadpools().limit(limits=1, user_api="blas")
    return limited


@cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

    return ThreadpoolController()
