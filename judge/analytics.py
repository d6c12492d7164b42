"""Aggregation queries over stored judgements. Every figure is a SQL GROUP BY over indexed columns,
read through a ``Scope`` (judge.scope): the latest judgement per conversation x dimension."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Integer, Select, and_, case, distinct, func
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from judge.rubric import Analytic, Rubric
from judge.scope import (
    Bucket,
    Scope,
    bucket_expression,
    conversation_filters,
    is_latest,
    metadata_value,
    run_ids,
)
from judge.store.tables import (
    ConversationRecord,
    Grader,
    Judgement,
    JudgementLabel,
    ProviderCall,
    RubricVersion,
    Run,
    SignalRow,
)


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


class SeriesPoint(BaseModel):
    """Conversations with ``label`` in one time bucket or group, and how many were scored there."""

    key: str
    dimension: str
    label: str
    conversations: int
    scored: int


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


class Snapshot:
    """The runs and rubric a scope resolves to, with the joins every query here starts from."""

    def __init__(self, session: Session, scope: Scope) -> None:
        self.session, self.scope = session, scope
        self.runs = run_ids(session, scope)
        self.rubric: Rubric | None = None
        self.dimensions: list[str] = []
        if self.runs:
            newest = session.get(Run, max(self.runs))
            assert newest is not None
            row = session.get(RubricVersion, newest.rubric_version_id)
            assert row is not None
            self.rubric = Rubric.model_validate(row.body)
            self.dimensions = [d for d in self.rubric.dimensions if d in newest.dimensions]

    def of(self, analytic: Analytic | None) -> list[str]:
        if self.rubric is None:
            return []
        return [
            d for d in self.dimensions if analytic is None or self.rubric.dimensions[d].analytic is analytic
        ]

    def label_join(self) -> Select[Any]:
        """JudgementLabel rows that are the latest for their conversation x dimension, in scope."""
        return (
            sql_select()
            .select_from(JudgementLabel)
            .join(ConversationRecord, col(ConversationRecord.id) == col(JudgementLabel.conversation_id))
            .where(is_latest(JudgementLabel, self.runs), *conversation_filters(self.scope))
        )

    def judgement_join(self) -> Select[Any]:
        """Judgement rows (scored or not) that are the latest for their conversation x dimension, in scope."""
        return (
            sql_select()
            .select_from(Judgement)
            .join(ConversationRecord, col(ConversationRecord.id) == col(Judgement.conversation_id))
            .where(is_latest(Judgement, self.runs), *conversation_filters(self.scope))
        )


def dimension_summaries(snapshot: Snapshot, analytic: Analytic | None = None) -> list[DimensionSummary]:
    """Per dimension: scored/unscored counts and every rubric label's count (zeros included)."""
    names = snapshot.of(analytic)
    if not names or snapshot.rubric is None:
        return []
    session = snapshot.session
    status_rows = session.execute(
        snapshot.judgement_join()
        .add_columns(col(Judgement.dimension), col(Judgement.status), func.count())
        .where(col(Judgement.dimension).in_(names))
        .group_by(col(Judgement.dimension), col(Judgement.status))
    ).all()
    status = {(d, s): n for d, s, n in status_rows}
    label_rows = session.execute(
        snapshot.label_join()
        .add_columns(
            col(JudgementLabel.dimension),
            col(JudgementLabel.label),
            func.count(distinct(col(JudgementLabel.conversation_id))),
        )
        .where(col(JudgementLabel.dimension).in_(names))
        .group_by(col(JudgementLabel.dimension), col(JudgementLabel.label))
    ).all()
    counts = {(d, label): n for d, label, n in label_rows}
    summaries = []
    for name in names:
        dimension = snapshot.rubric.dimensions[name]
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


def breakdown(
    snapshot: Snapshot, analytic: Analytic | None, bucket: Bucket | None = None, group_by: str | None = None
) -> list[SeriesPoint]:
    """Label counts per time bucket (``bucket``) or per ``group_by`` (``language`` or ``metadata.KEY``)."""
    names = snapshot.of(analytic)
    if not names:
        return []
    if bucket is not None:
        key: Any = bucket_expression(snapshot.session, bucket)
    elif group_by == "language":
        key = col(ConversationRecord.language)
    elif group_by is not None and group_by.startswith("metadata."):
        key = metadata_value(group_by.removeprefix("metadata."))
    else:
        return []
    session = snapshot.session
    scored_rows = session.execute(
        snapshot.judgement_join()
        .add_columns(key.label("key"), col(Judgement.dimension), func.count())
        .where(col(Judgement.dimension).in_(names), col(Judgement.status) == "scored")
        .group_by(key, col(Judgement.dimension))
    ).all()
    scored = {(k, d): n for k, d, n in scored_rows}
    rows = session.execute(
        snapshot.label_join()
        .add_columns(key.label("key"), col(JudgementLabel.dimension), col(JudgementLabel.label), func.count())
        .where(col(JudgementLabel.dimension).in_(names))
        .group_by(key, col(JudgementLabel.dimension), col(JudgementLabel.label))
        .order_by(key)
    ).all()
    return [
        SeriesPoint(key=str(k), dimension=d, label=label, conversations=n, scored=scored.get((k, d), 0))
        for k, d, label, n in rows
    ]


def signal_counts(snapshot: Snapshot) -> dict[str, int]:
    """Conversations in scope showing each deterministic signal (whatever the grader said)."""
    rows = snapshot.session.execute(
        select(col(SignalRow.signal), func.count())
        .join(ConversationRecord, col(ConversationRecord.id) == col(SignalRow.conversation_id))
        .where(*conversation_filters(snapshot.scope))
        .group_by(col(SignalRow.signal))
    ).all()
    return {signal: n for signal, n in rows}


