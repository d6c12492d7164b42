"""Aggregation queries over stored judgements: every figure is a SQL GROUP BY over indexed columns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Integer, and_, case, distinct, func
from sqlmodel import Session, col, select

from judge.rubric import Analytic, Rubric
from judge.store.tables import ConversationRecord, Judgement, JudgementLabel, RubricVersion, Run


class LabelCount(BaseModel):
    label: str
    conversations: int
    share: float


class DimensionSummary(BaseModel):
    dimension: str
    analytic: Analytic
    kind: str
    scored: int
    unscored: int
    labels: list[LabelCount]


class TopicFailures(BaseModel):
    """Failure intelligence for one topic: how often it fails, why, in which languages, with which risks."""

    topic: str
    conversations: int
    failed: int
    failure_rate: float
    priority: float
    causes: dict[str, int]
    languages: dict[str, int]
    risks: dict[str, int]
    examples: list[str]


def rubric_of(session: Session, run: Run) -> Rubric:
    row = session.get(RubricVersion, run.rubric_version_id)
    assert row is not None
    return Rubric.model_validate(row.body)


def dimension_summaries(session: Session, run: Run) -> list[DimensionSummary]:
    """Per dimension: scored/unscored counts and every rubric label's count (zeros included)."""
    rubric = rubric_of(session, run)
    status_rows = session.exec(
        select(Judgement.dimension, Judgement.status, func.count())
        .where(Judgement.run_id == run.id)
        .group_by(Judgement.dimension, Judgement.status)
    ).all()
    status = {(d, s): n for d, s, n in status_rows}
    label_rows = session.exec(
        select(
            JudgementLabel.dimension,
            JudgementLabel.label,
            func.count(distinct(col(JudgementLabel.conversation_id))),
        )
        .where(JudgementLabel.run_id == run.id)
        .group_by(JudgementLabel.dimension, JudgementLabel.label)
    ).all()
    counts = {(d, label): n for d, label, n in label_rows}
    summaries = []
    for name in run.dimensions:
        dimension = rubric.dimension(name)
        scored = status.get((name, "scored"), 0)
        labels = [
            LabelCount(
                label=label,
                conversations=counts.get((name, label), 0),
                share=round(counts.get((name, label), 0) / scored, 4) if scored else 0.0,
            )
            for label in dimension.label_ids
        ]
        labels.sort(key=lambda c: -c.conversations)
        summaries.append(
            DimensionSummary(
                dimension=name,
                analytic=dimension.analytic,
                kind=dimension.kind,
                scored=scored,
                unscored=status.get((name, "unscored"), 0),
                labels=labels,
            )
        )
    return summaries


def _dimension_of(rubric: Rubric, analytic: Analytic) -> list[str]:
    return [name for name, d in rubric.dimensions.items() if d.analytic is analytic]


def failure_intelligence(
    session: Session, run: Run, level: int = 0, examples: int = 3
) -> list[TopicFailures]:
    """Topics (``level`` 1 = top of the hierarchy, 0 = full label) ranked by volume x failure rate.

    A conversation failed when any label marked ``negative`` in the rubric (a failure cause, negative
    implicit feedback) was given to it.
    """
    rubric = rubric_of(session, run)
    topic_dims = [d for d in _dimension_of(rubric, Analytic.topic_intent) if d in run.dimensions]
    if not topic_dims:
        return []
    negative = [
        (name, label.id)
        for name, d in rubric.dimensions.items()
        if name in run.dimensions
        for label in d.labels
        if label.negative
    ]
    topic = (
        select(col(JudgementLabel.conversation_id), col(JudgementLabel.label).label("topic"))
        .where(JudgementLabel.run_id == run.id, JudgementLabel.dimension == topic_dims[0])
        .subquery()
    )
    failed_flag = (
        func.max(
            case(
                *[
                    (and_(col(JudgementLabel.dimension) == d, col(JudgementLabel.label) == lab), 1)
                    for d, lab in negative
                ],
                else_=0,
            )
        )
        if negative
        else func.max(0)
    )
    failures = (
        select(JudgementLabel.conversation_id, failed_flag.label("failed"))
        .where(JudgementLabel.run_id == run.id)
        .group_by(col(JudgementLabel.conversation_id))
        .subquery()
    )
    rows = session.exec(
        select(
            topic.c.topic,
            ConversationRecord.external_id,
            ConversationRecord.language,
            func.coalesce(failures.c.failed, 0).cast(Integer),
        )
        .join(ConversationRecord, col(ConversationRecord.id) == topic.c.conversation_id)
        .join(failures, failures.c.conversation_id == topic.c.conversation_id, isouter=True)
    ).all()
    per_topic: dict[str, dict[str, Any]] = {}
    failed_ids: dict[str, str] = {}
    for label, external_id, language, failed in rows:
        key = ".".join(label.split(".")[:level]) if level else label
        entry = per_topic.setdefault(key, {"n": 0, "failed": 0, "languages": {}, "examples": []})
        entry["n"] += 1
        if failed:
            entry["failed"] += 1
            entry["languages"][language or "unknown"] = entry["languages"].get(language or "unknown", 0) + 1
            if len(entry["examples"]) < examples:
                entry["examples"].append(external_id)
            failed_ids[external_id] = key
    breakdown = _breakdown(session, run, rubric, failed_ids)
    empty: dict[Analytic, dict[str, int]] = {Analytic.failure_cause: {}, Analytic.business_risk: {}}
    result = []
    for key, entry in per_topic.items():
        rate = entry["failed"] / entry["n"]
        found = breakdown.get(key, empty)
        result.append(
            TopicFailures(
                topic=key,
                conversations=entry["n"],
                failed=entry["failed"],
                failure_rate=round(rate, 4),
                priority=round(entry["n"] * rate, 3),
                causes=found[Analytic.failure_cause],
                languages=entry["languages"],
                risks=found[Analytic.business_risk],
                examples=entry["examples"],
            )
        )
    result.sort(key=lambda t: (-t.priority, -t.conversations, t.topic))
    return result


def _breakdown(
    session: Session, run: Run, rubric: Rubric, failed_ids: dict[str, str]
) -> dict[str, dict[Analytic, dict[str, int]]]:
    """Among each topic's failed conversations: counts of negative failure causes and of risks."""
    wanted = {
        name: rubric.dimensions[name].analytic
        for name in run.dimensions
        if rubric.dimensions[name].analytic in (Analytic.failure_cause, Analytic.business_risk)
    }
    counted = {
        (name, label.id)
        for name in wanted
        for label in rubric.dimensions[name].labels
        if label.negative or wanted[name] is Analytic.business_risk
    }
    rows = session.exec(
        select(ConversationRecord.external_id, JudgementLabel.dimension, JudgementLabel.label)
        .join(ConversationRecord, col(ConversationRecord.id) == JudgementLabel.conversation_id)
        .where(JudgementLabel.run_id == run.id, col(JudgementLabel.dimension).in_(list(wanted)))
    ).all()
    out: dict[str, dict[Analytic, dict[str, int]]] = {}
    for external_id, dimension, label in rows:
        topic = failed_ids.get(external_id)
        if topic is None or (dimension, label) not in counted:
            continue
        bucket = out.setdefault(topic, {a: {} for a in (Analytic.failure_cause, Analytic.business_risk)})
        bucket[wanted[dimension]][label] = bucket[wanted[dimension]].get(label, 0) + 1
    return out
