"""Writing runs, graders, rubric versions, provider calls and judgements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Table, insert
from sqlmodel import Session, col, select

from judge.errors import NotFoundError
from judge.providers.base import GraderSpec, JudgeReply
from judge.rubric import Rubric, load_rubric
from judge.store.bulk import Columns, insert_returning_ids, insert_rows
from judge.store.db import get_or_create
from judge.store.tables import Grader, Judgement, JudgementLabel, ProviderCall, RubricVersion, Run, utcnow
from judge.verdict import Verdict


def ensure_rubric_version(session: Session, rubric: Rubric) -> RubricVersion:
    digest = rubric.content_hash()
    query = select(RubricVersion).where(
        RubricVersion.name == rubric.name,
        RubricVersion.version == rubric.version,
        RubricVersion.content_hash == digest,
    )
    return get_or_create(
        session,
        lambda: session.exec(query).first(),
        lambda: RubricVersion(
            name=rubric.name, version=rubric.version, content_hash=digest, body=rubric.model_dump(mode="json")
        ),
    )


def ensure_grader(session: Session, spec: GraderSpec) -> Grader:
    return get_or_create(
        session,
        lambda: session.get(Grader, spec.fingerprint),
        lambda: Grader(
            id=spec.fingerprint,
            provider=spec.provider,
            model=spec.model,
            params=dict(spec.params),
            prompt_name=spec.prompt_name,
            prompt_version=spec.prompt_version,
            prompt_hash=spec.prompt_hash,
        ),
    )


class Outcome(NamedTuple):
    """What to store for one conversation x dimension: a verdict, or ``None`` and why it is unscored."""

    conversation_id: int
    dimension: str
    verdict: Verdict | None
    reason: str | None = None
    truncated: bool = False
    cache_hit: bool = False


def call_row(
    run_id: int, dimensions: Sequence[str], conversations: int, reply: JudgeReply | None, error: str | None
) -> dict[str, Any]:
    """The ``provider_call`` row of one batch sent to a provider, for ``insert_call``."""
    usage = reply.usage if reply else None
    return {
        "run_id": run_id,
        "conversations": conversations,
        "dimensions": list(dimensions),
        "status": "ok" if error is None else "failed",
        "error": error,
        "calls": usage.calls if usage else 0,
        "retries": usage.retries if usage else 0,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cost_usd": usage.cost_usd if usage else 0.0,
        "latency_s": usage.latency_s if usage else 0.0,
        "request": reply.request if reply else None,
        "raw_reply": reply.raw_reply if reply else None,
        "created_at": utcnow(),
    }


def insert_call(session: Session, row: dict[str, Any]) -> int:
    table = _table(ProviderCall)
    return int(session.execute(insert(table).returning(table.c.id), row).scalar_one())


def record_call(
    session: Session,
    run_id: int,
    dimensions: Sequence[str],
    conversations: int,
    reply: JudgeReply | None,
    error: str | None,
) -> ProviderCall:
    usage = reply.usage if reply else None
    call = ProviderCall(
        run_id=run_id,
        conversations=conversations,
        dimensions=list(dimensions),
        status="ok" if error is None else "failed",
        error=error,
        calls=usage.calls if usage else 0,
        retries=usage.retries if usage else 0,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0,
        latency_s=usage.latency_s if usage else 0.0,
        request=reply.request if reply else None,
        raw_reply=reply.raw_reply if reply else None,
    )
    session.add(call)
    session.flush()
    return call


def store_outcomes(session: Session, run_id: int, outcomes: Sequence[Outcome], call_id: int | None) -> None:
    """Insert judgements and their label rows in the caller's transaction; the caller commits."""
    store_outcome_groups(session, run_id, [(outcomes, call_id)])


def store_outcome_groups(
    session: Session, run_id: int, groups: Sequence[tuple[Sequence[Outcome], int | None]]
) -> None:
    """``store_outcomes`` for several batches (each with its provider call) in two statements.

    Bulk inserts (``judge.store.bulk``) rather than ORM objects: a run writes one judgement per
    conversation x dimension, and per-row overhead dominated its time.
    """
    outcomes = [o for group, _call in groups for o in group]
    if not outcomes:
        return
    size = len(outcomes)
    created = utcnow()
    judgements: Columns = {
        "run_id": [run_id] * size,
        "conversation_id": [o.conversation_id for o in outcomes],
        "dimension": [o.dimension for o in outcomes],
        "status": ["unscored" if o.verdict is None else "scored" for o in outcomes],
        "reason": [o.reason for o in outcomes],
        "suggestion": [None if o.verdict is None else o.verdict.suggestion for o in outcomes],
        "truncated": [o.truncated for o in outcomes],
        "cache_hit": [o.cache_hit for o in outcomes],
        "call_id": [call_id for group, call_id in groups for _ in group],
        "created_at": [created] * size,
    }
    judgement_table, label_table = _table(Judgement), _table(JudgementLabel)
    ids = insert_returning_ids(
        session, judgement_table, judgements, ("run_id", "conversation_id", "dimension")
    )
    labels: Columns = {
        "judgement_id": [],
        "run_id": [],
        "conversation_id": [],
        "dimension": [],
        "label": [],
        "evidence": [],
        "reason": [],
    }
    for judgement_id, outcome in zip(ids, outcomes, strict=True):
        if outcome.verdict is None:
            continue
        for item in outcome.verdict.labels:
            labels["judgement_id"].append(judgement_id)
            labels["conversation_id"].append(outcome.conversation_id)
            labels["dimension"].append(outcome.dimension)
            labels["label"].append(item.label)
            labels["evidence"].append(item.evidence)
            labels["reason"].append(item.reason)
    labels["run_id"] = [run_id] * len(labels["label"])
    insert_rows(session, label_table, labels)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def judged_pairs(session: Session, run_id: int, conversation_ids: Sequence[int]) -> set[tuple[int, str]]:
    """(conversation, dimension) pairs this run already stored: what a resumed run skips."""
    query = select(Judgement.conversation_id, Judgement.dimension).where(
        Judgement.run_id == run_id, col(Judgement.conversation_id).in_(conversation_ids)
    )
    return {(c, d) for c, d in session.exec(query)}


def latest_run(session: Session, project_id: int) -> Run | None:
    query = select(Run).where(Run.project_id == project_id).order_by(col(Run.id).desc())
    return session.exec(query).first()


def rubric_at(session: Session, name: str, version: int) -> Rubric:
    """Rubric ``name`` at ``version``: the file when it is at that version, else the newest stored copy."""
    current = load_rubric(name)
    if current.version == version:
        return current
    query = (
        select(RubricVersion)
        .where(RubricVersion.name == current.name, RubricVersion.version == version)
        .order_by(col(RubricVersion.id).desc())
    )
    stored = session.exec(query).first()
    if stored is None:
        known = session.exec(select(RubricVersion.version).where(RubricVersion.name == current.name)).all()
        choices = {f"v{v}" for v in [*known, current.version]}
        raise NotFoundError(f"version of rubric {name!r}", f"v{version}", choices)
    return Rubric.model_validate(stored.body)
