"""A grader that reads only the deterministic signals (``judge.signals``): the floor an LLM must clear.

It answers what signals can know and nothing more. A label with a ``signal`` is given when its signal
fired. A single-label dimension about feelings, feedback or failure gets its first negative label (or
``negative``) when the user rephrased, repeated a question, insulted the assistant or gave up, because
those reactions show that something went wrong but not what; otherwise its ``local.default``, else
``neutral``, else its first label. Topics and risks are beyond signals: they get the default (single) or
nothing (multi). No network, no model; its fingerprint changes when the signal code or lexicons change.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from judge import signals as signals_module
from judge.providers.base import GraderSpec, JudgeReply, JudgeRequest, Usage, register
from judge.resources import PACKAGE_DIR
from judge.rubric import Analytic, Dimension, Signal
from judge.signals import SignalHit
from judge.verdict import ConversationVerdicts, DimensionVerdict, LabelVerdict

VERSION = 1
NEGATIVE = frozenset({Signal.rephrase_retry, Signal.repeated_question, Signal.abandonment, Signal.insult})
"""Reactions that show the conversation went wrong."""
REACTIONS = frozenset({Analytic.sentiment_emotion, Analytic.implicit_feedback, Analytic.failure_cause})
"""Single-label analytics where a negative reaction implies a negative label."""


@cache
def _code_hash() -> str:
    """Hash of the signal code and lexicons: edit them and this grader's cached verdicts no longer apply."""
    digest = hashlib.sha256(f"signals-v{VERSION}".encode())
    for path in (Path(signals_module.__file__), PACKAGE_DIR / "data" / "lexicons.yaml"):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


@register("signals")
class SignalsProvider:
    default_batch_size = 256

    def __init__(self, model: str = "signals", **params: object) -> None:
        self.spec = GraderSpec(
            provider="signals",
            model=model,
            params=dict(params),
            prompt_name="signals",
            prompt_version=VERSION,
            prompt_hash=_code_hash(),
        )

    async def judge(self, request: JudgeRequest) -> JudgeReply:
        verdicts: dict[str, ConversationVerdicts] = {}
        for prepared in request.conversations:
            hits = request.signals.get(prepared.id, [])
            user_turns = [m.index for m in prepared.messages if m.role == "user" and not m.omitted]
            verdicts[prepared.id] = {
                name: decide(request.rubric.dimension(name), hits, user_turns) for name in request.dimensions
            }
        return JudgeReply(verdicts=verdicts, usage=Usage(calls=0))


def decide(dimension: Dimension, hits: list[SignalHit], user_turns: list[int]) -> DimensionVerdict:
    """The verdict the signals support for one dimension (see the module docstring)."""
    fired = {hit.signal: hit for hit in hits}
    by_signal = [
        LabelVerdict(
            label=label.id, evidence=list(fired[label.signal].evidence), reason=f"signal {label.signal}"
        )
        for label in dimension.labels
        if label.signal is not None and label.signal in fired
    ]
    if dimension.kind == "multi":
        return DimensionVerdict(labels=by_signal)
    if by_signal:
        return DimensionVerdict(labels=by_signal[:1])
    negative = _negative_label(dimension)
    reactions = [hit for hit in hits if hit.signal in NEGATIVE and _in_scope(dimension, hit, user_turns)]
    if negative is not None and reactions and dimension.analytic in REACTIONS:
        evidence = sorted({i for hit in reactions for i in hit.evidence})
        names = ", ".join(sorted(hit.signal.value for hit in reactions))
        reason = f"signals {names}: the user's reaction shows a problem, not its cause"
        return DimensionVerdict(labels=[LabelVerdict(label=negative, evidence=evidence, reason=reason)])
    return DimensionVerdict(labels=[LabelVerdict(label=_default(dimension), reason="no signal")])


def _negative_label(dimension: Dimension) -> str | None:
    flagged = [label.id for label in dimension.labels if label.negative]
    if flagged:
        return flagged[0]
    return "negative" if "negative" in dimension.label_ids else None


def _in_scope(dimension: Dimension, hit: SignalHit, user_turns: list[int]) -> bool:
    """A sentiment read at the start ignores reactions (they come later); one read at the end needs
    the reaction in the last user turn."""
    if dimension.analytic is not Analytic.sentiment_emotion:
        return True
    if dimension.local.position == "start" or not user_turns:
        return False
    return user_turns[-1] in hit.evidence


def _default(dimension: Dimension) -> str:
    if dimension.local.default is not None:
        return dimension.local.default
    return "neutral" if "neutral" in dimension.label_ids else dimension.label_ids[0]
