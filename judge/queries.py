"""Reading conversations back: filtered, cursor-paginated listings and one conversation in full."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import or_
from sqlmodel import Session, col, select

from judge.analytics import Snapshot
from judge.errors import InputError, NotFoundError
from judge.rubric import Analytic
from judge.scope import conversation_filters, is_latest
from judge.store.tables import ConversationRecord, Judgement, JudgementLabel, MessageRecord, SignalRow


class ConversationFilter(BaseModel):
    labels: list[str] = Field(default_factory=list, description="DIMENSION:LABEL, all must hold.")
    topic: str | None = Field(default=None, description="Topic label or a prefix of the hierarchy (billing).")
    risk: str | None = Field(default=None, description="A business-risk label.")


class ConversationItem(BaseModel):
    id: str
    revision: int
    end_user_id: str | None
    language: str | None
    metadata: dict[str, Any]
    messages: int
    started_at: datetime | None


class Page(BaseModel):
    items: list[ConversationItem]
    next_cursor: str | None


class LabelOut(BaseModel):
    label: str
    evidence: list[int]
    reason: str | None


class JudgementOut(BaseModel):
    dimension: str
    run_id: int
    status: str
    reason: str | None
    suggestion: str | None
    truncated: bool
    labels: list[LabelOut]


class MessageOut(BaseModel):
    index: int
    role: str
    content: str
    timestamp: datetime | None


class SignalOut(BaseModel):
    signal: str
    evidence: list[int]
    score: float


class ConversationDetail(ConversationItem):
    transcript: list[MessageOut]
    signals: list[SignalOut]
    judgements: list[JudgementOut]


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"c:{last_id}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind != "c":
            raise ValueError(kind)
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"cursor {cursor!r} is not a cursor this API returned") from None


def _item(record: ConversationRecord) -> ConversationItem:
    return ConversationItem(
        id=record.external_id,
        revision=record.revision,
        end_user_id=record.end_user_id,
        language=record.language,
        metadata=record.meta,
        messages=record.message_count,
        started_at=record.started_at,
    )


def list_conversations(
    snapshot: Snapshot, filters: ConversationFilter, cursor: str | None = None, limit: int = 50
) -> Page:
    """A page of the latest revisions in scope matching every filter, in stable id order."""
    query = select(ConversationRecord).where(*conversation_filters(snapshot.scope))
    if cursor:
        query = query.where(col(ConversationRecord.id) > decode_cursor(cursor))
    for dimensions, labels in _label_conditions(snapshot, filters):
        matching = (
            snapshot.label_join()
            .add_columns(col(JudgementLabel.conversation_id))
            .where(col(JudgementLabel.dimension).in_(dimensions), or_(*labels))
        )
        query = query.where(col(ConversationRecord.id).in_(matching))
    records = list(snapshot.session.exec(query.order_by(col(ConversationRecord.id)).limit(limit + 1)))
    more = len(records) > limit
    records = records[:limit]
    return Page(
        items=[_item(r) for r in records],
        next_cursor=encode_cursor(records[-1].id or 0) if more and records else None,
    )


def _label_conditions(snapshot: Snapshot, filters: ConversationFilter) -> list[tuple[list[str], list[Any]]]:
    """Each filter as (dimensions it looks in, label conditions of which one must hold)."""
    rubric = snapshot.rubric
    conditions: list[tuple[list[str], list[Any]]] = []
    for item in filters.labels:
        dimension, sep, label = item.partition(":")
        if not sep or rubric is None or dimension not in rubric.dimensions:
            valid = ", ".join(rubric.dimensions) if rubric else "none (no runs yet)"
            raise InputError(
                f"label filter {item!r}: expected DIMENSION:LABEL with a dimension among {valid}"
            )
        conditions.append(([dimension], [col(JudgementLabel.label) == label]))
    if filters.topic:
        prefix = filters.topic
        conditions.append(
            (
                snapshot.of(Analytic.topic_intent),
                [col(JudgementLabel.label) == prefix, col(JudgementLabel.label).startswith(prefix + ".")],
            )
        )
    if filters.risk:
        conditions.append((snapshot.of(Analytic.business_risk), [col(JudgementLabel.label) == filters.risk]))
    return conditions


def conversation_detail(snapshot: Snapshot, external_id: str) -> ConversationDetail:
    """One conversation's latest revision with its messages, signals and latest judgements."""
    session: Session = snapshot.session
    record = session.exec(
        select(ConversationRecord).where(
            ConversationRecord.external_id == external_id, *conversation_filters(snapshot.scope)
        )
    ).first()
    if record is None or record.id is None:
        raise NotFoundError("conversation", external_id)
    messages = session.exec(
        select(MessageRecord)
        .where(MessageRecord.conversation_id == record.id)
        .order_by(col(MessageRecord.position))
    ).all()
    signals = session.exec(select(SignalRow).where(SignalRow.conversation_id == record.id)).all()
    judgements = session.exec(
        select(Judgement)
        .where(Judgement.conversation_id == record.id, is_latest(Judgement, snapshot.runs))
        .order_by(col(Judgement.dimension))
    ).all()
    labels: dict[int, list[LabelOut]] = {}
    if judgements:
        rows = session.exec(
            select(JudgementLabel).where(col(JudgementLabel.judgement_id).in_([j.id for j in judgements]))
        ).all()
        for row in rows:
            labels.setdefault(row.judgement_id, []).append(
                LabelOut(label=row.label, evidence=row.evidence, reason=row.reason)
            )
    return ConversationDetail(
        **_item(record).model_dump(),
        transcript=[
            MessageOut(index=m.position, role=m.role, content=m.content, timestamp=m.timestamp)
            for m in messages
        ],
        signals=[SignalOut(signal=s.signal, evidence=s.evidence, score=s.score) for s in signals],
        judgements=[
            JudgementOut(
                dimension=j.dimension,
                run_id=j.run_id,
                status=j.status,
                reason=j.reason,
                suggestion=j.suggestion,
                truncated=j.truncated,
                labels=labels.get(j.id or 0, []),
            )
            for j in judgements
        ],
    )