def failure_intelligence(snapshot: Snapshot, level: int = 0, examples: int = 3) -> list[TopicFailures]:
    """Topics (``level`` 1 = top of the hierarchy, 0 = the full label) ranked by volume x failure rate.

    A conversation failed when it was given any label the rubric marks ``negative`` (a failure cause,
    negative implicit feedback).
    """
    rubric, session = snapshot.rubric, snapshot.session
    topic_dims = snapshot.of(Analytic.topic_intent)
    if rubric is None or not topic_dims:
        return []
    negative = [
        (name, label.id)
        for name in snapshot.dimensions
        for label in rubric.dimensions[name].labels
        if label.negative
    ]
    flags = [
        (and_(col(JudgementLabel.dimension) == d, col(JudgementLabel.label) == lab), 1) for d, lab in negative
    ]
    failed_flag = func.max(case(*flags, else_=0)) if flags else func.max(0)
    failures = (
        snapshot.label_join()
        .add_columns(
            col(JudgementLabel.conversation_id).label("conversation_id"), failed_flag.label("failed")
        )
        .group_by(col(JudgementLabel.conversation_id))
        .subquery()
    )
    rows = session.execute(
        snapshot.label_join()
        .add_columns(
            col(JudgementLabel.label),
            col(ConversationRecord.external_id),
            col(ConversationRecord.language),
            func.coalesce(failures.c.failed, 0).cast(Integer),
        )
        .join(failures, failures.c.conversation_id == col(JudgementLabel.conversation_id), isouter=True)
        .where(col(JudgementLabel.dimension) == topic_dims[0])
        .order_by(col(ConversationRecord.id))
    ).all()
    per_topic: dict[str, dict[str, Any]] = {}
    failed_ids: dict[str, str] = {}
    for label, external_id, language, failed in rows:
        key = ".".join(label.split(".")[:level]) if level else label
        entry = per_topic.setdefault(key, {"n": 0, "failed": 0, "languages": {}, "examples": []})
        entry["n"] += 1
        if failed:
            entry["failed"] += 1
            lang = language or "unknown"
            entry["languages"][lang] = entry["languages"].get(lang, 0) + 1
            if len(entry["examples"]) < examples:
                entry["examples"].append(external_id)
            failed_ids[external_id] = key
    found = _causes_and_risks(snapshot, failed_ids)
    result = []
    for key, entry in per_topic.items():
        rate = entry["failed"] / entry["n"]
        causes, risks = found.get(key, ({}, {}))
        result.append(
            TopicFailures(
                topic=key,
                conversations=entry["n"],
                failed=entry["failed"],
                failure_rate=round(rate, 4),
                priority=round(entry["n"] * rate, 3),
                causes=causes,
                languages=entry["languages"],
                risks=risks,
                examples=entry["examples"],
            )
        )
    result.sort(key=lambda t: (-t.priority, -t.conversations, t.topic))
    return result


def _causes_and_risks(
    snapshot: Snapshot, failed_ids: dict[str, str]
) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    """Among each topic's failed conversations: counts of negative failure causes, and of risks."""
    assert snapshot.rubric is not None
    causes = set(snapshot.of(Analytic.failure_cause))
    risks = set(snapshot.of(Analytic.business_risk))
    negative = {
        (n, label.id) for n in causes for label in snapshot.rubric.dimensions[n].labels if label.negative
    }
    rows = snapshot.session.execute(
        snapshot.label_join()
        .add_columns(
            col(ConversationRecord.external_id), col(JudgementLabel.dimension), col(JudgementLabel.label)
        )
        .where(col(JudgementLabel.dimension).in_(causes | risks))
    ).all()
    out: dict[str, tuple[dict[str, int], dict[str, int]]] = {}
    for external_id, dimension, label in rows:
        topic = failed_ids.get(external_id)
        if topic is None:
            continue
        cause_counts, risk_counts = out.setdefault(topic, ({}, {}))
        if (dimension, label) in negative:
            cause_counts[label] = cause_counts.get(label, 0) + 1
        elif dimension in risks:
            risk_counts[label] = risk_counts.get(label, 0) + 1
    return out


class GraderUsage(BaseModel):
    id: str
    provider: str
    model: str
    params: dict[str, Any]
    prompt: str
    runs: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


def grader_usage(session: Session, project_id: int) -> list[GraderUsage]:
    """Each grader the project ran, with its runs, provider calls, tokens and cost so far."""
    usage = (
        sql_select(
            col(Run.grader_id),
            func.count(func.distinct(col(Run.id))),
            func.coalesce(func.sum(col(ProviderCall.calls)), 0),
            func.coalesce(func.sum(col(ProviderCall.prompt_tokens)), 0),
            func.coalesce(func.sum(col(ProviderCall.completion_tokens)), 0),
            func.coalesce(func.sum(col(ProviderCall.cost_usd)), 0.0),
        )
        .join(ProviderCall, col(ProviderCall.run_id) == col(Run.id), isouter=True)
        .where(col(Run.project_id) == project_id)
        .group_by(col(Run.grader_id))
    )
    totals = {row[0]: row[1:] for row in session.execute(usage)}
    graders = session.exec(select(Grader).where(col(Grader.id).in_(list(totals)))).all()
    return [
        GraderUsage(
            id=g.id,
            provider=g.provider,
            model=g.model,
            params=g.params,
            prompt=f"{g.prompt_name} v{g.prompt_version}",
            runs=int(totals[g.id][0]),
            calls=int(totals[g.id][1]),
            prompt_tokens=int(totals[g.id][2]),
            completion_tokens=int(totals[g.id][3]),
            cost_usd=float(totals[g.id][4]),
        )
        for g in graders
    ]
